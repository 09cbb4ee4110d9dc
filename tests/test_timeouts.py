"""Timeouts and the graceful-shutdown deadline.

Every test but one runs the real server over in-memory streams under
``autojump_clock`` and measures ``trio.current_time()`` deltas; the write deadline on
a real socket is waited for in real time, under a hang guard:

- ``keep_alive_timeout``: counts only idle time between requests, restarts after
  every response, is not running while a pipelined request is served, and also
  bounds a connection that never sends a byte;
- ``header_timeout``: the whole request head, from its first byte (slowloris);
- ``read_timeout``: the gap between pieces of a request body;
- the write deadline (``write_timeout``) for a client that stops reading, over a
  lockstep stream and on a real socket;
- ``graceful_timeout``: in-flight requests get that long after shutdown begins
  (and finish with ``connection: close``), then they are cancelled; idle
  connections close at once.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import pytest
import trio
from _helpers import (
    ERROR_LOGGER,
    Receive,
    Scope,
    Send,
    Wire,
    body,
    error_log_records,
    error_records,
    http_only,
    parse_single,
    start,
    text_app,
)

import trioserve
from trioserve import Config
from trioserve.connection._http11 import SHUTDOWN_IDLE_GRACE
from trioserve.testing import TestConnection, open_test_client, open_test_server


async def hello(scope: Any, receive: Any, send: Any) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", b"5")],
        }
    )
    await send({"type": "http.response.body", "body": b"hello"})


async def dribble(conn: TestConnection, data: bytes, interval: float) -> None:
    """Send ``data`` one byte every ``interval`` seconds until done or the server
    closes the connection."""
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        for i in range(len(data)):
            await conn.send_all(data[i : i + 1])
            await trio.sleep(interval)


# -- keep-alive ------------------------------------------------------------------------


async def test_keep_alive_timeout_closes_idle_connection_not_before_and_restarts_after_each_response(
    autojump_clock: trio.abc.Clock,
) -> None:
    """keep_alive_timeout=5. Requests 4.5 s after each response are still served (so
    the timer is not a connection lifetime: the third request comes 9 s after the
    first response), and the connection closes exactly 5 s after the last response."""
    async with open_test_client(http_only(hello), Config(keep_alive_timeout=5)) as client:
        conn = await client.connect()
        assert (await conn.request("GET", "/")).status == 200
        for _ in range(2):
            await trio.sleep(4.5)
            response = await conn.request("GET", "/")
            assert (response.status, response.body) == (200, b"hello")
        last_response = trio.current_time()
        assert await conn.receive_some() == b""
        assert trio.current_time() - last_response == pytest.approx(5, abs=0.01)
        await conn.aclose()


async def test_connection_that_never_sends_a_byte_is_closed_at_keep_alive_timeout(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A new connection waits for its first request like an idle one: closed quietly
    (no bytes sent) after keep_alive_timeout, not header_timeout and not never."""
    config = Config(keep_alive_timeout=3, header_timeout=10)
    async with open_test_client(http_only(hello), config) as client:
        conn = await client.connect()
        start = trio.current_time()
        assert await conn.receive_some() == b""
        assert trio.current_time() - start == pytest.approx(3, abs=0.01)
        await conn.aclose()


async def test_keep_alive_timeout_closes_idle_connection(autojump_clock: Any) -> None:
    async with open_test_client(text_app(), Config(keep_alive_timeout=5)) as client:
        conn = await client.connect()
        response = await conn.request("GET", "/")
        assert response.status == 200
        idle_since = trio.current_time()
        with trio.move_on_after(4.9):
            await conn.receive_some()
            pytest.fail("the connection ended before the keep-alive timeout")
        assert await conn.receive_some() == b""
        assert trio.current_time() - idle_since == pytest.approx(5)
        await conn.aclose()


