"""docs/delegation.md: its worked example prints what the page shows, and the prose agrees.

sybil checks the output block too; this test stays for what sybil cannot check: the numbers
the sentence after the output quotes must add up and match what the example printed."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

PAGE = Path(__file__).resolve().parents[1] / "docs" / "delegation.md"


def test_worked_example_prints_what_the_page_shows() -> None:
    text = PAGE.read_text()
    section = text.split("## A worked example", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    shown = re.search(r"```output\n(.*?)```", section, re.DOTALL)
    assert code is not None and shown is not None
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code.group(1), str(PAGE), "exec"), {"__name__": "docs_example"})
    assert printed.getvalue() == shown.group(1)
    numbers = re.search(r"The task's (\d+) tokens are the manager's (\d+) and the coworkers' "
                        r"(\d+) and (\d+), and the model\nserved exactly those (\d+) requests",
                        section)
    assert numbers is not None
    task, manager, first, second, requests = map(int, numbers.groups())
    assert task == manager + first + second
    assert f"task report   {requests} requests  {task} tokens" in printed.getvalue()
