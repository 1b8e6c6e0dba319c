"""The docs harness (the repository's root conftest.py) and the doc blocks it cannot run itself.

sybil runs every python block of README.md and docs/*.md in the default pytest run. These
tests show that the harness really fails a doc whose output or crew file is wrong, and check
the blocks it skips on purpose: a pytest module, an example that must run in a fresh
interpreter, and the CLI walkthrough in docs/cli.md.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from crewline._surface.cli import main
from crewline.testing import FakeLLMServer

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def block(doc: str, containing: str, language: str | None = None) -> str:
    """The body of the one fenced block of ``doc`` whose text contains ``containing``."""
    text = (DOCS / doc).read_text(encoding="utf-8")
    found = [body for lang, body in re.findall(r"^```(\w*)\n(.*?)^```", text, re.S | re.M)
             if containing in body and (language is None or lang == language)]
    assert len(found) == 1, f"{doc}: {len(found)} blocks contain {containing!r}"
    return found[0]


# -- the harness fails wrong docs ----------------------------------------------------------

WRONG_DOC = '''\
# A doc with one mistake of each kind

```python
print(1 + 1, "tokens")
```

```output
2 tokens
```

```python
print(20 + 1, "tokens")
```

```output
20 tokens
```

```python
print("shown nowhere")
```

```sh
rm -rf /
```

<!-- skip: next "shell: an example only" -->
```sh
echo skipped
```

```output
an output block after no python block
```

```yaml
llm: {model: openai/gpt-4o-mini}
agents: {writer: {role: Writer}}
tasks: {draft: {description: Draft., agent: writr}}
```

```python
print("run id 3f2a, at 12:00")
```

```output
run id ..., at ...
```
'''


def test_the_docs_harness_fails_every_kind_of_drift(pytester: pytest.Pytester) -> None:
    pytester.makeconftest((ROOT / "conftest.py").read_text(encoding="utf-8"))
    (pytester.path / "docs").mkdir()
    (pytester.path / "docs" / "guide.md").write_text(WRONG_DOC, encoding="utf-8")

    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rs", "docs")

    result.assert_outcomes(passed=3, failed=5, skipped=1)
    out = result.stdout.str()
    assert "-20 tokens\n+21 tokens" in out  # a wrong number, shown as a diff
    assert "this block prints, but no ```output block after it shows what" in out
    assert "```sh neither runs nor is skipped" in out
    assert "SKIPPED [1] docs/guide.md:28: shell: an example only" in out
    assert "an ```output block must follow the ```python block" in out
    assert "unknown agent 'writr' (agents: writer)" in out


# -- blocks the harness skips on purpose ----------------------------------------------------


def test_the_pytest_module_in_testing_md_passes(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_crew=block("testing.md", "def test_the_tool_is_called"))

    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")

    result.assert_outcomes(passed=3)


def test_the_scripted_model_example_never_imports_litellm(tmp_path: Path) -> None:
    example = block("testing.md", "ScriptedModel(Reply(tool_calls=")
    script = tmp_path / "example.py"
    script.write_text(example + '\nimport sys\nprint("litellm" in sys.modules)\n')
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}

    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          env=env, timeout=120)

    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "False"


@pytest.mark.slow
def test_the_offline_walkthrough_in_cli_md_runs(tmp_path: Path) -> None:
    script = block("cli.md", "python -m crewline.testing", language="sh")
    bin_dir = tmp_path / "bin"  # `python` and `crewline` as an installed crewline has them
    bin_dir.mkdir()
    for name, command in (("python", ""), ("crewline", " -m crewline")):
        (bin_dir / name).write_text(f'#!/bin/sh\nexec "{sys.executable}"{command} "$@"\n')
        (bin_dir / name).chmod(0o755)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"),
           "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}

    process = subprocess.Popen(["bash", "-e", "-c", script], cwd=tmp_path, text=True, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               start_new_session=True)
    try:
        out, err = process.communicate(timeout=240)
    finally:
        if process.poll() is None:  # the script hung: end it and the server it started
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()

    assert process.returncode == 0, out + err
    assert "Traceback" not in err
    said = re.search(r"^# (error: .*)$", script, re.M)
    assert said is not None
    assert said.group(1) in err.splitlines()  # the line the walkthrough promises
    assert "exit code 1" in out
    assert (tmp_path / "result.json").read_text().startswith("{")


def test_cli_md_shows_what_the_command_prints(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FAKE_KEY", "sk-fake")
    crew_file = re.search(r"<<'YAML'\n(.*?)^YAML$",
                          block("cli.md", "python -m crewline.testing", language="sh"),
                          re.S | re.M)
    assert crew_file is not None
    notes = tmp_path / "notes.yaml"
    notes.write_text(crew_file.group(1))

    with FakeLLMServer() as server:
        code = main(["run", str(notes), "--input", "topic=octopuses",
                     "--base-url", server.base_url, "--api-key-env", "FAKE_KEY"])
        shown = capsys.readouterr()
        assert code == 0, shown.err
        assert shown.err == block("cli.md", "[crewline] outline: started")
        assert shown.out == block("cli.md", "           requests  prompt")

        code = main(["run", str(notes)])
        session = block("cli.md", "$ crewline run notes.yaml\n")
        _, error, _, status = textwrap.dedent(session).splitlines()
        assert capsys.readouterr().err == error + "\n"
        assert str(code) == status
