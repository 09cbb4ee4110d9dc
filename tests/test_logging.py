"""The access log and the error log: what the real server writes for real requests.

Covers: the default access line is shaped like uvicorn's, and the common log
format is one setting away; each Hypercorn atom of
``ALL_ATOMS`` gives the right value (request line, status, bytes sent, referer, user
agent, durations, method, path, query, protocol, request and response headers,
environment variables, the peer address over a real socket); the line is written
when the response completes, with the bytes actually sent; client-controlled data
cannot inject CR/LF, ANSI escapes, C1 controls or quotes into a line; a client
hang-up logs 499 and an app error 500; ``accesslog=None`` writes nothing; and
``configure_logging`` (the CLI's setup) with log files, JSON and TOML dictConfig
files and an ``.ini`` fileConfig file, and a ``ConfigError`` for a broken one.

Requests go through ``open_test_client`` (in-memory streams) or, where the client
address matters, ``open_test_server`` with a raw socket bounded by ``fail_after``.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import trio
from _pipes import clean_environment, running

from trioserve import Config, ConfigError
from trioserve._logging import (
    COMMON_LOG_FORMAT,
    DEFAULT_ACCESS_LOG_FORMAT,
    AccessLogAtoms,
    configure_logging,
)
from trioserve.testing import open_test_client, open_test_server

ACCESS = "trioserve.access"
#: The access log on, in the common log format (whose last atoms are the status
#: and the bytes sent).
CLF = Config(accesslog="-", access_log_format=COMMON_LOG_FORMAT)
ERROR = "trioserve.error"
CLF_TIME = r"\[\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4}\]"
ALL_ATOMS = [
    "h",
    "l",
    "u",
    "t",
    "r",
    "s",
    "st",
    "b",
    "B",
    "f",
    "a",
    "T",
    "D",
    "M",
    "L",
    "m",
    "U",
    "q",
    "H",
    "{X-Request-Id}i",
    "{x-upstream}o",
    "{x-absent}i",
    "{TRIOSERVE_TEST_DEPLOY}e",
]


@pytest.fixture(autouse=True)
def restore_loggers() -> Iterator[None]:
    """configure_logging and the logconfig files change global logger state (the
    fileConfig one even the root logger's handlers): put it back after each test."""
    names = ["", ERROR, ACCESS]
    saved = {}
    for name in names:
        logger = logging.getLogger(name)
        saved[name] = (list(logger.handlers), logger.level, logger.propagate, logger.disabled)
    yield
    for name, (handlers, level, propagate, disabled) in saved.items():
        logger = logging.getLogger(name)
        for handler in logger.handlers:
            if handler not in handlers:
                handler.close()
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate
        logger.disabled = disabled


@pytest.fixture
def access_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger=ACCESS)
    caplog.set_level(logging.DEBUG, logger=ERROR)
    return caplog


def access_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == ACCESS]


def error_records(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == ERROR and r.levelno >= logging.ERROR
    ]


def response_app(status: int = 200, body: bytes = b"", headers: list[Any] | None = None) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    *([(b"content-length", b"%d" % len(body))] if body else []),
                    *(headers or []),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return app


def parse_atoms(line: str) -> dict[str, str]:
    """Split a line written with the tab-separated ``atom=%(atom)s`` format."""
    fields = dict(field.split("=", 1) for field in line.split("\t"))
    assert list(fields) == ALL_ATOMS
    return fields


# -- format ---------------------------------------------------------------------------


async def test_default_format_is_shaped_like_uvicorns(
    access_log: pytest.LogCaptureFixture,
) -> None:
    async with open_test_client(response_app(body=b"hello world"), CLF) as client:
        response = await client.get("/greet?name=ada")
    assert response.body == b"hello world"
    [line] = access_lines(access_log)
    assert re.fullmatch(rf'- - - {CLF_TIME} "GET /greet\?name=ada HTTP/1\.1" 200 11', line), line
    async with open_test_client(response_app(body=b"hello"), Config(accesslog="-")) as client:
        await client.get("/greet?name=ada")
    # The in-memory client has no address, hence "-".
    assert access_lines(access_log)[1] == '- - "GET /greet?name=ada HTTP/1.1" 200 OK'
    assert Config().access_log_format == DEFAULT_ACCESS_LOG_FORMAT


