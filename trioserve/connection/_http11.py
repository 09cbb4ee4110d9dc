"""HTTP/1.1 on one connection: the request loop and the wire side of each request.

Theory of operation
-------------------

:meth:`HTTP11Connection.run` opens the connection's nursery, which holds:

the reader task
    :meth:`Transport.read_loop`, guarded by the keep-alive deadline
    (:class:`KeepAlive`). It sees the client hang up first and tells the request
    being served, which cancels the app if the ``cancel_on_disconnect`` policy
    says so.

the request loop (run inline, no task per request)
    One request at a time, in order:

    1. *idle wait*: waiting for the first byte of the next request is the only
       wait the keep-alive deadline covers. If a pipelined request is already
       buffered there is no wait, so the deadline cannot end a connection whose
       next request is already here.
    2. *header scope*: ``move_on_after(header_timeout)`` around reading the rest
       of the head (408 on expiry), only when the head has to be waited for.
    3. *app scope*: the app runs in a :class:`RequestCycle` whose cancel scope is
       the connection nursery's own: a hang-up ends the connection anyway, and a
       scope per request would cost every request (``docs/performance.md``).

    The parser parses the next pipelined request only after the response is
    complete (``start_next_cycle``); when the client asked to close, the loop
    ends instead and nothing more is parsed or answered (RFC 9112 9.6).

:class:`HTTP11Channel` is the wire side of the requests: it feeds what the reader
buffered into the sans-IO :class:`RequestParser`, turns response parts into bytes
with the :class:`ResponseWriter` and writes them through the transport. The first
write of a response carries the head together with the first piece of body and is
shielded, so a cancellation can never leave half a head on the wire.
"""

from __future__ import annotations

import logging
import math
import time
from typing import TYPE_CHECKING, Any

import trio

from .._errors import ClientDisconnected, LocalProtocolError, RemoteProtocolError
from ..protocol._asgi import ASGI_VERSION, build_http_scope
from ..protocol._asgi_ws import build_websocket_scope
from ..protocol._events import BodyChunk, RequestEnd, RequestHead, Signal
from ..protocol._http11 import HTTP11Protocol
from ..protocol._http11_writer import error_body
from ..protocol._proxy import ForwardedHeaders
from ..protocol._websocket import check_handshake, is_websocket_upgrade
from ._keep_alive import KeepAlive
from ._request import RequestCycle, ResponseHead
from ._websocket import WebSocketSession

if TYPE_CHECKING:
    from .._server_state import ServerState
    from .._transport import Transport

__all__ = ["DRAIN_LIMIT", "READER_TASK_NAME", "HTTP11Channel", "HTTP11Connection"]

error_logger = logging.getLogger("trioserve.error")

#: The name of every connection's reader task, a constant: trio would otherwise
#: make a new string for each (an idle connection's memory counts).
READER_TASK_NAME = "trioserve.connection.reader"
#: Unread request body the server reads and discards after a response to keep the
#: connection alive; a larger remainder closes the connection instead.
DRAIN_LIMIT = 128 * 1024
#: Seconds of silence after which a connection that is idle when a shutdown begins
#: is closed (see ``HTTP11Connection._wait_idle``).
SHUTDOWN_IDLE_GRACE = 1.0

Event = RequestHead | BodyChunk | RequestEnd | Signal


