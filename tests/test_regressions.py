"""Regression tests for bugs of other ASGI servers, each kept here under the
behaviour trioserve holds to:

- the keep-alive timer must not fire while a pipelined request, or one that
  arrived right after the previous response, is being served (uvicorn armed the
  timer after the next request had arrived, and it fired during it);
- after a request with ``Connection: close`` no further pipelined request is
  parsed or answered (RFC 9112 §9.6; uvicorn answered the next one), over memory
  streams and a real socket, while the body of the closing request itself is
  still delivered whole;
- a stack of ``BaseHTTPMiddleware`` whose client hangs up before the response
  never ends in "No response returned", a 500 or an ERROR (as it did in Starlette);
- a client hang-up cancels the app according to ``cancel_on_disconnect``; apps
  that keep running see ``http.disconnect`` and a ``send()`` that raises
  :class:`trioserve.ClientDisconnected`; work after a complete response is never
  cancelled by a hang-up;
- a cancellation never leaves half a response head on the wire: the head is
  written whole even when the app's send is cancelled.

Every timeout here runs in virtual time (``autojump_clock``) over in-memory
streams; the real-socket tests use ``trio.fail_after`` hang guards instead.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from typing import Any

import anyio
import h11
import pytest
import trio
import trio.testing
from _helpers import error_records, http_only, send_text
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

import trioserve
from trioserve import Config
from trioserve.testing import open_test_client, open_test_server

# -- helpers ----------------------------------------------------------------------


def plain_config(**changes: Any) -> Config:
    """A config for the raw ASGI apps below (wrapped in :func:`http_only`).

    Lifespan stays on "auto": the apps return at once on a lifespan scope, as most
    plain ASGI apps do, so the server treats lifespan as unsupported.
    """
    return Config(**changes)


class ResponseReader:
    """Reads responses one after another from a raw stream, pipelining-safe.

    h11's client refuses to pipeline, so each response gets a fresh h11 client that
    is told a GET was sent; bytes after one response are kept for the next.
    """

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buffer = b""

    async def next(self) -> tuple[h11.Response, bytes] | None:
        """The next whole response, or ``None`` if the server closed before one."""
        conn = h11.Connection(h11.CLIENT)
        conn.send(h11.Request(method="GET", target="/", headers=[("host", "a")]))
        conn.send(h11.EndOfMessage())
        if self._buffer:  # (b"" would mean EOF to h11)
            conn.receive_data(self._buffer)
            self._buffer = b""
        head: h11.Response | None = None
        body = b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(bytes(await self._stream.receive_some()))
            elif isinstance(event, h11.Response):
                head = event
            elif isinstance(event, h11.Data):
                body += bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                self._buffer = bytes(conn.trailing_data[0])
                assert head is not None
                return head, body
            elif isinstance(event, h11.ConnectionClosed):
                assert head is None, "the server closed in the middle of a response"
                return None


# -- the keep-alive timer and requests in progress -----------------------------------------


async def test_keep_alive_timeout_does_not_fire_during_pipelined_request(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """Two pipelined GETs in one write; the second app takes 2 s > keep_alive_timeout.

    uvicorn armed the keep-alive timer after the first response although the second
    request was already buffered; the timer fired during the second request, closed
    the connection (the second response was lost) and logged an ERROR. Here both
    responses arrive, and only once the connection is really idle does the timer
    run, closing it one keep_alive_timeout after the last response.
    """
    caplog.set_level(logging.DEBUG, logger="trioserve.error")
    calls: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        calls.append(scope["path"])
        if scope["path"] == "/slow":
            await trio.sleep(2)
        await send_text(send, scope["path"])

    async with open_test_client(http_only(app), plain_config(keep_alive_timeout=1)) as client:
        conn = await client.connect()
        start = trio.current_time()
        await conn.send_all(
            b"GET /fast HTTP/1.1\r\nHost: a\r\n\r\nGET /slow HTTP/1.1\r\nHost: a\r\n\r\n"
        )
        reader = ResponseReader(conn.stream)
        first = await reader.next()
        second = await reader.next()
        assert first is not None
        assert second is not None, "the connection was closed during the pipelined request"
        assert (first[0].status_code, first[1]) == (200, b"/fast")
        assert (second[0].status_code, second[1]) == (200, b"/slow")
        last_response = trio.current_time()
        assert last_response - start >= 2  # the slow request outlived keep_alive_timeout
        # Re-armed once idle: the connection closes one keep_alive_timeout later.
        assert await conn.receive_some() == b""
        assert trio.current_time() - last_response == pytest.approx(1, abs=0.01)
        await conn.aclose()
    assert calls == ["/fast", "/slow"]
    assert error_records(caplog) == []


async def test_keep_alive_timeout_does_not_fire_when_next_request_follows_response(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """The second request arrives right after the first response (not pipelined),
    while the first request's app is still finishing up, and the second app takes
    2 s with keep_alive_timeout=1. uvicorn armed its timer as the last step of the
    first request, after the second request's bytes had already arrived (the only
    event that disarmed it), so the timer fired during the second request."""
    caplog.set_level(logging.DEBUG, logger="trioserve.error")

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/slow":
            await trio.sleep(2)
        await send_text(send, scope["path"])
        if scope["path"] == "/fast":
            await trio.sleep(0.5)  # the next request arrives during this

    async with open_test_client(http_only(app), plain_config(keep_alive_timeout=1)) as client:
        conn = await client.connect()
        first = await conn.request("GET", "/fast")
        start = trio.current_time()
        second = await conn.request("GET", "/slow")
        assert (first.status, first.body) == (200, b"/fast")
        assert (second.status, second.body) == (200, b"/slow")
        assert trio.current_time() - start >= 2
        await conn.aclose()
    assert error_records(caplog) == []


# -- Connection: close ends parsing --------------------------------------------------------

#: A request with ``Connection: close``, then a pipelined one (invalid: no Host).
CLOSE_THEN_PIPELINED = (
    b"GET / HTTP/1.1\r\nConnection: close\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\n\r\n"
)


async def test_connection_close_stops_parsing_pipelined_requests() -> None:
    """The second, pipelined request (invalid: no Host) must be neither parsed nor
    answered: uvicorn answered it with a 400, i.e. two status lines."""
    calls: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        calls.append(scope["path"])
        await send_text(send, "first")

    async with open_test_client(http_only(app), plain_config()) as client:
        with trio.fail_after(5):
            data = await client.raw(CLOSE_THEN_PIPELINED)
    assert data.count(b"HTTP/1.1 ") == 1
    assert data.startswith(b"HTTP/1.1 200 ")
    assert data.endswith(b"\r\n\r\nfirst")
    assert b"\r\nconnection: close\r\n" in data.lower()
    assert calls == ["/"]


async def test_connection_close_stops_parsing_pipelined_requests_on_a_real_socket() -> None:
    """Same bytes over a real loopback socket: the client receives the whole first
    response followed by a clean EOF. Closing a socket with the unparsed second
    request still in its receive buffer would send a RST instead, which the client
    sees as a connection reset (possibly before it read the response)."""
    calls: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        calls.append(scope["path"])
        await send_text(send, "first")

    async with open_test_server(http_only(app), plain_config()) as server:
        with trio.fail_after(5):
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            async with stream:
                await stream.send_all(CLOSE_THEN_PIPELINED)
                chunks = []
                try:
                    while chunk := await stream.receive_some():
                        chunks.append(chunk)
                except trio.BrokenResourceError as exc:  # pragma: no cover - the bug
                    pytest.fail(f"connection reset instead of a clean EOF: {exc!r}")
    data = b"".join(chunks)
    assert data.count(b"HTTP/1.1 ") == 1
    assert data.startswith(b"HTTP/1.1 200 ")
    assert data.endswith(b"\r\n\r\nfirst")
    assert calls == ["/"]


async def test_unread_pipelined_bytes_after_connection_close_do_not_reset_the_connection() -> None:
    """As above, but the unparsed pipelined request carries a 1 MiB body, more than
    the server reads ahead (its read buffer is bounded), so bytes are still unread
    in the socket when the response is complete. A server that then just closes
    the socket makes the kernel send a RST, and the client gets "connection reset"
    instead of the response and a clean EOF; trioserve half-closes and drains."""
    calls: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        calls.append(scope["path"])
        await send_text(send, "first")

    pipelined = (
        b"GET / HTTP/1.1\r\nConnection: close\r\nHost: a\r\n\r\n"
        b"POST /second HTTP/1.1\r\nHost: a\r\nContent-Length: 1048576\r\n\r\n" + b"z" * 1048576
    )
    async with open_test_server(http_only(app), plain_config()) as server:
        with trio.fail_after(5):
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            async with stream, trio.open_nursery() as nursery:

                async def upload() -> None:
                    with contextlib.suppress(trio.BrokenResourceError):
                        await stream.send_all(pipelined)

                nursery.start_soon(upload)
                chunks = []
                try:
                    while chunk := await stream.receive_some():
                        chunks.append(chunk)
                except trio.BrokenResourceError as exc:
                    pytest.fail(f"connection reset instead of a clean EOF: {exc!r}")
                nursery.cancel_scope.cancel()
    data = b"".join(chunks)
    assert data.count(b"HTTP/1.1 ") == 1
    assert data.startswith(b"HTTP/1.1 200 ")
    assert data.endswith(b"\r\n\r\nfirst")
    assert calls == ["/"]


async def test_connection_close_post_body_is_delivered_whole() -> None:
    """Stopping to parse after ``Connection: close`` must not drop the body of that
    very request: a 100 KiB body sent in ten writes reaches the app whole (uvicorn's
    first fix discarded it)."""
    body = bytes(range(256)) * 400  # 100 KiB
    received: list[bytes] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            assert message["type"] == "http.request"
            received.append(message["body"])
            if not message.get("more_body", False):
                break
        await send_text(send, str(sum(map(len, received))))

    async with open_test_client(http_only(app), plain_config()) as client:
        conn = await client.connect()
        with trio.fail_after(5):
            await conn.send_all(
                b"POST /upload HTTP/1.1\r\nHost: a\r\nConnection: close\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body)
            )
            for i in range(0, len(body), 10 * 1024):
                await trio.testing.wait_all_tasks_blocked()
                await conn.send_all(body[i : i + 10 * 1024])
            data = await conn.receive_until_closed()
        await conn.aclose()
    assert b"".join(received) == body
    assert len(received) > 1  # it did arrive in pieces
    assert data.count(b"HTTP/1.1 ") == 1
    assert data.startswith(b"HTTP/1.1 200 ")
    assert data.endswith(b"\r\n\r\n%d" % len(body))


# -- BaseHTTPMiddleware and a client that hangs up -----------------------------------------


class PassThrough(BaseHTTPMiddleware):
    async def dispatch(self, request: Request, call_next: Any) -> Response:
        return await call_next(request)


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("hang_up", ["close", "half-close"])
async def test_base_http_middleware_hang_up_before_response_is_no_error_and_no_500(
    autojump_clock: trio.abc.Clock,
    caplog: pytest.LogCaptureFixture,
    method: str,
    hang_up: str,
) -> None:
    """Four layers of BaseHTTPMiddleware; the client hangs up while the endpoint
    sleeps. With starlette 0.15 this raised "RuntimeError: No response returned."
    which the server logged with a traceback and answered with a 500. A server
    that delivers the hang-up badly (a receive() that raises, or blocks instead of
    returning http.disconnect again and again, cancellation the middleware sees
    as "no response") brings it back.

    GET is cancelled (default policy "safe"); POST runs to the end and its
    response is dropped quietly. With "half-close" the client keeps reading, so
    the wire can be checked: nothing at all, in particular no 500, is sent.
    """
    caplog.set_level(logging.DEBUG)
    started = trio.Event()
    ended = trio.Event()
    endpoint_outcome: list[str] = []

    async def slow(request: Request) -> Response:
        started.set()
        try:
            await anyio.sleep(10)
            endpoint_outcome.append("finished")
        except BaseException:
            endpoint_outcome.append("cancelled")
            raise
        finally:
            ended.set()
        return PlainTextResponse("too late")

    app = Starlette(
        routes=[Route("/slow", slow, methods=["GET", "POST"])],
        middleware=[Middleware(PassThrough) for _ in range(4)],
    )
    async with open_test_client(app) as client:
        conn = await client.connect()
        await conn.send_all(
            f"{method} /slow HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n".encode()
        )
        await started.wait()
        wire = b""
        if hang_up == "close":
            await conn.aclose()
        else:
            await conn.send_eof()
            with trio.fail_after(60):
                wire = await conn.receive_until_closed()
            await conn.aclose()
        with trio.fail_after(60):
            await ended.wait()
    assert endpoint_outcome == (["cancelled"] if method == "GET" else ["finished"])
    assert wire == b""
    assert "No response returned" not in caplog.text
    assert error_records(caplog) == []
    assert [r for r in caplog.records if r.exc_info] == []


# -- cancellation on hang-up, by policy ----------------------------------------------------


class SleepyApp:
    """Sleeps ``work`` seconds, then reads until http.disconnect and tries to answer.

    Records when it was cancelled or finished its work, what receive() returned and
    what send() raised (which it lets propagate, as most apps do).
    """

    def __init__(self, work: float) -> None:
        self.work = work
        self.started = trio.Event()
        self.ended = trio.Event()
        self.cancelled_at: float | None = None
        self.work_done_at: float | None = None
        self.messages: list[dict[str, Any]] = []
        self.send_error: BaseException | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.started.set()
        try:
            await trio.sleep(self.work)
            self.work_done_at = trio.current_time()
            for _ in range(5):
                message = await receive()
                self.messages.append(message)
                if message["type"] == "http.disconnect":
                    break
            try:
                await send_text(send, "done")
            except BaseException as exc:
                self.send_error = exc
                raise
        except trio.Cancelled:
            self.cancelled_at = trio.current_time()
            raise
        finally:
            self.ended.set()


async def hang_up_during(app: SleepyApp, method: str, config: Config) -> float:
    """Send a request, hang up once the app runs, wait until the app has ended;
    return the virtual time of the hang-up."""
    async with open_test_client(http_only(app), config) as client:
        conn = await client.connect()
        await conn.send_all(
            f"{method} / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc".encode()
        )
        await app.started.wait()
        hung_up_at = trio.current_time()
        await conn.aclose()
        with trio.fail_after(app.work + 10):
            await app.ended.wait()
    return hung_up_at


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS"])
async def test_hang_up_cancels_safe_method_promptly(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture, method: str
) -> None:
    """Under the default policy a hang-up cancels a GET/HEAD/OPTIONS app at once (its
    ``finally`` runs well before its 100 s of work would end). A naive server lets
    it run to the end for nothing; the cancellation is logged at DEBUG only."""
    caplog.set_level(logging.DEBUG, logger="trioserve.error")
    app = SleepyApp(work=100)
    hung_up_at = await hang_up_during(app, method, plain_config())
    assert app.cancelled_at is not None
    assert app.cancelled_at - hung_up_at < 0.1
    assert app.work_done_at is None
    assert error_records(caplog) == []


async def test_hang_up_does_not_cancel_post_which_sees_disconnect(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """A POST may have side effects: it is not cancelled, finishes its work, reads
    http.disconnect, and its send() raises ClientDisconnected (an OSError); letting
    that propagate is normal and logs nothing at ERROR."""
    caplog.set_level(logging.DEBUG, logger="trioserve.error")
    app = SleepyApp(work=10)
    hung_up_at = await hang_up_during(app, "POST", plain_config())
    assert app.cancelled_at is None
    assert app.work_done_at is not None
    assert app.work_done_at - hung_up_at == pytest.approx(10, abs=0.01)
    assert app.messages[-1] == {"type": "http.disconnect"}
    assert isinstance(app.send_error, trioserve.ClientDisconnected)
    assert isinstance(app.send_error, OSError)
    assert error_records(caplog) == []


async def test_cancel_on_disconnect_always_cancels_post(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="trioserve.error")
    app = SleepyApp(work=100)
    hung_up_at = await hang_up_during(app, "POST", plain_config(cancel_on_disconnect="always"))
    assert app.cancelled_at is not None
    assert app.cancelled_at - hung_up_at < 0.1
    assert app.work_done_at is None
    assert error_records(caplog) == []


async def test_cancel_on_disconnect_never_lets_get_finish(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="trioserve.error")
    app = SleepyApp(work=10)
    hung_up_at = await hang_up_during(app, "GET", plain_config(cancel_on_disconnect="never"))
    assert app.cancelled_at is None
    assert app.work_done_at is not None
    assert app.work_done_at - hung_up_at == pytest.approx(10, abs=0.01)
    assert app.messages[-1] == {"type": "http.disconnect"}
    assert isinstance(app.send_error, trioserve.ClientDisconnected)
    assert error_records(caplog) == []


@pytest.mark.parametrize("policy", ["safe", "always"])
async def test_hang_up_after_complete_response_does_not_cancel_background_work(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture, policy: str
) -> None:
    """Work the app does after its final body chunk (a background task, as with
    Starlette's BackgroundTask) is not the client's business. A server that cancels
    every task of the connection when the connection is lost cancels this too."""
    caplog.set_level(logging.DEBUG, logger="trioserve.error")
    background_done = trio.Event()
    outcome: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send_text(send, "accepted")
        try:
            await trio.sleep(5)
            outcome.append("background work finished")
        except trio.Cancelled:
            outcome.append("cancelled")
            raise
        finally:
            background_done.set()

    async with open_test_client(
        http_only(app), plain_config(cancel_on_disconnect=policy)
    ) as client:
        conn = await client.connect()
        response = await conn.request("GET", "/")
        assert (response.status, response.body) == (200, b"accepted")
        await conn.aclose()
        with trio.fail_after(20):
            await background_done.wait()
    assert outcome == ["background work finished"]
    assert error_records(caplog) == []


# -- the response head is written whole ----------------------------------------------------


async def test_response_head_is_whole_when_the_app_cancels_its_send(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """The app's own deadline expires while the server is blocked writing the head.

    Over a lockstep stream the head write blocks until the client reads. The client
    reads the first 1000 bytes of the head, then nothing until t=5; the app's
    ``move_on_after(1)`` around its send() expires at t=1, in the middle of the
    head. The head write is shielded, so the server keeps writing: send() returns
    only after the client has read the rest (t >= 5), and the client gets a whole,
    parseable head and the body.

    A server that does not shield abandons the write at t=1 (send() raises
    Cancelled at once, which the assertion on the send's end time catches): on a
    socket this leaves a partial head on the wire (see the real-socket test below);
    a lockstep stream happens to keep the abandoned bytes, so here the timing tells.
    """
    caplog.set_level(logging.DEBUG, logger="trioserve.error")
    big = b"x" * (16 * 1024)
    send_ended_at: list[float] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        with trio.move_on_after(1):
            try:
                await send(
                    {
                        "type": "http.response.start",
                        "status": 200,
                        "headers": [(b"x-big", big), (b"content-length", b"5")],
                    }
                )
                await send({"type": "http.response.body", "body": b"hello"})
            finally:
                send_ended_at.append(trio.current_time())

    async with open_test_client(http_only(app), plain_config()) as client:
        conn = await client.connect(lockstep=True)
        start = trio.current_time()
        await conn.send_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        first = await conn.receive_some(1000)
        assert first.startswith(b"HTTP/1.1 200 ")
        await trio.sleep(5)
        assert send_ended_at == []  # still writing the head, although cancelled at t=1
        h11_client = h11.Connection(h11.CLIENT, max_incomplete_event_size=1024 * 1024)
        h11_client.send(h11.Request(method="GET", target="/", headers=[("host", "a")]))
        h11_client.send(h11.EndOfMessage())
        h11_client.receive_data(first)
        events: list[Any] = []
        while not events or not isinstance(events[-1], (h11.EndOfMessage, h11.ConnectionClosed)):
            event = h11_client.next_event()
            if event is h11.NEED_DATA:
                h11_client.receive_data(bytes(await conn.receive_some()))
            else:
                events.append(event)
        await conn.aclose()
    response = events[0]
    assert isinstance(response, h11.Response)
    assert response.status_code == 200
    assert dict(response.headers)[b"x-big"] == big
    assert b"".join(bytes(e.data) for e in events if isinstance(e, h11.Data)) == b"hello"
    assert len(send_ended_at) == 1
    assert send_ended_at[0] - start >= 5
    assert error_records(caplog) == []


async def test_response_head_is_whole_on_a_real_socket_when_the_app_cancels_its_send() -> None:
    """The same on a real socket, where an abandoned write really is cut short.

    The head carries an 8 MiB header; the client's receive buffer is pinned small,
    so the server's send_all is part-way through the head when the client has read
    its first bytes. Then the test cancels the app's cancel scope around send() and
    waits until every task has reacted. A server that does not shield abandons the
    write and closes the connection: the client reads a truncated head and EOF (or
    a reset). trioserve finishes the head write, so the client reads a whole,
    parseable response.
    """
    big = b"y" * (8 * 1024 * 1024)
    scopes: list[trio.CancelScope] = []
    app_done = trio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        try:
            with trio.CancelScope() as cancel_scope:
                scopes.append(cancel_scope)
                await send(
                    {
                        "type": "http.response.start",
                        "status": 200,
                        "headers": [(b"x-big", big), (b"content-length", b"5")],
                    }
                )
                await send({"type": "http.response.body", "body": b"hello"})
        finally:
            app_done.set()

    async with open_test_server(http_only(app), plain_config(write_timeout=10)) as server:
        with trio.fail_after(10):
            sock = trio.socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
            await sock.connect(("127.0.0.1", server.port))
            async with trio.SocketStream(sock) as stream:
                await stream.send_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
                data = bytearray(await stream.receive_some())
                assert data.startswith(b"HTTP/1.1 200 ")
                assert len(scopes) == 1
                scopes[0].cancel()
                await trio.testing.wait_all_tasks_blocked()
                head_end = data.find(b"\r\n\r\n")
                try:
                    # Read up to the end of the 5-byte body, or EOF.
                    while head_end < 0 or len(data) < head_end + 4 + 5:
                        chunk = await stream.receive_some()
                        if not chunk:
                            break
                        data += chunk
                        if head_end < 0:
                            head_end = data.find(b"\r\n\r\n", len(data) - len(chunk) - 3)
                except trio.BrokenResourceError as exc:  # pragma: no cover - the bug
                    pytest.fail(f"connection reset after {len(data)} bytes: {exc!r}")
            await app_done.wait()
    assert head_end > 0, f"truncated head: {len(data)} bytes, no end of head"
    h11_client = h11.Connection(h11.CLIENT, max_incomplete_event_size=len(data))
    h11_client.send(h11.Request(method="GET", target="/", headers=[("host", "a")]))
    h11_client.send(h11.EndOfMessage())
    h11_client.receive_data(bytes(data))
    response = h11_client.next_event()
    assert isinstance(response, h11.Response)
    assert dict(response.headers)[b"x-big"] == big
    body = h11_client.next_event()
    assert isinstance(body, h11.Data)
    assert bytes(body.data) == b"hello"
