"""Developer sessions: tests, lint, typecheck, bench, dev, vectors.

`nox -s tests` runs the suite on Python 3.11, 3.12 and 3.13 (each one installed here; a missing
interpreter is skipped, unless nox runs with --error-on-missing-interpreters). CI runs
`scripts/test`: the lint and typecheck gates, then the suite, on 3.11.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_existing_virtualenvs = True
nox.options.default_venv_backend = "venv"

PY = "3.11"
PYTHONS = ["3.11", "3.12", "3.13"]  # the ones pyproject's classifiers name


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """The whole test suite, on every supported Python found on the machine."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", *session.posargs, env={"HYPOTHESIS_PROFILE": "ci"})


@nox.session(python=PY)
def lint(session: nox.Session) -> None:
    """ruff: lint and formatting."""
    session.install("ruff>=0.6,<0.18")
    session.run("ruff", "check", "novakms", "tests", "bench", "protocol", "noxfile.py")
    session.run("ruff", "format", "--check", "novakms", "tests", "bench", "protocol", "noxfile.py")


@nox.session(python=PY)
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the package, its tests and the benchmarks (pyproject [tool.mypy])."""
    session.install("-e", ".[dev]")
    session.run("mypy")


@nox.session(python=PY)
def vectors(session: nox.Session) -> None:
    """Regenerate protocol/vectors/*.json from the independent reference generator."""
    session.install("-e", ".[test]")
    session.run("python", "protocol/vectors/generate.py", *session.posargs)


@nox.session(python=PY)
def bench(session: nox.Session) -> None:
    """Benchmarks (prints tables, writes bench/results/*.json). `nox -s bench -- --quick`."""
    session.install("-e", ".[bench]")
    session.run("python", "bench/bench_derive.py", *session.posargs)
    session.run("python", "bench/bench_store.py")
    session.run("python", "bench/bench_cluster.py", *session.posargs)
    session.run("python", "bench/bench_rolling.py", *session.posargs)


@nox.session(python=PY)
def dev(session: nox.Session) -> None:
    """A local development KMS (same as scripts/dev)."""
    session.install("-e", ".")
    session.run("novakms", "dev", *session.posargs)


@nox.session(python=False)
def contracts(session: nox.Session) -> None:
    """Compile the contracts, regenerate novakms/chain/artifacts, run the forge tests."""
    session.run("scripts/contracts", "build", external=True)
    session.run("scripts/contracts", "test", external=True)