class HTTP11Channel:
    """The wire side of HTTP/1.1 requests on one transport, one request at a time.

    It feeds what the reader buffered into the connection's :class:`HTTP11Protocol`
    and writes the bytes it makes. It is the
    :class:`~trioserve.connection._request.RequestChannel` of every request cycle
    on the connection.

    Body bytes are framed (a chunk's size line, the content-length count) before
    they are written, so a write the app cancels cannot simply not happen: one
    cancelled before it began goes out first with the next write, and one
    cancelled partway, or a file send cancelled before its file is out, ends the
    connection.

    Attributes:
      closing: the next response head announces ``connection: close`` (a
          shutdown began, or :meth:`request_close`).
      ending: the connection ends after the current response, whatever its head
          announced (a request body that could not be read, an upgrade).
    """

    __slots__ = ("_eof_fed", "_proto", "_server", "_transport", "_unsent", "closing", "ending")

    def __init__(self, transport: Transport, proto: HTTP11Protocol, server: ServerState) -> None:
        self._transport = transport
        self._proto = proto
        self._server = server
        self._eof_fed = False
        self._unsent = b""  # framed body bytes whose write was cancelled before it began
        self.closing = server.shutting_down
        self.ending = False

    # -- reading -------------------------------------------------------------------

    def next_event_nowait(self) -> Event:
        """The next event from what has arrived (or the peer's close)."""
        proto = self._proto
        event = proto.next_event()
        if event is Signal.NEED_DATA and self._feed(True):
            event = proto.next_event()
        return event

    async def next_event(self) -> Event:
        """The next event, waiting for bytes as long as it takes (callers bound
        the wait)."""
        proto = self._proto
        transport = self._transport
        while True:
            event = proto.next_event()
            if event is not Signal.NEED_DATA:
                return event
            if not self._feed(True):
                await transport.wait_received()

    def _feed(self, eof: bool) -> bool:
        """Move what the reader buffered (or its EOF) into the protocol; return
        whether there was anything."""
        transport = self._transport
        data = transport.take_data()
        if data:
            self._proto.receive_data(data)
            return True
        if eof and transport.peer_closed and not self._eof_fed:
            self._eof_fed = True
            self._proto.receive_data(b"")
            return True
        return False

    # -- the RequestChannel of a request cycle ---------------------------------------

    @property
    def broken(self) -> bool:
        """Nothing more can be sent."""
        return self._transport.broken

    @property
    def peer_closed(self) -> bool:
        """The client has hung up."""
        return self._transport.peer_closed

    @property
    def head_sent(self) -> bool:
        """A response head went to the wire for the current request."""
        return self._proto.head_sent

    @property
    def expects_continue(self) -> bool:
        """The client waits for ``100 Continue`` before sending the body."""
        return self._proto.expects_continue

    async def send_continue(self) -> None:
        """Send ``100 Continue``."""
        await self._transport.write(self._proto.informational_continue(), shield=True)

    def receive_nowait(self) -> BodyChunk | RequestEnd | None:
        """The next piece of the request body if it has arrived, else ``None``.
        (A close of the peer's is not reported here but by :meth:`receive`, so
        that the body before it is handed over first.)"""
        proto = self._proto
        event = proto.next_event()
        if event is Signal.NEED_DATA:
            if not self._feed(False):
                return None
            event = proto.next_event()
            if event is Signal.NEED_DATA:
                return None
        assert isinstance(event, (BodyChunk, RequestEnd))
        return event

    async def receive(self) -> BodyChunk | RequestEnd:
        """Wait for the next piece of the request body."""
        event = await self.next_event()
        assert isinstance(event, (BodyChunk, RequestEnd))
        return event

    def request_close(self) -> None:
        """End the connection after this response."""
        self.closing = self.ending = True

    async def send_response(self, head: ResponseHead | None, body: bytes, *, end: bool) -> None:
        """Write a piece of the response, with the head first if given."""
        proto = self._proto
        if head is None:
            data = proto.response_body(body)
            if end:
                data += proto.response_end()
            if data or self._unsent:
                await self._write_body(data, more=not end)
            else:
                # Nothing to write (an empty chunk): still a checkpoint, so that
                # an app sending empty chunks in a loop cannot starve the others.
                await trio.lowlevel.checkpoint()
            return
        status, headers, own = head
        data = proto.response_head(status, headers, close=self.closing, own=own)
        try:
            data += proto.response_body(body)
            if end:
                data += proto.response_end()
        except LocalProtocolError:
            # A body that contradicts its content-length: nothing is on the wire
            # yet, so the client can still be told 500.
            proto.retract_head()
            raise
        # Whatever happens to this task, the head goes out whole or not at all.
        await self._transport.write(data, shield=True, more=not end)

    async def send_response_file(
        self, head: ResponseHead | None, fd: int, offset: int, count: int, *, end: bool
    ) -> int:
        """Write a piece of the response from a file, with the head first if given.
        Return how many bytes of the file were sent, or ``count`` if the body is
        dropped (HEAD); after a file that ended early nothing more is written."""
        proto = self._proto
        head_bytes = b""
        if head is not None:
            status, headers, own = head
            head_bytes = proto.response_head(status, headers, close=self.closing, own=own)
        try:
            framing = proto.response_file_framing(count)
            end_bytes = proto.response_end() if end else b""
        except LocalProtocolError:
            if head is not None:
                proto.retract_head()
            raise
        before, after = framing or (b"", b"")
        transport = self._transport
        try:
            if head is not None:
                await transport.write(head_bytes + before, shield=True)
            elif before or self._unsent:
                await self._write_body(before, more=False)
            sent = count
            if framing is not None and count:
                sent = await transport.send_file(fd, offset, count)
                if sent < count:
                    return sent
        except trio.Cancelled:
            # The framing counts the file already; without the file's bytes,
            # nothing after them could be framed.
            transport.abandon()
            raise
        if after or end_bytes:
            await self._write_body(after + end_bytes, more=not end)
        elif not end:
            await trio.lowlevel.checkpoint()
        return sent

    async def _write_body(self, data: bytes, *, more: bool) -> None:
        if self._unsent:
            data = self._unsent + data
            self._unsent = b""
        try:
            await self._transport.write(data, more=more)
        except trio.Cancelled:
            if not self._transport.broken:
                self._unsent = data  # framed already: it must go out, and first
            raise

    async def send_error(
        self,
        status: int,
        headers: tuple[tuple[bytes, bytes], ...] = (),
        *,
        deadline: float = math.inf,
    ) -> int | None:
        """Answer with a response of the server's own, ending the connection,
        unless a head was sent; return the size of its body if it was sent
        (by ``deadline``, if given). ``headers`` are fields the answer needs
        (``Sec-WebSocket-Version``)."""
        default = self._server.default_headers()
        data = self._proto.error_response(status, [*headers, *default] if headers else default)
        if not data:
            return None
        try:
            await self._transport.write(data, shield=True, deadline=deadline)
        except ClientDisconnected:
            return None
        return 0 if self._proto.head_request else len(error_body(status))

    async def linger(self) -> None:
        """Half-close and discard what the client still sends until it closes
        (at most ``LINGER_TIMEOUT`` seconds, or the caller's deadline), if it
        may still be sending: the request was not read whole, or more bytes
        are here. (After a whole request the client waits for the answer; it
        need not be waited for.)"""
        proto = self._proto
        try:
            # What has arrived of the request (often just its end) is parsed first.
            while not proto.request_complete and self.receive_nowait() is not None:
                pass
        except RemoteProtocolError:
            pass
        if proto.request_complete and not (proto.has_buffered_data or self._transport.buffered):
            return
        await self._transport.linger()


