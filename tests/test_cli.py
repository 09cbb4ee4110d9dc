"""The ``trioserve`` command, driven as a user drives it.

Parsing and messages go through click's ``CliRunner`` (``--help`` grouped and
listing every required flag, ``--version``, configuration errors from flags,
``TRIOSERVE_*`` variables and ``--config`` files, Hypercorn-only keys warned
about, and every way an app fails to load): each error path asserts the exit
code (2 config, 3 app load), the one ``Error:`` line, naming the flag or variable
the bad value came from, and that no traceback is printed. Usage errors are in
``test_cli_env.py``.

Serving, signals and exit codes run the real command in a subprocess
(``python -m trioserve``, port 0, the address read from the ``Serving on`` log
line): a request answered (ASGI 3, ASGI 2, ``--factory`` with ``--app-dir``),
SIGINT and SIGTERM ending with exit 0, the access log line on stdout, the
precedence flag > environment > config file > default seen in the responses, and
exit 3 with one line for a failing lifespan startup and for an address in use.
Every wait on a subprocess is bounded by ``trio.fail_after``; the processes are
killed in ``finally`` if still running.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import httpx
import pytest
import trio
from _helpers import assert_one_line_error
from _pipes import PipeReader
from click.testing import CliRunner, Result

import trioserve
from trioserve._cli import cli

APPS_DIR = Path(__file__).parent / "fixtures" / "apps"
CONFIG_DIR = Path(__file__).parent / "fixtures" / "config"
SERVING = r"Serving on (http://127\.0\.0\.1:(\d+))"
#: The CliRunner tests run the command inside this process. Those that expect it to
#: stop before serving name this app, which does not exist: should the check they
#: expect ever pass, the command stops at loading the app (exit 3) instead of
#: serving forever in the test process.
UNSERVED_APP = "fx_not_loaded:app"
CLF_TIME = r"\[\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4}\]"

#: Flags the command must offer, each of which --help must list.
REQUIRED_FLAGS = [
    "--bind",
    "-b",
    "--config",
    "-c",
    "--keep-alive-timeout",
    "--graceful-timeout",
    "--header-timeout",
    "--read-timeout",
    "--limit-concurrency",
    "--max-requests",
    "--max-requests-jitter",
    "--workers",
    "-w",
    "--worker-healthcheck-timeout",
    "--worker-max-rss",
    "--root-path",
    "--lifespan",
    "--cancel-on-disconnect",
    "--log-level",
    "--access-logfile",
    "--error-logfile",
    "--access-logformat",
    "--log-config",
    "--no-server-header",
    "--no-date-header",
    "--header",
    "--h11-max-incomplete-size",
    "--backlog",
    "--version",
    "--factory",
    "--app-dir",
    "--host",
    "--port",
    "--uds",
    "--fd",
    "--proxy-headers",
    "--no-proxy-headers",
    "--forwarded-allow-ips",
    "--proxy-headers-mode",
    "--proxy-protocol",
]


@pytest.fixture(autouse=True)
def isolated_process_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The command configures the trioserve loggers, puts --app-dir on sys.path and
    imports the app; the test process must come out of each test as it went in.
    TRIOSERVE_* variables of the outer environment must not leak in either."""
    for name in list(os.environ):
        if name.startswith("TRIOSERVE_"):
            monkeypatch.delenv(name)
    saved_loggers = {}
    for name in ("", "trioserve.error", "trioserve.access"):
        logger = logging.getLogger(name)
        saved_loggers[name] = (list(logger.handlers), logger.level, logger.propagate)
    saved_path = list(sys.path)
    saved_modules = set(sys.modules)
    yield
    for name, (handlers, level, propagate) in saved_loggers.items():
        logger = logging.getLogger(name)
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate
    sys.path[:] = saved_path
    for name in set(sys.modules) - saved_modules:
        if name.startswith("fx_") or name in {"raises_inside", "with_helpers"}:
            del sys.modules[name]


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    runner = CliRunner()
    return runner.invoke(cli, list(args), env=env or {}, prog_name="trioserve")


# -- help and version -----------------------------------------------------------------


def help_sections() -> dict[str, str]:
    result = invoke("--help")
    assert result.exit_code == 0, result.output
    sections: dict[str, str] = {}
    current = "usage"
    for line in result.stdout.splitlines():
        if line.endswith(" options:") and not line.startswith(" "):
            current = line[: -len(" options:")]
            sections[current] = ""
        elif current != "usage":
            sections[current] += line + "\n"
    return sections


