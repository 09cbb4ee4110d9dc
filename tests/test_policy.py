"""The request policy trioserve adds on top of h11, one parametrized test per rule,
each case raw request bytes on a real loopback socket:

- conflicting framing (Content-Length with Transfer-Encoding, a coding list not
  ending in chunked, chunked twice, Transfer-Encoding on HTTP/1.0) → 400;
- an unknown transfer coding before chunked → 501;
- an HTTP major version other than 1 → 505 (forms h11 cannot parse → 400);
- a missing or duplicate ``Host`` on HTTP/1.1 → 400;
- obs-fold (a header continuation line) → 400;
- ``CONNECT`` → 501 unless ``allow_connect``;
- asterisk-form only with ``OPTIONS``; targets in no form the method may use → 400;
- a request target over ``max_target_length`` → 414, also over 16 KiB;
- a header block over ``h11_max_incomplete_size`` or over ``max_header_count``
  fields → 431, however the bytes arrive;
- chunk-size with more than 16 hex digits, oversized chunk extensions → 400;
- a body over ``max_body_size`` → 413 (declared, or chunked and growing);
- absolute-form targets: the scope agrees with the target's authority;
- trailers never leak framing fields into ``scope["headers"]``;
- controls: valid requests (also exactly at each limit) are still served, so no
  rule test can pass by rejecting everything.

Every rejection is checked byte-exactly: the exact status line, ``connection:
close``, a complete response, then EOF from the server; and the app is never
called (calls are recorded) unless the rule is one found only in the body.
A naive server built on h11 alone lets most of these through to the app and
keeps the connection alive.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from http import HTTPStatus

import h11
import pytest
import trio
from _helpers import ERROR_LOGGER, Message, Receive, Scope, Send

from trioserve import Config
from trioserve.testing import open_test_server

MAX_BODY = 1000

# -- helpers ----------------------------------------------------------------------


@dataclass
class Call:
    """One run of the recording app: its scope and what ``receive()`` returned."""

    scope: Scope
    messages: list[Message] = field(default_factory=list)

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.messages if m["type"] == "http.request")

    def header_values(self, name: bytes) -> list[bytes]:
        return [v for n, v in self.scope["headers"] if n == name]


class RecordingApp:
    """Records every HTTP call; reads the whole body and echoes it with ``status``.
    On ``http.disconnect`` it returns without responding, as a well-behaved app does."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.calls: list[Call] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        call = Call(scope)
        self.calls.append(call)
        while True:
            message = await receive()
            call.messages.append(message)
            if message["type"] == "http.disconnect":
                return
            if not message.get("more_body", False):
                break
        body = call.body if self.status == 200 else b""
        headers = [(b"content-length", b"%d" % len(body))]
        if scope["method"] == "CONNECT" and 200 <= self.status < 300:
            headers = []  # RFC 9110 9.3.6: no framing fields in a 2xx to CONNECT
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


@dataclass
class Response:
    status_line: bytes
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def values(self, name: bytes) -> list[bytes]:
        return [v for n, v in self.headers if n == name]


def read_responses(raw: bytes, *, eof: bool, method: str = "GET") -> tuple[list[Response], bytes]:
    """The complete responses at the start of ``raw`` to requests with ``method``
    (parsed by an h11 client, so they must be well-formed HTTP/1.1; a response to
    HEAD has no body) and the bytes left after them."""
    conn = h11.Connection(h11.CLIENT)
    conn.receive_data(raw)
    if eof:
        conn.receive_data(b"")
    responses: list[Response] = []
    while True:
        # A dummy request per response: h11 only parses a response it is waiting for.
        conn.send(h11.Request(method=method, target="/", headers=[("host", "x")]))
        conn.send(h11.EndOfMessage())
        line = bytes(conn.trailing_data[0]).partition(b"\r\n")[0]
        head: h11.Response | None = None
        body = b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA or isinstance(event, h11.ConnectionClosed):
                return responses, bytes(conn.trailing_data[0])
            if isinstance(event, h11.Response):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
        assert head is not None
        responses.append(Response(line, head.status_code, list(head.headers), body))
        if not (conn.our_state is h11.DONE and conn.their_state is h11.DONE):
            return responses, bytes(conn.trailing_data[0])
        conn.start_next_cycle()


