"""Edge cases of the connection layer (``trioserve/connection/``) that a user sees
when the client misbehaves or the server is shutting down:

- a client that resets its TCP connection (RST, not FIN) while a GET app runs: the
  app is cancelled, nothing is logged at ERROR, the server keeps serving;
- ``send()`` to a client that has gone away on a real socket, mid-stream: the
  app gets :class:`trioserve.ClientDisconnected` (an ``OSError``), on every later
  ``send()`` too;
- ``receive()`` called after the whole body was delivered: it waits, and returns
  ``http.disconnect`` only when the response is complete or the client hangs up;
- exception groups from apps with several tasks: only disconnects → DEBUG, a real
  error among them → ERROR;
- a client that hangs up before the app reads, after ``http.response.start``, or
  while an ``Expect: 100-continue`` request waits for the app (also when the
  ``100 Continue`` write itself is what finds the client gone);
- a keep-alive connection that becomes idle after shutdown began: closed at once;
- the lingering close after ``Connection: close`` ends within ``LINGER_TIMEOUT``
  even against a client that keeps sending and never closes.

Timeouts run in virtual time (``autojump_clock``) over in-memory streams; the
real-socket tests wait on events under ``trio.fail_after`` hang guards.
"""

from __future__ import annotations

import logging
import socket
import struct
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import h11
import pytest
import trio
import trio.testing
from _helpers import (
    ERROR_LOGGER,
    Receive,
    Scope,
    Send,
    body,
    error_log_records,
    http_only,
    read_body,
    send_text,
    start,
)

import trioserve
from trioserve import Config
from trioserve.connection._http11 import SHUTDOWN_IDLE_GRACE
from trioserve.testing import TestConnection, open_test_client, open_test_server

if sys.version_info < (3, 11):  # pragma: no cover - version-dependent import
    from exceptiongroup import BaseExceptionGroup, ExceptionGroup

DISCONNECT = {"type": "http.disconnect"}

# -- helpers ----------------------------------------------------------------------


def debug_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == ERROR_LOGGER and r.levelno == logging.DEBUG]


def leaves(exc: BaseException) -> list[BaseException]:
    """The non-group exceptions inside ``exc`` (``exc`` itself if not a group)."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves(inner)]
    return [exc]


def reset_close(sock: trio.socket.SocketType) -> None:
    """Close ``sock`` with SO_LINGER (1, 0): the kernel sends a RST, not a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


async def read_response(conn: TestConnection, method: str = "GET") -> tuple[h11.Response, bytes]:
    """Read one whole response from a raw in-memory connection."""
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method=method, target="/", headers=[("host", "a")]))
    client.send(h11.EndOfMessage())
    head: h11.Response | None = None
    data = b""
    while True:
        event = client.next_event()
        if event is h11.NEED_DATA:
            client.receive_data(await conn.receive_some())
        elif isinstance(event, h11.Response):
            head = event
        elif isinstance(event, h11.Data):
            data += bytes(event.data)
        elif isinstance(event, h11.EndOfMessage):
            assert head is not None
            return head, data
        else:
            raise AssertionError(f"unexpected event {event!r}")


# -- 1. a reset (RST) while a GET app runs ------------------------------------------