class HTTP11Connection:
    """Serves HTTP/1.x on one transport until either side ends it.

    Args:
      transport: the connection's transport.
      server: the shared server state.
      client: the peer's address for ``scope["client"]``, if known.
      sockname: the local address for ``scope["server"]``, if known (``(path,
          None)`` for a Unix socket, as ASGI specifies).
      scheme: ``"http"`` or ``"https"``.
      extensions: ASGI scope extensions of this connection (e.g. ``tls``), copied
          into every request scope.
      forwarded: applies forwarding headers to the scopes, when the peer is a
          trusted proxy; ``None`` leaves them as they are.
    """

    __slots__ = (
        "_base_scope",
        "_channel",
        "_cycle",
        "_extensions",
        "_forwarded",
        "_keep_alive",
        "_proto",
        "_server",
        "_transport",
        "_websocket",
    )

    def __init__(
        self,
        transport: Transport,
        server: ServerState,
        client: tuple[str, int] | None,
        sockname: tuple[str, int | None] | None,
        scheme: str = "http",
        extensions: dict[str, dict[str, object]] | None = None,
        forwarded: ForwardedHeaders | None = None,
    ) -> None:
        self._transport = transport
        self._forwarded = forwarded
        self._server = server
        self._extensions = extensions
        self._base_scope: dict[str, Any] = {
            "type": "http",
            "asgi": ASGI_VERSION.copy(),
            "scheme": scheme,
            "client": client,
            "server": sockname,
            "root_path": server.config.root_path,
        }
        self._proto = HTTP11Protocol(server.limits)
        self._channel = HTTP11Channel(transport, self._proto, server)
        self._keep_alive = KeepAlive(
            server.config.keep_alive_timeout, transport.wake, lambda: transport.buffered > 0
        )
        self._cycle: RequestCycle | None = None
        self._websocket: WebSocketSession | None = None

    async def run(self) -> None:
        """Serve requests until the connection ends."""
        server = self._server
        server.connections.add(self)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    self._keep_alive.guard,
                    self._transport.read_loop,
                    self._on_peer_closed,
                    name=READER_TASK_NAME,
                )
                try:
                    # The scope a hang-up cancels is the nursery's own: after the
                    # cancelled request there is nothing left to serve, the reader
                    # has finished, and on the way out nothing waits (no error
                    # answer, no linger: the peer is gone).
                    await self._serve_requests(nursery)
                finally:
                    nursery.cancel_scope.cancel()
        finally:
            server.connections.discard(self)

    async def abort(self) -> None:
        """Close the connection's stream at once, under whatever still uses it
        (a shielded write to a client that does not read)."""
        await self._transport.abort()

    def shutdown_nowait(self) -> None:
        """Begin a graceful close: after the current response, or when idle after
        a short wait for a request already on its way (a websocket closes with
        1001)."""
        self._channel.closing = True
        if self._keep_alive.armed:
            self._transport.wake()
        if self._websocket is not None:
            self._websocket.shutdown_nowait()

    def _on_peer_closed(self) -> None:
        if self._cycle is not None:
            self._cycle.on_disconnect()
        elif self._websocket is not None:
            self._websocket.on_disconnect()

    async def _serve_requests(self, nursery: trio.Nursery) -> None:
        proto = self._proto
        transport = self._transport
        timed = self._server.access_log is not None
        while True:
            # Idle, between requests: the only wait the keep-alive deadline covers.
            # (A connection that ends here sent no request: nothing to log.)
            if (
                not (proto.has_buffered_data or transport.buffered or transport.peer_closed)
                and not await self._wait_idle()
            ):
                return
            # A request begins with the first byte of its head.
            started = time.perf_counter() if timed else 0.0
            try:
                head = await self._read_head()
            except RemoteProtocolError as exc:
                if not transport.peer_closed:
                    error_logger.debug("Bad request from %s: %s", self._base_scope["client"], exc)
                    await self._refuse(exc.status_hint, None, started, exc.headers)
                    await transport.linger()
                return
            if head is None:
                return
            if head.upgrade and is_websocket_upgrade(head.headers):
                # The connection becomes a websocket (or is refused, and ends).
                if not await self._upgrade(head, nursery, started):
                    await transport.linger()
                return
            if not await self._handle(head, nursery.cancel_scope, started):
                await transport.linger()
                return
            del head  # not kept alive through the idle wait

    async def _wait_idle(self) -> bool:
        """Wait for the first byte of the next request: the only wait the keep-alive
        deadline covers. Return whether it came (not the deadline, a shutdown or EOF).
        """
        channel = self._channel
        keep_alive = self._keep_alive
        transport = self._transport
        if keep_alive.expired:
            return False
        keep_alive.arm()
        try:
            while not (transport.buffered or transport.peer_closed or keep_alive.expired):
                if channel.closing:
                    await self._wait_request_on_its_way()
                    break
                await transport.wait_received()
        finally:
            keep_alive.disarm()
        return not keep_alive.expired and bool(transport.buffered or transport.peer_closed)

    async def _wait_request_on_its_way(self) -> None:
        """A shutdown began while the connection is idle. A client that was busy on
        it a moment ago may have sent its next request already; closing now would
        cross that request, and the client could not tell the close from a failure.
        So a connection idle for less than ``SHUTDOWN_IDLE_GRACE`` seconds waits
        out the rest of them for a request (answered with ``connection: close``);
        one idle for longer is closed at once."""
        transport = self._transport
        keep_alive = self._keep_alive
        with trio.move_on_at(keep_alive.idle_since + SHUTDOWN_IDLE_GRACE):
            while not (transport.buffered or transport.peer_closed or keep_alive.expired):
                await transport.wait_received()

    async def _read_head(self) -> RequestHead | None:
        """The next request head, once the first bytes of it (or the EOF) are here;
        ``None`` when the connection should end quietly (a clean EOF)."""
        channel = self._channel
        event = self._proto.next_event()  # a pipelined head is parsed already
        if event is Signal.NEED_DATA:
            event = channel.next_event_nowait()
        if event is Signal.NEED_DATA:
            # Only a head that has to be waited for needs the header deadline; most
            # arrive whole, and then no scope is set up at all.
            with trio.move_on_after(self._server.config.header_timeout) as head_scope:
                event = await channel.next_event()
            if head_scope.cancelled_caught:
                raise RemoteProtocolError("Request head not received in time", 408)
        if isinstance(event, RequestHead):
            return event
        # PEER_CLOSED: a clean EOF between requests. (PAUSED cannot happen: a cycle
        # starts only after start_next_cycle, and a body event only after a head.)
        return None

    async def _refuse(
        self,
        status: int,
        head: RequestHead | None,
        started: float,
        headers: tuple[tuple[bytes, bytes], ...] = (),
    ) -> None:
        """Answer a request the server refuses itself (the connection ends), and
        give it its access log line with what is known of it: the request line
        once its head was parsed."""
        sent = await self._channel.send_error(status, headers)
        access_log = self._server.access_log
        if access_log is None or sent is None:
            return
        if head is None:
            scope = self._base_scope
        else:
            server = self._server
            scope = build_http_scope(
                head, self._base_scope, server.config.root_path, server.lifespan_state
            )
        access_log.log(scope, status, (), sent, time.perf_counter() - started)

    async def _handle(self, head: RequestHead, app_scope: trio.CancelScope, started: float) -> bool:
        """Serve one request; return whether the connection may carry another."""
        server = self._server
        if not server.admit_request():
            await self._refuse(503, head, started)
            return False
        scope = build_http_scope(
            head, self._base_scope, server.config.root_path, server.lifespan_state
        )
        if head.forwarded and self._forwarded is not None:
            self._forwarded.apply(scope)
        if self._extensions:
            scope["extensions"].update(
                (name, value.copy()) for name, value in self._extensions.items()
            )
        cycle = RequestCycle(self._channel, server, scope, app_scope, started)
        if self._transport.peer_closed:
            cycle.on_disconnect()
        self._cycle = cycle
        try:
            await cycle.run()
        except BaseException:
            # Cancelled by the hang-up (perhaps inside a group from the app's own
            # nursery) or by the server's stop: the request still gets its
            # access log line.
            if server.access_log is not None and (
                cycle.cancelled_by_disconnect or cycle.cancelled_by_server
            ):
                cycle.log_access(server.access_log)
            raise
        finally:
            self._cycle = None
            server.request_done()
        if server.access_log is not None:
            cycle.log_access(server.access_log)
        proto = self._proto
        if not (cycle.completed and proto.keep_alive):
            return False
        # A shutdown that began after this response's head went out (announcing
        # keep-alive) does not end the connection here: the idle wait gives a
        # request already on its way its answer, with `connection: close`.
        if self._channel.ending or self._transport.peer_closed:
            return False
        if not proto.request_complete and not await self._drain_body():
            return False
        return proto.start_next_cycle()

    async def _upgrade(self, head: RequestHead, nursery: trio.Nursery, started: float) -> bool:
        """Serve a websocket upgrade request: hand the transport, and the bytes
        that came behind the request, to a websocket session. Return whether the
        websocket closed cleanly (then nothing is left to linger for)."""
        server = self._server
        channel = self._channel
        channel.request_close()  # no HTTP request follows, whatever happens
        if server.config.ws == "none":
            error_logger.info("WebSocket upgrade refused: websocket support is off (ws='none')")
            await self._refuse(501, head, started)
            return False
        try:
            has_body = not isinstance(channel.receive_nowait(), RequestEnd)
            request = check_handshake(head, has_body)
        except RemoteProtocolError as exc:
            error_logger.debug(
                "Bad websocket handshake from %s: %s", self._base_scope["client"], exc
            )
            await self._refuse(exc.status_hint, head, started, exc.headers)
            return False
        if not server.admit_request():
            await self._refuse(503, head, started)
            return False
        scope = build_websocket_scope(
            head,
            self._base_scope,
            server.config.root_path,
            server.lifespan_state,
            request.subprotocols,
        )
        if head.forwarded and self._forwarded is not None:
            self._forwarded.apply(scope)
        if self._extensions:
            scope["extensions"].update(
                (name, value.copy()) for name, value in self._extensions.items()
            )
        buffered = self._proto.take_trailing_data() + self._transport.take_data()
        session = WebSocketSession(
            self._transport, channel, server, scope, request, buffered, nursery
        )
        self._websocket = session
        if self._transport.peer_closed:
            session.on_disconnect()
        if server.shutting_down:
            # The shutdown began while the request was read: the websocket
            # closes with 1001 as soon as it is accepted, like those already open.
            session.shutdown_nowait()
        try:
            await session.run()
        finally:
            self._websocket = None
            server.request_done()
        return session.closed_cleanly

    async def _drain_body(self) -> bool:
        """Read and discard the rest of a request body the app did not read."""
        if not self._proto.body_may_follow:
            return False
        channel = self._channel
        drained = 0
        try:
            # What has already arrived needs no deadline: usually it is just the end
            # of a bodiless request the app never asked for.
            proto = self._proto
            while True:
                parsed = proto.next_event()
                event = channel.receive_nowait() if parsed is Signal.NEED_DATA else parsed
                if event is None:
                    break
                if isinstance(event, RequestEnd):
                    return True
                assert isinstance(event, BodyChunk)
                drained += len(event.data)
                if drained > DRAIN_LIMIT:
                    return False
            with trio.move_on_after(self._server.config.read_timeout):
                while drained <= DRAIN_LIMIT:
                    event = await channel.receive()
                    if isinstance(event, RequestEnd):
                        return True
                    drained += len(event.data)
        except RemoteProtocolError:
            return False
        return False
