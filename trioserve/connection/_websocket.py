"""One WebSocket: the ASGI websocket protocol over wsproto, in the connection's nursery.

Theory of operation
-------------------

An upgrade request is served by a :class:`WebSocketSession` in place of an HTTP
request cycle, in the same nursery: the app runs inline in the connection's task,
and the transport's reader task goes on reading. Until the app accepts, the
session is HTTP: a close is answered 403, and a denial response or an app failure
is an HTTP response, written by the connection's HTTP/1.1 channel. Once the app
accepts, the session writes the ``101`` itself, and a
:class:`~trioserve.connection._frame_io.FrameIO` (wsproto's frames, within our
bounds) takes over the bytes, starting with any that arrived right behind the
request.

Frames are processed in order, by one of two tasks at a time:

- the app's ``receive()``, which processes until it has a whole message (or the
  websocket is over) and returns it;
- the *keeper* task, while the app is not in ``receive()``. It answers pings and
  the peer's close, lets pongs count, and holds the messages it meets for the
  app, up to ``HOLD_BYTES`` (64 KiB). So an app busy elsewhere (a slow handler, a
  long stream of sends, a feed that never receives) still answers its peer's
  pings and close, and what is held for it stays bounded: beyond the hold,
  what arrives stays in the transport's bounded buffer, and the reader stops.

An app that answers each message before it asks for the next, without waiting
in between, is never overtaken: it processes the next frames itself. The keeper
runs only when the app waits for something else; then a close or a protocol
error it meets ends the websocket at once, as RFC 6455 asks, and the app still
receives the messages that came before it, then ``websocket.disconnect``.

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
import time
from typing import TYPE_CHECKING, Any

import trio

from .._app_call import Outcome, call_app, is_cancellation, only_disconnects
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
from ._frame_io import (
    ABNORMAL_CLOSURE,
    GOING_AWAY,
    INTERNAL_ERROR,
    NORMAL_CLOSURE,
    FrameIO,
)

if TYPE_CHECKING:
    from .._logging import AccessLogger
    from .._server_state import ServerState
    from .._transport import Transport
    from .._types import Message
    from ._http11 import HTTP11Channel

__all__ = ["KEEPER_TASK_NAME", "WebSocketSession"]

error_logger = logging.getLogger("trioserve.error")

#: The keeper task's name, a constant (as the reader's).
KEEPER_TASK_NAME = "trioserve.connection.websocket"


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
        return self._frames is not None and self._frames.closed_cleanly

    async def run(self) -> None:
        """Run the app for this websocket, then end the websocket properly."""
        try:
            outcome = await call_app(
                self._server.app, self.scope, self.receive, self.send, self._app_failed
            )
        except BaseException as exc:
            if is_cancellation(exc) and not self._peer_gone:
                # The server stops (a forced stop, the graceful deadline); the
                # session still gets its access log line.
                self._server.note_cancelled(f"WebSocket {self.scope['path']}")
                self._log()
            raise
        finally:
            self._stop_keeper()
        if outcome is Outcome.RETURNED_VALUE:
            self._failed = True
        await self._finish()
        self._log()

    def _log(self) -> None:
        access_log = self._server.access_log
        if access_log is not None:
            duration = time.perf_counter() - self._start
            _log_session(access_log, self.scope, self._status, self._frames, duration)

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
            if self._denial is not None:
                # The denial's head waits for its body: nothing went out yet.
                if not self._failed:
                    error_logger.error(
                        "ASGI callable returned without completing the denial response"
                    )
                await self._http_error(500)
            else:
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
                    while frames.take() is not None:
                        pass  # the app has returned: nobody will take it
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
        self._receiving = True
        try:
            while True:
                message = frames.take()
                if message is not None:
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

    async def _process(self, frames: FrameIO, *, hold: bool = False, wake: bool = False) -> None:
        """Process as the one processor (see :meth:`FrameIO.process` on ``hold``);
        ``wake``: tell the tasks waiting (for this to finish) when it is done."""
        self._processing = True
        try:
            await frames.process(hold=hold)
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
        self._frames = FrameIO(self._transport, extensions, self._buffered, config)
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
        while not (frames.closed or self._keeper_stopped):
            if self._shutting_down:
                self._shutting_down = False
                await frames.close(GOING_AWAY)
                continue
            idle = not (self._receiving or self._processing) and frames.can_hold
            if idle and frames.has_input():
                await self._process(frames, hold=True, wake=True)
                continue
            if frames.queued:
                with contextlib.suppress(ClientDisconnected):
                    await frames.flush()  # ends the websocket if the peer is gone
                continue
            deadline = await frames.keep_alive()
            if deadline is None:
                continue
            # Received bytes concern the keeper only while it may process them;
            # otherwise it sleeps until its next deadline or _wake_keeper().
            with trio.CancelScope(deadline=deadline) as self._keeper_wait:
                if idle:
                    await self._transport.wait_received()
                else:
                    await trio.sleep_forever()
            self._keeper_wait = None
        self._transport.wake()  # an app waiting in receive() hears that it is over


def _log_session(
    access_log: AccessLogger,
    scope: dict[str, Any],
    status: int | None,
    frames: FrameIO | None,
    duration: float,
) -> None:
    """Write the access log line of a finished websocket session."""
    if frames is None:
        codes: tuple[int | None, int | None] = (None, None)
        received = sent = (0, 0)
    else:
        codes = (frames.sent_close, frames.received_close)
        received = (frames.messages_in, frames.bytes_in)
        sent = (frames.messages_out, frames.bytes_out)
    access_log.log_websocket(scope, status, codes, received, sent, duration)
