"""Helpers shared by the test modules: ASGI type aliases, small apps and message
builders, a parser for the responses on the wire, and log-record filters.

Most HTTP tests speak raw bytes over in-memory streams (``client.raw`` / a
``TestConnection``) and parse what comes back with an h11 client
(:func:`parse_single`, :class:`Wire`), so that they can assert on the exact bytes on
the wire. Tests that must prove a connection was closed *by the behaviour under
test* (and not by the keep-alive timer) run under ``autojump_clock`` and use
:func:`raw_closed_at_once`, which checks that no virtual time passed.

A helper that only one test module uses stays in that module.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import h11
import pytest
import trio
import trio.testing
from click.testing import Result

from trioserve import Config
from trioserve.testing import TestClient, TestConnection

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[Any]]

#: trioserve's error log.
ERROR_LOGGER = "trioserve.error"

#: Config for byte-exact assertions: no ``date`` header (it changes).
NODATE = Config(include_date_header=False)

GET = b"GET / HTTP/1.1\r\nHost: example\r\n\r\n"
GET_CLOSE = b"GET / HTTP/1.1\r\nHost: example\r\nConnection: close\r\n\r\n"


# -- apps and messages -----------------------------------------------------------------


def http_only(app: App) -> App:
    """Wrap ``app`` so that it ignores the lifespan scope (``lifespan="auto"`` then
    notes it as unsupported and the server starts and stops at once). What the app
    returns is passed on (the server logs a return value other than ``None``)."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> Any:
        if scope["type"] != "http":
            return None
        return await app(scope, receive, send)

    return wrapped


def start(status: int = 200, headers: Iterable[Any] = ()) -> Message:
    """An ``http.response.start`` message; ``headers`` is passed as given."""
    return {"type": "http.response.start", "status": status, "headers": headers}


def body(data: bytes = b"", more: bool = False) -> Message:
    return {"type": "http.response.body", "body": data, "more_body": more}


async def send_text(send: Send, text: str, status: int = 200) -> None:
    """Answer ``text`` with ``content-type: text/plain`` and a content-length."""
    payload = text.encode()
    headers = [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(payload))]
    await send(start(status, headers))
    await send(body(payload))


async def respond(send: Send, payload: bytes = b"ok", status: int = 200) -> None:
    """Answer ``payload`` with a content-length and no other header."""
    await send(start(status, [(b"content-length", str(len(payload)).encode())]))
    await send({"type": "http.response.body", "body": payload})


async def read_body(receive: Receive) -> bytes:
    """Receive ``http.request`` messages until ``more_body`` is false; the body."""
    data = b""
    while True:
        message = await receive()
        assert message["type"] == "http.request", message
        data += bytes(message["body"])
        if not message.get("more_body", False):
            return data


def text_app(payload: bytes = b"hello", extra: Sequence[tuple[bytes, bytes]] = ()) -> App:
    """200 with ``content-type``, ``content-length`` and ``payload``."""

    @http_only
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        headers = [
            (b"content-type", b"text/plain"),
            (b"content-length", str(len(payload)).encode()),
            *extra,
        ]
        await send(start(200, headers))
        await send(body(payload))

    return app


def streaming_app(parts: Sequence[bytes] = (b"hello", b" world")) -> App:
    """200 without ``content-length``, the body in several messages."""

    @http_only
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(start(200, [(b"content-type", b"text/plain")]))
        for part in parts:
            await send(body(part, more=True))
        await send(body(b""))

    return app


def echo_app() -> App:
    """Reads the whole body and answers it back with a content-length."""

    @http_only
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        data = await read_body(receive)
        await send(start(200, [(b"content-length", str(len(data)).encode())]))
        await send(body(data))

    return app


def scope_recorder() -> tuple[App, list[Scope]]:
    """An app that answers ``hello`` and records the scope of every request it is
    called with (also for requests that must never reach it)."""
    scopes: list[Scope] = []

    @http_only
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        scopes.append(scope)
        await text_app()(scope, receive, send)

    return app, scopes