async def test_request_line_shows_the_root_path_once(
    access_log: pytest.LogCaptureFixture,
) -> None:
    """``root_path`` already prefixes the scope's ``path``; the request line must
    not add it a second time."""
    config = Config(accesslog="-", root_path="/api")
    async with open_test_client(response_app(body=b"x"), config) as client:
        assert (await client.get("/items?a=1")).status == 200
    [line] = access_lines(access_log)
    assert '"GET /api/items?a=1 HTTP/1.1"' in line


async def test_every_atom_gives_its_value(
    access_log: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """All the atoms of ``ALL_ATOMS`` in one format, over a real socket so that ``h`` is the
    real peer address; the app takes 20 ms so that the durations are measurable."""
    monkeypatch.setenv("TRIOSERVE_TEST_DEPLOY", "blue")
    log_format = "\t".join(f"{atom}=%({atom})s" for atom in ALL_ATOMS)
    body = b"created!"

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await trio.sleep(0.02)
        await send(
            {
                "type": "http.response.start",
                "status": 201,
                "headers": [(b"content-length", b"8"), (b"X-Upstream", b"cache-hit")],
            }
        )
        await send({"type": "http.response.body", "body": body})

    config = Config(accesslog="-", access_log_format=log_format)
    async with open_test_server(app, config) as server:
        with trio.fail_after(5):
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            client_port = stream.socket.getsockname()[1]
            await stream.send_all(
                b"GET /items/42?sort=asc&page=2 HTTP/1.1\r\n"
                b"Host: example.test\r\n"
                b"Referer: https://ref.example/page\r\n"
                b"User-Agent: test-agent/1.0\r\n"
                b"X-Request-Id: abc-123\r\n"
                b"Connection: close\r\n\r\n"
            )
            received = b""
            while data := await stream.receive_some():
                received += data
            await stream.aclose()
    assert received.startswith(b"HTTP/1.1 201 ")
    assert received.endswith(b"\r\n\r\n" + body)
    [line] = access_lines(access_log)
    atoms = parse_atoms(line)
    assert atoms["h"] == f"127.0.0.1:{client_port}"
    assert atoms["l"] == "-"
    assert atoms["u"] == "-"
    assert re.fullmatch(CLF_TIME, atoms["t"])
    assert atoms["r"] == "GET /items/42?sort=asc&page=2 HTTP/1.1"
    assert atoms["s"] == "201"
    assert atoms["st"] == "Created"
    assert atoms["b"] == atoms["B"] == str(len(body))
    assert atoms["f"] == "https://ref.example/page"
    assert atoms["a"] == "test-agent/1.0"
    assert atoms["m"] == "GET"
    assert atoms["U"] == "/items/42"
    assert atoms["q"] == "sort=asc&page=2"
    assert atoms["H"] == "HTTP/1.1"
    assert atoms["{X-Request-Id}i"] == "abc-123"  # header names match in any case
    assert atoms["{x-upstream}o"] == "cache-hit"
    assert atoms["{x-absent}i"] == "-"
    assert atoms["{TRIOSERVE_TEST_DEPLOY}e"] == "blue"
    # Durations: T whole seconds, D microseconds, L seconds with 6 decimals, all of
    # the same measurement, which covers the app's 20 ms.
    assert re.fullmatch(r"\d+", atoms["T"])
    assert re.fullmatch(r"\d+", atoms["D"])
    assert re.fullmatch(r"\d+\.\d{6}", atoms["L"])
    seconds = float(atoms["L"])
    assert int(atoms["T"]) == int(seconds)
    assert abs(int(atoms["D"]) - seconds * 1_000_000) <= 1
    assert abs(int(atoms["M"]) - int(atoms["D"]) // 1000) <= 1
    assert 20_000 <= int(atoms["D"]) < 5_000_000


async def test_bytes_sent_is_the_body_length_of_a_streamed_response(
    access_log: pytest.LogCaptureFixture,
) -> None:
    """Three body messages (one empty) without content-length: chunked on the wire,
    but ``b`` counts body bytes, not the chunk framing or the head."""
    chunks = [b"a" * 10, b"", b"b" * 25]

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for chunk in chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async with open_test_client(app, CLF) as client:
        response = await client.get("/stream")
    assert response.header("transfer-encoding") == "chunked"
    assert len(response.body) == 35
    [line] = access_lines(access_log)
    assert line.endswith('"GET /stream HTTP/1.1" 200 35')


async def test_empty_body_logs_dash_for_bytes(access_log: pytest.LogCaptureFixture) -> None:
    async with open_test_client(response_app(status=204), CLF) as client:
        response = await client.get("/empty")
    assert response.status == 204
    [line] = access_lines(access_log)
    assert line.endswith('"GET /empty HTTP/1.1" 204 -')


async def test_line_is_written_when_the_response_completes(
    access_log: pytest.LogCaptureFixture,
) -> None:
    """While the body is still streaming there is no line yet; afterwards the line
    carries every byte sent (a server logging at ``http.response.start`` would
    write the line early, with 0 bytes)."""
    first_part_sent = trio.Event()
    finish = trio.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"x" * 100, "more_body": True})
        first_part_sent.set()
        await finish.wait()
        await send({"type": "http.response.body", "body": b"y" * 50})

    with trio.fail_after(5):
        async with (
            open_test_client(app, CLF) as client,
            trio.open_nursery() as nursery,
        ):
            responses = []

            async def get() -> None:
                responses.append(await client.get("/slow"))

            nursery.start_soon(get)
            await first_part_sent.wait()
            assert access_lines(access_log) == []
            finish.set()
    assert len(responses[0].body) == 150
    [line] = access_lines(access_log)
    assert line.endswith('"GET /slow HTTP/1.1" 200 150')