@dataclass
class Exchange:
    responses: list[Response]
    #: Bytes after the last complete response.
    rest: bytes
    #: The server closed the connection (EOF) within the hang guard.
    closed: bool


async def exchange(port: int, pieces: Sequence[bytes], expected: int = 1) -> Exchange:
    """Send ``pieces`` (each with its own ``send_all``) on a fresh TCP connection and
    read until the server closes it, or until ``expected`` responses have come and
    the last does not announce ``connection: close`` (no EOF is coming then)."""
    method = "HEAD" if pieces and pieces[0].startswith(b"HEAD ") else "GET"
    raw = b""
    closed = False
    with trio.fail_after(5):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            for piece in pieces:
                try:
                    await stream.send_all(piece)
                except trio.BrokenResourceError:
                    break  # the server answered and closed before we were done
            while True:
                chunk = await stream.receive_some()
                if not chunk:
                    closed = True
                    break
                raw += chunk
                responses, _ = read_responses(raw, eof=False, method=method)
                if len(responses) >= expected and responses[-1].values(b"connection") != [b"close"]:
                    break
    responses, rest = read_responses(raw, eof=closed, method=method)
    return Exchange(responses, rest, closed)


def status_line(status: int) -> bytes:
    # The reason phrase is the running Python's (http.HTTPStatus), like the server's.
    return b"HTTP/1.1 %d %s" % (status, HTTPStatus(status).phrase.encode())


def no_error_logged(caplog: pytest.LogCaptureFixture) -> None:
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


async def assert_rejected(
    pieces: bytes | Sequence[bytes],
    status: int,
    caplog: pytest.LogCaptureFixture,
    config: Config | None = None,
    *,
    app_called: bool = False,
) -> RecordingApp:
    """Send the request, expect exactly one response with ``status`` and
    ``connection: close``, then EOF; the app is not called (unless ``app_called``)."""
    caplog.set_level(logging.DEBUG, logger=ERROR_LOGGER)
    app = RecordingApp()
    if isinstance(pieces, bytes):
        pieces = [pieces]
    async with open_test_server(app, config) as server:
        result = await exchange(server.port, pieces)
    (response,) = result.responses
    assert response.status_line == status_line(status), response
    assert response.values(b"connection") == [b"close"]
    assert result.closed
    assert result.rest == b""
    assert len(app.calls) == (1 if app_called else 0)
    no_error_logged(caplog)
    return app


async def assert_served(
    pieces: bytes | Sequence[bytes],
    caplog: pytest.LogCaptureFixture,
    config: Config | None = None,
    app: RecordingApp | None = None,
) -> tuple[Response, Call]:
    """Send a request that asks for ``Connection: close``; expect the app to have
    been called once and its response to come back, then EOF."""
    caplog.set_level(logging.DEBUG, logger=ERROR_LOGGER)
    app = app or RecordingApp()
    if isinstance(pieces, bytes):
        pieces = [pieces]
    async with open_test_server(app, config) as server:
        result = await exchange(server.port, pieces)
    (response,) = result.responses
    (call,) = app.calls
    assert response.status_line == status_line(app.status), response
    assert result.closed
    assert result.rest == b""
    no_error_logged(caplog)
    return response, call


def post(headers: bytes, body: bytes = b"", version: bytes = b"1.1") -> bytes:
    return b"POST /upload HTTP/" + version + b"\r\n" + headers + b"\r\n" + body


def chunked(*parts: bytes, trailers: bytes = b"") -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n" + trailers + b"\r\n"


def many_headers(count: int, value: bytes = b"v") -> bytes:
    return b"".join(b"x-h%d: %s\r\n" % (i, value) for i in range(count))


