"""The ASGI HTTP request cycle: one request, its app call and its response.

:class:`RequestCycle` is the ``receive`` and ``send`` of one request and the rules
of the ASGI HTTP protocol between them: the response's message sequence, the
disconnect policy, the app's failures and their answers, the access log line. It
knows nothing of how requests and responses look on the wire: it speaks to its
connection through a :class:`RequestChannel`, which the connection kind provides
(HTTP/1.1 today), for the request body in and the response out.

The channel's response methods take the parts of a response (status and header
fields, pieces of body, a file) rather than bytes, because framing is the
connection kind's business: chunks and Content-Length for HTTP/1.1, frames for
HTTP/2. The first piece of body carries the head with it, so that a small
response is one write.
"""

from __future__ import annotations

import logging
import math
import os
import time
from typing import TYPE_CHECKING, Any, Protocol

import trio

from .._app_call import Outcome, call_app, is_cancellation, only_disconnects
from .._errors import ClientDisconnected, LocalProtocolError, RemoteProtocolError
from ..protocol._asgi import (
    ResponseState,
    bad_message,
    check_response_body,
    check_response_pathsend,
    check_response_start,
    check_response_zerocopysend,
)
from ..protocol._events import BodyChunk, RequestEnd

if TYPE_CHECKING:
    from .._logging import AccessLogger
    from .._server_state import ServerState
    from .._types import Message

__all__ = [
    "CANCELLED_ANSWER_TIMEOUT",
    "SAFE_METHODS",
    "RequestChannel",
    "RequestCycle",
    "ResponseHead",
]

error_logger = logging.getLogger("trioserve.error")

#: Seconds the server waits to write a 503 to the client of a request it cancels.
CANCELLED_ANSWER_TIMEOUT = 1.0
#: Methods cancelled on a client hang-up under ``cancel_on_disconnect="safe"``.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})

Headers = list[tuple[bytes, bytes]]
#: A response head: the status, the app's header fields (with the configured
#: ones), and the fields the server adds (``server``, ``date``).
ResponseHead = tuple[int, Headers, Headers]


class RequestChannel(Protocol):
    """What a request cycle needs of the connection it runs on."""

    @property
    def peer_closed(self) -> bool:
        """The client has hung up."""

    @property
    def broken(self) -> bool:
        """Nothing more can be sent: a write failed or timed out."""

    @property
    def head_sent(self) -> bool:
        """A response head went to the wire for this request (whole, or the
        connection is broken)."""

    @property
    def expects_continue(self) -> bool:
        """The client waits for ``100 Continue`` before it sends the body."""

    async def send_continue(self) -> None:
        """Send ``100 Continue``. Raises :class:`ClientDisconnected`."""

    def receive_nowait(self) -> BodyChunk | RequestEnd | None:
        """The next piece of the request body if it is here, else ``None``.
        Raises :class:`RemoteProtocolError` for a malformed body."""

    async def receive(self) -> BodyChunk | RequestEnd:
        """Wait for the next piece of the request body (the caller bounds the
        wait). Raises :class:`RemoteProtocolError` for a malformed body."""

    def request_close(self) -> None:
        """End the connection after this response."""

    async def send_response(self, head: ResponseHead | None, body: bytes, *, end: bool) -> None:
        """Write ``head`` (only with the first piece), then ``body``; ``end`` ends
        the response. The head goes out whole or not at all, whatever happens to
        the calling task. Raises :class:`LocalProtocolError` before anything is
        written if the parts are invalid (then :attr:`head_sent` stays false),
        :class:`ClientDisconnected`."""

    async def send_response_file(
        self, head: ResponseHead | None, fd: int, offset: int, count: int, *, end: bool
    ) -> int:
        """As :meth:`send_response`, with ``count`` bytes of the open file ``fd``
        from ``offset`` as the body; return how many were sent (fewer if the
        file ended early)."""

    async def send_error(self, status: int, *, deadline: float = math.inf) -> int | None:
        """Answer with a response of the server's own, if no head was sent;
        return the size of its body if it was sent (by ``deadline``, if given)."""

    async def linger(self) -> None:
        """After the last answer: half-close and read (discarding) what the
        client still sends, until it closes too (the caller bounds the wait), so
        that the answer is not lost to a reset."""


def _disconnect() -> Message:
    # A fresh dict each time: an app may write into what it is given.
    return {"type": "http.disconnect"}