def test_help_lists_option_groups_and_the_required_flags() -> None:
    sections = help_sections()
    assert list(sections) == [
        "Application",
        "Binding",
        "Proxies",
        "TLS",
        "Timeouts",
        "Limits",
        "Workers",
        "WebSockets",
        "Logging",
        "Development",
        "Other",
    ]
    listed = "".join(sections.values())
    for flag in REQUIRED_FLAGS:
        assert re.search(rf"(^|[\s,/]){re.escape(flag)}\b", listed), flag
    # Each flag sits in the group its key belongs to.
    assert "--bind" in sections["Binding"]
    assert "--uds" in sections["Binding"]
    assert "--keep-alive-timeout" in sections["Timeouts"]
    assert "--limit-concurrency" in sections["Limits"]
    assert "--access-logformat" in sections["Logging"]
    assert "--ws" in sections["WebSockets"]
    for flag in ("--proxy-headers", "--forwarded-allow-ips", "--proxy-headers-mode"):
        assert flag in sections["Proxies"]
    assert "--proxy-protocol" in sections["Proxies"]
    assert "-w, --workers" in sections["Workers"]
    assert "--worker-max-rss MIB" in sections["Workers"]
    assert "--factory" in sections["Application"]
    assert "--header NAME:VALUE" in sections["Application"]


def test_help_does_not_list_the_app_argument_as_an_option() -> None:
    """APP is the positional argument, shown in the usage line; a row "APP" with no
    text under "Other options" reads as an option that does not exist."""
    other_rows = [line.split()[0] for line in help_sections()["Other"].splitlines() if line.strip()]
    assert other_rows[0] == "-c,"  # the rows are there ...
    assert "APP" not in other_rows  # ... but APP is not one of them


def test_version() -> None:
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.stdout == f"trioserve {version('trioserve')}\n"
    assert trioserve.__version__ == version("trioserve")


# -- configuration errors: exit 2, one line ----------------------------------------------


@pytest.mark.parametrize(
    ("args", "env", "fragments"),
    [
        (["--keep-alive-timeout", "-1"], {}, ["Error: --keep-alive-timeout must be", "-1.0"]),
        # What was typed has no Python type, and "no limit" is typed as inf.
        (
            ["--graceful-timeout", "0"],
            {},
            [
                "Error: --graceful-timeout must be a number of seconds > 0 (or inf for no "
                "limit), got 0.0"
            ],
        ),
        ([], {"TRIOSERVE_BACKLOG": "0"}, ["Error: TRIOSERVE_BACKLOG must be an integer >= 1"]),
        ([], {"TRIOSERVE_ROOT_PATH": "api/"}, ["Error: TRIOSERVE_ROOT_PATH", "'api/'"]),
        (["--bind", "nonsense"], {}, ["Error: --bind 'nonsense' must be HOST:PORT"]),
        (["-b", "nonsense"], {}, ["Error: -b 'nonsense' must be HOST:PORT"]),
        (["--port", "70000"], {}, ["Error: --port '127.0.0.1:70000' must be HOST:PORT"]),
        (["--header", "no-colon-here"], {}, ["Error: --header must be", "got 'no-colon-here'"]),
        # uvicorn's --host takes no port; neither does trioserve's.
        (
            ["--host", "0.0.0.0:8000"],
            {},
            ["Error: --host must be a host name or address, got '0.0.0.0:8000'"],
        ),
        (["--umask", "999"], {}, ["Error: --umask", "'999'"]),
        (
            ["--access-logfile", "/nonexistent/access.log"],
            {},
            [
                "Error: --access-logfile: cannot open log file '/nonexistent/access.log': "
                "No such file or directory"
            ],
        ),
        (
            [],
            {"TRIOSERVE_ERROR_LOGFILE": "/nonexistent/error.log"},
            ["Error: TRIOSERVE_ERROR_LOGFILE: cannot open log file '/nonexistent/error.log'"],
        ),
        (
            ["--config", "/nonexistent/trioserve.toml"],
            {},
            ["/nonexistent/trioserve.toml: file not found"],
        ),
        (
            ["--config", "python:no_such_trioserve_config"],
            {},
            ["module 'no_such_trioserve_config' not found"],
        ),
        (["--log-config", "/nonexistent/logging.json"], {}, ["file not found"]),
        (
            ["--forwarded-allow-ips", "127.0.0.1,10.0.0.1/8"],
            {},
            ["Error: --forwarded-allow-ips: '10.0.0.1/8' is not a network"],
        ),
        (
            [],
            {"TRIOSERVE_FORWARDED_ALLOW_IPS": "localhost"},
            ["Error: TRIOSERVE_FORWARDED_ALLOW_IPS: 'localhost' is not an IP address"],
        ),
        # uvicorn's variable is the default when the key is not set at all.
        ([], {"FORWARDED_ALLOW_IPS": "proxy.internal"}, ["FORWARDED_ALLOW_IPS: 'proxy.internal'"]),
    ],
)
def test_configuration_error_exits_2_with_one_line(
    args: list[str], env: dict[str, str], fragments: list[str]
) -> None:
    result = invoke(UNSERVED_APP, "--app-dir", str(APPS_DIR), *args, env=env)
    assert_one_line_error(result, 2, *fragments)


