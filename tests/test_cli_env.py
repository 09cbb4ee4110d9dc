"""The command's environment variables and its access log default, through the real
``trioserve`` command.

Variables: every option is read from ``TRIOSERVE_`` and its long flag name (the
table is checked against the command, and served requests show the variables
took effect, ``TRIOSERVE_APP`` included); booleans take 1/0, true/false, yes/no;
a bad value names the variable; an unknown ``TRIOSERVE_*`` variable (the old
key-named spelling too) is one line with the nearest name, exit 2, while
``--help`` still works.

Usage errors (``CliRunner`` on the command itself): an unknown flag, a missing
or extra argument and a badly typed value are each one ``Error:`` line, exit 2,
naming the flag as typed or the variable, with the nearest flag for a typo.

Access log: on by default, on stdout, when run as a command; ``--no-access-log``
and ``TRIOSERVE_ACCESS_LOG=0`` turn it off, also when the config file sets
``accesslog``; the file's ``accesslog`` beats the default and a flag beats the
file. Each case serves one request in a subprocess and reads stdout (and the log
file) after the process has exited, so a missing line is really missing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click
import httpx
import pytest
import trio
from _helpers import assert_one_line_error
from _pipes import clean_environment, running
from click.testing import CliRunner, Result

from trioserve._cli import cli

APPS_DIR = Path(__file__).parent / "fixtures" / "apps"
SERVING = r"Serving on (http://127\.0\.0\.1:\d+)"
ACCESS_LINE = r'"GET /logged HTTP/1.1" 200'


#: The CliRunner tests expect the command to stop before serving; should it not,
#: it stops at loading this app, which does not exist (exit 3).
UNSERVED_APP = "fx_not_loaded:app"


@pytest.fixture(autouse=True)
def no_outer_trioserve_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CliRunner tests run in this process: its own TRIOSERVE_* variables, if
    any, must not count."""
    for name in list(os.environ):
        if name.startswith("TRIOSERVE_"):
            monkeypatch.delenv(name)


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env=env or {}, prog_name="trioserve")


