"""One WebSocket: the ASGI websocket protocol over wsproto, in the connection's nursery.

Theory of operation
-------------------

An upgrade request is served by a :class:`WebSocketSession` in place of an HTTP
request cycle, in the same nursery: the app runs inline in the connection's task,
and the transport's reader task goes on reading. Until the app accepts, the
session is HTTP: a close is answered 403, and a denial response or an app failure
is an HTTP response, written by the connection's HTTP/1.1 channel. Once the app
accepts, the session writes the ``101`` itself, and :class:`FrameIO` (wsproto's
frames, within our bounds) takes over the bytes, starting with any that arrived
right behind the request.

Frames are processed in order, and a message is handed to the app before
anything after it is looked at. Two tasks process, never at once:

- the app's ``receive()``, which processes until it has a whole message (or the
  websocket is over) and returns it;
- the *keeper* task, which processes only while the app is not in ``receive()``,
  no message waits for the app, and the app has acted (sent, or asked again)
  since it was given the last one. It answers pings and the peer's close for an
  app that only sends, and it runs the liveness pings.

So the server's reaction to a frame never overtakes the app's answer to the
message before it, and an app that stops receiving stops the processing: what
arrives stays in the transport's bounded buffer, and the reader stops reading.

A client that goes away does not cancel the app: its next ``receive()`` returns
``websocket.disconnect`` with the peer's close code (1006 when the connection was
lost without a close frame), and ``send()`` raises :class:`ClientDisconnected`.

Every timeout is a deadline on a scope: the answer to a ping
(``websocket_ping_timeout``), the peer's answer to our close
(``websocket_close_timeout``), and the writes' own (``write_timeout``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from typing import TYPE_CHECKING, Any

import trio
from wsproto.connection import ConnectionState
from wsproto.events import CloseConnection, Ping, Pong

from .._app_call import Outcome, call_app, only_disconnects
from .._errors import ClientDisconnected, LocalProtocolError
from ..protocol._asgi_ws import (
    SessionState,
    bad_ws_message,
    check_accept,
    check_close,
    check_denial_body,
    check_denial_start,
    check_send,
)
from ..protocol._websocket import WebSocketRequest, accept_head, negotiate_deflate
from ..protocol._websocket_frames import NEED_DATA, WebSocketProtocol

if TYPE_CHECKING:
    from wsproto.extensions import Extension

    from .._server_state import ServerState
    from .._transport import Transport
    from .._types import Message
    from ._http11 import HTTP11Channel

__all__ = ["KEEPER_TASK_NAME", "FrameIO", "WebSocketSession"]

error_logger = logging.getLogger("trioserve.error")

#: The keeper task's name, a constant (as the reader's).
KEEPER_TASK_NAME = "trioserve.connection.websocket"
#: Queued frames are written once there are this many, or this many bytes, and
#: the sending task then yields to others.
FLUSH_FRAMES = 32
FLUSH_BYTES = 16 * 1024

NORMAL_CLOSURE = 1000
GOING_AWAY = 1001
ABNORMAL_CLOSURE = 1006
MESSAGE_TOO_BIG = 1009
INTERNAL_ERROR = 1011


class FrameIO:
    """The frames of one accepted websocket, over the transport.

    Received frames become events of the sans-IO :class:`WebSocketProtocol`,
    handled in order by :meth:`process`. Frames to send are queued and written
    together: before whoever sends or processes next waits for anything
    (:meth:`flush`), and as soon as 32 frames or 16 KiB are queued, which is also
    where a sending app yields to other tasks. A close frame is written at once.

    Attributes:
      ready: a whole message received and not taken yet (``str`` or ``bytes``).
      close_code: once the websocket is over, the code that ended it as the app
          hears it: the peer's, ours, or 1006 for a lost connection.
      close_reason: the reason that came with it.
      close_deadline: when the peer must have answered our close frame (``inf``
          before we sent one).
      sent_close, received_close: the codes of the close frames each way
          (``None`` where none went), for the access log.
      messages_in, bytes_in, messages_out, bytes_out: counts for the access log.
    """

    __slots__ = (
        "_close_timeout",
        "_eof_given",
        "_ping_payload",
        "_proto",
        "_queue",
        "_queued",
        "_stalled",
        "_transport",
        "bytes_in",
        "bytes_out",
        "close_code",
        "close_deadline",
        "close_reason",
        "messages_in",
        "messages_out",
        "ready",
        "received_close",
        "sent_close",
    )

    def __init__(
        self,
        transport: Transport,
        extensions: list[Extension],
        buffered: bytes,
        max_message_size: int,
        close_timeout: float,
    ) -> None:
        self._transport = transport
        self._proto = WebSocketProtocol(extensions, max_message_size)
        self._proto.receive_data(buffered)
        self._stalled = not buffered  # the protocol needs bytes it does not have
        self._eof_given = False
        self._queue: list[bytes] = []
        self._queued = 0
        self._close_timeout = close_timeout
        self._ping_payload = b""
        self.close_deadline = math.inf
        self.ready: str | bytes | None = None
        self.close_code: int | None = None
        self.close_reason = ""
        self.sent_close: int | None = None
        self.received_close: int | None = None
        self.messages_in = self.bytes_in = self.messages_out = self.bytes_out = 0

    @property
    def closed(self) -> bool:
        """The websocket is over: closed by both sides, failed, or lost."""
        return self.close_code is not None

    @property
    def awaiting_pong(self) -> bool:
        """Our last ping has not been answered yet."""
        return bool(self._ping_payload)

    @property
    def queued(self) -> bool:
        """Frames wait to be written (see :meth:`flush`)."""
        return bool(self._queue)

    def has_input(self) -> bool:
        """Something received may still hold events: bytes the protocol has not
        looked at, here or in the transport, or the peer's close."""
        transport = self._transport
        return bool(
            not self._stalled
            or transport.buffered
            or (transport.peer_closed and not self._eof_given)
        )

    # -- receiving -----------------------------------------------------------------

    async def process(self) -> None:
        """Handle what was received, in order, until a message is ready, the
        websocket is over, or nothing is left."""
        proto = self._proto
        transport = self._transport
        while self.ready is None and self.close_code is None:
            event = proto.next_event()
            if event is NEED_DATA:
                data = transport.take_data()
                if data:
                    proto.receive_data(data)
                elif transport.peer_closed and not self._eof_given:
                    self._eof_given = True
                    proto.receive_data(None)
                else:
                    self._stalled = True
                    return
                continue
            kind = type(event)
            if kind is str or kind is bytes:
                self.ready = event  # type: ignore[assignment]
                self.messages_in += 1
                self.bytes_in += _byte_size(event)  # type: ignore[arg-type]
            elif kind is Ping:
                assert isinstance(event, Ping)
                if proto.state is ConnectionState.OPEN:
                    self._queue_frame(proto.send(event.response()))
            elif kind is Pong:
                assert isinstance(event, Pong)
                if event.payload == self._ping_payload:
                    self._ping_payload = b""
            else:
                assert isinstance(event, CloseConnection)
                await self._closed_by_peer(event)
        self._stalled = False

    async def _closed_by_peer(self, event: CloseConnection) -> None:
        code = int(event.code)
        state = self._proto.state
        if state is ConnectionState.OPEN:
            # A protocol error (or a message over the limit): fail with its code.
            await self._fail(code, event.reason or "")
            return
        if not (self._eof_given and code == ABNORMAL_CLOSURE):
            # A close frame (not the lost connection, which is reported as 1006,
            # a code no frame may carry).
            self.received_close = code
        if state is ConnectionState.REMOTE_CLOSING:
            # The peer closes: answer with its code (RFC 6455 5.5.1).
            self.sent_close = code
            await self._write_close(self._proto.send(event.response()))
        self._end(code, event.reason or "")

    def take(self) -> str | bytes | None:
        """Take the message that is ready, if any."""
        message, self.ready = self.ready, None
        return message

    # -- sending -------------------------------------------------------------------

    async def send_message(self, data: str | bytes) -> None:
        """Queue a whole message (see the class docstring on when it is written).

        Raises:
          ClientDisconnected: the websocket is over, or closing.
        """
        if self.close_code is not None or self._proto.state is not ConnectionState.OPEN:
            raise ClientDisconnected("The websocket is closed")
        self.messages_out += 1
        self.bytes_out += _byte_size(data)
        self._queue_frame(self._proto.send_message(data))
        if len(self._queue) >= FLUSH_FRAMES or self._queued >= FLUSH_BYTES:
            await self.flush()
            await trio.lowlevel.cancel_shielded_checkpoint()

    def _queue_frame(self, frame: bytes) -> None:
        self._queue.append(frame)
        self._queued += len(frame)

    async def flush(self) -> None:
        """Write the queued frames.

        Raises:
          ClientDisconnected: the peer is gone, or did not read in time.
        """
        queue = self._queue
        if not queue:
            return
        data = queue[0] if len(queue) == 1 else b"".join(queue)
        self._queue = []
        self._queued = 0
        try:
            await self._transport.write(data)
        except ClientDisconnected:
            self._end(ABNORMAL_CLOSURE, "")
            raise

    async def send_ping(self) -> None:
        """Send a ping; :attr:`awaiting_pong` is true until its pong arrives."""
        if self._proto.state is ConnectionState.OPEN:
            self._ping_payload = os.urandom(4)
            self._queue_frame(self._proto.send(Ping(self._ping_payload)))
            with contextlib.suppress(ClientDisconnected):
                await self.flush()

    async def close(self, code: int, reason: str = "") -> None:
        """Begin the close handshake with ``code``, unless it has begun."""
        if self._proto.state is ConnectionState.OPEN:
            self.close_deadline = trio.current_time() + self._close_timeout
            self.sent_close = code
            await self._write_close(self._proto.send(CloseConnection(code, reason)))

    def lose(self, code: int = ABNORMAL_CLOSURE, reason: str = "") -> None:
        """Give up on the websocket (the peer did not answer in time), telling
        the app ``code``."""
        self._end(code, reason)

    async def _fail(self, code: int, reason: str) -> None:
        """Fail the websocket: our close frame with ``code``, and nothing more is
        processed (RFC 6455 7.1.7)."""
        frame = self._proto.send(CloseConnection(code, reason))
        self.sent_close = code
        try:
            await self._write_close(frame)
        finally:
            # Only now: the app, told that it is over, may return, and the
            # keeper that may be writing this is cancelled then.
            self._end(code, reason)

    async def _write_close(self, frame: bytes) -> None:
        """Write what is queued and a close frame, shielded, so that it goes out
        whole whatever happens to the task writing it; a lost connection ends
        the websocket."""
        self._queue_frame(frame)
        data = b"".join(self._queue)
        self._queue = []
        self._queued = 0
        try:
            await self._transport.write(data, shield=True)
        except ClientDisconnected:
            self._end(ABNORMAL_CLOSURE, "")

    def _end(self, code: int, reason: str) -> None:
        if self.close_code is None:
            self.close_code = code
            self.close_reason = reason
        self.ready = None


