"""uvicorn's and Hypercorn's flags on the ``trioserve`` command line.

The table: every flag of uvicorn 0.55 and Hypercorn 0.18 (their ``--help``) is
listed, each flag called "the same" is a trioserve option, and
``docs/compatibility.md`` is what the table generates.

Parsing (the real command's ``make_context``, nothing invoked): each alias gives
the settings its trioserve flag gives, values that ask for what trioserve does
anyway change nothing, and a value is never mistaken for a flag.

Errors (``CliRunner``): every flag without a trioserve meaning, every refused
value and a missing value is one ``Error:`` line naming the flag and its server,
exit 2, no traceback; a bad value given to an alias is reported under the alias
as typed; an unknown flag is pointed at the nearest alias or flag; ``--help``
gives the aliases one line and lists none of them.

Real processes: uvicorn's and Hypercorn's command lines from their docs (HTTPS;
a socket handed over as descriptor 0; ``-k trio``; HTTPS next to an insecure
bind; a unix socket), with the program name changed, serve requests and exit 0
on SIGTERM; so does a line full of the flags users hit; ``--env-file`` gives the
app its variables, and without python-dotenv is one line.
"""

from __future__ import annotations

import os
import re
import socket
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import httpx
import pytest
import trio
import trustme
from _helpers import assert_one_line_error, free_port
from _pipes import clean_environment, running
from click.testing import CliRunner, Result

from trioserve._cli import cli
from trioserve._compat import FLAGS, HELP_LINE, compatibility_markdown

ROOT = Path(__file__).resolve().parent.parent
APPS_DIR = Path(__file__).parent / "fixtures" / "apps"
SERVING = r"Serving on (https?://127\.0\.0\.1:(\d+))"
#: Stops at loading the app (exit 3) should a check that must fail ever pass.
UNSERVED_APP = "fx_not_loaded:app"

#: ``uvicorn --help`` of uvicorn 0.55.
UVICORN_FLAGS = set(
    re.findall(
        r"\S+",
        """
        --host --port --uds --fd --reload --reload-dir --reload-include --reload-exclude
        --reload-delay --workers --loop --http --http2 --ws --ws-max-size --ws-max-queue
        --ws-ping-interval --ws-ping-timeout --ws-per-message-deflate --lifespan
        --interface --env-file --log-config --log-level --access-log --no-access-log
        --use-colors --no-use-colors --proxy-headers --no-proxy-headers --server-header
        --no-server-header --date-header --no-date-header --forwarded-allow-ips
        --root-path --limit-concurrency --backlog --limit-max-requests
        --limit-max-requests-jitter --timeout-keep-alive --timeout-graceful-shutdown
        --timeout-worker-healthcheck --ssl-keyfile --ssl-certfile --ssl-keyfile-password
        --ssl-version --ssl-cert-reqs --ssl-ca-certs --ssl-ciphers --header --version
        --app-dir --h11-max-incomplete-event-size --reset-contextvars --factory --help
        """,
    )
)
#: ``hypercorn --help`` of Hypercorn 0.18.
HYPERCORN_FLAGS = set(
    re.findall(
        r"\S+",
        """
        -h --help --access-log --access-logfile --access-logformat --backlog -b --bind
        --ca-certs --certfile --cert-reqs --ciphers -c --config -D --daemon --debug
        --error-log --error-logfile --log-file --graceful-timeout --read-timeout
        --max-requests --max-requests-jitter -g --group -k --worker-class --keep-alive
        --keyfile --keyfile-password --insecure-bind --log-config --log-level -p --pid
        --quic-bind --reload --root-path --server-name --statsd-host --statsd-prefix -m
        --umask -u --user --verify-mode --websocket-ping-interval -w --workers
        """,
    )
)


def trioserve_options() -> set[str]:
    names: set[str] = set()
    ctx = click.Context(cli, info_name="trioserve", **cli.context_settings)
    for param in cli.get_params(ctx):
        names.update(param.opts)
        names.update(param.secondary_opts)
    return names


