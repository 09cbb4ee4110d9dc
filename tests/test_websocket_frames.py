"""What the server does with every kind of frame a websocket client may send.

- Malformed frames fail the websocket with the close code RFC 6455 requires:
  1002 for a protocol error (an unmasked frame, a long or fragmented control
  frame, reserved bits or opcodes, a continuation out of place, a non-minimal
  length, a bad close frame), 1007 for text that is not UTF-8, 1009 for a message
  over ``websocket_max_message_size``. The close frame is the last thing on the
  wire, and the app's next ``receive()`` returns ``websocket.disconnect`` with
  that code.
- The failure comes as soon as the bad bytes arrive, not when the message ends.
- Frames are processed strictly in order: a valid message ahead of a bad frame
  is echoed before the close, and nothing behind the bad frame is processed.
- Valid edge cases get through: fragmented messages with pings between the
  fragments, empty messages, a message of exactly the size limit, the peer's
  close code and reason, and frames in the same write as the upgrade request.

Frames are hand-made (:func:`frame`) and the server's answer is read as raw
frames (:class:`ServerFrames`) off a real server running over in-memory streams.
Every test runs under a hang guard of :data:`HANG_GUARD` seconds; nothing sleeps.
"""

from __future__ import annotations

import dataclasses
import struct
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
from _helpers import Message, Receive, Scope, Send

from trioserve import Config
from trioserve.testing import TestConnection, TestWebSocket, open_test_client

#: Seconds after which a test fails instead of hanging.
HANG_GUARD = 5.0
#: The masking key of every client frame built here.
MASK = b"\x37\xfa\x21\x3d"

CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
RSV1, RSV2, RSV3 = 0x40, 0x20, 0x10

PROTOCOL_ERROR = 1002
INVALID_PAYLOAD = 1007
MESSAGE_TOO_BIG = 1009

#: The size limit of the tests on message size.
LIMIT = 64


def frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    mask: bool = True,
    rsv: int = 0,
    length_bits: int | None = None,
) -> bytes:
    """One client frame: masked with :data:`MASK` unless ``mask`` is false;
    ``rsv`` is an OR of :data:`RSV1`..:data:`RSV3`; ``length_bits`` (7, 16 or
    64) forces the width of the length field, which is minimal otherwise."""
    size = len(payload)
    if length_bits is None:
        length_bits = 7 if size <= 125 else 16 if size <= 0xFFFF else 64
    if length_bits == 7:
        length = bytes([size])
    elif length_bits == 16:
        length = bytes([126]) + struct.pack("!H", size)
    else:
        length = bytes([127]) + struct.pack("!Q", size)
    head = bytes([(0x80 if fin else 0) | rsv | opcode])
    if not mask:
        return head + length + payload
    masked = bytes(byte ^ MASK[i % 4] for i, byte in enumerate(payload))
    return head + bytes([length[0] | 0x80]) + length[1:] + MASK + masked


def close_frame(code: int, reason: bytes = b"") -> bytes:
    """A client close frame with ``code`` and a (raw) reason."""
    return frame(CLOSE, struct.pack("!H", code) + reason)


@dataclasses.dataclass(frozen=True)
class Received:
    """One frame from the server."""

    opcode: int
    payload: bytes
    fin: bool = True
    rsv: int = 0

    @property
    def close_code(self) -> int | None:
        """The code of a close frame (``None`` for one without)."""
        assert self.opcode == CLOSE, f"not a close frame: {self}"
        return struct.unpack("!H", self.payload[:2])[0] if self.payload else None


class ServerFrames:
    """Reads the server's frames off the raw connection."""

    def __init__(self, conn: TestConnection, data: bytes = b"") -> None:
        self._conn = conn
        self._buffer = bytearray(data)

    async def next(self) -> Received | None:
        """The next frame, or ``None`` when the server closed the connection."""
        while (parsed := self._parse()) is None:
            data = await self._conn.receive_some()
            if not data:
                assert not self._buffer, f"EOF inside a frame: {bytes(self._buffer)!r}"
                return None
            self._buffer += data
        return parsed

    async def until_eof(self) -> list[Received]:
        """Every frame until the server closes the connection."""
        frames = []
        while (received := await self.next()) is not None:
            frames.append(received)
        return frames

    def _parse(self) -> Received | None:
        buffer = self._buffer
        if len(buffer) < 2:
            return None
        assert not buffer[1] & 0x80, "a server frame must not be masked"
        size, offset = buffer[1] & 0x7F, 2
        if size == 126:
            size, offset = (struct.unpack("!H", buffer[2:4])[0] if len(buffer) >= 4 else -1), 4
        elif size == 127:
            size, offset = (struct.unpack("!Q", buffer[2:10])[0] if len(buffer) >= 10 else -1), 10
        if size < 0 or len(buffer) < offset + size:
            return None
        payload = bytes(buffer[offset : offset + size])
        received = Received(buffer[0] & 0x0F, payload, buffer[0] >= 0x80, buffer[0] & 0x70)
        del buffer[: offset + size]
        return received