async def _answer_cancelled(channel: RequestChannel) -> int | None:
    """Answer 503 to a request the server cancels before its response began, if
    the client takes it within :data:`CANCELLED_ANSWER_TIMEOUT`; return the size
    of its body if it was sent.

    The deadline is passed down to the write, which is shielded itself (a
    shielded scope is beyond the reach of this one's deadline). Within the same
    time the connection lingers: a request body the client is still sending
    would otherwise meet a closed socket, and the reset it causes can destroy
    the answer before the client reads it."""
    deadline = trio.current_time() + CANCELLED_ANSWER_TIMEOUT
    sent = None
    with trio.CancelScope(shield=True, deadline=deadline):
        sent = await channel.send_error(503, deadline=deadline)
        if sent is not None:
            await channel.linger()
    return sent


async def _open_for_pathsend(path: str) -> int:
    """Open the file of an ``http.response.pathsend``. Opening can block (a
    network file system), so it goes to a thread; the bytes themselves never
    pass through Python on a plain socket."""
    try:
        return await trio.to_thread.run_sync(os.open, path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise LocalProtocolError(f"http.response.pathsend: cannot open {path!r}: {exc}") from exc


def _zerocopy_range(fd: int, offset: int | None, count: int | None) -> tuple[int, int]:
    """Where an ``http.response.zerocopysend`` begins in its file (``offset``, or
    the file's position) and how many bytes it sends (``count``, at most what
    the file has from there)."""
    try:
        position = os.lseek(fd, 0, os.SEEK_CUR) if offset is None else offset
        available = max(os.fstat(fd).st_size - position, 0)
    except OSError as exc:
        raise LocalProtocolError(f"http.response.zerocopysend: bad file: {exc}") from exc
    return position, available if count is None else min(count, available)


def _describe(scope: dict[str, Any]) -> str:
    return f"{scope['method']} {scope['path']}"


class RequestCycle:
    """One request and its response: the ASGI ``receive`` and ``send`` callables.

    Args:
      channel: the connection's side of this request.
      server: the shared server state (the app, the configuration, the access log).
      scope: the request's ASGI scope.
      app_scope: what a client hang-up cancels, if the ``cancel_on_disconnect``
          policy says so for this request.
      start_time: when the request began (:func:`time.perf_counter`), for the
          access log's durations; only read when the access log is on.

    Attributes:
      disconnected: the client has gone, or the request body could not be read
          whole: ``receive()`` returns ``http.disconnect``.
      cancelled_by_disconnect: the hang-up cancelled ``app_scope``.
      cancelled_by_server: a stop (forced, or its deadline) cancelled the request.
      completed: once :meth:`run` returned, whether a whole, validly framed
          response went out (even if the app failed afterwards).
    """

    __slots__ = (
        "_app_scope",
        "_body_complete",
        "_body_error",
        "_bytes_sent",
        "_cancel_on_disconnect",
        "_channel",
        "_error_status",
        "_failed",
        "_head_written",
        "_headers",
        "_own_headers",
        "_sent_status",
        "_server",
        "_start_time",
        "_state",
        "_state_lot",
        "_status",
        "cancelled_by_disconnect",
        "cancelled_by_server",
        "completed",
        "disconnected",
        "scope",
    )

    def __init__(
        self,
        channel: RequestChannel,
        server: ServerState,
        scope: dict[str, Any],
        app_scope: trio.CancelScope,
        start_time: float = 0.0,
    ) -> None:
        self._channel = channel
        self._server = server
        self._app_scope = app_scope
        self.scope = scope
        policy = server.config.cancel_on_disconnect
        self._cancel_on_disconnect = policy == "always" or (
            policy == "safe" and scope["method"] in SAFE_METHODS
        )
        self._state = ResponseState.START
        self._status = 0
        self._headers: Headers = []
        self._own_headers: Headers = []
        self._head_written = False
        self._body_complete = False
        self._body_error = False
        self._bytes_sent = 0
        self._sent_status: int | None = None
        self._start_time = start_time
        self._error_status = 500
        self._failed = False
        # Made only when receive() has to wait for the end of the request (rare).
        self._state_lot: trio.lowlevel.ParkingLot | None = None
        self.disconnected = False
        self.cancelled_by_disconnect = False
        self.cancelled_by_server = False
        self.completed = False

    def on_disconnect(self) -> None:
        """The client hung up (called from the connection's reader)."""
        if self._state is ResponseState.DONE:
            # The response is out; what still runs (background work) is not the
            # client's business and must not be cancelled by its leaving.
            return
        self.disconnected = True
        if self._state_lot is not None:
            self._state_lot.unpark_all()
        if self._cancel_on_disconnect:
            self.cancelled_by_disconnect = True
            self._app_scope.cancel()

    async def run(self) -> None:
        """Run the app for this request and finish or abort its response.

        A client that hung up before this begins must be reported first
        (:meth:`on_disconnect`), so that the policy applies from the start.
        """
        channel = self._channel
        try:
            outcome = await call_app(
                self._server.app, self.scope, self.receive, self.send, self._app_failed
            )
        except BaseException as exc:
            # Cancellation (by a hang-up, or from outside: the shutdown deadline),
            # KeyboardInterrupt...: not the app's failure and not ours to stop.
            if self.cancelled_by_disconnect:
                error_logger.debug("Client disconnected; cancelled %s", _describe(self.scope))
            elif is_cancellation(exc):
                await self._cut_short()
            raise
        if outcome is Outcome.RETURNED_VALUE:
            self._failed = True
        if self._state is ResponseState.DONE:
            # The whole response is on the wire, framed as announced: what the app
            # did afterwards (raised, as Starlette's error middleware does after a
            # whole 500; returned a value) is logged and the connection stays open.
            self.completed = True
            return
        if not self.cancelled_by_disconnect and trio.current_effective_deadline() == -math.inf:
            # The server cancelled the request, and the app returned all the same
            # (a shielded write ended when the server aborted the connection).
            await self._cut_short()
            return
        if channel.broken or channel.peer_closed or (self.disconnected and not self._body_error):
            return
        if not (self._failed or self._body_error):
            error_logger.error("ASGI callable returned without completing the response")
        if not self._head_written:
            # Nothing of the app's response reached the wire, so the client can still
            # get a whole, honest answer.
            sent = await channel.send_error(self._error_status)
            if sent is not None:
                self._sent_status = self._error_status
                self._bytes_sent = sent

    async def _cut_short(self) -> None:
        """The server cancelled the request: count it, and answer if still possible."""
        self.cancelled_by_server = True
        self._server.note_cancelled(_describe(self.scope))
        channel = self._channel
        if not (self._head_written or channel.broken or channel.peer_closed):
            sent = await _answer_cancelled(channel)
            if sent is not None:
                self._sent_status = 503
                self._bytes_sent = sent

    def _app_failed(self, exc: BaseException) -> None:
        if only_disconnects(exc) or (self.disconnected and isinstance(exc, OSError)):
            # The client left and the app let send()'s ClientDisconnected out: expected.
            error_logger.debug("Client disconnected during %s", _describe(self.scope))
            return
        self._failed = True
        error_logger.error("Exception in ASGI application", exc_info=exc)

    def log_access(self, access_log: AccessLogger) -> None:
        """Write this request's access log line."""
        status = self._sent_status
        if status is None and (self.disconnected or self.cancelled_by_server):
            status = 499  # nginx's "client closed request": nothing was sent
        access_log.log(
            self.scope,
            status,
            (*self._headers, *self._own_headers) if self._head_written else (),
            # A response to HEAD announces a body that is never sent.
            0 if self.scope["method"] == "HEAD" else self._bytes_sent,
            time.perf_counter() - self._start_time,
        )

    # -- receive ---------------------------------------------------------------------

    async def receive(self) -> Message:
        """The ASGI ``receive`` callable."""
        if self._request_over():
            await trio.lowlevel.checkpoint()
            return _disconnect()
        if self._body_complete:
            # Nothing more will come but the end of the request: wait for it.
            while not self._request_over():
                if self._state_lot is None:
                    self._state_lot = trio.lowlevel.ParkingLot()
                await self._state_lot.park()
            return _disconnect()
        channel = self._channel
        if channel.expects_continue:
            try:
                await channel.send_continue()
            except ClientDisconnected:
                self.disconnected = True
                return _disconnect()
        return await self._read_body()

    def _request_over(self) -> bool:
        return self.disconnected or self._state is ResponseState.DONE

    async def _read_body(self) -> Message:
        channel = self._channel
        try:
            # Only a wait needs the read deadline; a body that has already arrived
            # (most small ones) is handed over without a scope.
            event = channel.receive_nowait() or await self._wait_for_body()
            if event is None:
                error_logger.debug("Request body not received in time; closing")
                return self._body_failed(408)
            if isinstance(event, RequestEnd):
                self._body_complete = True
                return {"type": "http.request", "body": b"", "more_body": False}
            chunks = [event.data]
            # Hand over everything already received in one message, and say so when
            # that was the end of the body.
            while (event := channel.receive_nowait()) is not None:
                if isinstance(event, RequestEnd):
                    self._body_complete = True
                    break
                chunks.append(event.data)
        except RemoteProtocolError as exc:
            error_logger.debug("Bad request body: %s", exc)
            return self._body_failed(exc.status_hint)
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        return {"type": "http.request", "body": body, "more_body": not self._body_complete}

    async def _wait_for_body(self) -> BodyChunk | RequestEnd | None:
        """The next piece of the body, or ``None`` if it did not come within
        ``read_timeout``."""
        with trio.move_on_after(self._server.config.read_timeout):
            return await self._channel.receive()
        return None

    def _body_failed(self, status: int) -> Message:
        # The body cannot be completed (malformed, or too slow): the app hears a
        # disconnect, the client gets `status` unless a response is under way, and
        # the connection ends.
        self.disconnected = True
        self._body_error = True
        self._error_status = status
        self._channel.request_close()
        return _disconnect()

    # -- send ------------------------------------------------------------------------

    async def send(self, message: Message) -> None:
        """The ASGI ``send`` callable."""
        if self._failed:
            raise LocalProtocolError("The response was aborted by an earlier invalid message")
        try:
            try:
                kind = message["type"]
            except (KeyError, TypeError):
                raise LocalProtocolError(f"ASGI message without a 'type': {message!r}") from None
            if kind == "http.response.body":
                body, more_body = check_response_body(message, self._state)
                if self.disconnected:
                    raise ClientDisconnected("The client has disconnected")
                await self._send_body(body, more_body)
            elif kind == "http.response.start":
                self._status, self._headers = check_response_start(message, self._state)
                self._state = ResponseState.BODY
                if self.disconnected:
                    raise ClientDisconnected("The client has disconnected")
                await trio.lowlevel.checkpoint_if_cancelled()
            elif kind == "http.response.pathsend":
                path = check_response_pathsend(message, self._state)
                self._check_connected()
                await self._send_path(path)
            elif kind == "http.response.zerocopysend":
                fd, offset, count, more_body = check_response_zerocopysend(message, self._state)
                self._check_connected()
                await self._send_zerocopy(fd, offset, count, more_body)
            else:
                raise bad_message(message, self._state)
        except LocalProtocolError:
            # Invalid ASGI use aborts the response even if the app swallows the error.
            self._failed = True
            raise

    def _check_connected(self) -> None:
        if self.disconnected:
            raise ClientDisconnected("The client has disconnected")

    def _take_head(self) -> ResponseHead | None:
        """The head, if it is still to be sent: the app's fields with the
        configured ones, and the server's own."""
        if self._head_written:
            return None
        server = self._server
        headers = self._headers
        if server.extra_headers:
            headers = headers + server.extra_headers
        own = server.own_headers(headers)
        self._headers = headers  # with _own_headers: what goes out, for the access log
        self._own_headers = own
        return self._status, headers, own

    async def _send_body(self, body: bytes, more_body: bool) -> None:
        head = self._take_head()
        try:
            await self._channel.send_response(head, body, end=not more_body)
        finally:
            # Whatever became of the write, a head the channel took counts as
            # sent: no error answer may follow it.
            if head is not None and self._channel.head_sent:
                self._head_written = True
                self._sent_status = self._status
        self._bytes_sent += len(body)
        if not more_body:
            self._state = ResponseState.DONE
            if self._state_lot is not None:
                self._state_lot.unpark_all()

    async def _send_path(self, path: str) -> None:
        fd = await _open_for_pathsend(path)
        try:
            await self._send_file(fd, 0, os.fstat(fd).st_size, more_body=False)
        finally:
            os.close(fd)

    async def _send_zerocopy(
        self, fd: int, offset: int | None, count: int | None, more_body: bool
    ) -> None:
        position, count = _zerocopy_range(fd, offset, count)
        await self._send_file(fd, position, count, more_body)
        if offset is None:
            # Read "from the current position": leave the position after what was sent.
            os.lseek(fd, position + count, os.SEEK_SET)

    async def _send_file(self, fd: int, offset: int, count: int, more_body: bool) -> None:
        """Send ``count`` bytes of the open file ``fd`` from ``offset`` as response
        body, with the same framing, checks and write deadline as body messages."""
        head = self._take_head()
        try:
            sent = await self._channel.send_response_file(
                head, fd, offset, count, end=not more_body
            )
        finally:
            if head is not None and self._channel.head_sent:
                self._head_written = True
                self._sent_status = self._status
        self._bytes_sent += sent
        if sent < count:
            # The file ended early (truncated while being sent): the framing
            # announced bytes that will never come, so the response is broken.
            raise LocalProtocolError(
                f"The file ended after {sent} of {count} bytes; the response is incomplete"
            )
        if not more_body:
            self._state = ResponseState.DONE
            if self._state_lot is not None:
                self._state_lot.unpark_all()
