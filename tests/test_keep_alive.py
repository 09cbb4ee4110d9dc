"""Keep-alive and ``Connection: close``: several requests on one connection, pipelined
ones answered in order and one at a time; ``Connection: close`` from the client or
the app ends the connection after that response, no pipelined request after it is
parsed or served, and the closing request's own body is still delivered whole. (How
long an idle connection is kept is in ``test_timeouts.py``.)

The tests send raw bytes over in-memory streams and check the exact bytes that come
back (see ``_helpers.py``).
"""

from __future__ import annotations

from typing import Any

import trio
import trio.lowlevel
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
    raw_closed_at_once,
    start,
    text_app,
)

from trioserve.testing import open_test_client

# -- several requests on one connection ----------------------------------------------------


async def test_keep_alive_serves_two_requests_on_one_connection() -> None:
    paths: list[str] = []

    @http_only
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        paths.append(scope["path"])
        payload = scope["path"].encode()
        await send(start(200, [(b"content-length", str(len(payload)).encode())]))
        await send(body(payload))

    async with open_test_client(app) as client:
        conn = await client.connect()
        first = await conn.request("GET", "/one")
        second = await conn.request("GET", "/two")
        await conn.aclose()
    assert (first.status, first.body) == (200, b"/one")
    assert (second.status, second.body) == (200, b"/two")
    assert first.header("connection") is None
    assert paths == ["/one", "/two"]


async def test_pipelined_requests_answered_in_order_one_at_a_time() -> None:
    log: list[tuple[str, str]] = []

    @http_only
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        log.append(("start", path))
        await trio.lowlevel.checkpoint()  # a naive server may start the next one now
        await send(start(200, [(b"content-length", str(len(path)).encode())]))
        await trio.lowlevel.checkpoint()
        await send(body(path.encode()))
        log.append(("end", path))

    requests = (
        b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /2 HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    async with open_test_client(app) as client:
        data = await client.raw(requests)
    responses, rest = parse_all(data)
    assert rest == b""
    assert [r.body for r in responses] == [b"/1", b"/2", b"/3"]
    assert log == [
        ("start", "/1"),
        ("end", "/1"),
        ("start", "/2"),
        ("end", "/2"),
        ("start", "/3"),
        ("end", "/3"),
    ]


# -- Connection: close ---------------------------------------------------------------------


async def test_client_connection_close_gets_connection_close_and_eof(autojump_clock: Any) -> None:
    async with open_test_client(text_app()) as client:
        data = await raw_closed_at_once(client, GET_CLOSE)
    response = parse_single(data)
    assert response.status == 200
    assert response.values(b"connection") == [b"close"]
    assert b"\r\nconnection: close\r\n" in data


async def test_app_connection_close_header_closes_after_response(autojump_clock: Any) -> None:
    """The app's ``Connection: close`` ends the connection: the pipelined second
    request is never served, and the header appears once, lower-cased."""
    calls: list[str] = []

    @http_only
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        calls.append(scope["path"])
        await send(start(200, [(b"Connection", b"close"), (b"content-length", b"2")]))
        await send(body(b"ok"))

    async with open_test_client(app) as client:
        data = await raw_closed_at_once(client, GET + b"GET /second HTTP/1.1\r\nHost: x\r\n\r\n")
    response = parse_single(data)
    assert response.body == b"ok"
    assert response.values(b"connection") == [b"close"]
    assert data.count(b"onnection") == 1
    assert calls == ["/"]


async def test_request_connection_close_stops_pipelined_requests(autojump_clock: Any) -> None:
    """After ``Connection: close`` the following (here invalid: no Host) request
    must not be parsed; a naive server answers it with a 400."""
    calls: list[str] = []

    @http_only
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        calls.append(scope["path"])
        await text_app()(scope, receive, send)

    async with open_test_client(app) as client:
        data = await raw_closed_at_once(
            client,
            b"GET /first HTTP/1.1\r\nConnection: close\r\nHost: a\r\n\r\nGET /second HTTP/1.1\r\n\r\n",
        )
    response = parse_single(data)
    assert response.status == 200
    assert b"400" not in data
    assert calls == ["/first"]


async def test_connection_close_post_body_is_fully_delivered(autojump_clock: Any) -> None:
    payload = b"x" * 50_000
    request = (
        b"POST /p HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n\r\n"
        % len(payload)
    ) + payload
    async with open_test_client(echo_app()) as client:
        data = await raw_closed_at_once(client, request)
    response = parse_single(data, "POST")
    assert response.body == payload
    assert response.header(b"connection") == b"close"