def run_command(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``python -m trioserve ARGS`` that is expected to stop on its own."""
    return subprocess.run(
        [sys.executable, "-m", "trioserve", *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=APPS_DIR,
        env=clean_environment(env, APPS_DIR),
    )


async def serve_one_request(
    args: list[str], env: dict[str, str], cwd: Path = APPS_DIR
) -> tuple[httpx.Response, str, str]:
    """Run the command, GET /logged once it serves, SIGTERM it and wait for exit 0;
    return the response, all of stdout and all of stderr."""
    async with running(args, cwd, clean_environment(env, APPS_DIR)) as command:
        url = await command.serving("http")
        async with httpx.AsyncClient(trust_env=False) as client:
            with trio.fail_after(5):
                response = await client.get(url + "/logged")
    return response, command.stdout.text, command.stderr.text


# -- the naming scheme ---------------------------------------------------------------------


def test_every_option_is_read_from_trioserve_and_its_long_flag_name() -> None:
    ctx = click.Context(cli, info_name="trioserve", **cli.context_settings)
    for param in cli.get_params(ctx):
        if isinstance(param, click.Argument):
            assert param.envvar == "TRIOSERVE_APP"
        elif param.expose_value:
            long = next(name for name in param.opts if name.startswith("--"))
            assert param.envvar == "TRIOSERVE_" + long[2:].upper().replace("-", "_"), long
        else:  # --help and --version are actions, not settings
            assert param.envvar is None, param.opts


async def test_variables_configure_the_served_app() -> None:
    """The app, the bind, a string, a repeated option (headers, one a line, values
    with spaces), a switch and a choice, all from variables; no argument at all."""
    env = {
        "TRIOSERVE_APP": "fx_asgi3:app",
        "TRIOSERVE_BIND": "127.0.0.1:0",
        "TRIOSERVE_ROOT_PATH": "/api",
        "TRIOSERVE_HEADER": "x-one: a b\nx-two: c, d\n",
        "TRIOSERVE_SERVER_HEADER": "no",
        "TRIOSERVE_LOG_LEVEL": "debug",
    }
    response, _, _ = await serve_one_request([], env)
    assert response.json()["root_path"] == "/api"
    assert response.headers["x-one"] == "a b"
    assert response.headers["x-two"] == "c, d"
    assert "server" not in response.headers


@pytest.mark.parametrize(
    ("text", "value"),
    [("1", True), ("true", True), ("yes", True), ("0", False), ("false", False), ("no", False)],
)
def test_boolean_variables_take_1_0_true_false_yes_no(text: str, value: bool) -> None:
    for variable, key in [
        ("TRIOSERVE_PROXY_HEADERS", "proxy_headers"),
        ("TRIOSERVE_ACCESS_LOG", "access_log"),
        ("TRIOSERVE_FACTORY", "factory"),
    ]:
        with (
            CliRunner(env={variable: text}).isolation(),
            cli.make_context("trioserve", ["fx_not_loaded:app"]) as ctx,
        ):
            assert ctx.params[key] is value, variable


@pytest.mark.parametrize(
    ("variable", "text", "key", "values"),
    [
        ("TRIOSERVE_BIND", "127.0.0.1:1 127.0.0.1:2", "bind", ("127.0.0.1:1", "127.0.0.1:2")),
        ("TRIOSERVE_RELOAD_DIR", "/srv/a:/srv/b", "reload_dirs", ("/srv/a", "/srv/b")),
        ("TRIOSERVE_HEADER", "x-a: 1 2\n\nx-b: 3, 4\n", "headers", ("x-a: 1 2", "x-b: 3, 4")),
    ],
)
def test_repeated_flags_take_several_values_from_one_variable(
    variable: str, text: str, key: str, values: tuple[str, ...]
) -> None:
    """Split by spaces, by ``:`` for directories, and one a line for headers."""
    with (
        CliRunner(env={variable: text}).isolation(),
        cli.make_context("trioserve", ["fx_not_loaded:app"]) as ctx,
    ):
        assert ctx.params[key] == values


def test_an_empty_variable_counts_as_unset() -> None:
    with (
        CliRunner(env={"TRIOSERVE_KEEP_ALIVE_TIMEOUT": ""}).isolation(),
        cli.make_context("trioserve", ["fx_not_loaded:app"]) as ctx,
    ):
        assert ctx.params["keep_alive_timeout"] is None


def test_an_empty_unknown_variable_counts_as_unset_too() -> None:
    with (
        CliRunner(env={"TRIOSERVE_NOT_A_FLAG": ""}).isolation(),
        cli.make_context("trioserve", ["fx_not_loaded:app"]) as ctx,
    ):
        assert ctx.params["app"] == "fx_not_loaded:app"


# -- errors ----------------------------------------------------------------------------


def assert_one_error_line(completed: subprocess.CompletedProcess[str], line: str) -> None:
    assert completed.returncode == 2, completed.stderr
    assert completed.stdout == ""
    assert completed.stderr.splitlines() == [line]


@pytest.mark.parametrize(
    ("variable", "hint"),
    [
        # Named after the configuration key rather than the flag: the hint is the
        # flag's variable, even where another name is nearer in spelling.
        ("TRIOSERVE_LOGLEVEL", " (did you mean TRIOSERVE_LOG_LEVEL?)"),
        ("TRIOSERVE_HEADERS", " (did you mean TRIOSERVE_HEADER?)"),
        ("TRIOSERVE_ACCESSLOG", " (did you mean TRIOSERVE_ACCESS_LOGFILE?)"),
        ("TRIOSERVE_CONFIG_SOURCE", " (did you mean TRIOSERVE_CONFIG?)"),
        # Named after a uvicorn or Hypercorn flag that trioserve takes as an alias.
        ("TRIOSERVE_TIMEOUT_KEEP_ALIVE", " (did you mean TRIOSERVE_KEEP_ALIVE_TIMEOUT?)"),
        ("TRIOSERVE_LIMIT_MAX_REQUESTS", " (did you mean TRIOSERVE_MAX_REQUESTS?)"),
        ("TRIOSERVE_SSL_KEYFILE", " (did you mean TRIOSERVE_KEYFILE?)"),
        ("TRIOSERVE_KEEPALIVE_TIMEOUT", " (did you mean TRIOSERVE_KEEP_ALIVE_TIMEOUT?)"),
        ("TRIOSERVE_XYZZY", ""),
    ],
)
def test_unknown_trioserve_variable_is_one_line_with_the_nearest_name(
    variable: str, hint: str
) -> None:
    completed = run_command(["fx_asgi3:app"], {variable: "1"})
    assert_one_error_line(
        completed, f"Error: unknown environment variable {variable}{hint}; see 'trioserve --help'"
    )


def test_help_works_with_an_unknown_variable_and_explains_the_scheme() -> None:
    completed = run_command(["--help"], {"TRIOSERVE_LOGLEVEL": "debug"})
    assert completed.returncode == 0, completed.stderr
    assert "TRIOSERVE_LOG_LEVEL" in completed.stdout
    assert "unknown TRIOSERVE_* variable is an error" in " ".join(completed.stdout.split())


@pytest.mark.parametrize(
    ("env", "line"),
    [
        (
            {"TRIOSERVE_KEEP_ALIVE_TIMEOUT": "abc"},
            "Error: TRIOSERVE_KEEP_ALIVE_TIMEOUT must be a number, got 'abc'",
        ),
        (
            {"TRIOSERVE_RELOAD": "maybe"},
            "Error: TRIOSERVE_RELOAD must be a boolean (1/0, true/false, yes/no), got 'maybe'",
        ),
        (
            {"TRIOSERVE_WORKERS": "0"},
            "Error: TRIOSERVE_WORKERS must be an integer >= 1, got 0",
        ),
    ],
)
def test_bad_variable_value_is_one_line_naming_the_variable(env: dict[str, str], line: str) -> None:
    assert_one_error_line(run_command(["fx_asgi3:app"], env), line)


def test_missing_app_names_the_variable_too() -> None:
    completed = run_command([], {})
    assert_one_error_line(
        completed,
        "Error: no application: give APP ('module:attribute') or TRIOSERVE_APP; "
        "see 'trioserve --help'",
    )


# -- usage errors in the command (CliRunner) -----------------------------------------------


def test_unknown_flag_is_one_line_with_the_nearest_flag() -> None:
    """--worker-type is no flag of trioserve, uvicorn or Hypercorn."""
    line = assert_one_line_error(invoke(UNSERVED_APP, "--worker-type", "trio"), 2)
    assert line == (
        "Error: no such option '--worker-type' (did you mean '--workers'?); see 'trioserve --help'"
    )


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["--port"], "option '--port' requires an argument; see 'trioserve --help'"),
        (["extra"], "got unexpected extra argument (extra); see 'trioserve --help'"),
        (["--factory=yes"], "option '--factory' does not take a value; see 'trioserve --help'"),
    ],
)
def test_malformed_command_line_is_one_line(args: list[str], line: str) -> None:
    assert assert_one_line_error(invoke(UNSERVED_APP, *args), 2) == f"Error: {line}"


@pytest.mark.parametrize(
    ("args", "env", "line"),
    [
        (["--keep-alive-timeout", "soon"], {}, "--keep-alive-timeout must be a number, got 'soon'"),
        (
            [],
            {"TRIOSERVE_KEEP_ALIVE_TIMEOUT": "soon"},
            "TRIOSERVE_KEEP_ALIVE_TIMEOUT must be a number, got 'soon'",
        ),
        (
            ["--lifespan", "sometimes"],
            {},
            "--lifespan must be one of auto, on, off, got 'sometimes'",
        ),
        (
            [],
            {"TRIOSERVE_CANCEL_ON_DISCONNECT": "maybe"},
            "TRIOSERVE_CANCEL_ON_DISCONNECT must be one of safe, always, never, got 'maybe'",
        ),
        (["--port", "eighty"], {}, "--port must be an integer, got 'eighty'"),
        (["-w", "four"], {}, "-w must be an integer, got 'four'"),
        (["-wfour"], {}, "-w must be an integer, got 'four'"),
        (
            [],
            {"TRIOSERVE_PROXY_HEADERS": "sometimes"},
            "TRIOSERVE_PROXY_HEADERS must be a boolean (1/0, true/false, yes/no), got 'sometimes'",
        ),
        (
            ["--reload-dir", __file__],
            {},
            f"--reload-dir {__file__!r}: directory {__file__!r} is a file",
        ),
    ],
)
def test_badly_typed_flag_or_variable_is_one_line_naming_it(
    args: list[str], env: dict[str, str], line: str
) -> None:
    assert assert_one_line_error(invoke(UNSERVED_APP, *args, env=env), 2, line) == f"Error: {line}"


# -- the access log ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "env", "file_setting", "on_stdout", "in_file"),
    [
        pytest.param([], {}, None, True, False, id="on-by-default"),
        pytest.param(["--no-access-log"], {}, None, False, False, id="no-access-log"),
        pytest.param([], {"TRIOSERVE_ACCESS_LOG": "0"}, None, False, False, id="variable-off"),
        pytest.param([], {}, "FILE", False, True, id="file-beats-default"),
        pytest.param(["--no-access-log"], {}, "FILE", False, False, id="flag-off-beats-file"),
        pytest.param(
            [], {"TRIOSERVE_ACCESS_LOG": "false"}, "FILE", False, False, id="variable-beats-file"
        ),
        pytest.param(["--access-logfile", "-"], {}, "FILE", True, False, id="flag-path-beats-file"),
        pytest.param([], {}, "", False, False, id="file-empty-is-off"),
        pytest.param(["--access-log"], {}, "", True, False, id="uvicorn-switch-beats-file-off"),
        pytest.param(
            ["--access-logfile", "-"],
            {"TRIOSERVE_ACCESS_LOG": "no"},
            None,
            True,
            False,
            id="flag-beats-variable",
        ),
    ],
)
async def test_access_log_default_flags_variable_and_config_file(
    tmp_path: Path,
    args: list[str],
    env: dict[str, str],
    file_setting: str | None,
    on_stdout: bool,
    in_file: bool,
) -> None:
    log_file = tmp_path / "access.log"
    command = ["fx_asgi3:app", "--bind", "127.0.0.1:0", *args]
    if file_setting is not None:
        config = tmp_path / "trioserve.toml"
        target = str(log_file) if file_setting == "FILE" else file_setting
        config.write_text(f"accesslog = {target!r}\n".replace("'", '"'))
        command += ["--config", str(config)]
    response, stdout, _ = await serve_one_request(command, env)
    assert response.status_code == 200
    written = log_file.read_text() if log_file.exists() else ""
    assert (ACCESS_LINE in stdout) is on_stdout, stdout
    assert (ACCESS_LINE in written) is in_file, written
