"""One HTTP/1.1 connection: a nursery with a reader task and a request cycle.

Theory of operation
-------------------

Each accepted stream is served by :meth:`HTTPConnection.run`, which opens a nursery
holding two things:

``_reader`` (a task)
    The only code that reads from the stream (on a plain socket, from the file
    descriptor directly). It appends what arrives to ``_pending`` and wakes whoever
    waits for data. It stops reading while ``_pending`` holds ``READ_HIGH_WATER``
    bytes (read flow control, B7), so a client can never make the server buffer
    more than that. Because it is always reading otherwise, it is the first to see
    EOF or a reset: it then marks the connection closed and tells the running
    request cycle, which cancels the app according to ``cancel_on_disconnect``
    (seed 004). It also owns the keep-alive deadline (see
    ``_reader_with_keep_alive``).

``_serve_requests`` (the request cycle, run inline, no task per request)
    Takes bytes from ``_pending`` into the sans-IO :class:`HTTP11Protocol` only when
    it needs an event, and runs one request at a time:

    1. *idle wait*: waiting for the first byte of the next request is the only wait
       the keep-alive deadline covers. If a pipelined request is already buffered
       there is no wait, so the deadline cannot fire while a request is served
       (seed 000).
    2. *header scope*: ``move_on_after(header_timeout)`` around reading the rest of
       the head (408 on expiry), only when the head has to be waited for.
    3. *app scope*: the ASGI app runs inside ``_app_scope``, which the reader cancels
       on a hang-up when the policy says so. It is the connection nursery's own
       cancel scope rather than one per request (a scope costs about 5 µs to enter
       and leave, and memory while idle): a hang-up ends the connection anyway.

    The protocol parses the next pipelined request only after
    ``start_next_cycle``, which happens only when the response is complete; when
    the client asked to close (h11's ``MUST_CLOSE``), the loop ends instead and
    nothing more is parsed (seed 001).

Writes happen in the task that calls ``send()``. The first write of a response
carries the head together with the first body chunk; what the kernel does not take
at once is sent under a shielded scope with its own write deadline, so a
cancellation can never leave half a head on the wire (seed 003). Later writes have
the same deadline but are not shielded; if one is cancelled part-way, the response
is incomplete and the connection is closed.

A connection that ends after a response first half-closes (``send_eof``) and keeps
the reader draining for up to ``LINGER_TIMEOUT`` seconds: closing a socket with
unread bytes in its receive buffer sends a RST, which can destroy the response the
client has not read yet.
"""

from __future__ import annotations

import contextlib
import email.utils
import errno
import logging
import math
import os
import random
import sys
import time
from typing import TYPE_CHECKING, Any

import trio

from ._errors import ClientDisconnected, LocalProtocolError, RemoteProtocolError
from ._logging import AccessLogger
from .protocol._asgi import (
    ASGI_VERSION,
    ResponseState,
    bad_message,
    build_http_scope,
    check_response_body,
    check_response_pathsend,
    check_response_start,
    check_response_zerocopysend,
)
from .protocol._events import BodyChunk, RequestEnd, RequestHead, Signal
from .protocol._http11 import HTTP11Protocol, RequestLimits, error_body

if sys.version_info < (3, 11):  # pragma: no cover - version-dependent import
    from exceptiongroup import BaseExceptionGroup

if TYPE_CHECKING:
    from ._config import Config
    from ._types import ASGIApp, Message

__all__ = ["HTTPConnection", "ServerState"]

error_logger = logging.getLogger("trioserve.error")

# Task names, given as constants: trio would otherwise make a new string for every
# task it starts.
READER_TASK_NAME = "trioserve.connection.reader"
#: Bytes one read may return. Large enough for a request with a 64 KiB body to
#: arrive in one read (measured: -30% CPU for such POSTs against 64 KiB reads);
#: the buffer bound is ``READ_HIGH_WATER + READ_CHUNK``.
READ_CHUNK = 256 * 1024
#: The reader pauses while this many bytes wait to be parsed (read flow control).
READ_HIGH_WATER = 64 * 1024
#: Unread request body the server reads and discards after a response to keep the
#: connection alive; a larger remainder closes the connection instead.
DRAIN_LIMIT = 128 * 1024
#: Seconds to keep reading (and discarding) after the last response before closing.
LINGER_TIMEOUT = 2.0
#: Bytes read per step when a file must be sent through a stream (TLS) rather than
#: with ``sendfile``.
FILE_CHUNK = 256 * 1024

#: Methods cancelled on a client hang-up under ``cancel_on_disconnect="safe"``.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})

