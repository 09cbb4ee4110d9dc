"""The frames of one websocket, sans-IO: wsproto, bounded, with a fast path.

:class:`WebSocketProtocol` is the server side of an accepted websocket. Bytes go
in (:meth:`~WebSocketProtocol.receive_data`); events come out one at a time
(:meth:`~WebSocketProtocol.next_event`): whole messages (``str`` or ``bytes``), and
wsproto's ``Ping``, ``Pong`` and ``CloseConnection``. What it adds to wsproto:

- messages are whole: wsproto's pieces are joined, and counted against the
  message size limit as they come, across fragments and after decompression; a
  message over it ends in ``CloseConnection(1009)``, never buffered beyond it;
- while permessage-deflate is on, wsproto gets compressed bytes in small slices:
  its decompression has no bound of its own, and a small input bounds what one
  step can inflate to;
- events come one at a time, so the caller handles each before anything after it
  is parsed (strict in-order processing);
- a fast path. Most frames are a whole, masked, unfragmented text or binary
  message with no reserved bits, already in the buffer. For those, wsproto's
  general machinery costs several times what the frame needs, so they are
  parsed here, with the RFC's checks (minimal length encoding, UTF-8). Every
  other frame, and every frame while a fragmented message is in progress or an
  extension is on, goes to wsproto untouched, whole, at its frame boundary, so
  the two never disagree about where a frame starts; anything the fast path does
  not accept at once (invalid UTF-8, a message over the limit...) goes to
  wsproto too, which gives the answer it always gives. Messages the server sends
  are framed here the same way when no extension is on.
  ``tests/protocol/test_websocket_frames.py`` holds both directions to wsproto.

A protocol error appears as a ``CloseConnection`` event while :attr:`state` is
still ``OPEN`` (wsproto's way); the caller answers it with a close frame of that
code and ends the connection.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterator

from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Event, Ping, Pong, TextMessage
from wsproto.extensions import Extension

__all__ = ["NEED_DATA", "WebSocketEvent", "WebSocketProtocol"]

#: Bytes given to wsproto at a time while permessage-deflate is on.
DEFLATE_SLICE = 4096
#: The close code of a message over the size limit (RFC 6455 7.4.1).
MESSAGE_TOO_BIG = 1009


class _Need(enum.Enum):
    NEED_DATA = "NEED_DATA"


#: :meth:`WebSocketProtocol.next_event`: more bytes are needed.
NEED_DATA = _Need.NEED_DATA

WebSocketEvent = str | bytes | Ping | Pong | CloseConnection | _Need

_OPEN = ConnectionState.OPEN
_UNPACK_H = struct.Struct("!H").unpack_from
_UNPACK_Q = struct.Struct("!Q").unpack_from
_PACK_BH = struct.Struct("!BBH").pack
_PACK_BQ = struct.Struct("!BBQ").pack


class WebSocketProtocol:
    """The server side of one accepted websocket, sans-IO.

    Args:
      extensions: the extensions agreed in the handshake (permessage-deflate).
      max_message_size: the largest message, in bytes.
      fast_path: parse and frame plain messages without wsproto. ``False`` sends
          everything through wsproto; the two give the same events and bytes.
    """

    __slots__ = (
        "_buf",
        "_eof",
        "_eof_fed",
        "_events",
        "_fast",
        "_fragmented",
        "_limit",
        "_owed",
        "_parts",
        "_size",
        "_slice",
        "_ws",
    )

    def __init__(
        self, extensions: list[Extension], max_message_size: int, *, fast_path: bool = True
    ) -> None:
        # wsproto's connection is made when a frame first needs it: a websocket
        # that only ever carries plain messages never does, and an idle
        # connection's memory counts.
        self._ws = Connection(ConnectionType.SERVER, extensions) if extensions else None
        self._limit = max_message_size
        # Frames are routed one by one only for the fast path; otherwise wsproto
        # gets everything as it comes (in slices under deflate).
        self._fast = fast_path and not extensions
        self._slice = DEFLATE_SLICE if extensions else 0
        self._buf = b""  # bytes not yet parsed or given to wsproto
        self._owed = 0  # bytes of the current frame still owed to wsproto
        self._fragmented = False  # wsproto is inside a fragmented message
        self._events: Iterator[Event] | None = None
        self._eof = self._eof_fed = False
        self._parts: list[str | bytes | bytearray] = []
        self._size = 0

    @property
    def state(self) -> ConnectionState:
        """wsproto's connection state (``OPEN``, ``LOCAL_CLOSING``, ...)."""
        ws = self._ws
        return ConnectionState.OPEN if ws is None else ws.state

    def _wsproto(self) -> Connection:
        ws = self._ws
        if ws is None:
            ws = self._ws = Connection(ConnectionType.SERVER)
        return ws

    def receive_data(self, data: bytes | None) -> None:
        """Add bytes from the client; ``None`` means the connection was lost."""
        if data is None:
            self._eof = True
        elif data:
            self._buf = self._buf + data if self._buf else data

    def next_event(self) -> WebSocketEvent:
        """The next whole message or control event, or :data:`NEED_DATA`."""
        while True:
            events = self._events
            if events is not None:
                for event in events:
                    result = self._wsproto_event(event)
                    if result is not None:
                        return result
                self._events = None
            buf = self._buf
            if self._owed:
                if not buf:
                    if self._eof and not self._eof_fed:
                        self._feed_eof()
                        continue
                    return NEED_DATA
                self._feed(min(self._owed, len(buf)))
                continue
            if not buf:
                if self._eof and not self._eof_fed:
                    self._feed_eof()
                    continue
                return NEED_DATA
            if not self._fast:
                self._owed = len(buf)  # everything goes to wsproto
                continue
            if not self._fragmented and (self._ws is None or self._ws.state is _OPEN):
                message = self._plain_message(buf)
                if message is not None:
                    return message
            if not self._route_frame(buf):
                return NEED_DATA

    def _feed(self, size: int) -> None:
        slice_ = self._slice
        if slice_ and size > slice_:
            size = slice_
        data = self._buf
        if size == len(data):
            self._buf = b""
        else:
            data, self._buf = data[:size], data[size:]
        if self._owed:
            self._owed -= size
        ws = self._wsproto()
        ws.receive_data(data)
        self._events = ws.events()

    def _feed_eof(self) -> None:
        self._eof_fed = True
        ws = self._wsproto()
        ws.receive_data(None)  # wsproto reports a lost connection as 1006
        self._events = ws.events()

    def _wsproto_event(self, event: Event) -> WebSocketEvent | None:
        """Turn one of wsproto's events into one of ours; ``None`` for a piece of
        a message that is not whole yet."""
        kind = type(event)
        if kind is TextMessage or kind is BytesMessage:
            assert isinstance(event, (TextMessage, BytesMessage))
            if self.state is not _OPEN:
                return None  # after our close, what the peer still sends is dropped
            data = event.data
            self._size += (
                len(data.encode()) if isinstance(data, str) and not data.isascii() else len(data)
            )
            if self._size > self._limit:
                self._parts = []
                self._events = None
                return CloseConnection(MESSAGE_TOO_BIG, "Message too big")
            self._parts.append(data)
            if not event.message_finished:
                return None
            parts = self._parts
            self._parts = []
            self._size = 0
            if isinstance(parts[0], str):
                return parts[0] if len(parts) == 1 else "".join(parts)  # type: ignore[arg-type]
            return b"".join(parts)  # type: ignore[arg-type]
        if kind is CloseConnection:
            self._events = None  # nothing after a close is parsed
        return event  # type: ignore[return-value]

    # -- the fast path ---------------------------------------------------------------

    def _plain_message(self, buf: bytes) -> str | bytes | None:
        """The message of a plain frame at the start of ``buf`` (consumed), or
        ``None`` (nothing consumed): whole, masked, FIN set, no reserved bits,
        text or binary, within the size limit, and for text, valid UTF-8."""
        if len(buf) < 6:
            return None
        first = buf[0]
        if first != 0x81 and first != 0x82:  # FIN, no RSV, text or binary
            return None
        length = buf[1]
        if length < 0x80:  # not masked
            return None
        length &= 0x7F
        start = 6
        if length == 126:
            if len(buf) < 8:
                return None
            length = _UNPACK_H(buf, 2)[0]
            if length < 126:
                return None
            start = 8
        elif length == 127:
            if len(buf) < 14:
                return None
            length = _UNPACK_Q(buf, 2)[0]
            if length < 65536 or length >> 63:
                return None
            start = 14
        end = start + length
        if end > len(buf) or length > self._limit:
            return None
        mask = buf[start - 4 : start]
        masked = buf[start:end]
        key = int.from_bytes(mask * ((length >> 2) + 1), "little")
        payload = (int.from_bytes(masked, "little") ^ key).to_bytes(length + 4, "little")[:length]
        if first == 0x81:
            try:
                message: str | bytes = payload.decode("utf-8")
            except UnicodeDecodeError:
                return None  # wsproto says 1007, from the same bytes
        else:
            message = payload
        self._buf = buf[end:]
        return message

    def _route_frame(self, buf: bytes) -> bool:
        """Owe wsproto the frame at the start of ``buf``, at its boundary, so that
        both parsers agree where frames start. Return ``False`` if its header is
        not complete yet (unless the connection is lost: wsproto then has the
        rest)."""
        if len(buf) < 2:
            return self._route_rest()
        first = buf[0]
        length = buf[1] & 0x7F
        header = 2 + (4 if buf[1] & 0x80 else 0)
        if length == 126:
            header += 2
            if len(buf) < 4:
                return self._route_rest()
            length = _UNPACK_H(buf, 2)[0]
        elif length == 127:
            header += 8
            if len(buf) < 10:
                return self._route_rest()
            length = _UNPACK_Q(buf, 2)[0]
        opcode = first & 0x0F
        if opcode == 1 or opcode == 2:
            self._fragmented = not first & 0x80
        elif opcode == 0 and first & 0x80:
            self._fragmented = False
        self._owed = header + length
        return True

    def _route_rest(self) -> bool:
        if self._eof:
            self._owed = len(self._buf)  # wsproto reports the incomplete frame
            return True
        return False

    # -- sending ---------------------------------------------------------------------

    def send_message(self, data: str | bytes) -> bytes:
        """The frame of a whole message."""
        if not self._fast:
            message = TextMessage(data) if isinstance(data, str) else BytesMessage(data)
            return self._wsproto().send(message)
        if isinstance(data, str):
            payload = data.encode()
            opcode = 0x81
        else:
            payload = data
            opcode = 0x82
        length = len(payload)
        if length < 126:
            return bytes((opcode, length)) + payload
        if length < 65536:
            return _PACK_BH(opcode, 126, length) + payload
        return _PACK_BQ(opcode, 127, length) + payload

    def send(self, event: Ping | Pong | CloseConnection) -> bytes:
        """The frame of a control event (wsproto's)."""
        return self._wsproto().send(event)