# -- no log injection ---------------------------------------------------------------


async def test_crlf_and_ansi_escape_in_path_are_escaped(
    access_log: pytest.LogCaptureFixture,
) -> None:
    """%0d%0a and %1b are decoded into the scope path; written raw they would end
    the line and forge a second one, and recolour the terminal of whoever tails
    the log."""
    forged = '\r\n127.0.0.1 - - [01/Jan/2000:00:00:00 +0000] "GET /admin HTTP/1.1" 200 1\x1b[31m'
    target = "/a" + quote(forged, safe="/:[]+")
    assert "%0D%0A" in target
    assert "%1B" in target
    async with open_test_client(response_app(body=b"ok"), CLF) as client:
        raw = await client.raw(
            f"GET {target} HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n".encode()
        )
    assert raw.startswith(b"HTTP/1.1 200 ")
    [line] = access_lines(access_log)
    assert len(line.splitlines()) == 1
    for char in "\r\n\x1b":
        assert char not in line
    assert (
        '"GET /a\\x0d\\x0a127.0.0.1 - - [01/Jan/2000:00:00:00 +0000] '
        '\\"GET /admin HTTP/1.1\\" 200 1\\x1b[31m HTTP/1.1" 200 2'
    ) in line


async def test_control_bytes_obs_text_and_quotes_in_headers_are_escaped(
    access_log: pytest.LogCaptureFixture,
) -> None:
    """A user agent with ESC, NEL (0x85, a line break to many tools) and Latin-1,
    and a referer that tries to close its quoted field early: escaped, the line
    stays one line with exactly the six quotes of its format."""
    log_format = '%(h)s "%(r)s" %(s)s "%(f)s" "%(a)s" %({x-note}i)s'
    request = (
        b"GET /h HTTP/1.1\r\n"
        b"host: t\r\n"
        b'referer: x" 200 999 "forged\r\n'
        b"user-agent: evil\x1b[2Jagent\x85caf\xe9\r\n"
        b"x-note: back\\slash\x07bell\r\n"
        b"connection: close\r\n\r\n"
    )
    config = Config(accesslog="-", access_log_format=log_format)
    async with open_test_client(response_app(body=b"ok"), config) as client:
        raw = await client.raw(request)
    assert raw.startswith(b"HTTP/1.1 200 ")
    [line] = access_lines(access_log)
    assert len(line.splitlines()) == 1
    for char in "\r\n\x1b\x85\x07":
        assert char not in line
    assert '"x\\" 200 999 \\"forged"' in line
    assert '"evil\\x1b[2Jagent\\x85caf\xe9"' in line
    assert line.endswith(" back\\\\slash\\x07bell")
    unescaped_quotes = re.findall(r'(?<!\\)"', line)
    assert len(unescaped_quotes) == 6  # those of "%(r)s" "%(f)s" "%(a)s"


def test_the_client_address_is_escaped_like_everything_else() -> None:
    """Forwarding headers and PROXY headers put addresses a proxy reported into
    ``client``; the address is checked there, and the log escapes it anyway."""
    atoms = AccessLogAtoms({"client": ('::1%"\x85\x1b[31m\n', 5)}, 200, (), 0, 0.0)
    assert atoms["h"] == '::1%\\"\\x85\\x1b[31m\\x0a:5'
    assert AccessLogAtoms({"client": None}, 200, (), 0, 0.0)["h"] == "-"


# -- status of requests that did not end normally --------------------------------------