def parsed(*args: str) -> dict[str, Any]:
    """The settings the real command reads from ``args`` (no environment)."""
    with cli.make_context("trioserve", [UNSERVED_APP, *args]) as ctx:
        return dict(ctx.params)


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, [UNSERVED_APP, *args], env={}, prog_name="trioserve")


# -- the table ----------------------------------------------------------------------------


def listed(server: str) -> set[str]:
    return {name for flag in FLAGS if flag.server == server for name in flag.shown.split("/")}


def test_every_uvicorn_and_hypercorn_flag_is_listed_once() -> None:
    assert listed("uvicorn") == UVICORN_FLAGS
    assert listed("Hypercorn") == HYPERCORN_FLAGS
    for server in ("uvicorn", "Hypercorn"):
        shown = [flag.shown for flag in FLAGS if flag.server == server]
        assert len(shown) == len(set(shown)), server


def test_flags_called_the_same_are_trioserve_options() -> None:
    own = trioserve_options()
    for flag in FLAGS:
        if flag.meaning.startswith("the same") and not flag.names:
            assert set(flag.shown.split("/")) <= own, flag.shown
        if flag.meaning.startswith("alias of `"):
            target = flag.meaning.split("`")[1].split()[0]
            assert target in own, flag.shown


def test_compatibility_page_is_up_to_date() -> None:
    committed = (ROOT / "docs" / "compatibility.md").read_text()
    assert committed == compatibility_markdown(), (
        "docs/compatibility.md is stale: run `python docs/gen_compat.py`"
    )


def test_compatibility_page_is_linked_from_the_nav_the_index_and_the_migration_pages() -> None:
    assert "compatibility.md" in (ROOT / "mkdocs.yml").read_text()
    for page in ("index.md", "coming-from-uvicorn.md", "coming-from-hypercorn.md"):
        assert "(compatibility.md)" in (ROOT / "docs" / page).read_text(), page


# -- aliases give the trioserve flag's settings --------------------------------------------


@pytest.mark.parametrize(
    ("alias", "native"),
    [
        (["--timeout-keep-alive", "5"], ["--keep-alive-timeout", "5"]),
        (["--timeout-keep-alive=5"], ["--keep-alive-timeout", "5"]),
        (["--timeout-graceful-shutdown", "7"], ["--graceful-timeout", "7"]),
        (["--timeout-worker-healthcheck", "9"], ["--worker-healthcheck-timeout", "9"]),
        (["--limit-max-requests", "100"], ["--max-requests", "100"]),
        (["--limit-max-requests-jitter", "10"], ["--max-requests-jitter", "10"]),
        (["--ssl-keyfile", "k.pem"], ["--keyfile", "k.pem"]),
        (["--ssl-certfile=./c.pem"], ["--certfile", "./c.pem"]),
        (["--ssl-keyfile-password", "pw"], ["--keyfile-password", "pw"]),
        (["--ssl-ca-certs", "ca.pem"], ["--ca-certs", "ca.pem"]),
        (["--ssl-ciphers", "ECDHE+AESGCM"], ["--ciphers", "ECDHE+AESGCM"]),
        (["--ssl-cert-reqs", "0"], ["--verify-mode", "CERT_NONE"]),
        (["--ssl-cert-reqs", "2"], ["--verify-mode", "CERT_REQUIRED"]),
        (["--cert-reqs", "1"], ["--verify-mode", "CERT_OPTIONAL"]),
        (["--h11-max-incomplete-event-size", "1000"], ["--h11-max-incomplete-size", "1000"]),
        (["--ws-max-size", "1024"], ["--websocket-max-message-size", "1024"]),
        (["--ws-ping-interval", "3"], ["--websocket-ping-interval", "3"]),
        (["--ws-ping-timeout", "4"], ["--websocket-ping-timeout", "4"]),
        (["--ws-per-message-deflate", "false"], ["--no-websocket-per-message-deflate"]),
        (["--ws-per-message-deflate", "True"], ["--websocket-per-message-deflate"]),
        (["--log-level", "trace"], ["--log-level", "DEBUG"]),
        (["--access-log=/var/log/a.log"], ["--access-logfile", "/var/log/a.log"]),
        (["--error-log", "e.log"], ["--error-logfile", "e.log"]),
        (["--log-file", "e.log"], ["--error-logfile", "e.log"]),
        (["--keep-alive", "5"], ["--keep-alive-timeout", "5"]),
        (["-m", "007"], ["--umask", "007"]),
        (["-m007"], ["--umask", "007"]),
        (["--ws", "wsproto"], ["--ws", "wsproto"]),
    ],
)
def test_alias_gives_the_settings_of_its_trioserve_flag(
    alias: list[str], native: list[str]
) -> None:
    assert parsed(*alias) == parsed(*native) != parsed()


