"""The access log for requests that did not reach the app, and the atoms of
unusual responses.

Every request the server refuses itself (400, 408, 413, 414, 431, 501, 503, 505,
a refused websocket handshake) gets its line, with the status sent and whatever
is known of it: the request line once its head was parsed, ``-`` before. A
connection that ends without a request (an idle keep-alive connection timing
out) writes nothing. The byte atoms count body bytes that went out: none for a
response to HEAD or a 304, whatever the head announced.

Requests go over in-memory streams (``open_test_client``) as raw bytes, under
``autojump_clock`` where a timeout must pass.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from http import HTTPStatus
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from _helpers import (
    GET,
    GET_CLOSE,
    Receive,
    Scope,
    Send,
    body,
    echo_app,
    http_only,
    parse_all,
    parse_single,
    start,
    text_app,
)
from _pipes import clean_environment, running

from trioserve import Config, ConfigError
from trioserve._logging import COMMON_LOG_FORMAT, AccessLogger
from trioserve.testing import open_test_client

APPS = Path(__file__).parent / "fixtures" / "apps"

ACCESS = "trioserve.access"
ATOMS = ["s", "st", "r", "m", "U", "H", "b", "B", "D", "{content-length}o"]
FORMAT = "|".join(f"%({atom})s" for atom in ATOMS)


def logged(**changes: Any) -> Config:
    """The access log on, each line the atoms of ``ATOMS`` joined by ``|``."""
    return Config(accesslog="-", access_log_format=FORMAT, **changes)


@pytest.fixture
def access_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger=ACCESS)
    return caplog


def lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, str]]:
    """Each access log line as ``{atom: value}``."""
    records = [r.getMessage() for r in caplog.records if r.name == ACCESS]
    return [dict(zip(ATOMS, line.split("|"), strict=True)) for line in records]


# -- requests the server refused ------------------------------------------------------------

LONG_TARGET = b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
MANY_FIELDS = b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-A: 1\r\n" * 101 + b"\r\n"
REFUSED = {
    "400": (b"\x00\x01garbage\r\n\r\n", {}, 400),
    "414": (LONG_TARGET, {}, 414),
    "431": (MANY_FIELDS, {}, 431),
    "413": (
        b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n",
        {"max_body_size": 10},
        413,
    ),
    "505": (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", {}, 505),
    "501": (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        {},
        501,
    ),
}


@pytest.mark.parametrize(("request_bytes", "changes", "status"), REFUSED.values(), ids=REFUSED)
async def test_a_malformed_request_is_logged_with_its_status(
    request_bytes: bytes,
    changes: dict[str, Any],
    status: int,
    access_log: pytest.LogCaptureFixture,
    autojump_clock: Any,
) -> None:
    async with open_test_client(text_app(), logged(**changes)) as client:
        data = await client.raw(request_bytes)
    response = parse_single(data)
    assert response.status == status
    [line] = lines(access_log)
    # The head was not parsed: no request line, method, path or protocol.
    assert line["s"] == str(status)
    assert line["st"] == HTTPStatus(status).phrase  # the phrase of the running Python
    assert (line["r"], line["m"], line["U"], line["H"]) == ("-", "-", "-", "-")
    assert line["B"] == str(len(response.body))
    assert line["D"].isdigit()


async def test_a_header_timeout_is_logged_as_408(
    access_log: pytest.LogCaptureFixture, autojump_clock: Any
) -> None:
    async with open_test_client(text_app(), logged(header_timeout=2)) as client:
        data = await client.raw(b"GET /slow HTTP/1.1\r\nHost: x\r\n")
    assert parse_single(data).status == 408
    [line] = lines(access_log)
    assert (line["s"], line["st"], line["r"]) == ("408", "Request Timeout", "-")


async def test_an_idle_connection_that_times_out_is_not_logged(
    access_log: pytest.LogCaptureFixture, autojump_clock: Any
) -> None:
    """A new connection that sends nothing, and one that goes quiet after a
    request, close at the keep-alive timeout: no request, no line (and no 408)."""
    async with open_test_client(text_app(), logged(keep_alive_timeout=5)) as client:
        silent = await client.connect()
        assert await silent.receive_until_closed() == b""
        data = await client.raw(GET)
    assert [r.status for r in parse_all(data)[0]] == [200]
    assert [line["s"] for line in lines(access_log)] == ["200"]


async def test_an_overload_503_is_logged_with_its_request_line(
    access_log: pytest.LogCaptureFixture, autojump_clock: Any
) -> None:
    release = trio.Event()
    entered = trio.Event()

    @http_only
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        entered.set()
        await release.wait()
        await text_app()(scope, receive, send)

    async with open_test_client(app, logged(limit_concurrency=1)) as client:
        busy = await client.connect()
        await busy.send_all(GET_CLOSE)
        await entered.wait()
        data = await client.raw(b"GET /more?x=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        release.set()
        assert parse_single(await busy.receive_until_closed()).status == 200
    assert parse_single(data).status == 503
    refused, served = lines(access_log)
    assert (refused["s"], refused["r"], refused["U"]) == ("503", "GET /more?x=1 HTTP/1.1", "/more")
    assert refused["st"] == "Service Unavailable"
    assert served["s"] == "200"


async def test_a_body_timeout_is_logged_as_408(
    access_log: pytest.LogCaptureFixture, autojump_clock: Any
) -> None:
    async with open_test_client(echo_app(), logged(read_timeout=2)) as client:
        data = await client.raw(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
    assert parse_single(data).status == 408
    [line] = lines(access_log)
    assert (line["s"], line["r"]) == ("408", "POST /up HTTP/1.1")


async def test_a_chunked_body_over_the_limit_is_logged_as_413(
    access_log: pytest.LogCaptureFixture, autojump_clock: Any
) -> None:
    request = (
        b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n20\r\n" + b"x" * 32
    )
    async with open_test_client(echo_app(), logged(max_body_size=10)) as client:
        data = await client.raw(request + b"\r\n0\r\n\r\n")
    assert parse_single(data, "POST").status == 413
    [line] = lines(access_log)
    assert (line["s"], line["r"]) == ("413", "POST /up HTTP/1.1")


WS_HEAD = (
    b"GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
)


async def test_a_bad_websocket_handshake_is_logged_with_its_request_line(
    access_log: pytest.LogCaptureFixture, autojump_clock: Any
) -> None:
    async with open_test_client(text_app(), logged()) as client:
        data = await client.raw(WS_HEAD + b"\r\n")  # no Sec-WebSocket-Key
    assert parse_single(data).status == 400
    [line] = lines(access_log)
    assert (line["s"], line["r"]) == ("400", "GET /chat HTTP/1.1")


async def test_a_websocket_refused_with_ws_none_is_logged_as_501(
    access_log: pytest.LogCaptureFixture, autojump_clock: Any
) -> None:
    request = WS_HEAD + b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    async with open_test_client(text_app(), logged(ws="none")) as client:
        data = await client.raw(request)
    assert parse_single(data).status == 501
    [line] = lines(access_log)
    assert (line["s"], line["r"]) == ("501", "GET /chat HTTP/1.1")


# -- what the byte atoms count ----------------------------------------------------------------


async def test_a_response_to_head_sends_no_body_bytes(
    access_log: pytest.LogCaptureFixture, autojump_clock: Any
) -> None:
    """The head announces what a GET would get; ``B`` counts what went out."""
    async with open_test_client(text_app(b"hello"), logged()) as client:
        data = await client.raw(b"HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    response = parse_single(data, "HEAD")
    assert (response.status, response.body) == (200, b"")
    [line] = lines(access_log)
    assert (line["s"], line["b"], line["B"], line["{content-length}o"]) == ("200", "-", "0", "5")


async def test_a_server_500_to_head_sends_no_body_bytes(
    access_log: pytest.LogCaptureFixture, autojump_clock: Any
) -> None:
    @http_only
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("bug")

    async with open_test_client(app, logged()) as client:
        data = await client.raw(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert parse_single(data, "HEAD").status == 500
    [line] = lines(access_log)
    assert (line["s"], line["B"]) == ("500", "0")


async def test_a_304_sends_no_body_bytes(
    access_log: pytest.LogCaptureFixture, autojump_clock: Any
) -> None:
    @http_only
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(start(304, [(b"etag", b'"v1"')]))
        await send(body(b""))

    async with open_test_client(app, logged()) as client:
        data = await client.raw(GET_CLOSE)
    assert parse_single(data).status == 304
    [line] = lines(access_log)
    assert (line["s"], line["st"], line["b"], line["B"]) == ("304", "Not Modified", "-", "0")


async def test_a_streamed_response_counts_every_body_byte(
    access_log: pytest.LogCaptureFixture, autojump_clock: Any
) -> None:
    @http_only
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(start(200))
        for part in (b"a" * 10, b"", b"b" * 25):
            await send(body(part, more=True))
        await send(body(b"c"))

    async with open_test_client(app, logged()) as client:
        data = await client.raw(GET_CLOSE)
    assert len(parse_single(data).body) == 36
    [line] = lines(access_log)
    assert (line["b"], line["B"], line["{content-length}o"]) == ("36", "36", "-")


# -- the command's own access log --------------------------------------------------------


async def test_path_the_terminal_cannot_encode_is_logged_escaped_not_as_a_logging_error(
    tmp_path: Path,
) -> None:
    """The access log is on by default from the command: a request for a path
    outside the terminal's encoding still gets its one line, escaped."""
    env = clean_environment({"PYTHONIOENCODING": "ascii"}, APPS)
    async with running(["fx_asgi3:app", "--bind", "127.0.0.1:0"], tmp_path, env) as command:
        url = await command.serving("http")
        async with httpx.AsyncClient(trust_env=False) as client:
            with trio.fail_after(5):
                response = await client.get(url + "/caf%C3%A9/\u0444")
    assert response.status_code == 200
    output = command.stdout.text + command.stderr.text
    assert "Logging error" not in output
    assert '"GET /caf\\xe9/\\u0444 HTTP/1.1" 200' in command.stdout.text, output


