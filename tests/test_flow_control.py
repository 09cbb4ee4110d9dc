"""Flow control in both directions, and what becomes of a request body the app does
not read.

Most tests use lockstep in-memory streams: with ``client.connect(lockstep=True)``
every ``send_all`` on either side returns only once the other side has read all of
it, so "how much did the peer take?" can be observed exactly:

- write flow control: the app's ``send()`` returns only when the client has read
  the bytes; a client that reads nothing cannot make the server buffer a response.
- read flow control: the request body is read from the client only as the app
  calls ``receive()``, with a bounded read-ahead; the bodies arrive whole, in
  order, with correct ``more_body`` flags.
- unread request bodies: a body the app leaves unread is not read in full: a small
  remainder is drained to keep the connection alive (also when the app answered
  before the body arrived), a large one ends the connection.
- after the response, ``receive()`` keeps returning ``http.disconnect``.

The tests that wait on the client ("the client has not read for 5 s") run under
``autojump_clock``, so that costs no real time.
"""

from __future__ import annotations

import contextlib
from typing import Any

import h11
import trio
import trio.testing
from _helpers import (
    GET,
    GET_CLOSE,
    Receive,
    Scope,
    Send,
    Wire,
    body,
    http_only,
    parse_all,
    raw_closed_at_once,
    read_body,
    start,
    text_app,
)

from trioserve.testing import TestConnection, open_test_client

KiB = 1024
MiB = 1024 * KiB


def pattern(size: int) -> bytes:
    """``size`` bytes in which every 4-byte word is its own index: any loss,
    duplication or reordering shows."""
    return b"".join(i.to_bytes(4, "big") for i in range(size // 4))


async def read_response(conn: TestConnection, method: str = "GET") -> tuple[int, bytes]:
    """Read one response from a connection whose request was sent raw."""
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method=method, target="/", headers=[("host", "a")]))
    status = 0
    body = b""
    while True:
        event = client.next_event()
        if event is h11.NEED_DATA:
            client.receive_data(await conn.receive_some())
        elif isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data):
            body += bytes(event.data)
        elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
            return status, body


# -- write flow control --------------------------------------------------------------------


async def test_send_returns_only_after_client_reads(autojump_clock: trio.abc.Clock) -> None:
    """The app streams 16 chunks of 64 KiB. While the client reads nothing (5 s), not
    one body send() returns; afterwards, at every point, the body bytes whose send()
    has returned never exceed the raw bytes the client has read.

    A server that queues writes (a writer task, a growing buffer) lets send()
    return at once and would hold the whole 1 MiB for a client that never reads.
    """
    chunk = b"r" * (64 * KiB)
    acknowledged: list[int] = []  # body bytes whose send() has returned, after each send
    app_done = trio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        total = 0
        for _ in range(16):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            total += len(chunk)
            acknowledged.append(total)
        await send({"type": "http.response.body", "body": b""})
        app_done.set()

    async with open_test_client(http_only(app)) as client:
        conn = await client.connect(lockstep=True)
        try:
            await conn.send_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            await trio.sleep(5)
            assert acknowledged == []  # blocked in the first body send()

            h11_client = h11.Connection(h11.CLIENT)
            h11_client.send(h11.Request(method="GET", target="/", headers=[("host", "a")]))
            h11_client.send(h11.EndOfMessage())
            raw_read = 0
            body = b""
            done = False
            while not done:
                data = await conn.receive_some(16 * KiB)
                raw_read += len(data)
                h11_client.receive_data(data)
                await trio.sleep(0.1)  # let the server go as far as it can
                assert (acknowledged[-1] if acknowledged else 0) <= raw_read
                while (event := h11_client.next_event()) is not h11.NEED_DATA:
                    if isinstance(event, h11.Data):
                        body += bytes(event.data)
                    elif isinstance(event, h11.EndOfMessage):
                        done = True
                        break
            with trio.fail_after(5):
                await app_done.wait()
        finally:
            await conn.aclose()
    assert body == chunk * 16
    assert acknowledged == [(i + 1) * len(chunk) for i in range(16)]