async def test_keep_alive_timer_not_armed_while_pipelined_request_runs(
    autojump_clock: Any,
) -> None:
    """The second pipelined request takes 10 s, twice the keep-alive timeout; a
    server that arms the timer after the first response kills it (as uvicorn once did)."""

    @http_only
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/slow":
            await trio.sleep(10)
        await text_app(scope["path"].encode())(scope, receive, send)

    async with open_test_client(app, Config(keep_alive_timeout=5)) as client:
        conn = await client.connect()
        wire = Wire(conn)
        await conn.send_all(
            b"GET /fast HTTP/1.1\r\nHost: x\r\n\r\nGET /slow HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        first = await wire.response()
        second = await wire.response()
        answered = trio.current_time()
        assert (first.body, second.body) == (b"/fast", b"/slow")
        # ... and the timer is armed again once the connection is idle.
        assert await wire.until_closed() == b""
        assert trio.current_time() - answered == pytest.approx(5)
        await conn.aclose()


# -- header timeout --------------------------------------------------------------------------


async def test_slowloris_head_dribbled_byte_by_byte_gets_408_at_header_timeout(
    autojump_clock: trio.abc.Clock,
) -> None:
    """One byte per second never lets an inactivity timer (keep_alive_timeout=2 here)
    expire; header_timeout=5 bounds the whole head from its first byte, so the
    client gets 408 and EOF 5 s after its first byte, and the app never runs."""
    calls: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        calls.append(scope["path"])
        await hello(scope, receive, send)

    head = b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: " + b"s" * 100 + b"\r\n\r\n"
    config = Config(keep_alive_timeout=2, header_timeout=5)
    async with open_test_client(http_only(app), config) as client:
        conn = await client.connect()
        async with trio.open_nursery() as nursery:
            first_byte = trio.current_time()
            nursery.start_soon(dribble, conn, head, 1)
            data = await conn.receive_some()
            answered = trio.current_time()
            data += await conn.receive_until_closed()
            closed = trio.current_time()
            nursery.cancel_scope.cancel()
        await conn.aclose()
    assert data.startswith(b"HTTP/1.1 408 ")
    assert data.count(b"HTTP/1.1 ") == 1
    assert answered - first_byte == pytest.approx(5, abs=0.01)
    assert closed - first_byte == pytest.approx(5, abs=0.01)
    assert calls == []


async def test_head_completed_within_header_timeout_is_served(
    autojump_clock: trio.abc.Clock,
) -> None:
    """header_timeout counts from the first byte of the head, not from the start of
    the connection: 3 s idle, then a head dribbled over about 4.5 s (7.5 s in all,
    more than header_timeout=5) is served."""
    head = b"GET /ok HTTP/1.1\r\nHost: a\r\n\r\n"
    config = Config(keep_alive_timeout=10, header_timeout=5)
    async with open_test_client(http_only(hello), config) as client:
        conn = await client.connect()
        await trio.sleep(3)
        first_byte = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(dribble, conn, head, 0.15)
            data = await conn.receive_some()
        assert trio.current_time() - first_byte > 4
        await conn.aclose()
    assert data.startswith(b"HTTP/1.1 200 ")
    assert data.endswith(b"\r\n\r\nhello")


# -- read timeout ----------------------------------------------------------------------------


async def test_body_gap_longer_than_read_timeout_gives_disconnect_and_closes(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """read_timeout=3 bounds each gap between body pieces, not the whole body: pieces
    2 s apart are delivered (the body takes longer than 3 s), then the client stalls
    and 3 s after the last piece receive() returns http.disconnect and the
    connection is closed (the app's attempt to answer raises ClientDisconnected)."""
    caplog.set_level(logging.DEBUG, logger="trioserve.error")
    messages: list[tuple[float, dict[str, Any]]] = []
    send_errors: list[BaseException] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            messages.append((trio.current_time(), message))
            if message["type"] == "http.disconnect":
                break
        try:
            await hello(scope, receive, send)
        except trioserve.ClientDisconnected as exc:
            send_errors.append(exc)

    config = Config(keep_alive_timeout=100, read_timeout=3)
    async with open_test_client(http_only(app), config) as client:
        conn = await client.connect()
        try:
            start = trio.current_time()
            await conn.send_all(
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n" + b"a" * 10
            )
            await trio.sleep(2)
            await conn.send_all(b"b" * 10)
            await trio.sleep(2)
            await conn.send_all(b"c" * 10)
            with trio.fail_after(60):
                data = await conn.receive_until_closed()
            closed = trio.current_time()
        finally:
            await conn.aclose()
    times = [t - start for t, _ in messages]
    kinds = [(m["type"], m.get("body"), m.get("more_body")) for _, m in messages]
    assert kinds == [
        ("http.request", b"a" * 10, True),
        ("http.request", b"b" * 10, True),
        ("http.request", b"c" * 10, True),
        ("http.disconnect", None, None),
    ]
    assert times == pytest.approx([0, 2, 4, 7], abs=0.01)
    assert closed - start == pytest.approx(7, abs=0.01)
    assert b"HTTP/1.1 200" not in data
    assert len(send_errors) == 1
    assert error_records(caplog) == []


# -- write deadline ----------------------------------------------------------------------------


async def test_client_that_stops_reading_hits_write_deadline(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that never reads a streaming response: with a lockstep stream every
    write blocks until the client reads, so the first write (head and first chunk)
    blocks; after write_timeout=2 send() raises ClientDisconnected and the server
    closes the connection. A server that buffers lets the app stream on without
    limit; one without a write deadline keeps the app blocked forever."""
    caplog.set_level(logging.DEBUG, logger="trioserve.error")
    outcome: list[tuple[float, int, BaseException]] = []
    app_done = trio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        chunks_sent = 0
        try:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            for _ in range(100):
                await send({"type": "http.response.body", "body": b"d" * 65536, "more_body": True})
                chunks_sent += 1
            await send({"type": "http.response.body", "body": b""})
        except BaseException as exc:
            outcome.append((trio.current_time(), chunks_sent, exc))
            raise
        finally:
            app_done.set()

    config = Config(write_timeout=2)
    async with open_test_client(http_only(app), config) as client:
        conn = await client.connect(lockstep=True)
        try:
            start = trio.current_time()
            await conn.send_all(b"GET /stream HTTP/1.1\r\nHost: a\r\n\r\n")
            with trio.fail_after(30):
                await app_done.wait()
            # The connection is closed: what the server had handed over, then EOF.
            with trio.fail_after(30):
                leftover = await conn.receive_until_closed()
            closed = trio.current_time()
        finally:
            # (On failure this also unblocks a write that has no deadline.)
            await conn.aclose()
    assert len(outcome) == 1
    failed_at, chunks_sent, exc = outcome[0]
    assert isinstance(exc, trioserve.ClientDisconnected)
    assert chunks_sent == 0
    assert failed_at - start == pytest.approx(2, abs=0.01)
    assert closed - start == pytest.approx(2, abs=0.01)
    assert len(leftover) < 2 * 65536
    assert error_records(caplog) == []


async def test_client_that_stops_reading_on_a_real_socket_hits_the_write_deadline(
    caplog: pytest.LogCaptureFixture, stalled_client: Any
) -> None:
    """On a plain socket the server writes to the file descriptor itself and waits
    (under ``write_timeout``) only for what the kernel does not take at once. A
    client with a small receive buffer that never reads: the socket buffers fill,
    a write is left waiting, and after write_timeout=0.5 the app's send() raises
    ClientDisconnected and the connection is closed. A fast path that spun on
    EAGAIN, or waited without the deadline, would keep the app blocked until the
    hang guard; one that buffered would let the app send all 4,096 chunks."""
    caplog.set_level(logging.DEBUG, logger=ERROR_LOGGER)
    outcome: list[tuple[int, BaseException]] = []
    app_done = trio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        sent = 0
        try:
            await send(start(200, [(b"content-length", b"%d" % (4096 * 65536))]))
            for _ in range(4096):
                await send(body(b"d" * 65536, more=True))
                sent += 1
        except BaseException as exc:
            outcome.append((sent, exc))
            raise
        finally:
            app_done.set()

    config = Config(lifespan="off", write_timeout=0.5)
    async with open_test_server(app, config) as server:
        with trio.fail_after(20):
            async with stalled_client(server.port) as stream:
                await app_done.wait()
                # The server closed the connection: the client reads what the
                # kernel buffered, then EOF (or a reset for the unread rest).
                with contextlib.suppress(trio.BrokenResourceError):
                    while await stream.receive_some(1 << 20):
                        pass
    assert len(outcome) == 1
    sent, exc = outcome[0]
    assert isinstance(exc, trioserve.ClientDisconnected)
    assert "in time" in str(exc)
    assert sent < 4096
    assert error_log_records(caplog) == []


# -- graceful shutdown -------------------------------------------------------------------------


async def test_graceful_shutdown_cancels_request_running_past_graceful_timeout(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """graceful_timeout=1 and an app that sleeps forever: leaving open_test_client
    returns after 1 s of virtual time, with the app cancelled (a server without the
    deadline would wait forever) and the client told so: a 503, then the
    connection closed."""
    caplog.set_level(logging.DEBUG, logger="trioserve.error")
    started = trio.Event()
    outcome: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        started.set()
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            outcome.append("cancelled")
            raise

    with trio.fail_after(100):
        async with open_test_client(http_only(app), Config(graceful_timeout=1)) as client:
            conn = await client.connect()
            await conn.send_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            await started.wait()
            shutdown_began = trio.current_time()
    assert trio.current_time() - shutdown_began == pytest.approx(1, abs=0.01)
    assert outcome == ["cancelled"]
    answer = await conn.receive_until_closed()
    assert answer.startswith(b"HTTP/1.1 503 ")
    assert b"\r\nconnection: close\r\n" in answer.lower()
    await conn.aclose()
    assert error_records(caplog) == []


async def test_graceful_shutdown_lets_request_shorter_than_graceful_timeout_finish(
    autojump_clock: trio.abc.Clock,
) -> None:
    """The deadline is a deadline, not an immediate cancel: a request that needs
    0.5 s of its graceful_timeout=1 finishes, its response reaches the client
    (with connection: close), and once the client has read it and closed,
    shutdown ends, at 0.5 s rather than at the deadline."""
    started = trio.Event()
    received: list[bytes] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        started.set()
        await trio.sleep(0.5)
        await hello(scope, receive, send)

    async def read_then_close(conn: TestConnection) -> None:
        received.append(await conn.receive_until_closed())
        await conn.aclose()

    async with trio.open_nursery() as nursery:
        async with open_test_client(http_only(app), Config(graceful_timeout=1)) as client:
            conn = await client.connect()
            await conn.send_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            nursery.start_soon(read_then_close, conn)
            await started.wait()
            shutdown_began = trio.current_time()
        assert trio.current_time() - shutdown_began == pytest.approx(0.5, abs=0.01)
    [data] = received
    assert data.startswith(b"HTTP/1.1 200 ")
    assert b"\r\nconnection: close\r\n" in data
    assert data.endswith(b"\r\n\r\nhello")


async def test_graceful_shutdown_does_not_wait_keep_alive_timeout_for_an_idle_connection(
    autojump_clock: trio.abc.Clock,
) -> None:
    """An idle keep-alive connection does not hold shutdown for keep_alive_timeout
    (or graceful_timeout): having just answered, it waits only the shutdown grace
    for a request on its way, then closes."""
    config = Config(keep_alive_timeout=50, graceful_timeout=20)
    async with open_test_client(http_only(hello), config) as client:
        conn = await client.connect()
        assert (await conn.request("GET", "/")).status == 200
        shutdown_began = trio.current_time()
    assert trio.current_time() - shutdown_began == pytest.approx(SHUTDOWN_IDLE_GRACE)
    assert await conn.receive_some() == b""
    await conn.aclose()


async def test_shutdown_lets_busy_request_finish_and_closes_idle_connection_after_the_grace(
    autojump_clock: Any,
) -> None:
    started = trio.Event()
    release = trio.Event()
    results: dict[str, Any] = {}

    @http_only
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/slow":
            started.set()
            await release.wait()
        await text_app(b"done")(scope, receive, send)

    async def watch(idle: TestConnection, busy: TestConnection, shutdown_at: float) -> None:
        assert await idle.receive_some() == b""
        results["idle_closed_after"] = trio.current_time() - shutdown_at
        release.set()
        results["busy"] = await busy.receive_until_closed()
        await busy.aclose()
        await idle.aclose()

    async with (
        trio.open_nursery() as nursery,
        open_test_client(app, Config(keep_alive_timeout=5)) as client,
    ):
        idle = await client.connect()
        assert (await idle.request("GET", "/fast")).status == 200
        busy = await client.connect()
        await busy.send_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        await started.wait()
        nursery.start_soon(watch, idle, busy, trio.current_time())
    # leaving the block shut the server down gracefully
    assert results["idle_closed_after"] == pytest.approx(SHUTDOWN_IDLE_GRACE)
    response = parse_single(results["busy"])
    assert response.body == b"done"
    assert response.header(b"connection") == b"close"


async def test_shutdown_with_lifespan_off_does_not_wait_for_lifespan(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """With lifespan="off" no lifespan task ever runs, so shutdown has nothing to
    wait for: it must not sit out shutdown_timeout (60 s by default, real seconds
    outside tests) waiting for an answer that cannot come, nor log an ERROR."""
    caplog.set_level(logging.DEBUG, logger="trioserve.error")
    async with open_test_client(hello, Config(lifespan="off")) as client:
        assert (await client.get("/")).status == 200
        shutdown_began = trio.current_time()
    assert trio.current_time() - shutdown_began < 0.01
    assert error_records(caplog) == []


async def test_expect_100_continue_whose_body_never_comes_ends_at_read_timeout(
    autojump_clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The client asks for 100 Continue, gets it when the app reads, and then never
    sends the body it announced. Without a read deadline the app would wait in
    receive() forever and the connection would be held: here receive() returns
    http.disconnect read_timeout seconds after the 100, the client gets 408, and
    the connection closes."""
    received: list[tuple[float, str]] = []

    @http_only
    async def app(scope: Any, receive: Any, send: Any) -> None:
        message = await receive()
        received.append((trio.current_time(), message["type"]))

    head = b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 10\r\n\r\n"
    async with open_test_client(app, Config(read_timeout=3, lifespan="off")) as client:
        conn = await client.connect()
        with trio.fail_after(30):
            await conn.send_all(head)
            start = trio.current_time()
            data = await conn.receive_until_closed()
    assert data.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 408 Request Timeout\r\n")
    assert received == [(start + 3, "http.disconnect")]
    assert error_records(caplog) == []