@pytest.mark.parametrize(
    "args",
    [
        ["-k", "trio"],
        ["-ktrio"],
        ["--worker-class=trio"],
        ["--loop", "auto"],
        ["--http", "h11"],
        ["--http", "auto"],
        ["--interface", "asgi3"],
        ["--interface", "asgi2"],
        ["--no-use-colors"],
    ],
)
def test_flag_that_asks_for_what_trioserve_does_changes_nothing(args: list[str]) -> None:
    assert parsed(*args) == parsed()


def test_values_are_never_read_as_flags() -> None:
    params = parsed("--access-logformat", "-k asyncio", "--root-path", "--loop")
    assert params["access_log_format"] == "-k asyncio"
    assert params["root_path"] == "--loop"


def test_aliases_mix_with_trioserve_flags_and_the_last_one_wins() -> None:
    params = parsed("--keep-alive-timeout", "1", "--timeout-keep-alive", "2", "-b", "127.0.0.1:0")
    assert params["keep_alive_timeout"] == 2
    assert params["bind"] == ("127.0.0.1:0",)


# -- errors -------------------------------------------------------------------------------


REFUSED = [
    flag for flag in FLAGS if flag.meaning.startswith(("not supported yet", "not applicable"))
]


@pytest.mark.parametrize("flag", REFUSED, ids=[flag.shown for flag in REFUSED])
def test_flag_without_a_trioserve_meaning_is_one_line_naming_it(flag: Any) -> None:
    for name in flag.names:
        args = [name, "x"] if flag.takes_value else [name]
        line = assert_one_line_error(invoke(*args), 2, f"({flag.server})", flag.names[-1])
        verdict = "not supported by trioserve yet: " if "yet" in flag.meaning else "no meaning"
        assert verdict in line


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--loop", "uvloop"], ["--loop uvloop (uvicorn): ", "trio"]),
        (["--loop", "asyncio"], ["--loop asyncio (uvicorn): ", "anyio"]),
        (["-k", "asyncio"], ["--worker-class asyncio (Hypercorn): ", "trio"]),
        (["--worker-class", "uvloop"], ["--worker-class uvloop (Hypercorn): "]),
        (["--http", "httptools"], ["--http httptools (uvicorn): ", "h11"]),
        (["--ws", "websockets"], ["--ws websockets (uvicorn): ", "wsproto"]),
        (["--interface", "wsgi"], ["--interface wsgi (uvicorn): ", "a2wsgi"]),
        (["--loop", "fast"], ["--loop (uvicorn) must be one of auto", "'fast'"]),
        (["--ssl-cert-reqs", "3"], ["--ssl-cert-reqs (uvicorn) must be 0, 1 or 2", "'3'"]),
        (["--ws-per-message-deflate", "maybe"], ["must be a boolean", "'maybe'"]),
        (["--timeout-keep-alive"], ["option '--timeout-keep-alive' requires an argument"]),
    ],
)
def test_refused_value_or_missing_value_is_one_line(args: list[str], fragments: list[str]) -> None:
    assert_one_line_error(invoke(*args), 2, *fragments)


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["--timeout-keep-alive", "soon"], "--timeout-keep-alive must be a number, got 'soon'"),
        (["--timeout-keep-alive=soon"], "--timeout-keep-alive must be a number, got 'soon'"),
        (["--keep-alive", "soon"], "--keep-alive must be a number, got 'soon'"),
        (["--ws-max-size", "big"], "--ws-max-size must be an integer, got 'big'"),
        (["--log-level", "loud"], "--log-level must be one of DEBUG, INFO, WARNING, ERROR, "),
        # Checked by the configuration key, after parsing: still the alias's name.
        (["--timeout-keep-alive", "-5"], "--timeout-keep-alive must be a number of seconds > 0"),
        (["--limit-max-requests", "0"], "--limit-max-requests must be an integer >= 1, got 0"),
    ],
)
def test_bad_alias_value_is_reported_under_the_alias_typed(args: list[str], line: str) -> None:
    assert assert_one_line_error(invoke(*args), 2).startswith(f"Error: {line}")