async def test_client_hang_up_before_the_response_logs_499(
    access_log: pytest.LogCaptureFixture,
) -> None:
    """Nothing was sent, so there is no real status; nginx's 499 says the client
    left. A naive server logs no line, or a status it never sent."""
    in_app = trio.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        in_app.set()
        await trio.sleep_forever()

    with trio.fail_after(5):
        async with open_test_client(app, CLF) as client:
            conn = await client.connect()
            await conn.send_all(b"GET /wait HTTP/1.1\r\nhost: t\r\n\r\n")
            await in_app.wait()
            await conn.aclose()
    [line] = access_lines(access_log)
    assert line.endswith('"GET /wait HTTP/1.1" 499 -')
    assert error_records(access_log) == []


async def test_app_error_logs_500(access_log: pytest.LogCaptureFixture) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            raise RuntimeError("bug in the app")

    async with open_test_client(app, CLF) as client:
        response = await client.get("/boom")
    assert response.status == 500
    [line] = access_lines(access_log)
    assert re.search(r'"GET /boom HTTP/1\.1" 500 \S+$', line), line
    assert error_records(access_log) == ["Exception in ASGI application"]


async def test_server_made_500_logs_the_bytes_it_sent(access_log: pytest.LogCaptureFixture) -> None:
    """The 500 the server answers for a failed app has a body; ``b`` is the bytes
    sent, like for any other response."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            raise RuntimeError("bug in the app")

    async with open_test_client(app, CLF) as client:
        response = await client.get("/boom")
    assert response.status == 500
    assert response.body
    [line] = access_lines(access_log)
    assert line.endswith(f'"GET /boom HTTP/1.1" 500 {len(response.body)}')


async def test_access_log_off_writes_no_record(access_log: pytest.LogCaptureFixture) -> None:
    """accesslog=None: no record at all, even though the logger is enabled for
    INFO and a handler listens."""
    async with open_test_client(response_app(body=b"quiet"), Config(accesslog=None)) as client:
        assert (await client.get("/")).status == 200
        assert (await client.get("/other")).status == 200
        # A refused request writes nothing either.
        assert (await client.raw(b"\x00garbage\r\n\r\n")).startswith(b"HTTP/1.1 400 ")
    assert access_lines(access_log) == []


# -- configure_logging: the CLI's setup ---------------------------------------------


async def serve_one_failing_request() -> None:
    """A request whose app raises: an ERROR on trioserve.error and an access line."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            raise RuntimeError("boom")

    async with open_test_client(app, CLF) as client:
        assert (await client.get("/fail")).status == 500


async def test_configure_logging_writes_error_and_access_logs_to_files(tmp_path: Path) -> None:
    error_file = tmp_path / "error.log"
    access_file = tmp_path / "access.log"
    configure_logging(loglevel="WARNING", errorlog=str(error_file), accesslog=str(access_file))
    await serve_one_failing_request()
    errors = error_file.read_text()
    assert "[ERROR] Exception in ASGI application" in errors
    assert "RuntimeError: boom" in errors  # with its traceback
    [access_line] = access_file.read_text().splitlines()
    assert re.fullmatch(rf'- - - {CLF_TIME} "GET /fail HTTP/1\.1" 500 \S+', access_line)


async def test_the_command_lines_handler_and_a_log_record_get_the_same_line(
    tmp_path: Path,
) -> None:
    """The access log handler the command line sets up is written to directly while
    nothing else could see a record (the cheap path); once a filter is added, the
    line goes through a real record, whose ``args`` are the atoms, and reads the
    same."""
    access_file = tmp_path / "access.log"
    configure_logging(accesslog=str(access_file))
    config = Config(accesslog="-", access_log_format='%(h)s "%(r)s" %(s)s %(st)s %(b)s')
    seen: list[logging.LogRecord] = []

    def keep(record: logging.LogRecord) -> bool:
        seen.append(record)
        return True

    async with open_test_client(response_app(body=b"hi"), config) as client:
        assert (await client.get("/a?b=1")).status == 200
        logging.getLogger(ACCESS).addFilter(keep)
        try:
            assert (await client.get("/a?b=1")).status == 200
        finally:
            logging.getLogger(ACCESS).removeFilter(keep)
    direct, recorded = access_file.read_text().splitlines()
    assert direct == recorded == '- "GET /a?b=1 HTTP/1.1" 200 OK 2'
    [record] = seen
    assert record.getMessage() == recorded
    assert isinstance(record.args, dict)
    assert (record.args["s"], record.args["U"]) == ("200", "/a")