def test_misspelt_key_in_config_file_exits_2_with_suggestion(tmp_path: Path) -> None:
    config = tmp_path / "hypercorn.toml"
    config.write_text('bind = "127.0.0.1:0"\nkeep_alive_timout = 20\n')
    result = invoke(UNSERVED_APP, "--config", str(config))
    assert_one_line_error(
        result, 2, str(config), "'keep_alive_timout'", "did you mean 'keep_alive_timeout'?"
    )


def test_hypercorn_only_keys_in_config_file_are_warned_once_each_and_ignored(
    tmp_path: Path,
) -> None:
    """The config is used (the command goes on to load the app, which is missing
    here, so it stops with exit 3 before serving)."""
    config = tmp_path / "hypercorn.toml"
    config.write_text('pid_path = "/run/a.pid"\nworker_class = "uvloop"\nkeep_alive_timeout = 9\n')
    result = invoke("fx_no_such_module:app", "--config", str(config), "--app-dir", str(APPS_DIR))
    assert_one_line_error(result, 3, "module 'fx_no_such_module' not found")
    warnings = [line for line in result.stderr.splitlines() if line.startswith("Warning: ")]
    assert len(warnings) == 2
    assert sum("'pid_path'" in line for line in warnings) == 1
    assert sum("'worker_class'" in line for line in warnings) == 1


def test_python_config_that_raises_exits_2_with_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """``-c python:module`` whose module raises while it runs: a configuration
    error like ``file:`` gives, not a traceback with exit 1."""
    monkeypatch.syspath_prepend(str(CONFIG_DIR))
    result = invoke(UNSERVED_APP, "--config", "python:raises_inside")
    assert_one_line_error(result, 2, "python:raises_inside", "TRIOSERVE_FIXTURE_UNSET_VARIABLE")