async def test_a_body_send_the_app_cancels_partway_ends_the_connection(
    autojump_clock: trio.abc.Clock,
) -> None:
    # Part of the chunk is on the wire: anything written after it would land
    # inside it, so the response cannot be finished and the connection ends.
    outcome: list[str] = []

    @http_only
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/next":
            await text_app(b"NEXT")(scope, receive, send)
            return
        await send(start(200))
        await send(body(b"a" * 10, more=True))  # the head goes out with it, shielded
        with trio.move_on_after(5) as cancelled:
            await send(body(b"b" * MiB, more=True))  # the client reads none of it
        outcome.append(f"cancelled={cancelled.cancelled_caught}")
        try:
            await send(body(b"END"))
        except OSError as exc:
            outcome.append(type(exc).__name__)

    async with open_test_client(app) as client:
        conn = await client.connect(lockstep=True)
        await conn.send_all(GET + GET.replace(b"GET / ", b"GET /next "))
        with trio.fail_after(60):
            received = b""
            while b"aaaaaaaaaa" not in received:
                received += await conn.receive_some()
            await trio.sleep(10)  # then it reads nothing for a while
            received += await conn.receive_until_closed()
        await conn.aclose()
    assert outcome == ["cancelled=True", "ClientDisconnected"]
    assert b"END" not in received
    assert b"NEXT" not in received


async def test_a_body_send_cancelled_before_it_began_still_goes_out_in_order() -> None:
    # Its bytes are framed already (counted against the content-length), so
    # they go out first with the next write, and the response stays whole.
    outcome: list[bool] = []

    @http_only
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/next":
            await text_app(b"NEXT")(scope, receive, send)
            return
        await send(start(200, [(b"content-length", b"10")]))
        await send(body(b"aaaaa", more=True))
        with trio.CancelScope() as scope_of_app:
            scope_of_app.cancel()
            await send(body(b"bbbbb", more=True))
        outcome.append(scope_of_app.cancelled_caught)
        await send(body(b""))

    async with open_test_client(app) as client:
        reply = await client.raw(GET + GET_CLOSE.replace(b"GET / ", b"GET /next "))
    assert outcome == [True]
    responses, rest = parse_all(reply)
    assert [r.body for r in responses] == [b"aaaaabbbbb", b"NEXT"]
    assert rest == b""


async def test_empty_body_chunks_in_a_loop_do_not_starve_other_connections() -> None:
    looping = trio.Event()
    other_served = trio.Event()
    seen: list[bool] = []

    @http_only
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/other":
            other_served.set()
            await text_app(b"other")(scope, receive, send)
            return
        await send(start(200))
        await send(body(b"a", more=True))
        looping.set()
        for _ in range(1000):
            await send(body(b"", more=True))  # every send() lets other tasks run
        seen.append(other_served.is_set())
        await send(body(b"done"))

    async with open_test_client(app) as client:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.get, "/")
                await looping.wait()
                nursery.start_soon(client.get, "/other")
    assert seen == [True]


# -- read flow control ---------------------------------------------------------------------


async def test_upload_is_read_only_as_the_app_receives(autojump_clock: trio.abc.Clock) -> None:
    """A 4 MiB upload in 16 KiB writes to an app that does not call receive() yet:
    the server stops reading after a bounded read-ahead (the client's writes stop
    completing; a server that reads ahead without limit takes all 4 MiB). Once the
    app reads, the upload completes and every byte arrives, in order, with
    more_body True on every message but the last."""
    payload = pattern(4 * MiB)
    piece = 16 * KiB
    may_read = trio.Event()
    app_started = trio.Event()
    messages: list[tuple[bytes, bool]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        app_started.set()
        await may_read.wait()
        while True:
            message = await receive()
            assert message["type"] == "http.request"
            messages.append((message["body"], message.get("more_body", False)))
            if not message.get("more_body", False):
                break
        body = b"%d" % sum(len(b) for b, _ in messages)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", b"%d" % len(body))],
            }
        )
        await send({"type": "http.response.body", "body": body})

    accepted = 0
    upload_done = trio.Event()

    async def upload(conn: TestConnection) -> None:
        nonlocal accepted
        for i in range(0, len(payload), piece):
            await conn.send_all(payload[i : i + piece])
            accepted += piece
        upload_done.set()

    async with open_test_client(http_only(app)) as client:
        conn = await client.connect(lockstep=True)
        try:
            async with trio.open_nursery() as nursery:
                await conn.send_all(
                    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % len(payload)
                )
                await app_started.wait()
                nursery.start_soon(upload, conn)
                await trio.sleep(10)
                assert not upload_done.is_set()
                assert accepted <= 256 * KiB  # bounded read-ahead (64 KiB in trioserve)
                may_read.set()
                with trio.fail_after(60):
                    await upload_done.wait()
                    status, body = await read_response(conn, "POST")
        finally:
            await conn.aclose()
    assert (status, body) == (200, b"%d" % len(payload))
    assert b"".join(b for b, _ in messages) == payload
    assert [more for _, more in messages] == [True] * (len(messages) - 1) + [False]
    assert len(messages) > 1


