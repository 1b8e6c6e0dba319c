"""The public surface is deliberate, and importing it is cheap.

``import crewline`` loads no pydantic and no litellm (public names load on first use), yet
``dir()``, star imports and attribute access see every public name; ``crewline --help``
starts without either.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import crewline

SRC = str(Path(__file__).resolve().parents[1] / "src")
HEAVY = ("pydantic", "litellm", "structlog", "yaml", "asyncio", "sqlite3", "opentelemetry")


def _loaded_after(code: str) -> list[str]:
    probe = (f"import sys\n{code}\n"
             f"import json; print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          env={"PYTHONPATH": SRC, "LITELLM_LOCAL_MODEL_COST_MAP": "True"},
                          timeout=120, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_import_crewline_loads_nothing_heavy() -> None:
    loaded = _loaded_after("import crewline")
    assert [m for m in HEAVY if m in loaded] == []


def test_cli_help_loads_neither_pydantic_nor_litellm() -> None:
    loaded = _loaded_after(
        "from crewline._surface.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass")
    assert "pydantic" not in loaded and "litellm" not in loaded


def test_every_public_name_resolves_and_is_listed() -> None:
    for name in crewline.__all__:
        assert getattr(crewline, name) is not None, name
    assert set(crewline.__all__) <= set(dir(crewline))
    namespace: dict[str, object] = {}
    exec("from crewline import *", namespace)
    assert set(crewline.__all__) <= set(namespace)


def test_an_unknown_name_is_an_attribute_error() -> None:
    try:
        crewline.Crewe  # type: ignore[attr-defined]  # noqa: B018
    except AttributeError as exc:
        assert "Crewe" in str(exc)
    else:
        raise AssertionError("no AttributeError")