async def test_configure_logging_none_silences_both_logs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging(errorlog=None, accesslog=None)
    await serve_one_failing_request()
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == ""


def dict_config(log_file: Path) -> dict[str, Any]:
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "%(levelname)s %(name)s %(message)s"}},
        "handlers": {
            "file": {
                "class": "logging.FileHandler",
                "filename": str(log_file),
                "formatter": "plain",
            }
        },
        "loggers": {ERROR: {"handlers": ["file"], "level": "ERROR", "propagate": False}},
    }


def toml_text(log_file: Path) -> str:
    return (
        "version = 1\n"
        "disable_existing_loggers = false\n"
        "[formatters.plain]\n"
        'format = "%(levelname)s %(name)s %(message)s"\n'
        "[handlers.file]\n"
        'class = "logging.FileHandler"\n'
        f"filename = {json.dumps(str(log_file))}\n"
        'formatter = "plain"\n'
        f'[loggers."{ERROR}"]\n'
        'handlers = ["file"]\n'
        'level = "ERROR"\n'
        "propagate = false\n"
    )


def ini_text(log_file: Path) -> str:
    return (
        "[loggers]\nkeys=root,error\n\n"
        "[handlers]\nkeys=file\n\n"
        "[formatters]\nkeys=plain\n\n"
        "[logger_root]\nlevel=WARNING\nhandlers=\n\n"
        f"[logger_error]\nlevel=ERROR\nhandlers=file\npropagate=0\nqualname={ERROR}\n\n"
        f"[handler_file]\nclass=FileHandler\nformatter=plain\nargs=({str(log_file)!r}, 'a')\n\n"
        "[formatter_plain]\nformat=%(levelname)s %(name)s %(message)s\n"
    )


@pytest.mark.parametrize(
    ("file_name", "prefix", "make_text"),
    [
        ("logging.json", "", lambda log: json.dumps(dict_config(log))),
        ("logging.toml", "", toml_text),
        ("logging.ini", "", ini_text),
        ("logging.conf", "json:", lambda log: json.dumps(dict_config(log))),
        ("logging.conf", "toml:", toml_text),
    ],
)
async def test_logconfig_file_takes_effect(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    file_name: str,
    prefix: str,
    make_text: Any,
) -> None:
    """The logconfig file routes trioserve.error to its own file with its own
    format, replacing the stderr handler the errorlog setting made."""
    log_file = tmp_path / "from-logconfig.log"
    config_file = tmp_path / file_name
    config_file.write_text(make_text(log_file))
    configure_logging(errorlog="-", logconfig=prefix + str(config_file))
    await serve_one_failing_request()
    lines = log_file.read_text().splitlines()
    assert lines[0] == "ERROR trioserve.error Exception in ASGI application"
    assert "Exception in ASGI application" not in capsys.readouterr().err


@pytest.mark.parametrize(
    ("file_name", "text"),
    [
        ("broken.json", '{"version": 1, '),
        ("broken.toml", "version = \n"),
        ("bad-handler.json", '{"version": 1, "handlers": {"h": {"class": "no.such.Handler"}}}'),
        ("no-version.json", "{}"),
        ("broken.ini", "this is not an ini file\n"),
        ("empty-sections.ini", "[loggers]\nkeys=root\n"),
    ],
)
def test_broken_logconfig_is_a_one_line_config_error(
    tmp_path: Path, file_name: str, text: str
) -> None:
    """A broken file is the operator's configuration error: the CLI prints it on
    one line and exits 2 (any other exception escapes as a traceback)."""
    path = tmp_path / file_name
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        configure_logging(logconfig=str(path))
    message = str(info.value)
    assert message.startswith(f"logconfig {str(path)!r}: ")
    assert "\n" not in message


def test_missing_logconfig_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "absent.json"
    with pytest.raises(ConfigError, match="file not found"):
        configure_logging(logconfig=str(path))


# -- configs written for uvicorn ----------------------------------------------------------

UVICORN_WARNING = (
    "configures another server's loggers ('uvicorn.error', 'uvicorn.access') and none of "
    "trioserve's: trioserve logs to 'trioserve.error' and 'trioserve.access', where uvicorn "
    "has 'uvicorn.error' and 'uvicorn.access'; see docs/logging.md"
)