async def test_large_post_pauses_reading_until_app_receives() -> None:
    """Read flow control: while the app does not call receive(), the server stops
    reading, so the client's send of 1 MiB cannot complete (lockstep streams make
    the client's send_all wait for the server's reads)."""
    started = trio.Event()
    proceed = trio.Event()
    sent = trio.Event()
    size = 1024 * 1024

    @http_only
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        started.set()
        await proceed.wait()
        data = await read_body(receive)
        payload = str(len(data)).encode()
        await send(start(200, [(b"content-length", str(len(payload)).encode())]))
        await send(body(payload))

    async with open_test_client(app) as client:
        conn = await client.connect(lockstep=True)

        async def sender() -> None:
            head = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size
            await conn.send_all(head + b"y" * size)
            sent.set()

        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sender)
                await started.wait()
                await trio.testing.wait_all_tasks_blocked()
                assert not sent.is_set(), "the server read the whole body without the app"
                proceed.set()
                response = await Wire(conn).response("POST")
                await sent.wait()
        await conn.aclose()
    assert response.status == 200
    assert response.body == str(size).encode()


# -- unread request bodies -----------------------------------------------------------------


async def test_large_unread_upload_is_not_read_and_ends_the_connection(
    autojump_clock: trio.abc.Clock,
) -> None:
    """The app answers at once, without reading a 10 MiB upload that the client
    streams at 64 KiB per 0.1 s (16 s in all). The response arrives at once, the
    connection is closed after it (EOF, then the client's writes fail) and the
    server has taken only a small part of the body. receive() after the response
    returns http.disconnect, every time. A server that reads the whole body to keep
    the connection alive takes all 10 MiB and 16 s."""
    total = 10 * MiB
    piece = 64 * KiB
    after_response: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
        )
        await send({"type": "http.response.body", "body": b"ok"})
        after_response.append(await receive())
        after_response.append(await receive())

    accepted = 0
    upload_ended_at: list[float] = []

    async def upload(conn: TestConnection) -> None:
        nonlocal accepted
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            while accepted < total:
                await conn.send_all(b"u" * piece)
                accepted += piece
                await trio.sleep(0.1)
        upload_ended_at.append(trio.current_time())

    async with open_test_client(http_only(app)) as client:
        conn = await client.connect(lockstep=True)
        try:
            start = trio.current_time()
            async with trio.open_nursery() as nursery:
                await conn.send_all(
                    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % total
                )
                nursery.start_soon(upload, conn)
                with trio.fail_after(60):
                    status, body = await read_response(conn, "POST")
                    answered_at = trio.current_time()
                    assert await conn.receive_some() == b""
        finally:
            await conn.aclose()
    assert (status, body) == (200, b"ok")
    assert answered_at - start < 0.5
    assert after_response == [{"type": "http.disconnect"}] * 2
    assert accepted < total // 4
    [ended] = upload_ended_at
    assert ended - start < 5


async def test_small_unread_body_is_drained_and_connection_stays_usable(
    autojump_clock: trio.abc.Clock,
) -> None:
    """An app that answers without reading a 1 KiB body: the server discards the
    small remainder and the same connection serves the next request (a server
    that left the body in its parser would read it as the next request: 400)."""
    paths: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        paths.append(scope["path"])
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
        )
        await send({"type": "http.response.body", "body": b"ok"})

    async with open_test_client(http_only(app)) as client:
        conn = await client.connect()
        try:
            first = await conn.request("POST", "/upload", body=b"x" * KiB)
            second = await conn.request("GET", "/next")
        finally:
            await conn.aclose()
    assert (first.status, first.body) == (200, b"ok")
    assert (second.status, second.body) == (200, b"ok")
    assert paths == ["/upload", "/next"]