def test_the_flag_typed_last_is_the_one_named() -> None:
    line = assert_one_line_error(
        invoke("--timeout-keep-alive", "5", "--keep-alive-timeout", "x"), 2
    )
    assert line == "Error: --keep-alive-timeout must be a number, got 'x'"


@pytest.mark.parametrize(
    ("typo", "hint"),
    [
        ("--timout-keep-alive", "'--timeout-keep-alive'"),
        ("--ssl-certfle", "'--ssl-certfile'"),
        ("--keep-alive-timout", "'--keep-alive-timeout'"),
    ],
)
def test_unknown_flag_suggests_the_nearest_alias_or_flag(typo: str, hint: str) -> None:
    line = assert_one_line_error(invoke(typo, "1"), 2)
    assert line == f"Error: no such option '{typo}' (did you mean {hint}?); see 'trioserve --help'"


def test_help_gives_the_aliases_one_line_and_lists_none() -> None:
    result = CliRunner().invoke(cli, ["--help"], prog_name="trioserve")
    assert result.exit_code == 0
    assert HELP_LINE in " ".join(result.stdout.split())
    own = trioserve_options()
    for flag in FLAGS:
        for name in flag.names:
            if name not in own:
                assert not re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", result.stdout), name


# -- real processes -----------------------------------------------------------------------


async def run_until_served(
    args: list[str], cwd: Path, *, verify: Any = False, env: dict[str, str] | None = None
) -> tuple[httpx.Response, str, str]:
    """Run ``python -m trioserve ARGS``, GET / once it serves, SIGTERM it; return the
    response and both outputs, after checking exit 0 and no traceback."""
    async with running(args, cwd, clean_environment(env or {}, APPS_DIR)) as command:
        url = await command.serving()
        async with httpx.AsyncClient(trust_env=False, verify=verify) as client:
            with trio.fail_after(5):
                response = await client.get(url + "/compat")
    return response, command.stdout.text, command.stderr.text


def tls_files(directory: Path) -> ssl.SSLContext:
    """``key.pem`` and ``cert.pem`` for 127.0.0.1 in ``directory``; returns a client
    context that trusts them."""
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    leaf.private_key_pem.write_to_path(str(directory / "key.pem"))
    leaf.cert_chain_pems[0].write_to_path(str(directory / "cert.pem"))
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    return client_context


async def test_uvicorn_https_command_line_from_its_docs_serves(tmp_path: Path) -> None:
    """uvicorn's docs: ``uvicorn example:app --port 5000 --ssl-keyfile=./key.pem
    --ssl-certfile=./cert.pem``; only the program, the app and the port differ."""
    client_context = tls_files(tmp_path)
    args = [
        "fx_asgi3:app",
        "--port",
        str(free_port()),
        "--ssl-keyfile=./key.pem",
        "--ssl-certfile=./cert.pem",
    ]
    response, _, stderr = await run_until_served(args, tmp_path, verify=client_context)
    assert re.search(r"Serving on https://127\.0\.0\.1:\d+", stderr)
    assert response.status_code == 200
    assert response.json()["path"] == "/compat"


