"""Malformed requests: garbage, a bad request line or malformed headers (duplicate
or listed content-lengths, a bare CR, a leading fold, a bad name) get a 400 and a
close, and never reach the app; an obs-fold continuation line never becomes a header
of its own; an unknown transfer coding gets a 501. (The rules trioserve adds on top
of h11 are in ``test_policy.py``, request heads that are too large in
``test_limits.py``.)

The tests send raw bytes over in-memory streams and check the exact bytes that come
back (see ``_helpers.py``).
"""

from __future__ import annotations

from typing import Any

import pytest
from _helpers import (
    NODATE,
    Receive,
    Scope,
    Send,
    http_only,
    parse_single,
    raw_closed_at_once,
    scope_recorder,
    text_app,
)

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