async def test_unread_large_body_closes_connection_after_response(autojump_clock: Any) -> None:
    """1 MiB the app never reads: the server answers, then closes rather than
    reading (or buffering) the whole body to keep the connection."""
    calls: list[str] = []

    @http_only
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        calls.append(scope["path"])
        await text_app()(scope, receive, send)

    size = 1024 * 1024
    request = b"POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size
    async with open_test_client(app) as client:
        data = await raw_closed_at_once(client, request + b"x" * size + GET)
    responses, rest = parse_all(data, ["POST"])
    assert [r.status for r in responses] == [200]
    assert rest == b""
    assert calls == ["/big"]


async def test_unread_body_within_drain_limit_is_read_after_response() -> None:
    """Reading resumes after the response: the 100 KiB body the app ignored is
    read and discarded (the client's send completes although the app never read
    it), and the connection serves the next request."""
    size = 100 * 1024
    sent = trio.Event()
    calls: list[str] = []

    @http_only
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        calls.append(scope["path"])
        await text_app()(scope, receive, send)

    async with open_test_client(app) as client:
        conn = await client.connect(lockstep=True)

        async def sender() -> None:
            head = b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size
            await conn.send_all(head + b"z" * size)
            sent.set()

        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sender)
                wire = Wire(conn)
                first = await wire.response("POST")
                await sent.wait()
            await conn.send_all(b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
            second = await wire.response()
        await conn.aclose()
    assert first.status == second.status == 200
    assert calls == ["/up", "/next"]


async def test_early_response_without_reading_small_body_keeps_connection_usable() -> None:
    seen: list[tuple[str, str]] = []

    @http_only
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append((scope["method"], scope["path"]))
        await text_app(b"early")(scope, receive, send)

    async with open_test_client(app) as client:
        conn = await client.connect()
        first = await conn.request("POST", "/upload", body=b"0123456789")
        second = await conn.request("GET", "/next")
        await conn.aclose()
    assert (first.status, first.body) == (200, b"early")
    assert (second.status, second.body) == (200, b"early")
    # The unread body was not mistaken for a request.
    assert seen == [("POST", "/upload"), ("GET", "/next")]


async def test_early_response_before_body_arrives_then_connection_reused() -> None:
    seen: list[str] = []

    @http_only
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["path"])
        await text_app(scope["path"].encode())(scope, receive, send)

    async with open_test_client(app) as client:
        conn = await client.connect()
        wire = Wire(conn)
        await conn.send_all(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123")
        first = await wire.response("POST")
        assert first.body == b"/up"
        await conn.send_all(b"456789" + b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
        second = await wire.response()
        await conn.aclose()
    assert second.body == b"/next"
    assert seen == ["/up", "/next"]


# -- receive() after the response ----------------------------------------------------------


async def test_receive_after_response_returns_disconnect_repeatedly() -> None:
    """The connection stays open; a naive server makes receive() wait for bytes
    that will never come (or hands out the next request's bytes)."""
    messages: list[dict[str, Any]] = []
    done = trio.Event()

    @http_only
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await text_app()(scope, receive, send)
        for _ in range(3):
            messages.append(await receive())
        done.set()

    async with open_test_client(app) as client:
        conn = await client.connect()
        response = await conn.request("GET", "/")
        with trio.fail_after(5):
            await done.wait()
        await conn.aclose()
    assert response.status == 200
    assert messages == [{"type": "http.disconnect"}] * 3


async def test_receive_after_response_with_unread_body_returns_disconnect() -> None:
    messages: list[dict[str, Any]] = []

    @http_only
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await text_app()(scope, receive, send)
        if scope["method"] == "POST":
            messages.append(await receive())
            messages.append(await receive())

    async with open_test_client(app) as client:
        conn = await client.connect()
        first = await conn.request("POST", "/", body=b"unread body")
        second = await conn.request("GET", "/")  # the previous app has returned
        await conn.aclose()
    assert first.status == second.status == 200
    assert messages == [{"type": "http.disconnect"}] * 2
