"""Developer sessions for trioserve.

Run ``nox -l`` to list them. ``nox`` alone runs tests, lint and typecheck.
Sessions use the interpreter nox itself runs on; no Python version list is
hard-coded, so this works on a machine with a single Python installed.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import tempfile
import zipfile

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["tests", "lint", "typecheck"]

LINT_PATHS = ("trioserve", "tests", "bench", "conformance", "noxfile.py")

# Modules whose coverage is held to a hard floor (comma-separated --include globs).
CORE_MODULES = "trioserve/_transport.py,trioserve/connection/*,trioserve/protocol/*"
CORE_FAIL_UNDER = "95"


#: Debian packages the tests behind a real proxy run (tests/test_behind_*.py).
PROXY_PACKAGES = {"nginx": "nginx", "haproxy": "haproxy"}


def install_proxies(session: nox.Session) -> None:
    """Install nginx and HAProxy with apt-get when nox runs as root and one is
    missing. Otherwise a missing one is left to the tests: they skip, naming the
    install command, or fail when CI is set."""
    sbin = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin", "/sbin"])
    missing = [pkg for prog, pkg in PROXY_PACKAGES.items() if shutil.which(prog, path=sbin) is None]
    if not missing:
        return
    if hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {"DEBIAN_FRONTEND": "noninteractive"}
        session.run("apt-get", "update", "-qq", external=True, env=env)
        session.run("apt-get", "install", "-y", "-qq", *missing, external=True, env=env)
    else:
        session.warn(
            f"not installed: {', '.join(missing)} (sudo apt-get install -y {' '.join(missing)})"
        )


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite (minus @pytest.mark.slow) under coverage."""
    install_proxies(session)
    session.install("-e", ".[test]")
    session.run("coverage", "run", "-m", "pytest", "-m", "not slow", *session.posargs)
    # Whole-package report: informational only, no threshold.
    session.run("coverage", "report")
    # The transport, the connection kinds and the protocol layer must stay >= 95% covered.
    session.log(f"Coverage of core modules ({CORE_MODULES}), required >= {CORE_FAIL_UNDER}%:")
    session.run(
        "coverage",
        "report",
        "--include",
        CORE_MODULES,
        f"--fail-under={CORE_FAIL_UNDER}",
    )


@nox.session
def tests_slow(session: nox.Session) -> None:
    """Run only the long-running tests (@pytest.mark.slow)."""
    install_proxies(session)
    session.install("-e", ".[test]")
    # Exit code 5 is pytest's "no test selected": no slow test exists yet.
    session.run("pytest", "-m", "slow", *session.posargs, success_codes=[0, 5])


@nox.session
def autobahn(session: nox.Session) -> None:
    """WebSocket conformance: the Autobahn|Testsuite fuzzingclient cases (run by
    kosoku) against trioserve; fails on any FAILED, NON-STRICT or UNIMPLEMENTED
    case. Arguments after ``--`` go to conformance/autobahn.py."""
    session.install("-e", ".", "kosoku")
    session.run("python", "conformance/autobahn.py", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """Lint and check formatting with ruff."""
    session.install("ruff")
    session.run("ruff", "check", *LINT_PATHS)
    session.run("ruff", "format", "--check", *LINT_PATHS)


@nox.session
def typecheck(session: nox.Session) -> None:
    """Type-check the package with mypy --strict."""
    # The optional extras too: their modules (watchfiles, gunicorn) are imported by ours.
    session.install("-e", ".[reload,gunicorn]", "mypy>=1.10", "exceptiongroup", "tomli")
    session.run("mypy", "--strict", "trioserve")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation with MkDocs; any warning fails the build."""
    session.install("-e", ".[docs]")
    session.run("mkdocs", "build", "--strict", *session.posargs)


#: Files that must be in the wheel, and prefixes that must not be.
WHEEL_MUST_HAVE = ("trioserve/__init__.py", "trioserve/py.typed", "trioserve/testing/__init__.py")
WHEEL_MUST_NOT_HAVE = ("tests/", "docs/", "examples/", "bench/", "conformance/")


@nox.session
def package(session: nox.Session) -> None:
    """Build the sdist and the wheel into a temporary directory and check them the
    way PyPI will (``twine check --strict``), plus what the wheel must (not) hold.
    The files are removed afterwards; ``python -m build`` makes them in ``dist/``."""
    session.install("build>=1.2", "twine>=6.1")
    out = pathlib.Path(tempfile.mkdtemp(prefix="trioserve-package-"))
    try:
        session.run("python", "-m", "build", "--outdir", str(out), ".")
        built = sorted(str(path) for path in out.iterdir())
        session.run("twine", "check", "--strict", *built)
        (wheel,) = out.glob("trioserve-*.whl")
        names = zipfile.ZipFile(wheel).namelist()
        missing = [name for name in WHEEL_MUST_HAVE if name not in names]
        stray = [
            name for name in names if name.startswith(WHEEL_MUST_NOT_HAVE) or "__pycache__" in name
        ]
        if missing or stray:
            session.error(f"{wheel.name}: missing {missing}, should not hold {stray}")
        session.log(f"{wheel.name}: {len(names)} files, py.typed included, no tests or docs")
    finally:
        shutil.rmtree(out)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmark trioserve against uvicorn and Hypercorn (see bench/README.md).

    Not part of the default run. Needs wrk: installed with apt-get when nox runs as
    root and it is missing; otherwise the session stops and prints the command.
    Arguments after ``--`` go to bench/run.py, e.g. ``nox -s bench -- --reps 5``.
    """
    if shutil.which("wrk") is None:
        if hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
            env = {"DEBIAN_FRONTEND": "noninteractive"}
            session.run("apt-get", "update", "-qq", external=True, env=env)
            session.run("apt-get", "install", "-y", "-qq", "wrk", external=True, env=env)
        else:
            session.error("wrk is not installed; install it with: sudo apt-get install -y wrk")
    session.install("-e", ".", "uvicorn[standard]", "hypercorn")
    session.run("python", "bench/run.py", *session.posargs)


@nox.session
def demo(session: nox.Session) -> None:
    """Serve the example app (examples/hello.py) on http://127.0.0.1:8000."""
    session.install("-e", ".")
    session.run("python", "examples/hello.py", *session.posargs)