class EchoApp:
    """Accepts, echoes every message, and records all it receives (the
    ``websocket.disconnect`` too)."""

    def __init__(self) -> None:
        self.received: list[Message] = []
        self.disconnected = trio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "websocket"
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            self.received.append(message)
            if message["type"] == "websocket.disconnect":
                self.disconnected.set()
                return
            if message.get("text") is not None:
                await send({"type": "websocket.send", "text": message["text"]})
            else:
                await send({"type": "websocket.send", "bytes": message["bytes"]})

    @property
    def messages(self) -> list[str | bytes]:
        """The data of the messages received, in order."""
        return [
            m["text"] if m.get("text") is not None else m["bytes"]
            for m in self.received
            if m["type"] == "websocket.receive"
        ]

    async def disconnect(self) -> Message:
        """The ``websocket.disconnect`` the app received (waits for it); it must
        be the last message."""
        await self.disconnected.wait()
        assert self.received[-1]["type"] == "websocket.disconnect"
        return self.received[-1]


@dataclasses.dataclass
class Session:
    """An open websocket: the app, the raw connection and its two readers."""

    app: EchoApp
    conn: TestConnection
    ws: TestWebSocket
    frames: ServerFrames

    async def fails_with(self, code: int) -> list[Received]:
        """The server closes with ``code``: its close frame is the last one before
        the end of the connection, and the app hears that code. Returns the frames
        that came before the close."""
        frames = await self.frames.until_eof()
        assert frames, "the server closed the connection without a close frame"
        assert frames[-1].opcode == CLOSE, frames
        assert frames[-1].close_code == code, frames
        disconnect = await self.app.disconnect()
        assert disconnect["code"] == code, disconnect
        return frames[:-1]


@asynccontextmanager
async def websocket(
    config: Config | None = None, *, deflate: bool = False
) -> AsyncIterator[Session]:
    """An echo websocket on the real server, under the hang guard; ``deflate``
    offers permessage-deflate."""
    app = EchoApp()
    with trio.fail_after(HANG_GUARD):
        async with open_test_client(app, config or Config(lifespan="off")) as client:
            conn = await client.connect()
            try:
                ws = await conn.websocket("/ws", deflate=deflate)
                yield Session(app, conn, ws, ServerFrames(conn))
            finally:
                await conn.aclose()


# -- protocol errors: 1002 ---------------------------------------------------------


async def test_unmasked_client_frame_is_a_protocol_error() -> None:
    async with websocket() as session:
        await session.ws.send_raw(frame(TEXT, b"hello", mask=False))
        assert await session.fails_with(PROTOCOL_ERROR) == []
        assert session.app.messages == []


@pytest.mark.parametrize(
    ("opcode", "payload"),
    [(PING, b"x" * 126), (PONG, b"x" * 126), (CLOSE, struct.pack("!H", 1000) + b"x" * 124)],
    ids=["ping", "pong", "close"],
)
async def test_control_frame_longer_than_125_bytes_is_a_protocol_error(
    opcode: int, payload: bytes
) -> None:
    async with websocket() as session:
        await session.ws.send_raw(frame(opcode, payload))
        assert await session.fails_with(PROTOCOL_ERROR) == []


@pytest.mark.parametrize(
    ("opcode", "payload"),
    [(PING, b"ping"), (PONG, b"pong"), (CLOSE, struct.pack("!H", 1000))],
    ids=["ping", "pong", "close"],
)
async def test_fragmented_control_frame_is_a_protocol_error(opcode: int, payload: bytes) -> None:
    async with websocket() as session:
        await session.ws.send_raw(frame(opcode, payload, fin=False))
        assert await session.fails_with(PROTOCOL_ERROR) == []