def _byte_size(data: str | bytes | bytearray) -> int:
    """The size of a message's payload in bytes (text as UTF-8)."""
    if isinstance(data, str) and not data.isascii():
        return len(data.encode())
    return len(data)


class WebSocketSession:
    """One websocket, from the upgrade request to the end of the connection.

    Args:
      transport: the connection's transport.
      channel: the connection's HTTP/1.1 channel, for HTTP answers before accept.
      server: the shared server state.
      scope: the session's ASGI scope.
      request: what the opening handshake asked for.
      buffered: bytes received after the upgrade request (the first frames).
      nursery: the connection's nursery, where the keeper task runs.
    """

    __slots__ = (
        "_buffered",
        "_channel",
        "_config",
        "_connect_delivered",
        "_denial",
        "_failed",
        "_frames",
        "_held",
        "_keeper_stopped",
        "_keeper_wait",
        "_nursery",
        "_peer_gone",
        "_processing",
        "_receiving",
        "_request",
        "_server",
        "_shutting_down",
        "_start",
        "_state",
        "_status",
        "_transport",
        "scope",
    )

    def __init__(
        self,
        transport: Transport,
        channel: HTTP11Channel,
        server: ServerState,
        scope: dict[str, Any],
        request: WebSocketRequest,
        buffered: bytes,
        nursery: trio.Nursery,
    ) -> None:
        self._transport = transport
        self._channel = channel
        self._server = server
        self._config = server.config
        self.scope = scope
        self._request = request
        self._buffered = buffered
        self._nursery = nursery
        self._state = SessionState.CONNECTING
        self._frames: FrameIO | None = None
        # The keeper's wait, the only place where it may be cancelled: never in
        # the middle of processing or of a write.
        self._keeper_wait: trio.CancelScope | None = None
        self._keeper_stopped = False
        self._connect_delivered = False
        self._receiving = False
        self._processing = False
        self._held = False
        self._peer_gone = False
        self._shutting_down = False
        self._failed = False
        self._denial: tuple[int, list[tuple[bytes, bytes]]] | None = None
        self._status: int | None = None
        self._start = time.perf_counter()

    # -- the connection's side ------------------------------------------------------

    def on_disconnect(self) -> None:
        """The peer closed the connection (called from the reader)."""
        self._peer_gone = True
        self._transport.wake()
        self._wake_keeper()

    def shutdown_nowait(self) -> None:
        """The server shuts down: close with 1001 (going away), once accepted."""
        self._shutting_down = True
        self._transport.wake()
        self._wake_keeper()

    @property
    def closed_cleanly(self) -> bool:
        """The close handshake completed: both close frames went, and everything
        the peer sent before its own was read. The server may close the TCP
        connection at once (RFC 6455 7.1.1: the server closes first)."""
        frames = self._frames
        return (
            frames is not None
            and frames.sent_close is not None
            and frames.received_close is not None
        )

    async def run(self) -> None:
        """Run the app for this websocket, then end the websocket properly."""
        try:
            outcome = await call_app(
                self._server.app, self.scope, self.receive, self.send, self._app_failed
            )
        finally:
            self._stop_keeper()
        if outcome is Outcome.RETURNED_VALUE:
            self._failed = True
        await self._finish()
        self._log_access()

    def _app_failed(self, exc: BaseException) -> None:
        frames = self._frames
        if only_disconnects(exc) or (
            frames is not None and frames.closed and isinstance(exc, OSError)
        ):
            error_logger.debug("WebSocket client disconnected during %s", self.scope["path"])
            return
        self._failed = True
        error_logger.error("Exception in ASGI application", exc_info=exc)

    async def _finish(self) -> None:
        state = self._state
        if state is SessionState.CONNECTING:
            if not self._failed and not self._peer_gone:
                error_logger.error(
                    "ASGI callable returned without accepting or closing the websocket"
                )
            await self._http_error(500)
        elif state is SessionState.RESPONDING:
            self._channel.request_close()  # the denial response is incomplete
        frames = self._frames
        if frames is None or frames.closed:
            return
        # What the app queued goes out first, then the close frame.
        await frames.close(INTERNAL_ERROR if self._failed else NORMAL_CLOSURE)
        # The close handshake: the peer's close frame, within the deadline.
        with trio.move_on_at(frames.close_deadline):
            while not frames.closed:
                if not self._processing and frames.has_input():
                    await self._process(frames)
                    frames.take()
                else:
                    await self._transport.wait_received()
        if not frames.closed:
            frames.lose()

    # -- receive -------------------------------------------------------------------

    async def receive(self) -> Message:
        """The ASGI ``receive`` callable."""
        if not self._connect_delivered:
            self._connect_delivered = True
            await trio.lowlevel.checkpoint()
            return {"type": "websocket.connect"}
        frames = self._frames
        if frames is None:
            # Not accepted (or denied): nothing will come but the end.
            while not self._peer_gone and self._state is not SessionState.CLOSED:
                await self._transport.wait_received()
            return self._disconnect(ABNORMAL_CLOSURE, "")
        self._held = False
        self._receiving = True
        try:
            while True:
                message = frames.take()
                if message is not None:
                    self._held = True
                    if isinstance(message, str):
                        return {"type": "websocket.receive", "text": message}
                    return {"type": "websocket.receive", "bytes": message}
                if frames.closed:
                    await trio.lowlevel.checkpoint()
                    return self._disconnect(
                        frames.close_code or ABNORMAL_CLOSURE, frames.close_reason
                    )
                if not self._processing and frames.has_input():
                    await self._process(frames)
                elif frames.queued:
                    with contextlib.suppress(ClientDisconnected):
                        await frames.flush()  # ends the websocket if the peer is gone
                else:
                    await self._transport.wait_received()
        finally:
            self._receiving = False

    @staticmethod
    def _disconnect(code: int, reason: str) -> Message:
        return {"type": "websocket.disconnect", "code": code, "reason": reason}

    async def _process(self, frames: FrameIO, *, wake: bool = False) -> None:
        """Process as the one processor; ``wake``: tell the tasks waiting (for
        this to finish) when it is done."""
        self._processing = True
        try:
            await frames.process()
        finally:
            self._processing = False
            if wake:
                self._transport.wake()

    # -- send ----------------------------------------------------------------------

    async def send(self, message: Message) -> None:
        """The ASGI ``send`` callable."""
        try:
            kind = message["type"]
        except (KeyError, TypeError):
            raise LocalProtocolError(f"ASGI message without a 'type': {message!r}") from None
        state = self._state
        if kind == "websocket.send":
            data = check_send(message, state)
            self._held = False
            frames = self._frames
            assert frames is not None
            if not frames.queued:
                # The keeper writes what the app queued if the app waits for
                # something else before it writes it itself.
                self._wake_keeper()
            await frames.send_message(data)
        elif kind == "websocket.accept":
            subprotocol, headers = check_accept(message, state)
            await self._accept(subprotocol, headers)
        elif kind == "websocket.close":
            code, reason = check_close(message, state)
            self._state = SessionState.CLOSED
            if self._frames is None:
                await self._http_error(403)  # closed before accept: the handshake fails
            else:
                await self._frames.close(code, reason)
        elif kind == "websocket.http.response.start":
            self._denial = check_denial_start(message, state)
            self._state = SessionState.RESPONDING
            await trio.lowlevel.checkpoint()
        elif kind == "websocket.http.response.body":
            body, more_body = check_denial_body(message, state)
            await self._send_denial(body, more_body)
        else:
            raise bad_ws_message(message, state)

    async def _accept(self, subprotocol: str | None, headers: list[tuple[bytes, bytes]]) -> None:
        if self._peer_gone:
            raise ClientDisconnected("The client has disconnected")
        config = self._config
        server = self._server
        extensions, agreed = negotiate_deflate(
            self._request.extensions, config.websocket_per_message_deflate
        )
        if server.extra_headers:
            headers = headers + server.extra_headers
        head = accept_head(self._request, subprotocol, agreed, headers, server.own_headers(headers))
        self._state = SessionState.CONNECTED
        self._status = 101
        self._frames = FrameIO(
            self._transport,
            extensions,
            self._buffered,
            config.websocket_max_message_size,
            config.websocket_close_timeout,
        )
        self._buffered = b""
        await self._transport.write(head, shield=True)
        self._nursery.start_soon(self._keep, name=KEEPER_TASK_NAME)

    async def _send_denial(self, body: bytes, more_body: bool) -> None:
        channel = self._channel
        head = None
        if self._denial is not None:
            status, headers = self._denial
            self._denial = None
            self._status = status
            server = self._server
            if server.extra_headers:
                headers = headers + server.extra_headers
            head = (status, headers, server.own_headers(headers))
            channel.request_close()  # no websocket follows a denial
        if not more_body:
            self._state = SessionState.CLOSED
        await channel.send_response(head, body, end=not more_body)

    async def _http_error(self, status: int) -> None:
        self._channel.request_close()
        if not self._peer_gone and await self._channel.send_error(status) is not None:
            self._status = status

    # -- the keeper ----------------------------------------------------------------

    def _stop_keeper(self) -> None:
        """End the keeper: at once if it waits, else when its work is done."""
        self._keeper_stopped = True
        self._wake_keeper()

    def _wake_keeper(self) -> None:
        """Make the keeper look again, if it waits."""
        if self._keeper_wait is not None:
            self._keeper_wait.cancel()

    async def _keep(self) -> None:
        """Process frames while the app does not, write what it queued and left,
        and check that the peer is alive; ends with the websocket."""
        frames = self._frames
        assert frames is not None
        config = self._config
        interval = config.websocket_ping_interval
        next_ping = trio.current_time() + interval
        pong_deadline = math.inf
        while not (frames.closed or self._keeper_stopped):
            if self._shutting_down:
                self._shutting_down = False
                await frames.close(GOING_AWAY)
                continue
            idle = not (self._receiving or self._processing or self._held or frames.ready)
            if idle and frames.has_input():
                await self._process(frames, wake=True)
                continue
            if frames.queued:
                with contextlib.suppress(ClientDisconnected):
                    await frames.flush()  # ends the websocket if the peer is gone
                continue
            now = trio.current_time()
            if pong_deadline <= now:
                if frames.awaiting_pong:
                    await frames.close(INTERNAL_ERROR, "keepalive ping timeout")
                    frames.lose(INTERNAL_ERROR, "keepalive ping timeout")
                    break
                pong_deadline = math.inf
            if frames.close_deadline <= now:
                frames.lose()
                break
            if next_ping <= now and not self._held and not frames.awaiting_pong:
                await frames.send_ping()
                next_ping = now + interval
                pong_deadline = now + config.websocket_ping_timeout
                continue
            # Received bytes concern the keeper only while it may process them;
            # otherwise it sleeps until its next deadline or _wake_keeper().
            with trio.CancelScope(
                deadline=min(next_ping, pong_deadline, frames.close_deadline)
            ) as self._keeper_wait:
                if idle:
                    await self._transport.wait_received()
                else:
                    await trio.sleep_forever()
            self._keeper_wait = None
        self._transport.wake()  # an app waiting in receive() hears that it is over

    # -- the access log ------------------------------------------------------------

    def _log_access(self) -> None:
        access_log = self._server.access_log
        if access_log is None:
            return
        frames = self._frames
        if frames is None:
            codes: tuple[int | None, int | None] = (None, None)
            received = sent = (0, 0)
        else:
            codes = (frames.sent_close, frames.received_close)
            received = (frames.messages_in, frames.bytes_in)
            sent = (frames.messages_out, frames.bytes_out)
        access_log.log_websocket(
            self.scope, self._status, codes, received, sent, time.perf_counter() - self._start
        )