# -- a format that cannot make lines ----------------------------------------------------------

BAD_FORMATS = {
    "unclosed-atom": ("%(h", "'%(h' has no closing ')': write atoms as %(h)s"),
    "number-conversion": ("%(s)d", "atoms are text: write %(s)s, not %(s)d"),
    "lone-percent": ("100%", "it ends with a lone '%': write %% for a literal %"),
    "lone-percent-after-atoms": (
        "%(h)s %(x)s 100%",
        "it ends with a lone '%': write %% for a literal %",
    ),
    "percent-in-text": (
        "%(h)s 100% done",
        "'% d' has no atom name: write %% for a literal %, %(name)s for an atom",
    ),
    "no-atom-name": ("%s", "'%s' has no atom name: write %% for a literal %, %(name)s for an atom"),
    "one-character": ("%(h)c", "atoms are text: write %(h)s, not %(h)c"),
    "unknown-conversion": ("%(h)y", "'%(h)y' is not a conversion: write %% for a literal %"),
}


@pytest.mark.parametrize(("log_format", "reason"), BAD_FORMATS.values(), ids=BAD_FORMATS)
def test_a_format_that_cannot_make_lines_is_a_config_error(log_format: str, reason: str) -> None:
    """Every atom is text: a format that cannot be filled with text fails when
    the configuration is made, not at the first request."""
    with pytest.raises(ConfigError) as info:
        Config(access_log_format=log_format)
    assert str(info.value) == f"access_log_format {log_format!r}: {reason}"