async def test_client_reset_cancels_running_get_app_without_error_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The client aborts its TCP connection (RST, so the server's read fails with
    ECONNRESET instead of returning EOF). The server must treat the error like a
    hang-up: cancel the GET app, log nothing at ERROR, and keep serving. A naive
    reader that only handles EOF lets the reset error crash the connection task
    (an ERROR, or the whole server) and leaves the app running forever."""
    caplog.set_level(logging.DEBUG, logger=ERROR_LOGGER)
    started = trio.Event()
    ended = trio.Event()
    outcome: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/after":
            await send_text(send, "still serving")
            return
        started.set()
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            outcome.append("cancelled")
            raise
        finally:
            ended.set()

    async with open_test_server(http_only(app)) as server:
        with trio.fail_after(5):
            sock = trio.socket.socket()
            try:
                await sock.connect(("127.0.0.1", server.port))
                await sock.send(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
                await started.wait()
            finally:
                reset_close(sock)
            await ended.wait()
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            async with stream:
                await stream.send_all(
                    b"GET /after HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
                )
                data = b""
                while chunk := await stream.receive_some():
                    data += chunk
    assert outcome == ["cancelled"]
    assert data.startswith(b"HTTP/1.1 200 ")
    assert data.endswith(b"\r\n\r\nstill serving")
    assert error_log_records(caplog) == []


# -- 2. writing to a vanished client on a real socket -------------------------------


@pytest.mark.parametrize(
    ("method", "policy"),
    [("POST", "safe"), ("GET", "never")],
)
async def test_streaming_to_reset_client_raises_client_disconnected(
    caplog: pytest.LogCaptureFixture, method: str, policy: Any
) -> None:
    """The app streams 64 KiB chunks to a client that reads nothing, until the
    server's write blocks; then the client resets the connection. The app is not
    cancelled (POST under "safe", anything under "never"): the blocked send() must
    raise ClientDisconnected (an OSError, as ASGI 2.5 asks), and so must every
    later send(). A naive server lets trio's BrokenResourceError out of send()
    (not an OSError, so apps cannot handle it as one) or logs it at ERROR."""
    caplog.set_level(logging.DEBUG, logger=ERROR_LOGGER)
    streaming = trio.Event()
    ended = trio.Event()
    errors: list[BaseException] = []
    chunk = b"x" * (64 * 1024)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await read_body(receive)
            await send(start(200, [(b"content-type", b"application/octet-stream")]))
            streaming.set()
            try:
                while True:
                    await send(body(chunk, more=True))
            except trioserve.ClientDisconnected as exc:
                errors.append(exc)
            try:
                await send(body(b"after", more=False))
            except trioserve.ClientDisconnected as exc:
                errors.append(exc)
        except BaseException as exc:  # Cancelled would be wrong here: record it
            errors.append(exc)
            raise
        finally:
            ended.set()

    config = Config(cancel_on_disconnect=policy)
    async with open_test_server(http_only(app), config) as server:
        with trio.fail_after(5):
            sock = trio.socket.socket()
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
                await sock.connect(("127.0.0.1", server.port))
                request = f"{method} / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
                await sock.send(request.encode())
                await streaming.wait()
                # The app loops until a send() blocks on the full socket buffers.
                await trio.testing.wait_all_tasks_blocked()
            finally:
                reset_close(sock)
            await ended.wait()
    assert len(errors) == 2, errors
    assert all(isinstance(e, trioserve.ClientDisconnected) for e in errors), errors
    assert all(isinstance(e, OSError) for e in errors)
    assert error_log_records(caplog) == []


# -- 3. receive() parked after the whole body ----------------------------------------


async def test_receive_parked_after_body_returns_disconnect_once_response_complete(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """The app has read the whole body; a child task calls receive() again while the
    main task takes 1 s and then sends the response. That receive() must wait and
    return http.disconnect only once the response is complete (ASGI: nothing more
    will come). A naive server answers at once (a second empty http.request, or an
    early disconnect while the client is still there) or never (the app's nursery
    then never exits). The connection stays usable for the next request."""
    caplog.set_level(logging.DEBUG, logger=ERROR_LOGGER)
    order: list[str] = []
    late: list[tuple[dict[str, Any], float]] = []
    t0: list[float] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/next":
            await send_text(send, "next")
            return
        assert await read_body(receive) == b"abc"
        parked = trio.Event()

        async def late_receive() -> None:
            parked.set()
            message = await receive()
            late.append((message, trio.current_time()))
            order.append("late receive returned")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(late_receive)
            await parked.wait()
            t0.append(trio.current_time())
            await trio.sleep(1)
            await send_text(send, "ok")
            order.append("response complete")

    async with open_test_client(http_only(app)) as client:
        with trio.fail_after(30):
            conn = await client.connect()
            first = await conn.request("POST", "/", body=b"abc")
            second = await conn.request("GET", "/next")
            await conn.aclose()
    assert (first.status, first.body) == (200, b"ok")
    assert (second.status, second.body) == (200, b"next")
    assert order == ["response complete", "late receive returned"]
    [(message, returned_at)] = late
    assert message == DISCONNECT
    assert returned_at - t0[0] == pytest.approx(1)
    assert error_log_records(caplog) == []


async def test_receive_after_full_post_body_blocks_until_client_hangs_up(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """After the whole POST body, receive() waits until the client hangs up (10 s of
    virtual time later) and then returns http.disconnect. A naive server returns
    at once (an empty http.request or a premature disconnect), which would make an
    app that watches for disconnects abort a request whose client is still there."""
    caplog.set_level(logging.DEBUG, logger=ERROR_LOGGER)
    got_body = trio.Event()
    ended = trio.Event()
    messages: list[tuple[dict[str, Any], float]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            assert await read_body(receive) == b"abc"
            got_body.set()
            message = await receive()
            messages.append((message, trio.current_time()))
        finally:
            ended.set()

    async with open_test_client(http_only(app)) as client:
        conn = await client.connect()
        await conn.send_all(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc")
        with trio.fail_after(30):
            await got_body.wait()
            await trio.sleep(10)
            assert messages == []
            hung_up_at = trio.current_time()
            await conn.aclose()
            await ended.wait()
    assert messages == [(DISCONNECT, hung_up_at)]
    assert error_log_records(caplog) == []


# -- 4. exception groups from apps ------------------------------------------------------


async def run_group_app(second_task: Callable[[Send], Awaitable[None]]) -> list[BaseException]:
    """A POST app that starts its response, waits until the client hangs up, then
    sends a body chunk from one task of its nursery while ``second_task`` runs in
    another; the nursery's exception group propagates out of the app. Returns
    what the app raised."""
    started = trio.Event()
    ended = trio.Event()
    raised: list[BaseException] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await read_body(receive)
            await send(start(200))
            started.set()
            assert await receive() == DISCONNECT
            async with trio.open_nursery() as nursery:
                nursery.start_soon(send, body(b"one", more=True))
                nursery.start_soon(second_task, send)
        except BaseException as exc:
            raised.append(exc)
            raise
        finally:
            ended.set()

    async with open_test_client(http_only(app)) as client:
        conn = await client.connect()
        await conn.send_all(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc")
        with trio.fail_after(5):
            await started.wait()
            await conn.aclose()
            await ended.wait()
    return raised


async def test_exception_group_of_only_client_disconnects_is_logged_at_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Two tasks of the app's nursery both get ClientDisconnected from send(); the
    app lets the resulting ExceptionGroup out. That is still just "the client
    left": DEBUG, no ERROR. A naive server checks only ``isinstance(exc,
    ClientDisconnected)`` and logs the group as an application error."""
    caplog.set_level(logging.DEBUG, logger=ERROR_LOGGER)

    async def second(send: Send) -> None:
        await send(body(b"two", more=True))

    raised = await run_group_app(second)
    [group] = raised
    assert isinstance(group, ExceptionGroup)
    assert len(leaves(group)) == 2
    assert all(isinstance(e, trioserve.ClientDisconnected) for e in leaves(group))
    assert error_log_records(caplog) == []
    assert debug_records(caplog) != []