async def test_hypercorn_command_line_from_its_docs_serves(tmp_path: Path) -> None:
    """Hypercorn's docs: ``hypercorn --worker-class trio module:trio_app``, with a
    bind on port 0 added."""
    args = ["--worker-class", "trio", "fx_asgi3:app", "--bind", "127.0.0.1:0"]
    response, _, _ = await run_until_served(args, tmp_path)
    assert response.json()["app"] == "asgi3"


async def test_uvicorn_socket_handover_command_line_from_its_docs_serves(tmp_path: Path) -> None:
    """uvicorn's docs (running under Supervisor or Circus, which hand over a bound
    socket): ``uvicorn --fd 0 example:App``; here the socket on descriptor 0 is
    one the test bound to a free loopback port."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        args = ["--fd", "0", "fx_asgi3:app"]
        async with (
            running(args, tmp_path, clean_environment({}, APPS_DIR), stdin=listener.fileno()),
            httpx.AsyncClient(trust_env=False) as client,
        ):
            with trio.fail_after(10):
                response = await client.get(f"http://127.0.0.1:{port}/handed-over")
    assert response.json()["path"] == "/handed-over"


async def test_hypercorn_https_with_insecure_bind_command_line_from_its_docs_serves(
    tmp_path: Path,
) -> None:
    """Hypercorn's docs (HTTP to HTTPS redirects): ``hypercorn --certfile cert.pem
    --keyfile key.pem --bind localhost:443 --insecure-bind localhost:80 module:app``,
    with loopback port 0 for both binds: HTTPS on one, plain HTTP on the other."""
    client_context = tls_files(tmp_path)
    args = [
        "--certfile",
        "cert.pem",
        "--keyfile",
        "key.pem",
        "--bind",
        "127.0.0.1:0",
        "--insecure-bind",
        "127.0.0.1:0",
        "fx_asgi3:app",
    ]
    async with running(args, tmp_path, clean_environment({}, APPS_DIR)) as command:
        secure = await command.serving("https")
        plain = await command.serving("http")
        with trio.fail_after(10):
            async with httpx.AsyncClient(trust_env=False, verify=client_context) as client:
                over_tls = await client.get(secure + "/secure")
            async with httpx.AsyncClient(trust_env=False) as client:
                over_http = await client.get(plain + "/plain")
    assert over_tls.json()["path"] == "/secure"
    assert over_http.json()["path"] == "/plain"


async def test_hypercorn_unix_socket_command_line_from_its_docs_serves(tmp_path: Path) -> None:
    """Hypercorn's docs (binds): ``hypercorn --bind unix:/tmp/socket.sock``, with the
    socket in the test's directory and the app added."""
    path = tmp_path / "socket.sock"
    args = ["--bind", f"unix:{path}", "fx_asgi3:app"]
    async with running(args, tmp_path, clean_environment({}, APPS_DIR)) as command:
        with trio.fail_after(10):
            await command.stderr.wait_for(rf"Serving on unix:{re.escape(str(path))}")
            transport = httpx.AsyncHTTPTransport(uds=str(path))
            async with httpx.AsyncClient(transport=transport, trust_env=False) as client:
                response = await client.get("http://trioserve/over-unix")
    assert response.json()["path"] == "/over-unix"