@pytest.mark.parametrize("rsv", [RSV1, RSV2, RSV3, RSV1 | RSV2 | RSV3], ids=["1", "2", "3", "all"])
@pytest.mark.parametrize("opcode", [TEXT, BINARY, PING], ids=["text", "binary", "ping"])
async def test_reserved_bits_without_an_extension_are_a_protocol_error(
    opcode: int, rsv: int
) -> None:
    async with websocket() as session:
        await session.ws.send_raw(frame(opcode, b"hello", rsv=rsv))
        assert await session.fails_with(PROTOCOL_ERROR) == []
        assert session.app.messages == []


@pytest.mark.parametrize(
    "bad",
    [
        frame(PING, b"x", rsv=RSV1),
        frame(BINARY, b"x", fin=False) + frame(CONTINUATION, b"x", rsv=RSV1),
        frame(TEXT, b"x", rsv=RSV2),
        frame(TEXT, b"x", rsv=RSV3),
    ],
    ids=["rsv1-ping", "rsv1-continuation", "rsv2", "rsv3"],
)
async def test_reserved_bits_deflate_does_not_use_are_a_protocol_error(bad: bytes) -> None:
    async with websocket(deflate=True) as session:
        assert session.ws.extensions == ["permessage-deflate"]
        await session.ws.send_raw(bad)
        assert await session.fails_with(PROTOCOL_ERROR) == []


async def test_rsv1_with_deflate_agreed_is_a_compressed_message() -> None:
    compressor = zlib.compressobj(wbits=-15)
    data = compressor.compress(b"squeezed") + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert data.endswith(b"\x00\x00\xff\xff")
    async with websocket(deflate=True) as session:
        await session.ws.send_raw(frame(TEXT, data[:-4], rsv=RSV1))
        assert await session.ws.receive() == "squeezed"
        assert session.app.messages == ["squeezed"]


@pytest.mark.parametrize("opcode", [*range(0x3, 0x8), *range(0xB, 0x10)], ids=hex)
async def test_reserved_opcode_is_a_protocol_error(opcode: int) -> None:
    async with websocket() as session:
        await session.ws.send_raw(frame(opcode, b"hello"))
        assert await session.fails_with(PROTOCOL_ERROR) == []


@pytest.mark.parametrize("fin", [True, False], ids=["final", "not-final"])
async def test_continuation_without_a_started_message_is_a_protocol_error(fin: bool) -> None:
    async with websocket() as session:
        await session.ws.send_raw(frame(CONTINUATION, b"hello", fin=fin))
        assert await session.fails_with(PROTOCOL_ERROR) == []
        assert session.app.messages == []


@pytest.mark.parametrize(
    ("first", "second"), [(TEXT, TEXT), (TEXT, BINARY), (BINARY, TEXT), (BINARY, BINARY)]
)
async def test_new_message_inside_a_fragmented_message_is_a_protocol_error(
    first: int, second: int
) -> None:
    async with websocket() as session:
        await session.ws.send_raw(frame(first, b"frag", fin=False))
        await session.ws.send_raw(frame(second, b"new"))
        assert await session.fails_with(PROTOCOL_ERROR) == []
        assert session.app.messages == []


@pytest.mark.parametrize(
    "data",
    [
        frame(BINARY, b"hello", length_bits=16),
        frame(BINARY, b"hello", length_bits=64),
        frame(BINARY, b"x" * 200, length_bits=64),
        bytes([0x82, 0x80 | 127]) + struct.pack("!Q", 1 << 63 | 5) + MASK + b"hello",
    ],
    ids=["16-bit-for-5", "64-bit-for-5", "64-bit-for-200", "64-bit-top-bit-set"],
)
async def test_non_minimal_or_invalid_length_is_a_protocol_error(data: bytes) -> None:
    async with websocket() as session:
        await session.ws.send_raw(data)
        assert await session.fails_with(PROTOCOL_ERROR) == []
        assert session.app.messages == []


# -- close frames --------------------------------------------------------------------


async def test_close_frame_with_a_one_byte_payload_is_a_protocol_error() -> None:
    async with websocket() as session:
        await session.ws.send_raw(frame(CLOSE, b"\x03"))
        assert await session.fails_with(PROTOCOL_ERROR) == []