_DISCONNECT: dict[str, Any] = {"type": "http.disconnect"}
#: sendfile() errors that concern the file, not the socket.
_FILE_ERRNOS = frozenset({errno.EBADF, errno.EINVAL, errno.EIO, errno.EOVERFLOW})
_SERVER_HEADER = (b"server", b"trioserve")


class _DateCache:
    """The ``date`` header value, formatted at most once per second."""

    __slots__ = ("_second", "_value")

    def __init__(self) -> None:
        self._second = -1
        self._value = b""

    def get(self) -> bytes:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._value = email.utils.formatdate(now, usegmt=True).encode("ascii")
        return self._value


class ServerState:
    """What the connections of one :func:`trioserve.serve` call share.

    Args:
      app: the ASGI 3 application.
      config: the server configuration.
      lifespan_state: the lifespan ``state`` dict, or ``None`` without lifespan.
      shutdown_requested: set when ``max_requests`` is reached.
    """

    def __init__(
        self,
        app: ASGIApp,
        config: Config,
        lifespan_state: dict[str, Any] | None,
        shutdown_requested: trio.Event,
    ) -> None:
        self.app = app
        self.config = config
        self.lifespan_state = lifespan_state
        self.shutdown_requested = shutdown_requested
        #: Connections open now; only :meth:`begin_shutdown` walks it.
        self.connections: set[HTTPConnection] = set()
        #: Scopes of TLS handshakes in progress; shutdown drops them, since a
        #: connection that only now completes its handshake would be idle anyway.
        self.handshakes: set[trio.CancelScope] = set()
        self.active_requests = 0
        self.requests_started = 0
        self.shutting_down = False
        self.dates = _DateCache()
        self.limits = RequestLimits(
            max_head_size=config.h11_max_incomplete_size,
            max_target_length=config.max_target_length,
            max_header_count=config.max_header_count,
            max_body_size=config.max_body_size,
            allow_connect=config.allow_connect,
            max_chunk_extension=config.max_chunk_extension,
        )
        #: Headers added to every response: ``server`` (unless turned off), then the
        #: configured ``headers``. ``date`` is added per response.
        self.extra_headers: list[tuple[bytes, bytes]] = [
            (name.encode("latin-1"), value.encode("latin-1")) for name, value in config.headers
        ]
        self.access_log = AccessLogger(config.access_log_format) if config.accesslog else None
        self.max_requests: float = math.inf
        if config.max_requests is not None:
            self.max_requests = config.max_requests + random.randint(0, config.max_requests_jitter)

    def default_headers(self) -> list[tuple[bytes, bytes]]:
        """The ``server``/``date`` headers trioserve adds to its own responses."""
        headers = []
        if self.config.include_server_header:
            headers.append(_SERVER_HEADER)
        if self.config.include_date_header:
            headers.append((b"date", self.dates.get()))
        headers.extend(self.extra_headers)
        return headers

    def begin_shutdown(self) -> None:
        """Close idle connections now; busy ones close after their current response."""
        self.shutting_down = True
        for connection in list(self.connections):
            connection.shutdown_nowait()
        for handshake in self.handshakes:
            handshake.cancel()