async def test_exception_group_mixing_disconnect_and_real_error_is_logged_at_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Same, but the second task raises a ValueError: a real bug must not hide behind
    the disconnect next to it. A naive server that treats any group containing a
    ClientDisconnected as a disconnect swallows the ValueError."""
    caplog.set_level(logging.DEBUG, logger=ERROR_LOGGER)

    async def second(send: Send) -> None:
        raise ValueError("a real bug")

    raised = await run_group_app(second)
    [group] = raised
    kinds = sorted(type(e).__name__ for e in leaves(group))
    assert kinds == ["ClientDisconnected", "ValueError"]
    [record] = error_log_records(caplog)
    assert record.exc_info is not None
    logged = record.exc_info[1]
    assert logged is not None
    assert any(isinstance(e, ValueError) for e in leaves(logged))


# -- 5. the client is gone before the app reads ------------------------------------------


async def test_post_app_called_after_client_closed_sees_disconnect_and_send_fails(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The client sends a whole POST and closes at once. Whether the server notices
    the close before or after the app's first receive(), the app (not cancelled:
    POST under "safe") gets at most the body, then http.disconnect, and its send()
    raises ClientDisconnected; nothing at ERROR, no response attempted to the
    departed client. A naive server may hand the app an empty body as if complete,
    or report the write failure as an application error."""
    caplog.set_level(logging.DEBUG, logger=ERROR_LOGGER)
    ended = trio.Event()
    messages: list[dict[str, Any]] = []
    send_errors: list[BaseException] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            for _ in range(5):
                message = await receive()
                messages.append(message)
                if message["type"] == "http.disconnect":
                    break
            try:
                await send_text(send, "too late")
            except BaseException as exc:
                send_errors.append(exc)
                raise
        finally:
            ended.set()

    async with open_test_client(http_only(app)) as client:
        conn = await client.connect()
        await conn.send_all(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc")
        await conn.aclose()
        with trio.fail_after(5):
            await ended.wait()
    assert messages[-1] == DISCONNECT
    requests = messages[:-1]
    assert requests in ([], [{"type": "http.request", "body": b"abc", "more_body": False}])
    [error] = send_errors
    assert isinstance(error, trioserve.ClientDisconnected)
    assert error_log_records(caplog) == []


# -- 6. hang-up between http.response.start and the body ---------------------------------


async def test_hang_up_after_response_start_makes_body_send_raise(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``http.response.start`` succeeds (trioserve holds the head back until the first
    body chunk), the client then hangs up, and the following
    ``http.response.body`` send raises ClientDisconnected. A naive server
    silently drops the body (the app believes it answered) or raises a transport
    error that is not an OSError."""
    caplog.set_level(logging.DEBUG, logger=ERROR_LOGGER)
    started = trio.Event()
    hung_up = trio.Event()
    ended = trio.Event()
    outcome: list[tuple[str, BaseException | None]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await read_body(receive)
            for name, message in (
                ("start", start(200, [(b"content-length", b"5")])),
                ("body", body(b"hello")),
            ):
                try:
                    await send(message)
                except trioserve.ClientDisconnected as exc:
                    outcome.append((name, exc))
                    return
                outcome.append((name, None))
                if name == "start":
                    started.set()
                    await hung_up.wait()
        finally:
            ended.set()

    async with open_test_client(http_only(app)) as client:
        conn = await client.connect()
        await conn.send_all(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc")
        with trio.fail_after(5):
            await started.wait()
            await conn.aclose()
            await trio.testing.wait_all_tasks_blocked()  # the server has seen the EOF
            hung_up.set()
            await ended.wait()
    assert [name for name, _ in outcome] == ["start", "body"]
    assert outcome[0][1] is None
    assert isinstance(outcome[1][1], trioserve.ClientDisconnected)
    assert error_log_records(caplog) == []


# -- 7. Expect: 100-continue and a client that is gone ------------------------------------


@pytest.mark.parametrize("eager_body", [False, True], ids=["head-only", "eager-body"])
async def test_100_continue_client_gone_before_receive_gives_disconnect(
    caplog: pytest.LogCaptureFixture, eager_body: bool
) -> None:
    """The client sends ``Expect: 100-continue`` and closes before the app calls
    receive(). receive() must return http.disconnect, not raise.

    head-only: the server has already seen the EOF.
    eager-body: the client sent 256 KiB of body without waiting for the 100, then
    closed; the server's read buffer is full (read flow control), so it has not
    read as far as the EOF, and it is the ``100 Continue`` write in receive() that
    finds the client gone. A naive server lets that write error escape from
    receive(), turning a hang-up into an application error."""
    caplog.set_level(logging.DEBUG, logger=ERROR_LOGGER)
    started = trio.Event()
    go = trio.Event()
    ended = trio.Event()
    messages: list[dict[str, Any]] = []
    errors: list[BaseException] = []
    size = 256 * 1024

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        started.set()
        await go.wait()
        try:
            messages.append(await receive())
            await send_text(send, "too late")
        except BaseException as exc:
            errors.append(exc)
        finally:
            ended.set()

    async with open_test_client(http_only(app)) as client:
        conn = await client.connect()
        request = (
            b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n"
            b"Content-Length: %d\r\n\r\n" % size
        )
        await conn.send_all(request + (b"y" * size if eager_body else b""))
        with trio.fail_after(5):
            await started.wait()
            await conn.aclose()
            await trio.testing.wait_all_tasks_blocked()
            go.set()
            await ended.wait()
    assert messages == [DISCONNECT]
    # receive() did not raise; only the response send finds the client gone.
    [error] = errors
    assert isinstance(error, trioserve.ClientDisconnected)
    assert error_log_records(caplog) == []


# -- 8. a connection that becomes idle after shutdown began -------------------------------


async def test_connection_idle_after_shutdown_began_closes_after_the_shutdown_grace_not_keep_alive(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """The app answers a POST early, without reading its 10-byte body; the server
    then keeps the connection for keep-alive and waits for the other 5 bytes to
    discard them. Shutdown begins during that wait (the connection is neither idle
    nor serving a request). When the bytes arrive, the connection becomes idle
    with shutdown under way: it waits only ``SHUTDOWN_IDLE_GRACE`` (1 s) for a
    request already on its way, then closes. A naive server starts a new
    keep-alive wait and holds the connection (and the shutdown) for another
    ``keep_alive_timeout`` (5 s) first."""
    caplog.set_level(logging.DEBUG, logger=ERROR_LOGGER)
    calls: list[str] = []
    after: list[tuple[float, float, bytes]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        calls.append(scope["path"])
        await send_text(send, "early")

    async def finish_body(conn: TestConnection) -> None:
        await trio.sleep(1)  # shutdown has begun by now
        sent_at = trio.current_time()
        await conn.send_all(b"56789")
        rest = await conn.receive_until_closed()
        after.append((sent_at, trio.current_time(), rest))
        await conn.aclose()

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            async with open_test_client(http_only(app)) as client:
                conn = await client.connect()
                await conn.send_all(
                    b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n01234"
                )
                head, data = await read_response(conn, "POST")
                assert (head.status_code, data) == (200, b"early")
                # The response kept the connection open for another request.
                assert (b"connection", b"close") not in list(head.headers)
                nursery.start_soon(finish_body, conn)
                shutdown_at = trio.current_time()
            stopped_at = trio.current_time()
    [(sent_at, closed_at, rest)] = after
    assert rest == b""
    assert sent_at - shutdown_at == pytest.approx(1)
    assert closed_at - sent_at == pytest.approx(SHUTDOWN_IDLE_GRACE)
    assert stopped_at == closed_at
    assert calls == ["/upload"]
    assert error_log_records(caplog) == []


async def test_request_crossing_the_start_of_a_shutdown_is_served_with_connection_close(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A client that just got a keep-alive response sends its next request a
    moment after the shutdown began. The request was on its way: it is served,
    with ``connection: close``, and then the connection ends. A server that
    closes idle connections the instant a shutdown begins crosses such a request,
    and the client sees the connection drop without an answer (it cannot tell
    that from a failure, so a non-idempotent request is lost)."""
    calls: list[str] = []
    answers: list[tuple[int, bytes, bytes]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        calls.append(scope["path"])
        await send_text(send, scope["path"])

    async def next_request(conn: TestConnection) -> None:
        await trio.sleep(SHUTDOWN_IDLE_GRACE / 2)  # the shutdown began meanwhile
        await conn.send_all(b"POST /second HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n")
        head, data = await read_response(conn, "POST")
        answers.append((head.status_code, data, dict(head.headers).get(b"connection", b"")))
        assert await conn.receive_until_closed() == b""
        await conn.aclose()

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery, open_test_client(http_only(app)) as client:
            conn = await client.connect()
            await conn.send_all(b"GET /first HTTP/1.1\r\nHost: a\r\n\r\n")
            head, data = await read_response(conn, "GET")
            assert (head.status_code, data) == (200, b"/first")
            nursery.start_soon(next_request, conn)
    assert calls == ["/first", "/second"]
    assert answers == [(200, b"/second", b"close")]


async def test_connection_idle_longer_than_the_grace_closes_at_once_on_shutdown(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A connection idle for longer than ``SHUTDOWN_IDLE_GRACE`` when the shutdown
    begins has no request on its way: it is closed at once, so that idle
    connections (a browser's, say) do not hold the shutdown up."""
    closed: list[float] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send_text(send, "hello")

    async def watch(conn: TestConnection) -> None:
        assert await conn.receive_until_closed() == b""
        closed.append(trio.current_time())

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery, open_test_client(http_only(app)) as client:
            conn = await client.connect()
            await conn.send_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            head, _ = await read_response(conn, "GET")
            assert head.status_code == 200
            await trio.sleep(2 * SHUTDOWN_IDLE_GRACE)
            nursery.start_soon(watch, conn)
            shutdown_at = trio.current_time()
    assert closed == [shutdown_at]


# -- 9. the lingering close has an end ------------------------------------------------------


async def test_lingering_close_ends_although_client_keeps_sending() -> None:
    """After a ``Connection: close`` response the server half-closes and drains what
    the client still sends, so that closing cannot reset the connection before the
    client read the response. Against a client that keeps sending and never
    closes, the drain must end after about ``LINGER_TIMEOUT`` (2 s): the client's
    writes then fail. A naive linger waits for the client's EOF (or for quiet)
    and holds the connection forever; one that does not linger at all makes the
    writes fail at once."""
    writes_failed = trio.Event()
    failed_at: list[float] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send_text(send, "bye")

    async def keep_writing(stream: trio.SocketStream) -> None:
        try:
            while True:
                await stream.send_all(b"z" * 512)
                await trio.sleep(0.05)  # pacing, not waiting for anything
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            failed_at.append(trio.current_time())
            writes_failed.set()

    async with open_test_server(http_only(app)) as server:
        with trio.fail_after(5):
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            async with stream:
                await stream.send_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
                data = b""
                while chunk := await stream.receive_some():
                    data += chunk
                eof_at = trio.current_time()  # the server's half-close
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(keep_writing, stream)
                    await writes_failed.wait()
    assert data.startswith(b"HTTP/1.1 200 ")
    assert data.endswith(b"\r\n\r\nbye")
    [failed] = failed_at
    assert failed - eof_at >= 1.5, "the server did not drain the client's bytes"