@pytest.mark.parametrize(
    "code", [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535]
)
async def test_close_frame_with_a_code_a_peer_may_not_send_is_a_protocol_error(code: int) -> None:
    async with websocket() as session:
        await session.ws.send_raw(close_frame(code))
        assert await session.fails_with(PROTOCOL_ERROR) == []


@pytest.mark.parametrize("code", [1000, 1001, 1003, 1007, 1011, 3000, 3999, 4000, 4999])
async def test_close_frame_with_a_valid_code_is_echoed_and_reaches_the_app(code: int) -> None:
    async with websocket() as session:
        await session.ws.send_raw(close_frame(code, "fin ✓".encode()))
        frames = await session.frames.until_eof()
        assert [(f.opcode, f.close_code) for f in frames] == [(CLOSE, code)]
        disconnect = await session.app.disconnect()
        assert disconnect == {"type": "websocket.disconnect", "code": code, "reason": "fin ✓"}


async def test_close_reason_that_is_not_utf8_is_invalid_payload() -> None:
    async with websocket() as session:
        await session.ws.send_raw(close_frame(1000, b"bye \xff"))
        assert await session.fails_with(INVALID_PAYLOAD) == []


async def test_client_close_reaches_the_app_with_its_code_and_reason() -> None:
    async with websocket() as session:
        assert await session.ws.close(1000, "bye") == 1000
        assert await session.app.disconnect() == {
            "type": "websocket.disconnect",
            "code": 1000,
            "reason": "bye",
        }


async def test_close_frame_without_a_code_reaches_the_app_as_1005() -> None:
    async with websocket() as session:
        await session.ws.send_raw(frame(CLOSE))
        frames = await session.frames.until_eof()
        # The answer carries no code either (1005 may not be sent), or 1000.
        assert [f.opcode for f in frames] == [CLOSE]
        assert frames[0].close_code in (None, 1000)
        assert await session.app.disconnect() == {
            "type": "websocket.disconnect",
            "code": 1005,
            "reason": "",
        }


async def test_close_inside_a_fragmented_message_drops_the_partial_message() -> None:
    async with websocket() as session:
        await session.ws.send_raw(frame(TEXT, b"par", fin=False) + close_frame(1000))
        assert await session.frames.until_eof() == [Received(CLOSE, struct.pack("!H", 1000))]
        assert session.app.received == [
            {"type": "websocket.disconnect", "code": 1000, "reason": ""}
        ]


# -- UTF-8: 1007 -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [b"\xff", b"ok \xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80", b"truncated \xce"],
    ids=["ff", "surrogate", "overlong", "above-max", "truncated"],
)
async def test_text_frame_that_is_not_utf8_is_invalid_payload(payload: bytes) -> None:
    async with websocket() as session:
        await session.ws.send_raw(frame(TEXT, payload))
        assert await session.fails_with(INVALID_PAYLOAD) == []
        assert session.app.messages == []


async def test_invalid_utf8_fails_at_its_fragment_before_the_message_ends() -> None:
    async with websocket() as session:
        await session.ws.send_raw(frame(TEXT, b"hello ", fin=False))
        await session.ws.send_raw(frame(CONTINUATION, b"\xce\xba\xed\xa0\x80", fin=False))
        # The final fragment is never sent: the close comes without it.
        assert await session.fails_with(INVALID_PAYLOAD) == []
        assert session.app.messages == []


async def test_character_split_across_fragments_is_valid_utf8() -> None:
    async with websocket() as session:
        kappa = "κ".encode()
        await session.ws.send_raw(frame(TEXT, b"a" + kappa[:1], fin=False))
        await session.ws.send_raw(frame(CONTINUATION, kappa[1:] + b"b"))
        assert await session.ws.receive() == "aκb"
        assert session.app.messages == ["aκb"]


# -- message size: 1009 ----------------------------------------------------------------