def uvicorn_dict() -> dict[str, Any]:
    """A uvicorn-style logging config as users write it: uvicorn's logger names,
    and no ``disable_existing_loggers`` (dictConfig's default disables every
    logger the file does not name)."""
    return {
        "version": 1,
        "formatters": {"default": {"format": "UV %(levelname)s %(message)s"}},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": "default",
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            "uvicorn.error": {"handlers": ["default"], "level": "INFO"},
            "uvicorn.access": {"handlers": ["default"], "level": "INFO"},
        },
    }


UVICORN_INI = """\
[loggers]
keys=root,uverror,uvaccess

[handlers]
keys=default

[formatters]
keys=default

[logger_root]
level=WARNING
handlers=

[logger_uverror]
level=INFO
handlers=default
qualname=uvicorn.error

[logger_uvaccess]
level=INFO
handlers=default
qualname=uvicorn.access

[handler_default]
class=StreamHandler
formatter=default
args=(sys.stderr,)

[formatter_default]
format=UV %(levelname)s %(message)s
"""


@pytest.mark.parametrize("kind", ["json", "ini"])
async def test_a_uvicorn_style_logconfig_keeps_the_error_log_and_says_which_loggers_to_use(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    kind: str,
) -> None:
    """trioserve.error is not disabled by a file that does not name it, and one
    warning says which loggers trioserve logs to."""
    path = tmp_path / f"uvicorn.{kind}"
    path.write_text(json.dumps(uvicorn_dict()) if kind == "json" else UVICORN_INI)
    configure_logging(errorlog="-", logconfig=str(path))
    # As a worker does, after the command that started it warned.
    configure_logging(errorlog="-", logconfig=str(path), announce=False)
    assert not logging.getLogger(ERROR).disabled
    await serve_one_failing_request()
    err = capsys.readouterr().err
    assert "[ERROR] Exception in ASGI application" in err, err
    assert err.count(UVICORN_WARNING) == 1, err
    assert f"[WARNING] logconfig {str(path)!r} {UVICORN_WARNING}" in err


def test_a_logconfig_that_names_a_trioserve_logger_gets_no_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = uvicorn_dict()
    data["loggers"][ERROR] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    path = tmp_path / "both.json"
    path.write_text(json.dumps(data))
    configure_logging(errorlog="-", logconfig=str(path))
    assert "another server's loggers" not in capsys.readouterr().err


def test_an_unconfigurable_logconfig_names_the_underlying_cause(tmp_path: Path) -> None:
    """dictConfig says only which part failed; the reason (a formatter class of a
    package that is not installed, as uvicorn's are without uvicorn) comes along."""
    data = uvicorn_dict()
    data["formatters"]["default"] = {"()": "trioserve_absent_pkg.logging.DefaultFormatter"}
    path = tmp_path / "uvicorn.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError) as info:
        configure_logging(logconfig=str(path))
    assert str(info.value) == (
        f"logconfig {str(path)!r}: ValueError: Unable to configure formatter 'default': "
        "Cannot resolve 'trioserve_absent_pkg.logging.DefaultFormatter': "
        "No module named 'trioserve_absent_pkg'"
    )


@pytest.mark.parametrize("name", ["logging.yaml", "logging.yml"])
def test_a_yaml_logconfig_is_refused_by_name_with_the_formats_that_work(
    tmp_path: Path, name: str
) -> None:
    """Not an INI parser's complaint about section headers."""
    (tmp_path / name).write_text("version: 1\n")
    completed = subprocess.run(
        [sys.executable, "-m", "trioserve", "--log-config", name, "absent:app"],
        cwd=tmp_path,
        env=clean_environment({}),
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert completed.returncode == 2, completed.stderr
    assert completed.stderr.splitlines() == [
        f"Error: logconfig {name!r}: YAML is not supported; use JSON (.json), TOML (.toml) or INI"
    ]


@pytest.mark.parametrize(
    "mode", [pytest.param([], id="one-process"), pytest.param(["-w", "2"], id="workers")]
)
async def test_the_command_warns_once_of_a_uvicorn_logconfig_and_keeps_its_error_log(
    tmp_path: Path, mode: list[str]
) -> None:
    """Workers configure logging from the same file; the warning is the command's,
    given once."""
    (tmp_path / "uvicorn.json").write_text(json.dumps(uvicorn_dict()))
    (tmp_path / "app.py").write_text("async def app(scope, receive, send):\n    pass\n")
    args = ["app:app", "--bind", "127.0.0.1:0", "--log-config", "uvicorn.json", *mode]
    async with running(args, tmp_path, clean_environment({})) as command:
        await command.serving("http")
    assert command.stderr.text.count(UVICORN_WARNING) == 1, command.stderr.text