@pytest.mark.parametrize(
    "log_format",
    [
        COMMON_LOG_FORMAT,
        '%(h)s %(l)s %(l)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"',  # Hypercorn's default
        "%(h)-21s %(s)3s %(M)5.5s 100%% %(h)r %({x-request-id}i)s %(nonsense)s",
        "no atoms at all",
    ],
)
def test_text_formats_with_widths_and_literal_percent_are_accepted(log_format: str) -> None:
    assert Config(access_log_format=log_format).access_log_format == log_format


@pytest.mark.parametrize("where", ["flag", "variable", "file"])
def test_the_command_refuses_a_bad_format_with_one_error_line_and_exit_2(
    tmp_path: Path, where: str
) -> None:
    """The line names the format as the user gave it and how to write it."""
    args = ["fx_asgi3:app", "--bind", "127.0.0.1:0"]
    extra: dict[str, str] = {}
    if where == "flag":
        args += ["--access-logformat", "%(s)d"]
        name = "--access-logformat"
    elif where == "variable":
        extra["TRIOSERVE_ACCESS_LOGFORMAT"] = "%(s)d"
        name = "TRIOSERVE_ACCESS_LOGFORMAT"
    else:
        (tmp_path / "hc.toml").write_text('access_log_format = "%(s)d"\n')
        args += ["--config", "hc.toml"]
        name = "hc.toml: access_log_format"
    completed = subprocess.run(
        [sys.executable, "-m", "trioserve", *args],
        cwd=tmp_path,
        env=clean_environment(extra, APPS),
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert completed.returncode == 2, completed.stderr
    assert completed.stderr.splitlines() == [
        f"Error: {name} '%(s)d': atoms are text: write %(s)s, not %(s)d"
    ]


class _ShipperDown(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        raise RuntimeError("log shipper is down")


async def test_an_access_line_that_fails_is_reported_once_and_requests_go_on(
    access_log: pytest.LogCaptureFixture,
) -> None:
    """Writing the line must not fail the connection that served the request:
    one error line says why (no traceback), and the next request is served."""
    failing = _ShipperDown()
    logging.getLogger(ACCESS).addFilter(failing)
    try:
        async with open_test_client(text_app(), logged()) as client:
            answers = [await client.raw(GET_CLOSE) for _ in range(2)]
    finally:
        logging.getLogger(ACCESS).removeFilter(failing)
    assert [parse_single(answer).status for answer in answers] == [200, 200]
    errors = [r for r in access_log.records if r.name == "trioserve.error"]
    assert [r.getMessage() for r in errors] == [
        f"Access log lines cannot be written (format {FORMAT!r}): RuntimeError: log shipper "
        "is down; further failures are not reported"
    ]
    assert errors[0].exc_info is None


def test_an_access_logger_made_with_a_bad_format_writes_nothing_and_says_why_once(
    access_log: pytest.LogCaptureFixture,
) -> None:
    access_logger = AccessLogger("%(s)d")
    for _ in range(2):
        access_logger.log({"type": "http", "method": "GET", "path": "/"}, 200, [], 0, 0.0)
        access_logger.log_websocket(
            {"type": "websocket", "path": "/"}, 101, (1000, 1000), (0, 0), (0, 0), 0.0
        )
    assert [(r.name, r.getMessage()) for r in access_log.records] == [
        (
            "trioserve.error",
            "Access log lines cannot be written (format '%(s)d'): atoms are text: "
            "write %(s)s, not %(s)d; further failures are not reported",
        )
    ]