class Recorder:
    """An ASGI app that answers ``ok`` and keeps every HTTP scope it sees."""

    def __init__(self) -> None:
        self.scopes: list[dict[str, object]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        self.scopes.append(scope)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


# -- responses on the wire ---------------------------------------------------------------


@dataclasses.dataclass
class Parsed:
    """One response as an h11 client parsed it off the wire."""

    status: int
    reason: bytes
    http_version: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    informational: list[int]

    def values(self, name: bytes) -> list[bytes]:
        return [v for k, v in self.headers if k == name]

    def header(self, name: bytes) -> bytes | None:
        values = self.values(name)
        assert len(values) <= 1, f"header {name!r} sent {len(values)} times: {values}"
        return values[0] if values else None


def parse_one(buf: bytes, method: str = "GET", *, eof: bool) -> tuple[Parsed | None, bytes]:
    """Parse one response from ``buf``; return ``(None, buf)`` if more bytes are
    needed, else the response and the bytes after it. Raises h11's
    RemoteProtocolError if ``eof`` and the response is incomplete or malformed."""
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method=method, target="/", headers=[("host", "x")]))
    conn.send(h11.EndOfMessage())
    if buf:
        conn.receive_data(buf)  # (h11 takes b"" to mean EOF)
    if eof:
        conn.receive_data(b"")
    informational: list[int] = []
    response: h11.Response | None = None
    chunks: list[bytes] = []
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            return None, buf
        if isinstance(event, h11.InformationalResponse):
            informational.append(event.status_code)
        elif isinstance(event, h11.Response):
            response = event
        elif isinstance(event, h11.Data):
            chunks.append(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage):
            assert response is not None
            parsed = Parsed(
                response.status_code,
                bytes(response.reason),
                bytes(response.http_version),
                [(bytes(k), bytes(v)) for k, v in response.headers],
                b"".join(chunks),
                informational,
            )
            return parsed, bytes(conn.trailing_data[0])
        else:  # pragma: no cover - ConnectionClosed cannot come before the end
            raise AssertionError(f"unexpected event {event!r}")


def parse_all(data: bytes, methods: Sequence[str] = ("GET",)) -> tuple[list[Parsed], bytes]:
    """Parse consecutive complete responses from a closed stream; return them and
    whatever bytes follow the last one (for the i-th response, ``methods[i]`` is
    the request method, the last one repeating)."""
    responses: list[Parsed] = []
    rest = data
    while rest:
        method = methods[min(len(responses), len(methods) - 1)]
        parsed, rest = parse_one(rest, method, eof=True)
        assert parsed is not None
        responses.append(parsed)
    return responses, rest


def parse_single(data: bytes, method: str = "GET") -> Parsed:
    """Exactly one complete response and nothing after it."""
    responses, rest = parse_all(data, [method])
    assert len(responses) == 1, responses
    assert rest == b""
    return responses[0]


class Wire:
    """Reads responses one by one from a live ``TestConnection``."""

    def __init__(self, conn: TestConnection) -> None:
        self.conn = conn
        self.buf = b""
        self.eof = False

    async def response(self, method: str = "GET") -> Parsed:
        while True:
            parsed, rest = parse_one(self.buf, method, eof=self.eof)
            if parsed is not None:
                self.buf = rest
                return parsed
            data = await self.conn.receive_some()
            if not data:
                self.eof = True
            self.buf += data

    async def until_closed(self) -> bytes:
        """The bytes left until the server closes the connection."""
        rest = self.buf + await self.conn.receive_until_closed()
        self.buf = b""
        self.eof = True
        return rest


# -- driving a connection ------------------------------------------------------------------


async def raw_closed_at_once(client: TestClient, data: bytes) -> bytes:
    """``client.raw`` under ``autojump_clock``, asserting that the server closed the
    connection without any timer (keep-alive, linger) having to fire first."""
    before = trio.current_time()
    out = await client.raw(data)
    assert trio.current_time() == before, "the connection was closed only by a timeout"
    return out


async def dribble(conn: TestConnection, data: bytes, piece: int) -> None:
    """Send ``data`` in pieces, letting the server process each one separately."""
    for i in range(0, len(data), piece):
        await conn.send_all(data[i : i + piece])
        await trio.testing.wait_all_tasks_blocked()


# -- logs --------------------------------------------------------------------------------


def error_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """The records at ERROR or above, from any logger."""
    return [r for r in caplog.records if r.levelno >= logging.ERROR]


def error_log_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """The records at ERROR or above in trioserve's error log only."""
    return [r for r in caplog.records if r.name == ERROR_LOGGER and r.levelno >= logging.ERROR]


# -- the process -------------------------------------------------------------------------


def free_port() -> int:
    """A loopback port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def open_fds() -> int:
    """How many file descriptors this process has open."""
    return len(os.listdir("/proc/self/fd"))


# -- the command line -------------------------------------------------------------------


def assert_one_line_error(result: Result, code: int, *fragments: str) -> str:
    """trioserve's own errors through click's runner: the exit code, and stderr is
    one ``Error:`` line (after any ``Warning:`` lines) containing ``fragments``;
    nothing on stdout, no traceback. Returns the line."""
    assert result.exit_code == code, (result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    assert result.stdout == ""
    lines = [line for line in result.stderr.splitlines() if not line.startswith("Warning: ")]
    assert len(lines) == 1, result.stderr
    [line] = lines
    assert line.startswith("Error: "), line
    for fragment in fragments:
        assert fragment in line, line
    return line
