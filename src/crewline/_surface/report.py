"""Usage as a person reads it: exact dollars and aligned tables (CLI, demo)."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from crewline._accounting.usage import Usage

__all__ = ["dollars", "usage_table"]



def dollars(amount: Decimal) -> str:
    """An exact dollar amount: every digit, no exponent, no trailing zeros."""
    if amount == 0:
        return "$0"
    return "$" + format(amount.normalize(), "f")


def usage_table(sections: Sequence[tuple[str, Sequence[tuple[str, Usage]]]], total: Usage, *,
                total_label: str = "total") -> str:
    """Rows of usage grouped under section titles, then the total, in aligned columns."""
    failed = total.failed_requests > 0 or any(
        u.failed_requests for _, rows in sections for _, u in rows)
    header = ["", "requests", *(["failed"] if failed else []), "prompt", "completion", "cost"]

    def cells(label: str, usage: Usage) -> list[str]:
        return [label, str(usage.requests),
                *([str(usage.failed_requests)] if failed else []),
                str(usage.prompt_tokens), str(usage.completion_tokens), dollars(usage.cost)]

    rows: list[list[str]] = [header]
    for title, items in sections:
        if not items:
            continue
        rows.append([title])
        rows.extend(cells(f"  {name or '-'}", usage) for name, usage in items)
    rows.append(cells(total_label, total))
    widths = [max(len(row[i]) for row in rows if len(row) > i) for i in range(len(header))]
    lines = []
    for row in rows:
        if len(row) == 1:
            lines.append(row[0])
            continue
        first = row[0].ljust(widths[0])
        rest = [cell.rjust(widths[i + 1]) for i, cell in enumerate(row[1:])]
        lines.append("  ".join([first, *rest]).rstrip())
    return "\n".join(lines)