async def test_command_line_full_of_uvicorn_and_hypercorn_flags_serves(tmp_path: Path) -> None:
    """The flags users hit, mixed: the access log goes to stdout (``--access-log``),
    the root path is applied, and nothing is refused."""
    args = [
        "fx_asgi3:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(free_port()),
        "--timeout-keep-alive",
        "5",
        "--timeout-graceful-shutdown",
        "10",
        "--limit-max-requests",
        "1000",
        "--limit-concurrency",
        "100",
        "--access-log",
        "--log-level",
        "trace",
        "--loop",
        "auto",
        "--http",
        "h11",
        "--ws-per-message-deflate",
        "false",
        "--root-path",
        "/api",
        "-k",
        "trio",
        "--keep-alive",
        "5",
        "--graceful-timeout",
        "10",
    ]
    response, stdout, _ = await run_until_served(args, tmp_path)
    assert response.json()["root_path"] == "/api"
    assert re.search(r'"GET \S*/compat HTTP/1\.1" 200', stdout), stdout


def test_refused_flag_in_a_real_process_is_one_line_and_exit_2() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "trioserve", "fx_asgi3:app", "--loop", "uvloop"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=APPS_DIR,
    )
    assert completed.returncode == 2
    assert completed.stdout == ""
    assert completed.stderr.splitlines() == [
        "Error: --loop uvloop (uvicorn): trioserve runs apps on trio, never on an asyncio "
        "loop; apps on anyio (Starlette, FastAPI) run unchanged. Drop the flag"
    ]


ENV_APP = """
import os


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = (os.environ.get("GREETING", "-") + " " + os.environ.get("KEPT", "-")).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})
"""


async def test_env_file_gives_the_app_its_variables_and_set_ones_win(tmp_path: Path) -> None:
    pytest.importorskip("dotenv")
    (tmp_path / "fx_env.py").write_text(ENV_APP)
    (tmp_path / ".env").write_text("GREETING=hello\nKEPT=from-file\n")
    args = ["fx_env:app", "--env-file", ".env", "--bind", "127.0.0.1:0"]
    response, _, _ = await run_until_served(args, tmp_path, env={"KEPT": "from-shell"})
    assert response.text == "hello from-shell"


def test_trioserve_variable_in_an_env_file_is_named_as_not_a_setting(tmp_path: Path) -> None:
    """The file is loaded after the command line is read (as uvicorn does), so a
    ``TRIOSERVE_*`` line in it cannot configure trioserve: a warning says so rather
    than a setting being dropped without a word."""
    pytest.importorskip("dotenv")
    env_file = tmp_path / "app.env"
    env_file.write_text("TRIOSERVE_PORT=9999\nGREETING=hello\n")
    # A bad value read after the files stops the command before anything serves.
    args = ["fx_asgi3:app", "--env-file", str(env_file), "--workers", "0"]
    # None: unset during the run and removed afterwards, as the file sets them.
    isolated: dict[str, str | None] = {"TRIOSERVE_PORT": None, "GREETING": None}
    result = CliRunner().invoke(cli, args, env=isolated, prog_name="trioserve")
    assert "TRIOSERVE_PORT" not in os.environ
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines()[0] == (
        f"Warning: --env-file {env_file}: TRIOSERVE_PORT reach the app only; trioserve "
        "reads its settings from flags, the environment and --config"
    )


def test_env_file_that_does_not_exist_is_one_line(tmp_path: Path) -> None:
    pytest.importorskip("dotenv")
    assert_one_line_error(
        invoke("--env-file", str(tmp_path / "missing.env")),
        2,
        "--env-file (uvicorn)",
        "no such file",
    )


def test_env_file_without_python_dotenv_is_one_line(tmp_path: Path) -> None:
    """Run where python-dotenv cannot be imported (``sys.modules`` entry ``None``,
    Python's own way of making an import fail)."""
    (tmp_path / ".env").write_text("GREETING=hello\n")
    code = "import sys; sys.modules['dotenv'] = None; from trioserve._cli import main; main()"
    completed = subprocess.run(
        [sys.executable, "-c", code, "fx_asgi3:app", "--env-file", ".env"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
    )
    assert completed.returncode == 2
    assert completed.stderr.splitlines() == [
        "Error: --env-file (uvicorn) needs python-dotenv: pip install python-dotenv"
    ]
