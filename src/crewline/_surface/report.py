"""Usage as a person reads it: exact dollars and aligned tables (CLI, demo)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from decimal import Decimal

from crewline._accounting.usage import Usage, UsageRecord

__all__ = ["agent_rows", "dollars", "outside_tasks_rows", "usage_table"]



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


def agent_rows(records: Iterable[UsageRecord]) -> list[tuple[str, Usage]]:
    """Usage per agent, with work done for a delegator on rows of its own.

    ``Researcher`` is the agent's own tasks, ``Researcher (delegated by Crew Manager)`` the
    pieces a manager handed it; an agent that managed says ``(manager)``, the planner
    ``(planning)``. The rows sum to the total: every record is on exactly one row.
    """
    grouped: dict[str, list[UsageRecord]] = {}
    managers = {r.agent for r in records if r.purpose == "manager"}
    for r in records:
        label = r.agent or ""
        if r.delegated_by is not None:
            label += f" (delegated by {r.delegated_by})"
        elif r.purpose == "planning":
            label += " (planning)"
        elif r.agent in managers:
            label += " (manager)"
        grouped.setdefault(label, []).append(r)
    return sorted((label, Usage.from_records(rs)) for label, rs in grouped.items())


def outside_tasks_rows(records: Iterable[UsageRecord]) -> list[tuple[str, Usage]]:
    """The run's requests that belong to no task (the crew's plan), as one row if any."""
    outside = [r for r in records if r.task is None]
    if not outside:
        return []
    purposes = sorted({r.purpose for r in outside})
    return [(f"(no task: {', '.join(purposes)})", Usage.from_records(outside))]