def pieces_of(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


HOST = b"host: example.com\r\n"
CLOSE = b"connection: close\r\n"

# -- conflicting framing → 400 -------------------------------------------------------


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(
            post(HOST + b"content-length: 5\r\ntransfer-encoding: chunked\r\n", chunked(b"hello")),
            id="content-length-then-transfer-encoding",
        ),
        pytest.param(
            post(HOST + b"transfer-encoding: chunked\r\ncontent-length: 5\r\n", chunked(b"hello")),
            id="transfer-encoding-then-content-length",
        ),
        pytest.param(post(HOST + b"transfer-encoding: gzip\r\n", b"hello"), id="te-gzip-only"),
        pytest.param(
            post(HOST + b"transfer-encoding: chunked, gzip\r\n", chunked(b"hello")),
            id="te-chunked-then-gzip",
        ),
        pytest.param(
            post(HOST + b"transfer-encoding: chunked, chunked\r\n", chunked(b"hello")),
            id="te-chunked-twice-in-one-line",
        ),
        pytest.param(
            post(
                HOST + b"transfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n",
                chunked(b"hello"),
            ),
            id="te-chunked-twice-in-two-lines",
        ),
        pytest.param(
            post(HOST + b"transfer-encoding: chunked\r\n", chunked(b"hello"), b"1.0"),
            id="te-on-http-1.0",
        ),
    ],
)
async def test_conflicting_framing_is_400_and_close(
    request_bytes: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """RFC 9112 6.1/6.3: ambiguous framing is the shape of request smuggling. h11
    alone lets Transfer-Encoding win over Content-Length and keeps the connection
    alive; trioserve answers 400 and closes."""
    await assert_rejected(request_bytes, 400, caplog)


# -- unknown transfer coding → 501 ----------------------------------------------------


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(
            post(HOST + b"transfer-encoding: gzip, chunked\r\n", chunked(b"hello")),
            id="gzip-then-chunked",
        ),
        pytest.param(
            post(HOST + b"transfer-encoding: foo, chunked\r\n", chunked(b"hello")),
            id="foo-then-chunked",
        ),
        pytest.param(
            post(
                HOST + b"transfer-encoding: gzip\r\ntransfer-encoding: chunked\r\n",
                chunked(b"hello"),
            ),
            id="gzip-and-chunked-in-two-lines",
        ),
    ],
)
async def test_unknown_transfer_coding_is_501_and_close(
    request_bytes: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """RFC 9112 6.1: well-formed framing with a coding the server does not implement
    is 501, not 400 (h11 says 501 for every Transfer-Encoding it refuses)."""
    await assert_rejected(request_bytes, 501, caplog)


# -- HTTP major version other than 1 → 505 ------------------------------------------


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        pytest.param(b"GET / HTTP/2.0\r\n" + HOST + b"\r\n", 505, id="HTTP/2.0"),
        pytest.param(b"GET / HTTP/3.0\r\n" + HOST + b"\r\n", 505, id="HTTP/3.0"),
        pytest.param(b"GET / HTTP/0.9\r\n" + HOST + b"\r\n", 505, id="HTTP/0.9"),
        # The HTTP/2 connection preface, sent by a client that assumes h2c.
        pytest.param(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505, id="h2-preface"),
        # Not HTTP-version syntax at all (RFC 9112 2.3: "HTTP/" DIGIT "." DIGIT):
        # h11 refuses to parse the request line, and 400 is the right answer for a
        # malformed request line, which cannot be said to name a version.
        pytest.param(b"GET / HTTP/2\r\n" + HOST + b"\r\n", 400, id="HTTP/2-no-minor"),
        pytest.param(b"GET / HTTP/10.0\r\n" + HOST + b"\r\n", 400, id="HTTP/10.0-two-digits"),
    ],
)
async def test_http_major_version_other_than_1_is_505_and_close(
    request_bytes: bytes, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    """h11 parses any ``HTTP/d.d`` and would hand an HTTP/2.0 request to the app as
    if it were HTTP/1.x; trioserve answers 505 (RFC 9110 15.6.6)."""
    await assert_rejected(request_bytes, status, caplog)


# -- Host missing or duplicated on HTTP/1.1 → 400 -------------------------------------


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(b"GET / HTTP/1.1\r\n\r\n", id="missing"),
        pytest.param(b"GET / HTTP/1.1\r\nx-a: b\r\n\r\n", id="missing-with-other-headers"),
        pytest.param(b"GET / HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n", id="two-different"),
        pytest.param(b"GET / HTTP/1.1\r\nhost: a\r\nhost: a\r\n\r\n", id="two-identical"),
        pytest.param(b"GET / HTTP/1.1\r\nhost: a\r\nx-a: b\r\nHOST: a\r\n\r\n", id="two-any-case"),
    ],
)
async def test_missing_or_duplicate_host_is_400_and_close(
    request_bytes: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """RFC 9112 3.2: an HTTP/1.1 request without exactly one Host is a 400."""
    await assert_rejected(request_bytes, 400, caplog)


# -- obs-fold → 400 -------------------------------------------------------------------


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(
            b"GET / HTTP/1.1\r\n" + HOST + b"x-a: one\r\n two\r\nx-b: c\r\n\r\n", id="space"
        ),
        pytest.param(
            b"GET / HTTP/1.1\r\n" + HOST + b"x-a: one\r\n\ttwo\r\nx-b: c\r\n\r\n", id="tab"
        ),
        pytest.param(
            b"GET / HTTP/1.1\r\n" + HOST + b"x-a: one\r\n\t\r\nx-b: c\r\n\r\n",
            id="whitespace-only-continuation",
        ),
        pytest.param(
            b"GET / HTTP/1.1\n" + b"host: example.com\nx-a: one\n two\nx-b: c\n\n",
            id="bare-lf-line-endings",
        ),
    ],
)
async def test_obs_fold_is_400_and_close(
    request_bytes: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """RFC 9112 5.2 lets a server reject obs-fold with 400; h11 silently unfolds it
    into one value, which is how two parsers come to disagree on a header."""
    await assert_rejected(request_bytes, 400, caplog)


# -- CONNECT → 501 unless allow_connect --------------------------------------------------


CONNECT = b"CONNECT example.com:443 HTTP/1.1\r\nhost: example.com:443\r\n" + CLOSE + b"\r\n"


async def test_connect_is_501_and_close_by_default(caplog: pytest.LogCaptureFixture) -> None:
    """h11 passes CONNECT to the app; trioserve has no tunnel, so it says 501."""
    await assert_rejected(CONNECT, 501, caplog)


@pytest.mark.parametrize("app_status", [403, 200])
async def test_connect_reaches_the_app_with_allow_connect(
    app_status: int, caplog: pytest.LogCaptureFixture
) -> None:
    """With ``allow_connect=True`` the app decides. Its answer (a refusal, or a
    bodiless 2xx, the only 2xx RFC 9110 9.3.6 allows) reaches the client, and the
    connection closes: trioserve cannot tunnel, so it must not keep the connection
    for HTTP after a 2xx either."""
    response, call = await assert_served(
        CONNECT, caplog, Config(allow_connect=True), RecordingApp(app_status)
    )
    assert call.scope["method"] == "CONNECT"
    assert call.scope["raw_path"] == b"example.com:443"
    assert response.body == b""


# -- asterisk-form only with OPTIONS; targets in no usable form → 400 --------------------


async def test_asterisk_form_with_options_reaches_the_app(
    caplog: pytest.LogCaptureFixture,
) -> None:
    response, call = await assert_served(b"OPTIONS * HTTP/1.1\r\n" + HOST + CLOSE + b"\r\n", caplog)
    assert (call.scope["method"], call.scope["path"], call.scope["raw_path"]) == (
        "OPTIONS",
        "*",
        b"*",
    )
    assert response.status == 200


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(b"GET * HTTP/1.1\r\n" + HOST + b"\r\n", id="GET-asterisk"),
        # The answer to a HEAD has no body, even an error made by the server.
        pytest.param(b"HEAD * HTTP/1.1\r\n" + HOST + b"\r\n", id="HEAD-asterisk"),
        pytest.param(
            b"POST * HTTP/1.1\r\n" + HOST + b"content-length: 0\r\n\r\n", id="POST-asterisk"
        ),
        # authority-form is for CONNECT only (RFC 9112 3.2.3)
        pytest.param(b"GET example.com:80 HTTP/1.1\r\n" + HOST + b"\r\n", id="GET-authority-form"),
        # neither origin-form ("/" first), absolute-form, authority- nor asterisk-form
        pytest.param(b"GET a/b HTTP/1.1\r\n" + HOST + b"\r\n", id="GET-relative-path"),
        # RFC 9110 4.2.1: an "http" URI with an empty host MUST be rejected as invalid
        pytest.param(b"GET http:///a HTTP/1.1\r\n" + HOST + b"\r\n", id="GET-http-uri-empty-host"),
    ],
)
async def test_target_form_the_method_may_not_use_is_400_and_close(
    request_bytes: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """h11 accepts any visible-ASCII target; an app then gets ``path == "*"`` or a
    path that does not start with "/", which routers were never written for."""
    await assert_rejected(request_bytes, 400, caplog)


# -- target longer than max_target_length → 414 ----------------------------------------

LONG_TARGET_9K = b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n" + HOST + b"\r\n"
LONG_TARGET_17K = b"GET /" + b"a" * 17000 + b" HTTP/1.1\r\n" + HOST + b"\r\n"


@pytest.mark.parametrize(
    "pieces",
    [
        # 9 KB target: over max_target_length (8192) with the whole head under 16 KiB.
        pytest.param([LONG_TARGET_9K], id="9k-one-write"),
        pytest.param(pieces_of(LONG_TARGET_9K, 1000), id="9k-in-pieces"),
        # Over 16 KiB: still the target's fault, so 414 rather than 431, whether the
        # head arrives whole or its request line never ends (h11's own limit fires).
        pytest.param([LONG_TARGET_17K], id="17k-one-write"),
        pytest.param(pieces_of(LONG_TARGET_17K[:17000], 1000), id="17k-in-pieces-never-ending"),
        pytest.param([LONG_TARGET_17K[:17000]], id="17k-one-write-never-ending"),
    ],
)
async def test_target_longer_than_limit_is_414_and_close(
    pieces: list[bytes], caplog: pytest.LogCaptureFixture
) -> None:
    await assert_rejected(pieces, 414, caplog)


# -- header block too large / too many fields → 431 ------------------------------------

BIG_HEAD = b"GET / HTTP/1.1\r\n" + HOST + many_headers(20, b"v" * 1000) + b"\r\n"  # ~20 KiB
MANY_HEADERS = b"GET / HTTP/1.1\r\n" + HOST + many_headers(100) + b"\r\n"  # 101 fields, ~1 KiB


@pytest.mark.parametrize(
    "pieces",
    [
        # h11 checks its limit only while a head is incomplete: a whole 20 KiB head
        # in one read gets through h11 alone.
        pytest.param([BIG_HEAD], id="big-head-one-write"),
        pytest.param(pieces_of(BIG_HEAD, 1000), id="big-head-in-pieces"),
        pytest.param(pieces_of(BIG_HEAD[:-2], 1000), id="big-head-in-pieces-never-ending"),
        pytest.param([MANY_HEADERS], id="101-small-headers-one-write"),
        pytest.param(pieces_of(MANY_HEADERS, 100), id="101-small-headers-in-pieces"),
    ],
)
async def test_header_block_over_size_or_count_limit_is_431_and_close(
    pieces: list[bytes], caplog: pytest.LogCaptureFixture
) -> None:
    assert len(MANY_HEADERS) < 16 * 1024 < len(BIG_HEAD)
    await assert_rejected(pieces, 431, caplog)


# -- chunk-size over 16 hex digits, oversized chunk extensions → 400 --------------------


@pytest.mark.parametrize(
    "body",
    [
        # Values are small; only the number of digits is wrong. h11 takes up to 20.
        pytest.param(b"00000000000000005\r\nhello\r\n0\r\n\r\n", id="17-hex-digits"),
        pytest.param(b"00000000000000000005\r\nhello\r\n0\r\n\r\n", id="20-hex-digits"),
        # One chunk header line longer than the whole head limit.
        pytest.param(
            b"5;ext=" + b"x" * 20_000 + b"\r\nhello\r\n0\r\n\r\n", id="20k-chunk-extension"
        ),
    ],
)
async def test_chunk_header_over_limits_is_400_and_close(
    body: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """The head is valid, so the app runs; reading the body it sees
    ``http.disconnect`` (never the body), and the client gets 400 and a close.
    A server on h11 alone accepts the oversized chunk header and echoes "hello"."""
    app = await assert_rejected(
        post(HOST + b"transfer-encoding: chunked\r\n", body), 400, caplog, app_called=True
    )
    assert app.calls[0].messages[-1] == {"type": "http.disconnect"}
    assert app.calls[0].body == b""


# -- body over max_body_size → 413 ------------------------------------------------------


async def test_declared_body_over_max_body_size_is_413_before_the_app_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    await assert_rejected(
        post(HOST + b"content-length: 1001\r\n", b"x" * 1001),
        413,
        caplog,
        Config(max_body_size=MAX_BODY),
    )


@pytest.mark.parametrize(
    "pieces",
    [
        pytest.param(
            [post(HOST + b"transfer-encoding: chunked\r\n", chunked(b"x" * 600, b"y" * 600))],
            id="one-write",
        ),
        pytest.param(
            [
                post(HOST + b"transfer-encoding: chunked\r\n", b"258\r\n" + b"x" * 600 + b"\r\n"),
                b"258\r\n" + b"y" * 600 + b"\r\n",
                b"0\r\n\r\n",
            ],
            id="chunk-by-chunk",
        ),
    ],
)
async def test_chunked_body_growing_past_max_body_size_is_413(
    pieces: list[bytes], caplog: pytest.LogCaptureFixture
) -> None:
    """Nothing announces the size of a chunked body; when it crosses the limit the
    app (which has not started its response) sees ``http.disconnect`` and the
    client gets 413 and a close, never the app's 200."""
    app = await assert_rejected(
        pieces, 413, caplog, Config(max_body_size=MAX_BODY), app_called=True
    )
    (call,) = app.calls
    assert call.messages[-1] == {"type": "http.disconnect"}
    assert len(call.body) <= MAX_BODY


# -- absolute-form targets ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "path", "raw_path", "query", "host"),
    [
        (b"http://example.com:8080/a%20b?x=1", "/a b", b"/a%20b", b"x=1", b"example.com:8080"),
        (b"http://example.com", "/", b"/", b"", b"example.com"),
        (b"http://example.com?x=1", "/", b"/", b"x=1", b"example.com"),
        (b"HTTP://Example.COM/p", "/p", b"/p", b"", b"Example.COM"),
        (b"http://[::1]:8080/p/q?r", "/p/q", b"/p/q", b"r", b"[::1]:8080"),
    ],
)
async def test_absolute_form_target_gives_a_scope_consistent_with_its_authority(
    target: bytes,
    path: str,
    raw_path: bytes,
    query: bytes,
    host: bytes,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """RFC 9112 3.2.2: with an absolute-form target the server ignores Host and uses
    the target's authority. A naive server gives the app the full URL as ``path``
    and the Host field it was told to ignore."""
    _, call = await assert_served(
        b"GET " + target + b" HTTP/1.1\r\nhost: other\r\n" + CLOSE + b"\r\n", caplog
    )
    scope = call.scope
    assert (scope["path"], scope["raw_path"], scope["query_string"]) == (path, raw_path, query)
    assert call.header_values(b"host") == [host]


# -- trailers -----------------------------------------------------------------------------


async def test_trailers_never_leak_framing_fields_into_headers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A chunked request whose trailers carry ``Content-Length: 999`` and
    ``Transfer-Encoding: chunked``: the body arrives intact, ``scope["headers"]``
    is exactly the request head's fields, and the framing is untouched: the next
    pipelined request on the connection is answered too (a server that merged the
    trailers would wait for 999 more bytes or mis-frame what follows)."""
    caplog.set_level(logging.DEBUG, logger=ERROR_LOGGER)
    app = RecordingApp()
    first = post(
        HOST + b"transfer-encoding: chunked\r\n",
        chunked(
            b"hello ",
            b"world",
            trailers=b"Content-Length: 999\r\nTransfer-Encoding: chunked\r\nx-trailer: t\r\n",
        ),
    )
    second = b"GET /next HTTP/1.1\r\n" + HOST + CLOSE + b"\r\n"
    async with open_test_server(app) as server:
        result = await exchange(server.port, [first + second], expected=2)
    assert [r.status for r in result.responses] == [200, 200]
    assert result.closed
    first_call, second_call = app.calls
    assert first_call.body == b"hello world"
    assert first_call.scope["headers"] == [
        (b"host", b"example.com"),
        (b"transfer-encoding", b"chunked"),
    ]
    assert second_call.scope["path"] == "/next"
    no_error_logged(caplog)


# -- controls: valid requests are served ----------------------------------------------------


@pytest.mark.parametrize(
    ("request_bytes", "config", "echoed"),
    [
        pytest.param(b"GET / HTTP/1.1\r\n" + HOST + CLOSE + b"\r\n", None, b"", id="plain-GET"),
        pytest.param(
            post(HOST + CLOSE + b"transfer-encoding: chunked\r\n", chunked(b"hello ", b"world")),
            None,
            b"hello world",
            id="chunked-POST",
        ),
        pytest.param(
            post(HOST + CLOSE + b"Transfer-Encoding: Chunked\r\n", chunked(b"hi")),
            None,
            b"hi",
            id="chunked-any-case",
        ),
        pytest.param(
            post(HOST + CLOSE + b"content-length: 5\r\n", b"hello"), None, b"hello", id="CL-POST"
        ),
        pytest.param(b"GET / HTTP/1.0\r\n\r\n", None, b"", id="HTTP/1.0-without-host"),
        pytest.param(
            b"GET / HTTP/1.1\r\n" + HOST + CLOSE + many_headers(98) + b"\r\n",
            None,
            b"",
            id="exactly-100-headers",
        ),
        pytest.param(
            b"GET /" + b"a" * 8191 + b" HTTP/1.1\r\n" + HOST + CLOSE + b"\r\n",
            None,
            b"",
            id="target-exactly-8192",
        ),
        pytest.param(
            post(HOST + CLOSE + b"content-length: 1000\r\n", b"x" * 1000),
            Config(max_body_size=MAX_BODY),
            b"x" * 1000,
            id="CL-body-exactly-max",
        ),
        pytest.param(
            post(HOST + CLOSE + b"transfer-encoding: chunked\r\n", chunked(b"x" * 600, b"y" * 400)),
            Config(max_body_size=MAX_BODY),
            b"x" * 600 + b"y" * 400,
            id="chunked-body-exactly-max",
        ),
    ],
)
async def test_valid_request_is_still_served(
    request_bytes: bytes,
    config: Config | None,
    echoed: bytes,
    caplog: pytest.LogCaptureFixture,
) -> None:
    response, call = await assert_served(request_bytes, caplog, config)
    assert response.body == echoed
    assert call.body == echoed


async def test_head_of_exactly_the_size_limit_is_served(caplog: pytest.LogCaptureFixture) -> None:
    start = b"GET / HTTP/1.1\r\n" + HOST + CLOSE + b"x-pad: "
    head = start + b"v" * (16 * 1024 - len(start) - 4) + b"\r\n\r\n"
    assert len(head) == 16 * 1024
    _, call = await assert_served(head, caplog)
    assert len(call.header_values(b"x-pad")[0]) > 16_000