def test_python_config_in_the_current_directory_is_found(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``trioserve -c python:settings app:app`` run from the project directory, as
    the app itself is found there (--app-dir defaults to "."). Through the
    ``trioserve`` console script the current directory is not on sys.path, which
    this test reproduces: the test process's sys.path does not hold CONFIG_DIR.
    The config loads, so the command gets as far as the app (exit 3 for its
    missing attribute) instead of exit 2 "module 'with_helpers' not found"."""
    monkeypatch.chdir(CONFIG_DIR)
    assert str(CONFIG_DIR) not in sys.path
    result = invoke("with_helpers:app", "--config", "python:with_helpers")
    assert_one_line_error(result, 3, "attribute 'app' not found in module 'with_helpers'")


def test_file_config_that_raises_exits_2_with_one_line() -> None:
    source = f"file:{CONFIG_DIR / 'raises_inside.py'}"
    result = invoke(UNSERVED_APP, "--config", source)
    assert_one_line_error(result, 2, source, "KeyError")


def test_broken_ini_log_config_exits_2_with_one_line(tmp_path: Path) -> None:
    """A .ini that is not one: the logging module raises a multi-line error that
    must become the one-line exit 2 of every other broken log config."""
    log_config = tmp_path / "logging.ini"
    log_config.write_text("this is not an ini file\n")
    result = invoke(UNSERVED_APP, "--log-config", str(log_config))
    assert_one_line_error(result, 2, "logging.ini")


# -- the app cannot be loaded: exit 3, one line --------------------------------------


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["fx_no_such_module:app"], ["module 'fx_no_such_module' not found"]),
        (["fx_asgi3:nope"], ["attribute 'nope' not found in module 'fx_asgi3'"]),
        (["fx_asgi3:not_callable"], ["'fx_asgi3:not_callable' is not callable"]),
        (
            ["fx_import_error:app"],
            ["error importing module 'fx_import_error'", "API_KEY is not set"],
        ),
        (["fx_missing_dependency:app"], ["fx_this_dependency_is_not_installed"]),
        (["fx_wsgi:app"], ["WSGI", "a2wsgi"]),
        (["--factory", "fx_factory:broken_factory"], ["RuntimeError: cannot reach the database"]),
        (["fx_asgi3:not-an-identifier"], ["invalid app 'fx_asgi3:not-an-identifier'"]),
    ],
)
def test_app_load_failure_exits_3_with_one_line(args: list[str], fragments: list[str]) -> None:
    result = invoke(*args, "--app-dir", str(APPS_DIR))
    assert_one_line_error(result, 3, *fragments)


def test_app_dir_defaults_to_the_current_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    """From inside the apps directory the module is found without --app-dir: the
    error is the missing attribute, not a missing module."""
    monkeypatch.chdir(APPS_DIR)
    result = invoke("fx_asgi3:nope")
    assert_one_line_error(result, 3, "attribute 'nope' not found in module 'fx_asgi3'")


# -- real processes ---------------------------------------------------------------------


class Command:
    """``python -m trioserve ARGS`` running in a subprocess."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.stdout = PipeReader(process.stdout)
        self.stderr = PipeReader(process.stderr)
        self.url = ""

    async def wait_serving(self) -> str:
        with trio.fail_after(5):
            match = await self.stderr.wait_for(SERVING)
        self.url = match.group(1)
        return self.url

    async def finish(self) -> int:
        """Wait for the exit and read what is left of both pipes."""
        with trio.fail_after(5):
            await self.process.wait()
            await self.stdout.read_rest()
            await self.stderr.read_rest()
        return self.process.returncode

    async def stop(self) -> None:
        """Kill the process if it still runs, close its pipes, reap it."""
        if self.process.returncode is None:
            self.process.kill()
        with trio.CancelScope(shield=True):
            for pipe in (self.process.stdout, self.process.stderr):
                if pipe is not None:
                    await pipe.aclose()
            await self.process.wait()


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


async def start_command(
    *args: str,
    cwd: Path = APPS_DIR,
    env: dict[str, str] | None = None,
    sigint_ignored: bool = False,
) -> Command:
    """``python -m trioserve ARGS``; with ``sigint_ignored``, started as a launcher
    that runs it in the background does (SIGINT ignored, which Python keeps)."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TRIOSERVE_")}
    environment.update(env or {})
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "trioserve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=str(cwd),
        env=environment,
        preexec_fn=_ignore_sigint if sigint_ignored else None,
    )
    return Command(process)


async def get(url: str) -> httpx.Response:
    async with httpx.AsyncClient(trust_env=False) as client:
        with trio.fail_after(5):
            return await client.get(url)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("Error:")]


async def test_serves_a_request_logs_access_on_stdout_and_exits_0_on_sigint() -> None:
    """The whole user path: serve, answer, log the request on stdout, and on Ctrl+C
    shut down gracefully with exit 0 (not 130 or a KeyboardInterrupt traceback)."""
    command = await start_command("fx_asgi3:app", "--bind", "127.0.0.1:0", "--access-logfile", "-")
    try:
        url = await command.wait_serving()
        response = await get(url + "/hello?x=1")
        assert response.status_code == 200
        assert response.json() == {
            "app": "asgi3",
            "method": "GET",
            "path": "/hello",
            "root_path": "",
            "lifespan": True,
        }
        with trio.fail_after(5):
            match = await command.stdout.wait_for(r".*\n")
        assert re.fullmatch(
            r'127\.0\.0\.1:\d+ - "GET /hello\?x=1 HTTP/1\.1" 200 OK',
            match.group(0).rstrip("\n"),
        ), match.group(0)
        command.process.send_signal(signal.SIGINT)
        returncode = await command.finish()
    finally:
        await command.stop()
    assert returncode == 0, command.stderr.text
    assert "Received SIGINT" in command.stderr.text
    assert "Traceback" not in command.stderr.text
    assert error_lines(command.stderr.text) == []


#: Answers only once the whole body has come: the request stays in flight as long
#: as the test wants.
WAITING_APP = """\
import sys


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    while True:
        message = await receive()
        print("request in flight", file=sys.stderr, flush=True)
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b""})
"""


@pytest.mark.parametrize(
    ("first", "second", "sigint_ignored"),
    [
        (signal.SIGINT, signal.SIGTERM, False),
        # The other orders run with the long tests (the default run stays short).
        pytest.param(signal.SIGTERM, signal.SIGINT, False, marks=pytest.mark.slow),
        pytest.param(signal.SIGTERM, signal.SIGTERM, False, marks=pytest.mark.slow),
        pytest.param(signal.SIGINT, signal.SIGINT, False, marks=pytest.mark.slow),
        pytest.param(signal.SIGTERM, signal.SIGTERM, True, marks=pytest.mark.slow),
        (signal.SIGINT, signal.SIGINT, True),
    ],
)
async def test_a_second_signal_during_the_graceful_shutdown_exits_130_at_once(
    tmp_path: Path, first: signal.Signals, second: signal.Signals, sigint_ignored: bool
) -> None:
    """A Ctrl+C and then a `kill`, or a signal to the whole process group and one to
    the PID: the second one ends the graceful shutdown, says so in one line, and
    exits 130 without a traceback (not the default action of SIGTERM, which would
    leave no word), also when the process was started with SIGINT ignored."""
    (tmp_path / "waiting.py").write_text(WAITING_APP)
    command = await start_command(
        "waiting:app", "--bind", "127.0.0.1:0", cwd=tmp_path, sigint_ignored=sigint_ignored
    )
    try:
        url = await command.wait_serving()
        host, port = url.removeprefix("http://").split(":")
        async with await trio.open_tcp_stream(host, int(port)) as stream:
            await stream.send_all(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\na")
            with trio.fail_after(5):
                await command.stderr.wait_for("request in flight")
                command.process.send_signal(first)
                await command.stderr.wait_for("shutting down gracefully")
                command.process.send_signal(second)
                returncode = await command.finish()
                # The app had not started its response: the forced stop answers 503.
                assert (await stream.receive_some()).startswith(b"HTTP/1.1 503 ")
    finally:
        await command.stop()
    assert returncode == 130, command.stderr.text
    assert "Traceback" not in command.stderr.text
    assert f"Received {second.name} again; exiting now" in command.stderr.text


async def test_serves_asgi2_app_and_exits_0_on_sigterm() -> None:
    command = await start_command("fx_asgi2:app", "--bind", "127.0.0.1:0")
    try:
        url = await command.wait_serving()
        async with httpx.AsyncClient(trust_env=False) as client:
            with trio.fail_after(5):
                response = await client.post(url + "/two", content=b"payload")
        assert response.status_code == 200
        assert response.json() == {"app": "asgi2", "path": "/two", "body": "payload"}
        command.process.send_signal(signal.SIGTERM)
        returncode = await command.finish()
    finally:
        await command.stop()
    assert returncode == 0, command.stderr.text
    assert "Received SIGTERM" in command.stderr.text
    assert "Traceback" not in command.stderr.text


async def test_factory_from_app_dir_is_served(tmp_path: Path) -> None:
    """Run from an unrelated directory: --app-dir makes the module importable, and
    --factory serves what create_app() returns (not create_app itself, which a
    missing --factory would try to serve as an ASGI 2 app)."""
    command = await start_command(
        "--factory",
        "fx_factory:create_app",
        "--app-dir",
        str(APPS_DIR),
        "--bind",
        "127.0.0.1:0",
        cwd=tmp_path,
    )
    try:
        url = await command.wait_serving()
        response = await get(url + "/made")
        assert response.status_code == 200
        assert response.json()["app"] == "factory"
        command.process.send_signal(signal.SIGINT)
        returncode = await command.finish()
    finally:
        await command.stop()
    assert returncode == 0, command.stderr.text


async def test_precedence_flag_over_environment_over_file_over_default(tmp_path: Path) -> None:
    """One server shows all four levels at once: ``headers`` is set by file, env and
    flag (the flag's wins, alone), ``root_path`` by file and env (env wins),
    ``include_server_header`` only by the file (the file beats the default), and
    ``include_date_header`` by nobody (the default)."""
    config = tmp_path / "trioserve.toml"
    config.write_text(
        'headers = ["x-from:file"]\nroot_path = "/file"\ninclude_server_header = false\n'
    )
    command = await start_command(
        "fx_asgi3:app",
        "--bind",
        "127.0.0.1:0",
        "--config",
        str(config),
        "--header",
        "x-from:cli",
        env={"TRIOSERVE_HEADER": "x-from:env", "TRIOSERVE_ROOT_PATH": "/env"},
    )
    try:
        url = await command.wait_serving()
        response = await get(url + "/p")
        command.process.send_signal(signal.SIGINT)
        returncode = await command.finish()
    finally:
        await command.stop()
    assert returncode == 0, command.stderr.text
    assert response.status_code == 200
    assert response.headers.get_list("x-from") == ["cli"]  # flag > env > file
    assert json.loads(response.content)["root_path"] == "/env"  # env > file
    assert "server" not in response.headers  # file > default
    assert "date" in response.headers  # default


async def test_lifespan_startup_failure_exits_3_with_one_line_naming_it() -> None:
    """The app answers lifespan.startup.failed: nothing is bound, and the one error
    line says that startup failed and why; no traceback, and no log line claiming
    the app does not support lifespan (it answered)."""
    command = await start_command("fx_lifespan_fails:app", "--bind", "127.0.0.1:0")
    try:
        returncode = await command.finish()
    finally:
        await command.stop()
    stderr = command.stderr.text
    assert returncode == 3, stderr
    assert "Traceback" not in stderr
    assert "Serving on" not in stderr
    [line] = error_lines(stderr)
    assert "cannot reach db:5432" in line
    problems = []
    if "startup" not in line.lower():
        problems.append("the error line does not say that lifespan startup failed")
    if "unsupported" in stderr:
        problems.append("a log line claims the app does not support lifespan")
    assert problems == [], stderr


async def test_address_in_use_exits_3_with_one_line() -> None:
    """The port is taken by a socket of this test; the command must say so in one
    line, not a traceback of OSError inside an exception group."""
    with socket.socket() as occupier:
        occupier.bind(("127.0.0.1", 0))
        occupier.listen()
        port = occupier.getsockname()[1]
        command = await start_command("fx_asgi3:app", "--bind", f"127.0.0.1:{port}")
        try:
            returncode = await command.finish()
        finally:
            await command.stop()
    stderr = command.stderr.text
    assert returncode == 3, stderr
    assert "Traceback" not in stderr
    [line] = error_lines(stderr)
    assert f"127.0.0.1:{port}" in line
    assert "address already in use" in line.lower()


async def test_uds_shorthand_serves_over_a_unix_socket(tmp_path: Path) -> None:
    """--uds PATH is the bind unix:PATH: the log names it, a client reaches the app
    through the socket file, and SIGTERM ends the server with exit 0 and removes
    the file."""
    socket_path = tmp_path / "trioserve.sock"
    command = await start_command("fx_asgi3:app", "--uds", str(socket_path))
    try:
        with trio.fail_after(5):
            await command.stderr.wait_for(rf"Serving on unix:{re.escape(str(socket_path))}")
        transport = httpx.AsyncHTTPTransport(uds=str(socket_path))
        async with httpx.AsyncClient(transport=transport, trust_env=False) as client:
            with trio.fail_after(5):
                response = await client.get("http://trioserve/over-uds")
        assert response.status_code == 200
        assert response.json()["path"] == "/over-uds"
        command.process.send_signal(signal.SIGTERM)
        returncode = await command.finish()
    finally:
        await command.stop()
    assert returncode == 0, command.stderr.text
    assert not socket_path.exists()


async def test_the_command_freezes_startup_objects_out_of_the_collector() -> None:
    """The CLI calls gc.freeze() once the app is loaded (see trioserve/_cli.py for
    the measurement): the served process reports a large frozen set. Without the
    call the count is 0."""
    command = await start_command("fx_gc:app", "--bind", "127.0.0.1:0", "--lifespan", "off")
    try:
        url = await command.wait_serving()
        response = await get(url + "/")
        command.process.send_signal(signal.SIGTERM)
        returncode = await command.finish()
    finally:
        await command.stop()
    assert returncode == 0, command.stderr.text
    # trio, h11, click and the app: tens of thousands of objects.
    assert int(response.text) > 10_000
