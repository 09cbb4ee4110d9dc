"""Limits: a request head over ``h11_max_incomplete_size`` gets a 431 however its
bytes arrive (in one write, dribbled, padded with whitespace, or pipelined behind a
good request) and never reaches the app; a head just under the limit is served, and
a raised limit accepts what the default refuses. ``limit_concurrency`` answers a 503
while the requests being served fill it, and idle keep-alive connections do not
count.

The tests run the real server over in-memory streams and parse its answers with an
h11 client.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
from _helpers import (
    GET,
    Receive,
    Scope,
    Send,
    Wire,
    dribble,
    http_only,
    parse_single,
    raw_closed_at_once,
    scope_recorder,
    text_app,
)

from trioserve import Config
from trioserve.testing import open_test_client

# -- the size of a request head ------------------------------------------------------------


def big_head(filler: int) -> bytes:
    return b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * filler + b"\r\n\r\n"


async def test_request_head_over_limit_in_one_write_gets_431(autojump_clock: Any) -> None:
    """h11 limits only incomplete heads; a whole head that arrives in one read slips
    past a naive wrapper."""
    app, calls = scope_recorder()
    async with open_test_client(app, Config(h11_max_incomplete_size=1024)) as client:
        data = await raw_closed_at_once(client, big_head(2000))
    assert data.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    response = parse_single(data)
    assert response.body == b"Request Header Fields Too Large"
    assert response.header(b"connection") == b"close"
    assert calls == []


async def test_request_head_over_limit_dribbled_gets_431() -> None:
    app, calls = scope_recorder()
    async with open_test_client(app, Config(h11_max_incomplete_size=1024)) as client:
        conn = await client.connect()
        await dribble(conn, big_head(2000), 50)
        data = await conn.receive_until_closed()
        await conn.aclose()
    assert data.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert calls == []


async def test_request_head_just_under_limit_is_accepted() -> None:
    head = big_head(0)
    filler = 1024 - len(head) - 10
    async with open_test_client(text_app(), Config(h11_max_incomplete_size=1024)) as client:
        conn = await client.connect()
        await conn.send_all(big_head(filler))
        response = await Wire(conn).response()
        await conn.aclose()
    assert response.status == 200


@pytest.mark.parametrize("how", ["one-write", "dribbled"])
async def test_whitespace_padded_head_over_limit_gets_431(how: str) -> None:
    """docs/behaviour.md: "a larger head gets 431 however its bytes arrive". A head
    of 20 KiB made large by optional whitespace around a value must not be
    accepted in one write while it is refused when dribbled."""
    app, calls = scope_recorder()
    request = b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: " + b" " * 20_000 + b"v\r\n\r\n"
    async with open_test_client(app) as client:
        conn = await client.connect()
        if how == "one-write":
            await conn.send_all(request)
        else:
            await dribble(conn, request, 1000)
        with trio.fail_after(5):
            status = (await Wire(conn).response()).status
        await conn.aclose()
    assert status == 431
    assert calls == []


async def test_pipelined_oversized_head_in_same_write_gets_431() -> None:
    """A head over the limit that arrives in the same write as a small request
    before it must be refused like any other ("however its bytes arrive")."""
    calls: list[str] = []

    @http_only
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        calls.append(scope["path"])
        await text_app()(scope, receive, send)

    big = b"GET /big HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 2000 + b"\r\n\r\n"
    async with open_test_client(app, Config(h11_max_incomplete_size=1024)) as client:
        conn = await client.connect()
        await conn.send_all(GET + big)
        wire = Wire(conn)
        with trio.fail_after(5):
            first = await wire.response()
            second = await wire.response()
        await conn.aclose()
    assert first.status == 200
    assert second.status == 431
    assert calls == ["/"]


async def test_huge_headers_rejected_by_default_accepted_with_raised_limit() -> None:
    seen: list[int] = []

    @http_only
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.extend(len(v) for k, v in scope["headers"] if k == b"x-big")
        await text_app()(scope, receive, send)

    request = big_head(20 * 1024)
    async with open_test_client(app) as client:
        conn = await client.connect()
        await conn.send_all(request)
        refused = await Wire(conn).response()
        await conn.aclose()
    async with open_test_client(app, Config(h11_max_incomplete_size=64 * 1024)) as client:
        conn = await client.connect()
        await conn.send_all(request)
        accepted = await Wire(conn).response()
        await conn.aclose()
    assert refused.status == 431
    assert accepted.status == 200
    assert seen == [20 * 1024]


# -- limit_concurrency ---------------------------------------------------------------------


async def test_limit_concurrency_gives_503_and_idle_connections_do_not_count() -> None:
    started = trio.Event()
    release = trio.Event()
    calls: list[str] = []

    @http_only
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        calls.append(scope["path"])
        if scope["path"] == "/slow":
            started.set()
            await release.wait()
        await text_app()(scope, receive, send)

    async with open_test_client(app, Config(limit_concurrency=1)) as client:
        busy = await client.connect()
        await busy.send_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        with trio.fail_after(5):
            await started.wait()
            rejected = parse_single(await client.raw(b"GET /over HTTP/1.1\r\nHost: x\r\n\r\n"))
        release.set()
        slow = await Wire(busy).response()
        # ``busy`` is now an idle keep-alive connection: it must not count.
        after = await client.get("/after")
        await busy.aclose()
    assert rejected.status == 503
    assert rejected.reason == b"Service Unavailable"
    assert rejected.body == b"Service Unavailable"
    assert rejected.header(b"connection") == b"close"
    assert slow.status == 200
    assert after.status == 200
    assert calls == ["/slow", "/after"]