@pytest.mark.parametrize(
    "frames",
    [
        [frame(BINARY, b"x" * (LIMIT + 1))],
        [frame(TEXT, "κ".encode() * (LIMIT // 2 + 1))],
        # Each fragment is under the limit; the final fragment is never sent.
        [
            frame(BINARY, b"x" * 30, fin=False),
            frame(CONTINUATION, b"x" * 30, fin=False),
            frame(CONTINUATION, b"x" * 30, fin=False),
        ],
        [frame(TEXT, b"x" * 40, fin=False), frame(CONTINUATION, b"x" * 25, fin=False)],
        # A huge length is announced; the limit is crossed long before it is sent.
        [bytes([0x82, 0x80 | 127]) + struct.pack("!Q", 1 << 40) + MASK + b"x" * (LIMIT + 1)],
    ],
    ids=["one-frame", "text-counted-in-bytes", "fragments", "text-fragments", "huge-frame"],
)
async def test_message_over_the_size_limit_is_too_big(frames: list[bytes]) -> None:
    async with websocket(Config(lifespan="off", websocket_max_message_size=LIMIT)) as session:
        for data in frames:
            await session.ws.send_raw(data)
        assert await session.fails_with(MESSAGE_TOO_BIG) == []
        assert session.app.messages == []


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        ([frame(BINARY, b"x" * LIMIT)], b"x" * LIMIT),
        ([frame(TEXT, "κ".encode() * (LIMIT // 2))], "κ" * (LIMIT // 2)),
        (
            [frame(BINARY, b"x" * 32, fin=False), frame(CONTINUATION, b"x" * 32)],
            b"x" * LIMIT,
        ),
    ],
    ids=["one-frame", "text", "fragments"],
)
async def test_message_of_exactly_the_size_limit_is_accepted(
    frames: list[bytes], message: str | bytes
) -> None:
    async with websocket(Config(lifespan="off", websocket_max_message_size=LIMIT)) as session:
        for data in frames:
            await session.ws.send_raw(data)
        assert await session.ws.receive() == message
        # The limit is per message: the next one is counted from zero.
        await session.ws.send_raw(b"".join(frames))
        assert await session.ws.receive() == message
        assert session.app.messages == [message, message]


# -- valid messages ----------------------------------------------------------------------


@pytest.mark.parametrize("opcode", [TEXT, BINARY], ids=["text", "binary"])
async def test_fragmented_message_with_pings_between_fragments_is_reassembled(
    opcode: int,
) -> None:
    parts = [b"one ", b"two ", b"three ", b"four"]
    async with websocket() as session:
        await session.ws.send_raw(frame(opcode, parts[0], fin=False))
        await session.ws.send_raw(frame(PING, b"first ping"))
        await session.ws.send_raw(frame(CONTINUATION, parts[1], fin=False))
        await session.ws.send_raw(frame(CONTINUATION, parts[2], fin=False) + frame(PING, b""))
        await session.ws.send_raw(frame(PING, b"p" * 125) + frame(CONTINUATION, parts[3]))
        frames = [await session.frames.next() for _ in range(4)]
        # Each ping is answered as it comes, ahead of the message it interrupts.
        assert frames == [
            Received(PONG, b"first ping"),
            Received(PONG, b""),
            Received(PONG, b"p" * 125),
            Received(opcode, b"".join(parts)),
        ]
        whole = b"".join(parts)
        assert session.app.messages == [whole.decode() if opcode == TEXT else whole]


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        ([frame(TEXT)], ""),
        ([frame(BINARY)], b""),
        ([frame(TEXT, fin=False), frame(CONTINUATION, fin=False), frame(CONTINUATION)], ""),
        ([frame(BINARY, fin=False), frame(CONTINUATION)], b""),
    ],
    ids=["text", "binary", "fragmented-text", "fragmented-binary"],
)
async def test_empty_message_reaches_the_app(frames: list[bytes], message: str | bytes) -> None:
    async with websocket() as session:
        await session.ws.send_raw(b"".join(frames))
        opcode = TEXT if isinstance(message, str) else BINARY
        assert await session.frames.next() == Received(opcode, b"")
        assert session.app.received == [
            {"type": "websocket.receive", "text" if isinstance(message, str) else "bytes": message}
        ]


async def test_frame_split_into_single_bytes_is_reassembled() -> None:
    async with websocket() as session:
        data = frame(TEXT, b"y" * 200)  # a 16-bit length field
        for i in range(len(data)):
            await session.ws.send_raw(data[i : i + 1])
        assert await session.ws.receive() == "y" * 200


async def test_frames_in_the_upgrade_request_write_are_the_first_messages() -> None:
    app = EchoApp()
    request = (
        b"GET /ws HTTP/1.1\r\nHost: testserver\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    )
    with trio.fail_after(HANG_GUARD):
        async with open_test_client(app, Config(lifespan="off")) as client:
            conn = await client.connect()
            try:
                await conn.send_all(request + frame(TEXT, b"first") + frame(BINARY, b"\x00\x01"))
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = await conn.receive_some()
                    assert chunk, f"EOF before the response head: {data!r}"
                    data += chunk
                head, rest = data.split(b"\r\n\r\n", 1)
                status, *lines = head.split(b"\r\n")
                assert status.startswith(b"HTTP/1.1 101 "), head
                fields = {n.lower(): v for n, v in (line.split(b": ", 1) for line in lines)}
                assert fields[b"sec-websocket-accept"] == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
                frames = ServerFrames(conn, rest)
                assert await frames.next() == Received(TEXT, b"first")
                assert await frames.next() == Received(BINARY, b"\x00\x01")
                assert app.messages == ["first", b"\x00\x01"]
            finally:
                await conn.aclose()


# -- strict order, fail fast -------------------------------------------------------------


BAD_FRAMES = [
    pytest.param(frame(TEXT, b"bad", rsv=RSV1), PROTOCOL_ERROR, id="rsv1"),
    pytest.param(frame(TEXT, b"bad", mask=False), PROTOCOL_ERROR, id="unmasked"),
    pytest.param(frame(0x3, b"bad"), PROTOCOL_ERROR, id="reserved-opcode"),
    pytest.param(frame(CONTINUATION, b"bad"), PROTOCOL_ERROR, id="continuation"),
    pytest.param(frame(PING, b"x" * 126), PROTOCOL_ERROR, id="long-ping"),
    pytest.param(close_frame(1005), PROTOCOL_ERROR, id="close-1005"),
    pytest.param(frame(TEXT, b"\xff"), INVALID_PAYLOAD, id="not-utf8"),
    pytest.param(frame(BINARY, b"x" * (LIMIT + 1)), MESSAGE_TOO_BIG, id="too-big"),
]


@pytest.mark.parametrize(("bad", "code"), BAD_FRAMES)
async def test_message_ahead_of_a_bad_frame_is_echoed_before_the_close(
    bad: bytes, code: int
) -> None:
    async with websocket(Config(lifespan="off", websocket_max_message_size=LIMIT)) as session:
        await session.ws.send_raw(frame(TEXT, b"valid") + bad)
        assert await session.fails_with(code) == [Received(TEXT, b"valid")]
        assert session.app.messages == ["valid"]


@pytest.mark.parametrize(("bad", "code"), BAD_FRAMES)
async def test_nothing_behind_a_bad_frame_is_processed(bad: bytes, code: int) -> None:
    async with websocket(Config(lifespan="off", websocket_max_message_size=LIMIT)) as session:
        later = frame(TEXT, b"later") + frame(PING, b"later") + close_frame(1000)
        await session.ws.send_raw(frame(BINARY, b"first") + bad + later)
        assert await session.fails_with(code) == [Received(BINARY, b"first")]
        assert session.app.messages == [b"first"]


@pytest.mark.parametrize(("bad", "code"), BAD_FRAMES)
async def test_app_receives_disconnect_with_the_failure_code(bad: bytes, code: int) -> None:
    async with websocket(Config(lifespan="off", websocket_max_message_size=LIMIT)) as session:
        await session.ws.send_raw(bad)
        await session.fails_with(code)
        assert len(session.app.received) == 1
        disconnect = session.app.received[0]
        assert (disconnect["type"], disconnect["code"]) == ("websocket.disconnect", code)
        assert isinstance(disconnect["reason"], str)


async def test_message_ahead_of_a_close_is_echoed_before_the_close_answer() -> None:
    async with websocket() as session:
        await session.ws.send_raw(frame(TEXT, b"last") + close_frame(1000, b"done"))
        frames = await session.frames.until_eof()
        assert len(frames) == 2, frames
        assert frames[0] == Received(TEXT, b"last")
        assert frames[1].close_code == 1000
        assert session.app.messages == ["last"]
        assert (await session.app.disconnect())["code"] == 1000


async def test_ping_behind_a_message_in_the_same_write_is_answered() -> None:
    async with websocket() as session:
        await session.ws.send_raw(frame(TEXT, b"hello") + frame(PING, b"are you there"))
        frames = {await session.frames.next(), await session.frames.next()}
        assert frames == {Received(TEXT, b"hello"), Received(PONG, b"are you there")}
        assert session.app.messages == ["hello"]