class HTTPConnection:
    """Serves HTTP/1.x on one stream until either side ends it.

    Args:
      stream: the connected stream (TCP, TLS or in-memory).
      server: the shared server state.
      client: the peer's address for ``scope["client"]``, if known.
      sockname: the local address for ``scope["server"]``, if known (``(path,
          None)`` for a Unix socket, as ASGI specifies).
      scheme: ``"http"`` or ``"https"``.
      extensions: ASGI scope extensions of this connection (e.g. ``tls``), copied
          into every request scope.
    """

    __slots__ = (
        "_app_scope",
        "_base_scope",
        "_closing",
        "_config",
        "_cycle",
        "_data_lot",
        "_discarding",
        "_eof_fed",
        "_extensions",
        "_fd",
        "_idle",
        "_idle_expired",
        "_idle_since",
        "_peer_closed",
        "_pending",
        "_pending_size",
        "_proto",
        "_reader_scope",
        "_room_lot",
        "_server",
        "_stream",
        "_write_broken",
        "_write_lot",
        "_writing",
    )

    def __init__(
        self,
        stream: trio.abc.Stream,
        server: ServerState,
        client: tuple[str, int] | None,
        sockname: tuple[str, int | None] | None,
        scheme: str = "http",
        extensions: dict[str, dict[str, object]] | None = None,
    ) -> None:
        self._stream = stream
        self._extensions = extensions or {}
        self._server = server
        self._config = server.config
        self._proto = HTTP11Protocol(server.limits)
        self._base_scope: dict[str, Any] = {
            "type": "http",
            "asgi": ASGI_VERSION.copy(),
            "scheme": scheme,
            "client": client,
            "server": sockname,
            "root_path": server.config.root_path,
        }
        self._pending: list[bytes | bytearray] = []
        self._pending_size = 0
        self._peer_closed = False
        self._eof_fed = False
        self._discarding = False
        self._data_lot = trio.lowlevel.ParkingLot()
        # Made when first needed: most connections never wait for room to read or
        # for another task's write, and an idle connection's memory counts.
        self._room_lot: trio.lowlevel.ParkingLot | None = None
        self._write_lot: trio.lowlevel.ParkingLot | None = None
        self._writing = False
        self._write_broken = False
        self._closing = server.shutting_down
        # Keep-alive bookkeeping (see _reader_with_keep_alive): whether the request
        # cycle is waiting for the first byte of a request, and since when.
        self._idle = False
        self._idle_since = 0.0
        self._reader_scope: trio.CancelScope | None = None
        self._idle_expired = False
        # The app scope: the connection nursery's own (see run()).
        self._app_scope: trio.CancelScope | None = None
        self._cycle: _RequestCycle | None = None
        # A plain socket is read and written through its file descriptor directly:
        # trio's SocketStream adds a scheduling point to every call, two per request.
        self._fd = stream.socket.fileno() if isinstance(stream, trio.SocketStream) else -1

    async def run(self) -> None:
        """Serve requests until the connection ends, then close the stream."""
        self._server.connections.add(self)
        try:
            async with trio.open_nursery() as nursery:
                # The app scope, what a hang-up cancels (seed 004), is the nursery's
                # own: one scope for the connection rather than one per request, since
                # a hang-up ends the connection anyway. After the cancelled request
                # there is nothing left to serve, the reader has already finished,
                # and on the way out nothing waits (no error answer, no linger, no
                # drain: the peer is gone). A scope of its own would cost an idle
                # connection about 0.6 KiB.
                self._app_scope = nursery.cancel_scope
                nursery.start_soon(self._reader_with_keep_alive, name=READER_TASK_NAME)
                try:
                    await self._serve_requests()
                finally:
                    nursery.cancel_scope.cancel()
        finally:
            self._server.connections.discard(self)
            await trio.aclose_forcefully(self._stream)

    def shutdown_nowait(self) -> None:
        """Begin a graceful close: at once if idle, else after the current response."""
        self._closing = True
        if self._idle:
            self._data_lot.unpark_all()

    # -- the reader ----------------------------------------------------------------

    async def _reader_with_keep_alive(self) -> None:
        """Run the reader under the keep-alive deadline.

        The deadline lives on one long-lived scope around the reader rather than on a
        scope per idle wait: entering and leaving a timed cancel scope costs more than
        the rest of a small request's scheduling. The request cycle only records when
        it went idle (``_idle_since``) and arms the deadline if none is armed. When
        the deadline passes, the connection is closed only if the cycle is *still*
        idle and has been for ``keep_alive_timeout``; otherwise the deadline moves to
        where it belongs. So, as with a scope around the idle wait, it can never fire
        while a request is being served (seed 000).
        """
        keep_alive_timeout = self._config.keep_alive_timeout
        while True:
            deadline = self._idle_since + keep_alive_timeout if self._idle else math.inf
            with trio.CancelScope(deadline=deadline) as self._reader_scope:
                await self._reader()
                return
            if self._idle and trio.current_time() >= self._idle_since + keep_alive_timeout:
                self._idle_expired = True
                self._data_lot.unpark_all()
                return

    async def _reader(self) -> None:
        fd = self._fd
        receive_some = self._stream.receive_some
        while True:
            while self._pending_size >= READ_HIGH_WATER and not self._discarding:
                if self._room_lot is None:
                    self._room_lot = trio.lowlevel.ParkingLot()
                await self._room_lot.park()
            data: bytes | bytearray
            if fd >= 0:
                try:
                    await trio.lowlevel.wait_readable(fd)
                    data = os.read(fd, READ_CHUNK)
                except BlockingIOError:
                    continue
                except (OSError, trio.ClosedResourceError):
                    data = b""
            else:
                try:
                    data = await receive_some(READ_CHUNK)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    data = b""
            if not data:
                break
            if not self._discarding:
                self._pending.append(data)
                self._pending_size += len(data)
                self._data_lot.unpark_all()
            # Not kept while the reader waits: it may be a 256 KiB read, and an idle
            # connection would hold it until its next request.
            del data
        self._peer_closed = True
        self._data_lot.unpark_all()
        if self._cycle is not None:
            self._cycle.on_disconnect()

    # -- feeding the protocol ----------------------------------------------------

    def _feed(self, *, eof: bool = True) -> bool:
        """Move pending bytes (or the EOF) into the protocol; return whether any."""
        if self._pending:
            pending = self._pending
            data = bytes(pending[0]) if len(pending) == 1 else b"".join(pending)
            pending.clear()
            self._pending_size = 0
            if self._room_lot is not None:
                self._room_lot.unpark_all()
            self._proto.receive_data(data)
            return True
        if eof and self._peer_closed and not self._eof_fed:
            self._eof_fed = True
            self._proto.receive_data(b"")
            return True
        return False

    async def _wait_for_data(self) -> None:
        while not self._pending and not self._peer_closed:
            await self._data_lot.park()

    async def _next_event(self) -> RequestHead | BodyChunk | RequestEnd | Signal:
        proto = self._proto
        while True:
            event = proto.next_event()
            if event is not Signal.NEED_DATA:
                return event
            if not self._feed():
                await self._wait_for_data()

    # -- the request cycle -------------------------------------------------------

    async def _serve_requests(self) -> None:
        proto = self._proto
        while True:
            # Idle, between requests: the only wait the keep-alive deadline covers.
            # Waited for here rather than in _read_head, so that an idle connection
            # holds one suspended frame fewer.
            if (
                not (proto.has_buffered_data or self._pending or self._peer_closed)
                and not await self._wait_idle()
            ):
                return
            try:
                head = await self._read_head()
            except RemoteProtocolError as exc:
                if not self._peer_closed:
                    error_logger.debug("Bad request from %s: %s", self._base_scope["client"], exc)
                    await self._send_error(exc.status_hint)
                    await self._linger()
                return
            if head is None:
                return
            if not await self._handle(head):
                await self._linger()
                return
            del head  # not kept alive through the idle wait

    async def _wait_idle(self) -> bool:
        """Wait for the first byte of the next request: the only wait the keep-alive
        deadline covers. Return whether it came (not the deadline, a shutdown or EOF).
        """
        if self._closing or self._idle_expired:
            return False
        self._idle = True
        self._idle_since = trio.current_time()
        reader_scope = self._reader_scope
        if reader_scope is not None and reader_scope.deadline == math.inf:
            reader_scope.deadline = self._idle_since + self._config.keep_alive_timeout
        try:
            while not (self._pending or self._peer_closed or self._closing or self._idle_expired):
                await self._data_lot.park()
        finally:
            self._idle = False
        return not self._idle_expired and (bool(self._pending) or self._peer_closed)

    async def _read_head(self) -> RequestHead | None:
        """The next request head, once the first bytes of it (or the EOF) are here;
        ``None`` when the connection should end quietly (a clean EOF)."""
        proto = self._proto
        event = proto.next_event()
        if event is Signal.NEED_DATA:
            self._feed()
            event = proto.next_event()
        if event is Signal.NEED_DATA:
            # Only a head that has to be waited for needs the header deadline; most
            # arrive whole, and then no scope is set up at all.
            with trio.move_on_after(self._config.header_timeout) as head_scope:
                event = await self._next_event()
            if head_scope.cancelled_caught:
                raise RemoteProtocolError("Request head not received in time", 408)
        if isinstance(event, RequestHead):
            return event
        # PEER_CLOSED: a clean EOF between requests. (PAUSED cannot happen: a cycle
        # starts only after start_next_cycle, and a body event only after a head.)
        return None

    async def _handle(self, head: RequestHead) -> bool:
        """Serve one request; return whether the connection may carry another."""
        server = self._server
        limit = self._config.limit_concurrency
        if limit is not None and server.active_requests >= limit:
            await self._send_error(503)
            return False
        server.active_requests += 1
        server.requests_started += 1
        if server.requests_started >= server.max_requests:
            server.shutdown_requested.set()
        cycle = _RequestCycle(self, head)
        self._cycle = cycle
        try:
            await cycle.run()
        except BaseException:
            # Cancelled by the hang-up (perhaps inside a group from the app's own
            # nursery): the request still gets its access log line.
            if cycle.cancelled_by_disconnect and server.access_log is not None:
                cycle.log_access(server.access_log)
            raise
        finally:
            self._cycle = None
            server.active_requests -= 1
        if server.access_log is not None:
            cycle.log_access(server.access_log)
        if not cycle.keep_alive or self._closing or self._peer_closed:
            return False
        if not self._proto.request_complete and not await self._drain_body(cycle):
            return False
        return self._proto.start_next_cycle()

    async def _drain_body(self, cycle: _RequestCycle) -> bool:
        """Read and discard the rest of a request body the app did not read."""
        if cycle.expected_continue and not cycle.sent_continue:
            # The client may be waiting for "100 Continue" before sending the body
            # it has announced; it will never come, so the connection cannot be reused.
            return False
        drained = 0
        proto = self._proto
        try:
            # What has already arrived needs no deadline: usually it is just the end
            # of a bodiless request the app never asked for.
            while True:
                event = proto.next_event()
                if event is Signal.NEED_DATA:
                    if self._feed(eof=False):
                        continue
                    break
                if not isinstance(event, BodyChunk):
                    return isinstance(event, RequestEnd)
                drained += len(event.data)
                if drained > DRAIN_LIMIT:
                    return False
            with trio.move_on_after(self._config.read_timeout):
                while drained <= DRAIN_LIMIT:
                    event = await self._next_event()
                    if not isinstance(event, BodyChunk):
                        return isinstance(event, RequestEnd)
                    drained += len(event.data)
        except RemoteProtocolError:
            return False
        return False

    async def _send_error(self, status: int) -> int | None:
        """Answer with a response of the server's own, ending the connection; return
        the size of its body if it was sent."""
        data = self._proto.error_response(status, self._server.default_headers())
        if data:
            with contextlib.suppress(ClientDisconnected):
                await self.write(data, shield=True)
                return len(error_body(status))
        return None

    async def _linger(self) -> None:
        if self._peer_closed or self._write_broken:
            return
        self._discarding = True
        self._pending.clear()
        self._pending_size = 0
        if self._room_lot is not None:
            self._room_lot.unpark_all()
        stream = self._stream
        if not isinstance(stream, trio.abc.HalfCloseableStream):
            # Without a half-close the client cannot see the end before we close.
            return
        with trio.move_on_after(LINGER_TIMEOUT):
            try:
                await stream.send_eof()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            await self._wait_for_data()

    # -- writing -------------------------------------------------------------------

    async def write(self, data: bytes, *, shield: bool, more: bool = False) -> None:
        """Send ``data`` under the write deadline; ``shield`` protects it from
        cancellation so that it goes out whole or not at all.

        On a plain socket the bytes are first offered to the kernel directly; only
        what it does not take at once is waited for, under the shielded or deadline
        scope. A write that completes at once needs no scope: nothing can cancel it
        half-way and nothing waits for a deadline. It yields to other tasks only if
        ``more`` writes follow (a streamed response), so that a fast producer cannot
        starve the loop; after the last write the request cycle parks anyway.

        Raises:
          ClientDisconnected: the client is gone, or did not read in time.
        """
        if self._write_broken:
            raise ClientDisconnected("The client has disconnected")
        if self._fd >= 0 and not self._writing:
            if not shield:
                await trio.lowlevel.checkpoint_if_cancelled()
            try:
                sent = os.write(self._fd, data)
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                self._write_broken = True
                raise ClientDisconnected("The client has disconnected") from exc
            if sent == len(data):
                if more:
                    await trio.lowlevel.cancel_shielded_checkpoint()
                return
            data = memoryview(data)[sent:]  # type: ignore[assignment]
        await self._write_waiting(data, shield=shield)

    async def send_file(self, fd: int, offset: int, count: int) -> int:
        """Send ``count`` bytes of the file ``fd`` from ``offset``; return how many
        were sent (fewer only if the file ended first). On a plain socket the kernel
        copies them (``sendfile``); each wait for the socket to drain has the write
        deadline. Other streams (TLS) get the file read and written in chunks.

        Raises:
          ClientDisconnected: the client is gone, or did not read in time.
        """
        if self._fd < 0:
            sent = 0
            while sent < count:
                chunk = await trio.to_thread.run_sync(
                    os.pread, fd, min(FILE_CHUNK, count - sent), offset + sent
                )
                if not chunk:
                    break
                await self.write(chunk, shield=False, more=True)
                sent += len(chunk)
            return sent
        if self._write_broken:
            raise ClientDisconnected("The client has disconnected")
        await trio.lowlevel.checkpoint_if_cancelled()
        await self._wait_to_write()
        self._writing = True
        sent = 0
        try:
            while sent < count:
                try:
                    step = os.sendfile(self._fd, fd, offset + sent, count - sent)
                except BlockingIOError:
                    with trio.move_on_after(self._config.write_timeout) as scope:
                        await trio.lowlevel.wait_writable(self._fd)
                    if scope.cancelled_caught:
                        self._write_broken = True
                        raise ClientDisconnected(
                            "The client did not read the response in time"
                        ) from None
                    continue
                except OSError as exc:
                    if exc.errno in _FILE_ERRNOS:
                        raise  # the file's fault, not the client's
                    self._write_broken = True
                    raise ClientDisconnected("The client has disconnected") from exc
                if not step:
                    break
                sent += step
        finally:
            self._writing = False
            if self._write_lot is not None:
                self._write_lot.unpark_all()
        return sent

    async def _wait_to_write(self) -> None:
        while self._writing:
            if self._write_lot is None:
                self._write_lot = trio.lowlevel.ParkingLot()
            await self._write_lot.park()

    async def _write_waiting(self, data: bytes, *, shield: bool) -> None:
        await self._wait_to_write()
        self._writing = True
        try:
            with trio.CancelScope(
                shield=shield, deadline=trio.current_time() + self._config.write_timeout
            ) as scope:
                try:
                    await self._stream.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                    self._write_broken = True
                    raise ClientDisconnected("The client has disconnected") from exc
        finally:
            self._writing = False
            if self._write_lot is not None:
                self._write_lot.unpark_all()
        if scope.cancelled_caught:
            self._write_broken = True
            raise ClientDisconnected("The client did not read the response in time")


