"""Malformed requests: garbage, a bad request line or malformed headers (duplicate
or listed content-lengths, a bare CR, a leading fold, a bad name) get a 400 and a
close, and never reach the app; an obs-fold continuation line never becomes a header
of its own; an unknown transfer coding gets a 501. (The rules trioserve adds on top
of h11 are in ``test_policy.py``, request heads that are too large in
``test_limits.py``.) Every answer after which the server closes the connection
says ``connection: close``: each refusal (400, 408, 413, 414, 431, 501, 503, 505),
a response to a request whose body waits for an unsent ``100 Continue``, and a 2xx
to ``CONNECT``.

The tests send raw bytes over in-memory streams and check the exact bytes that come
back (see ``_helpers.py``).
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
from _helpers import (
    GET,
    NODATE,
    Receive,
    Scope,
    Send,
    echo_app,
    http_only,
    parse_single,
    raw_closed_at_once,
    scope_recorder,
    text_app,
)

from trioserve import Config
from trioserve.testing import open_test_client

BAD_400 = (
    b"HTTP/1.1 400 Bad Request\r\n"
    b"server: trioserve\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"content-length: 30\r\n"
    b"connection: close\r\n"
    b"\r\n"
    b"Invalid HTTP request received."
)


async def test_garbage_gets_400_and_close(autojump_clock: Any) -> None:
    app, calls = scope_recorder()
    async with open_test_client(app, NODATE) as client:
        data = await raw_closed_at_once(client, b"\x16\x03\x01\x02\x00garbage\r\n\r\n")
    assert data == BAD_400
    assert calls == []


@pytest.mark.parametrize(
    "request_line",
    [b"G?T / HTTP/1.1", b"GET /a b HTTP/1.1", b"GET / HTTP1.1"],
    ids=["bad-method", "space-in-target", "bad-version"],
)
async def test_bad_request_line_gets_400(request_line: bytes, autojump_clock: Any) -> None:
    app, calls = scope_recorder()
    async with open_test_client(app, NODATE) as client:
        data = await raw_closed_at_once(client, request_line + b"\r\nHost: x\r\n\r\n")
    assert data == BAD_400
    assert calls == []


@pytest.mark.parametrize(
    "headers",
    [
        b"Host: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n",
        b"Host: x\r\nContent-Length: 3, 4\r\n",
        b"Host: x\r\nX-Bad: a\rb\r\nContent-Length: 4\r\n",
        b" X-Continued-First: a\r\nHost: x\r\nContent-Length: 4\r\n",
        b"Host: x\r\nBad Name: x\r\nContent-Length: 4\r\n",
    ],
    ids=["duplicate-content-length", "list-content-length", "bare-cr", "leading-fold", "name"],
)
async def test_malformed_headers_get_400(headers: bytes, autojump_clock: Any) -> None:
    app, calls = scope_recorder()
    async with open_test_client(app, NODATE) as client:
        data = await raw_closed_at_once(client, b"POST / HTTP/1.1\r\n" + headers + b"\r\nabcd")
    assert data == BAD_400
    assert calls == []


async def test_obs_fold_is_never_taken_as_a_separate_header() -> None:
    """RFC 9112 §5.2: a server must reject obs-fold (400) or replace it with SP.
    h11 does the latter (it is not a 400 as one might expect from "h11's
    strictness"); either way the continuation line must not become a header."""
    seen: list[list[tuple[bytes, bytes]]] = []

    @http_only
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(list(scope["headers"]))
        await text_app()(scope, receive, send)

    request = b"GET / HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n  b\r\nConnection: close\r\n\r\n"
    async with open_test_client(app) as client:
        response = parse_single(await client.raw(request))
    if response.status == 400:
        assert seen == []
    else:
        assert response.status == 200
        (headers,) = seen
        assert (b"x-folded", b"a b") in headers
        assert all(not name.startswith(b" ") and value != b"b" for name, value in headers)


async def test_unknown_transfer_coding_gets_501(autojump_clock: Any) -> None:
    app, calls = scope_recorder()
    # A coding trioserve does not implement, before the final chunked (RFC 9112 6.1);
    # a list that does not end in chunked is a 400 instead (tests/test_policy.py).
    request = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\nabc"
    async with open_test_client(app, NODATE) as client:
        data = await raw_closed_at_once(client, request)
    assert data.startswith(b"HTTP/1.1 501 Not Implemented\r\n")
    response = parse_single(data)
    assert response.body == b"Not Implemented"
    assert response.header(b"connection") == b"close"
    assert calls == []


# -- every answer after which the server closes says so ------------------------------------

LONG_TARGET = b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
MANY_FIELDS = b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-A: 1\r\n" * 101 + b"\r\n"
REJECTED = {
    "400-garbage": (b"\x00\x01garbage\r\n\r\n", Config(), 400),
    "400-two-hosts": (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", Config(), 400),
    "414": (LONG_TARGET, Config(), 414),
    "431": (MANY_FIELDS, Config(), 431),
    "413": (
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n",
        Config(max_body_size=10),
        413,
    ),
    "505": (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", Config(), 505),
    "501-connect": (b"CONNECT example:443 HTTP/1.1\r\nHost: example:443\r\n\r\n", Config(), 501),
    "501-coding": (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        Config(),
        501,
    ),
    "400-http10": (b"GET /\x00 HTTP/1.0\r\n\r\n", Config(), 400),
}


@pytest.mark.parametrize(("request_bytes", "config", "status"), REJECTED.values(), ids=REJECTED)
async def test_rejected_request_gets_connection_close(
    request_bytes: bytes, config: Config, status: int, autojump_clock: Any
) -> None:
    app, scopes = scope_recorder()
    async with open_test_client(app, config) as client:
        data = await raw_closed_at_once(client, request_bytes + GET)
    response = parse_single(data)
    assert response.status == status
    assert response.header(b"connection") == b"close"
    assert scopes == []


async def test_header_timeout_gets_408_with_connection_close(autojump_clock: Any) -> None:
    app, scopes = scope_recorder()
    async with open_test_client(app, Config(header_timeout=2)) as client:
        data = await client.raw(b"GET / HTTP/1.1\r\nHost: x\r\n")
    response = parse_single(data)
    assert response.status == 408
    assert response.header(b"connection") == b"close"
    assert scopes == []


async def test_body_timeout_gets_408_with_connection_close(autojump_clock: Any) -> None:
    async with open_test_client(echo_app(), Config(read_timeout=2)) as client:
        data = await client.raw(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
    response = parse_single(data)
    assert response.status == 408
    assert response.header(b"connection") == b"close"


async def test_chunked_body_over_the_limit_gets_413_with_connection_close(
    autojump_clock: Any,
) -> None:
    request = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n20\r\n" + b"x" * 32
    async with open_test_client(echo_app(), Config(max_body_size=10)) as client:
        data = await raw_closed_at_once(client, request + b"\r\n0\r\n\r\n" + GET)
    response = parse_single(data)
    assert response.status == 413
    assert response.header(b"connection") == b"close"


async def test_overload_gets_503_with_connection_close(autojump_clock: Any) -> None:
    release = trio.Event()
    entered = trio.Event()

    @http_only
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        entered.set()
        await release.wait()
        await text_app()(scope, receive, send)

    async with open_test_client(app, Config(limit_concurrency=1)) as client:
        busy = await client.connect()
        await busy.send_all(GET)
        await entered.wait()
        data = await raw_closed_at_once(client, GET + GET)
        release.set()
        await busy.aclose()
    response = parse_single(data)
    assert response.status == 503
    assert response.header(b"connection") == b"close"


async def test_unanswered_expect_continue_response_says_connection_close(
    autojump_clock: Any,
) -> None:
    """The app answers without reading a body the client holds back until it hears
    ``100 Continue``: the body can never be read, so the connection ends, and the
    response says so."""
    request = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
    async with open_test_client(text_app()) as client:
        data = await raw_closed_at_once(client, request)
    response = parse_single(data, "POST")
    assert (response.status, response.informational) == (200, [])
    assert response.header(b"connection") == b"close"


async def test_answered_connect_says_connection_close(autojump_clock: Any) -> None:
    """A 2xx to CONNECT would make a tunnel, which trioserve does not offer: the
    connection ends after the head, and the head says so."""
    request = b"CONNECT example:443 HTTP/1.1\r\nHost: example:443\r\n\r\n"
    async with open_test_client(text_app(), Config(allow_connect=True)) as client:
        data = await raw_closed_at_once(client, request)
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\nconnection: close\r\n" in data
