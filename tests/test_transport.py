"""The transport under every connection kind, over real socket pairs.

- :class:`SocketFdStream` is a trio stream: it passes trio's own conformance check
  for half-closeable streams, and its non-blocking sends never wait or yield.
- :class:`Transport` reads into a bounded buffer, serves concurrent writers in
  turn without interleaving their bytes, drops a peer that stops reading after
  the write deadline, never leaves half of a shielded write on the wire, breaks
  (refuses every later write) when an unshielded write or a file send is
  cancelled partway, sends files with or without ``sendfile``, and lingers
  before closing.

Timeouts run in virtual time (``autojump_clock``); every other wait is on bytes
or on trio's ``wait_all_tasks_blocked``.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from trioserve import ClientDisconnected
from trioserve._transport import READ_CHUNK, READ_HIGH_WATER, SocketFdStream, Transport

#: Seconds (on the trio clock) after which a test that waits for bytes fails
#: instead of hanging.
HANG_GUARD = 10.0


def socket_pair(*, buffer: int | None = None) -> tuple[SocketFdStream, SocketFdStream]:
    """Two connected :class:`SocketFdStream` ends; ``buffer`` shrinks the kernel's
    buffers so that a writer soon has to wait."""
    left, right = socket.socketpair()
    if buffer is not None:
        for sock in (left, right):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, buffer)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer)
    return (
        SocketFdStream(trio.socket.from_stdlib_socket(left)),
        SocketFdStream(trio.socket.from_stdlib_socket(right)),
    )


async def make_pair() -> tuple[SocketFdStream, SocketFdStream]:
    return socket_pair()


async def make_clogged_pair() -> tuple[SocketFdStream, SocketFdStream]:
    """A pair whose kernel buffers are full in both directions."""
    pair = socket_pair(buffer=4096)
    for stream in pair:
        with contextlib.suppress(trio.WouldBlock):
            while True:
                stream.send_some_nowait(b"x" * 65536)
    await trio.lowlevel.checkpoint()
    return pair


async def read_exactly(stream: trio.abc.ReceiveStream, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = await stream.receive_some(size - len(data))
        assert chunk, "EOF before the expected bytes"
        data += chunk
    return bytes(data)


@asynccontextmanager
async def transport_pair(
    write_timeout: float = 30.0, *, buffer: int | None = None
) -> AsyncIterator[tuple[Transport, SocketFdStream]]:
    """A transport on one end of a socket pair (its reader running), and the
    other end as the peer."""
    ours, peer = socket_pair(buffer=buffer)
    transport = Transport(ours, write_timeout)
    closed = trio.Event()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(transport.read_loop, closed.set)
            try:
                with trio.fail_after(HANG_GUARD):
                    yield transport, peer
            finally:
                nursery.cancel_scope.cancel()
    finally:
        await transport.aclose()
        await peer.aclose()


# -- the stream ---------------------------------------------------------------------


async def test_socket_fd_stream_passes_trios_half_closeable_stream_check() -> None:
    await trio.testing.check_half_closeable_stream(make_pair, make_clogged_pair)


async def test_send_some_nowait_takes_what_fits_and_never_yields() -> None:
    left, right = socket_pair(buffer=4096)
    async with left, right:
        with trio.testing.assert_no_checkpoints():
            sent = left.send_some_nowait(b"x" * 1_000_000)
            assert 0 < sent < 1_000_000
            with pytest.raises(trio.WouldBlock):
                left.send_some_nowait(b"x")
        assert await read_exactly(right, sent) == b"x" * sent


async def test_send_file_nowait_sends_the_file_and_reports_its_end(tmp_path: Path) -> None:
    path = tmp_path / "data"
    path.write_bytes(b"0123456789")
    left, right = socket_pair()
    async with left, right:
        fd = os.open(path, os.O_RDONLY)
        try:
            assert left.send_file_nowait(fd, 2, 5) == 5
            assert left.send_file_nowait(fd, 10, 5) == 0  # past the end of the file
        finally:
            os.close(fd)
        assert await read_exactly(right, 5) == b"23456"


async def test_send_file_nowait_blames_the_file_not_the_peer_for_a_bad_file() -> None:
    left, right = socket_pair()
    read_end, write_end = os.pipe()
    async with left, right:
        try:
            # sendfile() cannot read from a pipe at an offset: the file's fault.
            with pytest.raises(OSError, match="Illegal seek") as info:
                left.send_file_nowait(read_end, 0, 10)
            assert not isinstance(info.value, trio.BrokenResourceError)
        finally:
            os.close(read_end)
            os.close(write_end)


async def test_sending_to_a_peer_that_has_closed_breaks_the_stream() -> None:
    left, right = socket_pair()
    async with left:
        await right.aclose()
        with pytest.raises(trio.BrokenResourceError):
            await left.send_all(b"x")
        with pytest.raises(trio.BrokenResourceError):
            left.send_some_nowait(b"x")


# -- reading ------------------------------------------------------------------------


async def test_reader_stops_at_the_high_water_mark_until_data_is_taken() -> None:
    async with transport_pair() as (transport, peer):
        blob = b"y" * (READ_HIGH_WATER + READ_CHUNK + 100_000)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(peer.send_all, blob)
            await trio.testing.wait_all_tasks_blocked()
            # The reader took what fits under the mark (plus at most one read) and
            # waits; the rest stays with the peer, which cannot finish sending.
            assert READ_HIGH_WATER <= transport.buffered < READ_HIGH_WATER + READ_CHUNK
            received = transport.take_data()
            while len(received) < len(blob):
                await transport.wait_received()
                received += transport.take_data()
        assert received == blob


async def test_reader_reports_the_peer_closing_once() -> None:
    ours, peer = socket_pair()
    transport = Transport(ours, 30.0)
    reports: list[str] = []
    async with peer:
        await peer.send_all(b"last words")
        await peer.send_eof()
        await transport.read_loop(lambda: reports.append("closed"))
    assert reports == ["closed"]
    assert transport.peer_closed
    assert transport.take_data() == b"last words"
    await transport.aclose()


# -- writing ------------------------------------------------------------------------


async def test_concurrent_writes_are_served_in_turn_without_interleaving() -> None:
    async with transport_pair(buffer=4096) as (transport, peer):
        first = b"A" * 500_000
        second = b"B" * 1000
        async with trio.open_nursery() as nursery:
            nursery.start_soon(transport.write, first)
            await trio.testing.wait_all_tasks_blocked()  # the first write waits for room
            nursery.start_soon(transport.write, second)
            await trio.testing.wait_all_tasks_blocked()
            received = await read_exactly(peer, len(first) + len(second))
        assert received == first + second


async def test_a_peer_that_stops_reading_is_dropped_at_the_write_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with transport_pair(write_timeout=7.0, buffer=4096) as (transport, _peer):
        start = trio.current_time()
        with pytest.raises(ClientDisconnected):
            await transport.write(b"x" * 1_000_000)
        assert trio.current_time() - start == pytest.approx(7.0)
        assert transport.broken
        with pytest.raises(ClientDisconnected):
            await transport.write(b"more")


async def test_a_cancelled_shielded_write_still_goes_out_whole() -> None:
    async with transport_pair(buffer=4096) as (transport, peer):
        message = b"H" * 300_000
        writer_scope = trio.CancelScope()
        finished: list[bool] = []

        async def write_shielded() -> None:
            with writer_scope:
                await transport.write(message, shield=True)
                finished.append(True)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(write_shielded)
            await trio.testing.wait_all_tasks_blocked()  # waiting for the peer to read
            writer_scope.cancel()
            assert await read_exactly(peer, len(message)) == message
        assert finished == [True]


async def test_a_cancelled_unshielded_write_that_has_not_begun_sends_nothing() -> None:
    async with transport_pair() as (transport, peer):
        with trio.CancelScope() as scope:
            scope.cancel()
            await transport.write(b"never")
        await transport.write(b"after")
        assert await read_exactly(peer, 5) == b"after"


async def test_a_write_cancelled_partway_breaks_the_transport(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Part of the bytes are on the wire: whatever came next would land inside
    # what the peer was promised, so nothing more may be written.
    async with transport_pair(buffer=4096) as (transport, _peer):
        with trio.move_on_after(0.5) as scope:
            await transport.write(b"P" * 1_000_000)  # the peer reads nothing
        assert scope.cancelled_caught
        assert transport.broken
        with pytest.raises(ClientDisconnected):
            await transport.write(b"next")


async def test_a_file_send_cancelled_partway_breaks_the_transport(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    path = tmp_path / "data"
    path.write_bytes(b"f" * 4_000_000)
    async with transport_pair(buffer=4096) as (transport, _peer):
        fd = os.open(path, os.O_RDONLY)
        try:
            with trio.move_on_after(0.5) as scope:
                await transport.send_file(fd, 0, 4_000_000)  # the peer reads nothing
        finally:
            os.close(fd)
        assert scope.cancelled_caught
        assert transport.broken
        with pytest.raises(ClientDisconnected):
            await transport.write(b"next")


async def test_send_file_through_a_stream_without_sendfile(tmp_path: Path) -> None:
    # An in-memory stream (like TLS) has no file descriptor: the file is read and
    # written in chunks.
    path = tmp_path / "data"
    content = os.urandom(600_000)
    path.write_bytes(content)
    client, server = trio.testing.memory_stream_pair()
    transport = Transport(server, 30.0)
    fd = os.open(path, os.O_RDONLY)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(transport.send_file, fd, 100, len(content))
            received = await read_exactly(client, len(content) - 100)
    finally:
        os.close(fd)
    assert received == content[100:]


async def test_send_file_on_a_socket_returns_fewer_bytes_when_the_file_is_short(
    tmp_path: Path,
) -> None:
    path = tmp_path / "data"
    path.write_bytes(b"z" * 1000)
    async with transport_pair() as (transport, peer):
        fd = os.open(path, os.O_RDONLY)
        try:
            assert await transport.send_file(fd, 0, 5000) == 1000
        finally:
            os.close(fd)
        assert await read_exactly(peer, 1000) == b"z" * 1000


# -- closing ------------------------------------------------------------------------


async def test_linger_half_closes_and_waits_for_the_peer_to_close() -> None:
    async with transport_pair() as (transport, peer):
        await transport.write(b"goodbye")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(transport.linger)
            assert await read_exactly(peer, 7) == b"goodbye"
            assert await peer.receive_some() == b""  # our half-close
            await peer.send_all(b"ignored")  # discarded, not buffered
            await peer.send_eof()
        assert transport.buffered == 0


async def test_linger_gives_up_after_its_timeout(autojump_clock: Any) -> None:
    async with transport_pair() as (transport, _peer):
        start = trio.current_time()
        await transport.linger()  # the peer never closes
        assert trio.current_time() - start == pytest.approx(2.0)
