"""The websocket frame fast path against wsproto, event for event and byte for byte.

``WebSocketProtocol`` parses plain frames (whole, masked, unfragmented text or
binary messages without reserved bits) itself and gives every other frame to
wsproto at its frame boundary. The fast path may only *accept*: for any bytes,
split into any pieces and possibly cut by a lost connection, a protocol with the
fast path must give exactly the events one with ``fast_path=False`` (wsproto for
every frame) gives: the same messages, pings, pongs and closes (codes and
reasons), in the same order. Generated streams mix plain frames with everything
the fast path must refuse: fragments, control frames, reserved bits and opcodes,
unmasked frames, non-minimal lengths, invalid UTF-8, messages over the limit,
close frames with good and bad codes. The frames the server sends are compared
with wsproto's own. And plain frames must not reach wsproto at all, so that the
comparison cannot pass by the fast path declining everything.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage

from trioserve.protocol import _websocket_frames
from trioserve.protocol._websocket_frames import NEED_DATA, WebSocketProtocol

LIMIT = 300


def frame(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bytes | None = b"\x0a\x0b\x0c\x0d",
    wide: int = 0,
) -> bytes:
    """A client frame; ``wide`` forces a 2- (``2``) or 8-byte (``8``) length."""
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    masked = 0x80 if mask is not None else 0
    length = len(payload)
    if wide == 8 or length > 65535:
        head = struct.pack("!BBQ", first, masked | 127, length)
    elif wide == 2 or length > 125:
        head = struct.pack("!BBH", first, masked | 126, length)
    else:
        head = bytes((first, masked | length))
    if mask is None:
        return head + payload
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + body


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


def trace(
    chunks: list[bytes], eof: bool, *, fast_path: bool, close_after: int | None = None
) -> list[object]:
    """Feed the chunks one by one, pulling events after each; describe them.
    ``close_after``: the server sends its close frame after that many chunks."""
    proto = WebSocketProtocol([], LIMIT, fast_path=fast_path)
    out: list[object] = []

    def pull() -> bool:
        while (event := proto.next_event()) is not NEED_DATA:
            if isinstance(event, (str, bytes)):
                out.append(("message", event))
            elif isinstance(event, Ping):
                out.append(("ping", bytes(event.payload)))
            elif isinstance(event, Pong):
                out.append(("pong", bytes(event.payload)))
            else:
                assert isinstance(event, CloseConnection)
                out.append(("close", int(event.code), event.reason))
                return False
        return True

    for n, chunk in enumerate(chunks):
        if n == close_after:
            out.append(("sent", proto.send(CloseConnection(1000))))
        proto.receive_data(chunk)
        if not pull():
            return out
    if eof:
        proto.receive_data(None)
        pull()
    return out


plain = st.one_of(
    st.text(max_size=40).map(lambda t: frame(1, t.encode())),
    st.binary(max_size=40).map(lambda b: frame(2, b)),
    st.binary(min_size=126, max_size=LIMIT).map(lambda b: frame(2, b)),
)
near_misses = st.one_of(
    st.binary(max_size=40).map(lambda b: frame(1, b)),  # mostly invalid UTF-8
    st.binary(max_size=20).map(lambda b: frame(2, b, fin=False)),  # a fragment
    st.binary(max_size=20).map(lambda b: frame(0, b)),  # a final continuation
    st.binary(max_size=20).map(lambda b: frame(0, b, fin=False)),
    st.binary(max_size=20).map(lambda b: frame(9, b)),  # ping
    st.binary(max_size=20).map(lambda b: frame(10, b)),  # pong
    st.binary(max_size=20).map(lambda b: frame(2, b, mask=None)),
    st.tuples(st.integers(1, 7), st.binary(max_size=10)).map(lambda a: frame(2, a[1], rsv=a[0])),
    st.sampled_from([3, 4, 7, 11, 15]).map(lambda op: frame(op, b"x")),
    st.binary(max_size=10).map(lambda b: frame(2, b, wide=2)),  # non-minimal length
    st.binary(min_size=126, max_size=200).map(lambda b: frame(2, b, wide=8)),
    st.binary(min_size=LIMIT + 1, max_size=LIMIT + 50).map(lambda b: frame(2, b)),
    st.sampled_from([1000, 1001, 1005, 1006, 3000, 4999, 999, 5000]).map(
        lambda c: frame(8, close_payload(c, b"bye"))
    ),
    st.just(frame(8, b"")),
    st.just(frame(8, b"\x03")),
    st.just(frame(8, close_payload(1000, b"\xff\xfe"))),
    st.just(frame(9, b"x", fin=False)),  # fragmented control frame
    st.just(frame(9, b"x" * 126)),  # control frame too long
)


@st.composite
def streams(draw: st.DrawFn) -> tuple[list[bytes], bool, int | None]:
    frames = draw(st.lists(st.one_of(plain, plain, near_misses), min_size=1, max_size=8))
    data = b"".join(frames)
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=6)))
    chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    close_after = draw(st.none() | st.integers(0, len(chunks)))
    return chunks, draw(st.booleans()), close_after


@given(streams())
@settings(max_examples=400, deadline=None)
@example(([frame(1, b"ok") + frame(2, b"x", rsv=1) + frame(1, b"never")], False, None))
@example(([frame(2, b"a", fin=False) + frame(9, b"p") + frame(0, b"b")], False, None))
@example(([frame(2, b"a", fin=False), frame(1, b"b")], False, None))
@example(([frame(1, "é".encode())[:9], frame(1, "é".encode())[9:]], True, None))
@example(([frame(1, b"\xc3")], False, None))
@example(([frame(1, b"cut")[:4]], True, None))
@example(([frame(1, b"a"), frame(1, b"after our close")], False, 1))
@example(([struct.pack("!BBQ", 0x82, 0xFF, 1 << 63) + b"mask"], False, None))
def test_fast_path_gives_wsprotos_events(stream: tuple[list[bytes], bool, int | None]) -> None:
    chunks, eof, close_after = stream
    assert trace(chunks, eof, fast_path=True, close_after=close_after) == trace(
        chunks, eof, fast_path=False, close_after=close_after
    )


@given(st.one_of(st.text(max_size=200), st.binary(max_size=70_000)))
@settings(max_examples=200, deadline=None)
@example("")
@example(b"")
@example("x" * 125)
@example("x" * 126)
@example(b"x" * 65535)
@example(b"x" * 65536)
def test_sent_frames_are_wsprotos(message: str | bytes) -> None:
    ours = WebSocketProtocol([], LIMIT).send_message(message)
    reference = Connection(ConnectionType.SERVER)
    event = TextMessage(message) if isinstance(message, str) else BytesMessage(message)
    assert ours == reference.send(event)


@contextmanager
def counting_wsproto() -> Iterator[list[int]]:
    """``made[0]``: bytes given to wsproto connections made inside the block."""
    given_bytes = [0]
    real = _websocket_frames.Connection

    class Counted(real):  # type: ignore[misc,valid-type]
        def receive_data(self, data: bytes | None) -> None:
            given_bytes[0] += len(data or b"")
            super().receive_data(data)

    _websocket_frames.Connection = Counted  # type: ignore[misc]
    try:
        yield given_bytes
    finally:
        _websocket_frames.Connection = real  # type: ignore[misc]


@pytest.mark.parametrize(
    "message",
    [frame(1, b"hello"), frame(2, b"\x00" * 200), frame(1, "ütf-8".encode()), frame(2, b"")],
    ids=["text", "binary-wide", "text-utf8", "empty"],
)
def test_plain_frames_never_reach_wsproto(message: bytes) -> None:
    with counting_wsproto() as given_bytes:
        proto = WebSocketProtocol([], LIMIT)
        proto.receive_data(message * 3)
        events = [proto.next_event() for _ in range(4)]
    assert events[3] is NEED_DATA
    assert all(isinstance(e, (str, bytes)) for e in events[:3])
    assert given_bytes[0] == 0


def test_everything_goes_to_wsproto_while_an_extension_is_on() -> None:
    from wsproto.extensions import PerMessageDeflate

    with counting_wsproto() as given_bytes:
        proto = WebSocketProtocol([PerMessageDeflate()], LIMIT)
        proto.receive_data(frame(1, b"plain, but deflate was agreed"))
        assert proto.next_event() == "plain, but deflate was agreed"
    assert given_bytes[0] > 0
