"""The frames of one accepted websocket over the connection's transport: wsproto's
events handled in order, frames to send queued and written together, and the
deadlines that keep the websocket alive (pings, the close handshake).

:class:`~trioserve.connection._websocket.WebSocketSession` decides who processes
and when; this module does the processing and the writing.
"""

from __future__ import annotations

import contextlib
import math
import os
from typing import TYPE_CHECKING

import trio
from wsproto.connection import ConnectionState
from wsproto.events import CloseConnection, Ping, Pong

from .._errors import ClientDisconnected
from ..protocol._websocket_frames import NEED_DATA, WebSocketProtocol

if TYPE_CHECKING:
    from wsproto.extensions import Extension

    from .._config import Config
    from .._transport import Transport

__all__ = ["FrameIO"]

#: Queued frames are written once there are this many, or this many bytes, and
#: the sending task then yields to others.
FLUSH_FRAMES = 32
FLUSH_BYTES = 16 * 1024
#: How much the keeper holds of received messages that the app has not taken
#: (their payload, plus ``MESSAGE_COST`` each, for the objects themselves).
HOLD_BYTES = 64 * 1024
MESSAGE_COST = 64

NORMAL_CLOSURE = 1000
GOING_AWAY = 1001
ABNORMAL_CLOSURE = 1006
INTERNAL_ERROR = 1011