class _RequestCycle:
    """One request and its response: the ASGI ``receive`` and ``send`` callables and
    the app's cancel scope."""

    __slots__ = (
        "_body_complete",
        "_body_error",
        "_bytes_sent",
        "_conn",
        "_error_status",
        "_failed",
        "_head_written",
        "_headers",
        "_proto",
        "_sent_status",
        "_start_time",
        "_state",
        "_state_lot",
        "_status",
        "cancel_on_disconnect",
        "cancelled_by_disconnect",
        "disconnected",
        "expected_continue",
        "keep_alive",
        "scope",
        "sent_continue",
    )

    def __init__(self, conn: HTTPConnection, head: RequestHead) -> None:
        config = conn._config
        self._conn = conn
        self._proto = conn._proto
        self.scope = build_http_scope(
            head, conn._base_scope, config.root_path, conn._server.lifespan_state
        )
        if conn._extensions:
            self.scope["extensions"].update(
                (name, value.copy()) for name, value in conn._extensions.items()
            )
        policy = config.cancel_on_disconnect
        self.cancel_on_disconnect = policy == "always" or (
            policy == "safe" and self.scope["method"] in SAFE_METHODS
        )
        self._state = ResponseState.START
        self._status = 0
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_written = False
        self._body_complete = False
        self._body_error = False
        self._bytes_sent = 0
        self._sent_status: int | None = None
        self._start_time = time.perf_counter() if conn._server.access_log else 0.0
        self._error_status = 500
        self._failed = False
        # Made only when receive() has to wait for the end of the request (rare).
        self._state_lot: trio.lowlevel.ParkingLot | None = None
        self.expected_continue = self._proto.expects_continue
        self.sent_continue = False
        self.disconnected = False
        self.cancelled_by_disconnect = False
        self.keep_alive = False

    def on_disconnect(self) -> None:
        """The client hung up (called by the reader)."""
        if self._state is ResponseState.DONE:
            # The response is out; what still runs (background work) is not the
            # client's business and must not be cancelled by its leaving.
            return
        self.disconnected = True
        if self._state_lot is not None:
            self._state_lot.unpark_all()
        if self.cancel_on_disconnect:
            self.cancelled_by_disconnect = True
            assert self._conn._app_scope is not None
            self._conn._app_scope.cancel()

    async def run(self) -> None:
        """Run the app for this request and finish or abort its response."""
        conn = self._conn
        result: object = None
        try:
            if conn._peer_closed:
                self.on_disconnect()
            result = await conn._server.app(self.scope, self.receive, self.send)
        except BaseException as exc:
            app_error, propagate = _split_app_error(exc)
            if app_error is not None:
                self._app_failed(app_error)
            if propagate is not None:
                if self.cancelled_by_disconnect:
                    error_logger.debug("Client disconnected; cancelled %s", self._describe())
                # Cancellation (by a hang-up, or from outside: the shutdown deadline),
                # KeyboardInterrupt...: not the app's failure and not ours to stop.
                raise propagate from None
        if result is not None:
            self._failed = True
            error_logger.error("ASGI callable returned a value instead of None: %r", result)
        if self._state is ResponseState.DONE:
            self.keep_alive = not self._failed and self._proto.keep_alive
            return
        if conn._write_broken or conn._peer_closed or (self.disconnected and not self._body_error):
            return
        if not (self._failed or self._body_error):
            error_logger.error("ASGI callable returned without completing the response")
        if not self._head_written:
            # Nothing of the app's response reached the wire, so the client can still
            # get a whole, honest answer.
            sent = await conn._send_error(self._error_status)
            if sent is not None:
                self._sent_status = self._error_status
                self._bytes_sent = sent

    def _app_failed(self, exc: BaseException) -> None:
        if _only_disconnects(exc) or (self.disconnected and isinstance(exc, OSError)):
            # The client left and the app let send()'s ClientDisconnected out: expected.
            error_logger.debug("Client disconnected during %s", self._describe())
            return
        self._failed = True
        error_logger.error("Exception in ASGI application", exc_info=exc)

    def log_access(self, access_log: AccessLogger) -> None:
        """Write this request's access log line."""
        status = self._sent_status
        if status is None and self.disconnected:
            status = 499  # nginx's "client closed request": nothing was sent
        access_log.log(
            self.scope,
            status,
            self._headers if self._head_written else (),
            self._bytes_sent,
            time.perf_counter() - self._start_time,
        )

    def _describe(self) -> str:
        return f"{self.scope['method']} {self.scope['path']}"

    # -- receive ---------------------------------------------------------------------

    async def receive(self) -> Message:
        """The ASGI ``receive`` callable."""
        if self._request_over():
            await trio.lowlevel.checkpoint()
            return _DISCONNECT
        if self._body_complete:
            # Nothing more will come but the end of the request: wait for it.
            while not self._request_over():
                if self._state_lot is None:
                    self._state_lot = trio.lowlevel.ParkingLot()
                await self._state_lot.park()
            return _DISCONNECT
        if self._proto.expects_continue:
            try:
                await self._conn.write(self._proto.informational_continue(), shield=True)
            except ClientDisconnected:
                self.disconnected = True
                return _DISCONNECT
            self.sent_continue = True
        return await self._read_body()

    def _request_over(self) -> bool:
        return self.disconnected or self._state is ResponseState.DONE

    async def _read_body(self) -> Message:
        conn = self._conn
        proto = self._proto
        try:
            event = proto.next_event()
            if event is Signal.NEED_DATA and conn._feed():
                event = proto.next_event()
            if event is Signal.NEED_DATA:
                # Only a wait needs the read deadline; a body that has already
                # arrived (most small ones) is handed over without a scope.
                with trio.move_on_after(conn._config.read_timeout) as read_scope:
                    event = await conn._next_event()
                if read_scope.cancelled_caught:
                    error_logger.debug("Request body not received in time; closing")
                    return self._body_failed(408)
            if isinstance(event, RequestEnd):
                self._body_complete = True
                return {"type": "http.request", "body": b"", "more_body": False}
            assert isinstance(event, BodyChunk)
            chunks = [event.data]
            # Hand over everything already received in one message, and say so when
            # that was the end of the body.
            while True:
                event = proto.next_event()
                if isinstance(event, BodyChunk):
                    chunks.append(event.data)
                elif isinstance(event, RequestEnd):
                    self._body_complete = True
                    break
                elif not conn._feed(eof=False):
                    break
        except RemoteProtocolError as exc:
            error_logger.debug("Bad request body: %s", exc)
            return self._body_failed(exc.status_hint)
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        return {"type": "http.request", "body": body, "more_body": not self._body_complete}

    def _body_failed(self, status: int) -> Message:
        # The body cannot be completed (malformed, or too slow): the app hears a
        # disconnect, the client gets `status` unless a response is under way, and
        # the connection ends.
        self.disconnected = True
        self._body_error = True
        self._error_status = status
        self._conn._closing = True
        return _DISCONNECT

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
                if self.disconnected:
                    raise ClientDisconnected("The client has disconnected")
                await self._send_path(path)
            elif kind == "http.response.zerocopysend":
                fd, offset, count, more_body = check_response_zerocopysend(message, self._state)
                if self.disconnected:
                    raise ClientDisconnected("The client has disconnected")
                await self._send_zerocopy(fd, offset, count, more_body)
            else:
                raise bad_message(message, self._state)
        except LocalProtocolError:
            # Invalid ASGI use aborts the response even if the app swallows the error.
            self._failed = True
            raise

    async def _send_body(self, body: bytes, more_body: bool) -> None:
        proto = self._proto
        conn = self._conn
        if not self._head_written:
            head = self._head()
            try:
                data = head + proto.response_body(body)
                if not more_body:
                    data += proto.response_end()
            except LocalProtocolError:
                # A body that contradicts its content-length: nothing is on the wire
                # yet, so the client can still be told 500.
                proto.retract_head()
                raise
            # Whatever happens to this task, the head goes out whole or not at all.
            self._head_written = True
            self._sent_status = self._status
            await conn.write(data, shield=True, more=more_body)
        else:
            data = proto.response_body(body)
            if not more_body:
                data += proto.response_end()
            if data:
                await conn.write(data, shield=False, more=more_body)
        self._bytes_sent += len(body)
        if not more_body:
            self._state = ResponseState.DONE
            if self._state_lot is not None:
                self._state_lot.unpark_all()

    async def _send_path(self, path: str) -> None:
        # Opening can block (a network file system), so it goes to a thread; the
        # bytes themselves never pass through Python on a plain socket.
        try:
            fd = await trio.to_thread.run_sync(os.open, path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise LocalProtocolError(
                f"http.response.pathsend: cannot open {path!r}: {exc}"
            ) from exc
        try:
            size = os.fstat(fd).st_size
            await self._send_file(fd, 0, size, more_body=False)
        finally:
            os.close(fd)

    async def _send_zerocopy(
        self, fd: int, offset: int | None, count: int | None, more_body: bool
    ) -> None:
        try:
            position = os.lseek(fd, 0, os.SEEK_CUR) if offset is None else offset
            available = max(os.fstat(fd).st_size - position, 0)
        except OSError as exc:
            raise LocalProtocolError(f"http.response.zerocopysend: bad file: {exc}") from exc
        count = available if count is None else min(count, available)
        await self._send_file(fd, position, count, more_body)
        if offset is None:
            # Read "from the current position": leave the position after what was sent.
            os.lseek(fd, position + count, os.SEEK_SET)

    async def _send_file(self, fd: int, offset: int, count: int, more_body: bool) -> None:
        """Send ``count`` bytes of the open file ``fd`` from ``offset`` as response
        body, with the same framing, checks and write deadline as body messages."""
        proto = self._proto
        conn = self._conn
        head = b""
        if not self._head_written:
            head = self._head()
        try:
            framing = proto.response_file_framing(count)
            end = b"" if more_body else proto.response_end()
        except LocalProtocolError:
            if head:
                proto.retract_head()
            raise
        before, after = framing if framing is not None else (b"", b"")
        if head:
            self._head_written = True
            self._sent_status = self._status
            await conn.write(head + before, shield=True)
        elif before:
            await conn.write(before, shield=False)
        if framing is not None and count:
            sent = await conn.send_file(fd, offset, count)
            self._bytes_sent += sent
            if sent < count:
                # The file ended early (truncated while being sent): the framing
                # announced bytes that will never come, so the response is broken.
                raise LocalProtocolError(
                    f"The file ended after {sent} of {count} bytes; the response is incomplete"
                )
        if after or end:
            await conn.write(after + end, shield=False, more=more_body)
        elif more_body:
            await trio.lowlevel.checkpoint()
        if not more_body:
            self._state = ResponseState.DONE
            if self._state_lot is not None:
                self._state_lot.unpark_all()

    def _head(self) -> bytes:
        conn = self._conn
        config = conn._config
        headers = self._headers
        include_server = config.include_server_header
        include_date = config.include_date_header
        own: list[tuple[bytes, bytes]] = []
        if include_server or include_date:
            for name, _ in headers:
                if name == b"server":
                    include_server = False
                elif name == b"date":
                    include_date = False
            if include_server:
                own.append(_SERVER_HEADER)
            if include_date:
                own.append((b"date", conn._server.dates.get()))
        if conn._server.extra_headers:
            headers = headers + conn._server.extra_headers
        head = self._proto.response_head(self._status, headers, close=conn._closing, own=own)
        if conn._server.access_log is not None:
            self._headers = headers + own  # what went out, for the access log
        return head


def _split_app_error(
    exc: BaseException,
) -> tuple[BaseException | None, BaseException | None]:
    """Split what an app raised into (its own failure, what must propagate)."""
    if isinstance(exc, Exception):
        return exc, None
    if isinstance(exc, BaseExceptionGroup):
        app_errors: BaseException | None
        rest: BaseException | None
        app_errors, rest = exc.split(Exception)
        return app_errors, rest
    return None, exc


def _only_disconnects(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return all(_only_disconnects(e) for e in exc.exceptions)
    return isinstance(exc, ClientDisconnected)