class FrameIO:
    """The frames of one accepted websocket, over the transport.

    Received frames become events of the sans-IO :class:`WebSocketProtocol`,
    handled in order by :meth:`process`. Frames to send are queued and written
    together: before whoever sends or processes next waits for anything
    (:meth:`flush`), and as soon as 32 frames or 16 KiB are queued, which is also
    where a sending app yields to other tasks. A close frame is written at once.
    :meth:`keep_alive` pings the peer and enforces the answers' deadlines.

    Attributes:
      ready: whole messages received and not taken yet (``str`` or ``bytes``),
          oldest first.
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
        "_flushed",
        "_flushing",
        "_hold_cost",
        "_next_ping",
        "_ping_interval",
        "_ping_mark",
        "_ping_payload",
        "_ping_timeout",
        "_pong_deadline",
        "_proto",
        "_queue",
        "_queued",
        "_stalled",
        "_taken",
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
        config: Config,
    ) -> None:
        self._transport = transport
        self._proto = WebSocketProtocol(extensions, config.websocket_max_message_size)
        self._proto.receive_data(buffered)
        self._stalled = not buffered  # the protocol needs bytes it does not have
        self._eof_given = False
        self._queue: list[bytes] = []
        self._queued = 0
        self._flushing = False
        # Made when a task first has to wait for another's write.
        self._flushed: trio.lowlevel.ParkingLot | None = None
        self._close_timeout = config.websocket_close_timeout
        self._ping_interval = config.websocket_ping_interval
        self._ping_timeout = config.websocket_ping_timeout
        self._next_ping = trio.current_time() + self._ping_interval
        self._pong_deadline = math.inf
        self._ping_payload = b""
        self._taken = 0  # bytes taken from the transport
        self._ping_mark = 0  # bytes received from the peer when we last pinged
        self.close_deadline = math.inf
        self.ready: list[str | bytes] = []
        self._hold_cost = 0
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
    def closed_cleanly(self) -> bool:
        """Close frames went both ways: the close handshake completed."""
        return self.sent_close is not None and self.received_close is not None

    @property
    def can_hold(self) -> bool:
        """Fewer than ``HOLD_BYTES`` of received messages wait to be taken."""
        return self._hold_cost < HOLD_BYTES

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

    async def process(self, *, hold: bool = False) -> None:
        """Handle what was received, in order, until a message is ready (with
        ``hold``: until :attr:`can_hold` is false), the websocket is over, or
        nothing is left."""
        proto = self._proto
        transport = self._transport
        ready = self.ready
        while self.close_code is None and (not ready or (hold and self.can_hold)):
            event = proto.next_event()
            if event is NEED_DATA:
                data = transport.take_data()
                if data:
                    self._taken += len(data)
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
                size = _byte_size(event)  # type: ignore[arg-type]
                ready.append(event)  # type: ignore[arg-type]
                self._hold_cost += size + MESSAGE_COST
                self.messages_in += 1
                self.bytes_in += size
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
        """Take the oldest message that is ready, if any."""
        ready = self.ready
        if not ready:
            return None
        message = ready.pop(0)
        self._hold_cost = 0 if not ready else self._hold_cost - _byte_size(message) - MESSAGE_COST
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

        One task writes at a time, and frames leave the queue only in its hands,
        so they go out in the order they were made, whoever sends them. A task
        that finds another writing waits for it (its frames go with that write or
        the next). A write cancelled before it began puts its frames back at the
        head of the queue: a frame once made must go out, in order (with
        permessage-deflate the peer's inflater already counts on it). One
        cancelled partway loses the websocket, as it breaks the transport.

        Raises:
          ClientDisconnected: the peer is gone, or did not read in time.
        """
        while self._flushing:
            if self._flushed is None:
                self._flushed = trio.lowlevel.ParkingLot()
            await self._flushed.park()
        queue = self._queue
        if not queue:
            return
        data = queue[0] if len(queue) == 1 else b"".join(queue)
        queued = self._queued
        self._queue = []
        self._queued = 0
        self._flushing = True
        try:
            await self._transport.write(data)
        except ClientDisconnected:
            self._end(ABNORMAL_CLOSURE, "")
            raise
        except trio.Cancelled:
            if self._transport.broken:
                self._end(ABNORMAL_CLOSURE, "")
            else:
                self._queue.insert(0, data)
                self._queued += queued
            raise
        finally:
            self._flushing = False
            if self._flushed is not None:
                self._flushed.unpark_all()

    async def keep_alive(self) -> float | None:
        """Do what the deadlines ask for now. Return ``None`` if that took a
        write or ended the websocket (so the caller looks at everything again),
        else when to come back (``inf``: only when something else happens).

        The peer is pinged every ``websocket_ping_interval``, one ping at a time.
        Within ``websocket_ping_timeout`` it must answer: its pong, or any bytes
        at all (the pong may wait behind what the app has not taken yet). One
        that sent nothing is failed with 1011, unless the reader had stopped for
        room (then what it sent may be waiting unread, and it gets another
        timeout). One that has not answered our close frame by
        :attr:`close_deadline` is given up on (1006).
        """
        now = trio.current_time()
        if self._pong_deadline <= now:
            self._pong_deadline = math.inf
            if self._ping_payload:
                if self._taken + self._transport.buffered != self._ping_mark:
                    self._ping_payload = b""  # it sent something: it is there
                elif self._transport.reading_paused:
                    self._pong_deadline = now + self._ping_timeout
                else:
                    await self.close(INTERNAL_ERROR, "keepalive ping timeout")
                    self.lose(INTERNAL_ERROR, "keepalive ping timeout")
                    return None
        if self.close_deadline <= now:
            self.lose()
            return None
        if self._ping_payload:
            return min(self._pong_deadline, self.close_deadline)
        if self._next_ping <= now:
            self._next_ping = now + self._ping_interval
            if self._proto.state is ConnectionState.OPEN:
                self._ping_payload = os.urandom(4)
                self._ping_mark = self._taken + self._transport.buffered
                self._pong_deadline = now + self._ping_timeout
                self._queue_frame(self._proto.send(Ping(self._ping_payload)))
                with contextlib.suppress(ClientDisconnected):
                    await self.flush()
                return None
        return min(self._next_ping, self._pong_deadline, self.close_deadline)

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
        whole whatever happens to the task writing it (the write deadline still
        holds); a lost connection ends the websocket."""
        self._queue_frame(frame)
        with trio.CancelScope(shield=True):
            while self._queue and self.close_code is None:
                with contextlib.suppress(ClientDisconnected):
                    await self.flush()

    def _end(self, code: int, reason: str) -> None:
        # Messages that arrived whole before the end stay for the app to take.
        if self.close_code is None:
            self.close_code = code
            self.close_reason = reason


def _byte_size(data: str | bytes | bytearray) -> int:
    """The size of a message's payload in bytes (text as UTF-8)."""
    if isinstance(data, str) and not data.isascii():
        return len(data.encode())
    return len(data)
