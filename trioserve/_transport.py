"""A connection's byte stream, as every connection kind uses it.

Theory of operation
-------------------

:class:`Transport` wraps the stream of one accepted connection (a plain socket,
TLS, or an in-memory stream in tests) and gives the connection kinds that speak
on it — HTTP/1.1, and after an upgrade another protocol — the same four things:

Reading: :meth:`Transport.read_loop`
    The body of the connection's reader task and the only code that reads from
    the stream. What arrives is buffered until the protocol takes it
    (:meth:`~Transport.take_data`); while ``READ_HIGH_WATER`` bytes wait, the
    reader stops reading, so a client can never make the server buffer more
    than that plus one read (read flow control). Because it is always reading
    otherwise, it is the first to see the peer close or reset the connection,
    which it reports through the callback it was given.

Writing: :meth:`Transport.write`, :meth:`Transport.send_file`
    Writes happen in the task that has something to say. Each has the write
    deadline (``write_timeout``): a peer that stops reading is dropped, never
    buffered for. A write may be *shielded*, so that a cancellation can never
    leave half of it on the wire (a response head). Writers are served in
    turn, first come first served: a write that must wait for the peer holds
    the turn until it is done, and writes from other tasks queue behind it
    (a ``trio.StrictFIFOLock``, made only when a write first has to wait).

Plain sockets: :class:`SocketFdStream`
    A trio stream that reads and writes the socket's file descriptor itself.
    trio's ``SocketStream`` makes every call a scheduling point; this stream
    also offers non-blocking sends (``send_some_nowait``, ``send_file_nowait``)
    that complete without one when the kernel takes the bytes at once, which is
    nearly always. The transport writes through those first and opens a cancel
    scope (with the deadline, shielded if asked) only for what has to wait:
    entering and leaving a scope per write is measurably slower
    (``docs/performance.md``). Other streams are written with ``send_all``
    inside the scope. :class:`SocketFdStream` passes trio's stream conformance
    checks (``tests/test_transport.py``).

Closing: :meth:`Transport.linger`, :meth:`Transport.abort`, :meth:`Transport.aclose`
    A connection that ends after a response first half-closes and keeps reading
    (and discarding) for up to ``LINGER_TIMEOUT`` seconds: closing a socket with
    unread bytes in its receive buffer sends a RST, which can destroy the
    response the client has not read yet. When the reader task is no longer
    running (the server cancelled the connection), the lingering close reads
    itself. :meth:`~Transport.abort` closes the stream under whatever still
    uses it: a write blocked on a peer that does not read, even a shielded one,
    wakes at once. The server aborts the connections it cancelled once their
    requests have had their chance at an answer.
"""

from __future__ import annotations

import errno
import math
import operator
import os
from collections.abc import Callable
from typing import final

import trio

from ._errors import ClientDisconnected

__all__ = [
    "FILE_CHUNK",
    "LINGER_TIMEOUT",
    "READ_CHUNK",
    "READ_HIGH_WATER",
    "SocketFdStream",
    "Transport",
]

#: Bytes one read may return: enough for a request with a 64 KiB body to arrive in
#: one read (see ``docs/performance.md``). The buffer bound is
#: ``READ_HIGH_WATER + READ_CHUNK``.
READ_CHUNK = 256 * 1024
#: The reader pauses while this many bytes wait to be parsed (read flow control).
READ_HIGH_WATER = 64 * 1024
#: Seconds to keep reading (and discarding) after the last response before closing.
LINGER_TIMEOUT = 2.0
#: Bytes read per step when a file must be sent through a stream (TLS) rather than
#: with ``sendfile``.
FILE_CHUNK = 256 * 1024

#: What ``receive_some()`` without ``max_bytes`` reads at most.
_DEFAULT_RECEIVE_SIZE = 64 * 1024
#: sendfile() errors that concern the file, not the socket.
_FILE_ERRNOS = frozenset({errno.EBADF, errno.EINVAL, errno.EIO, errno.EOVERFLOW, errno.ESPIPE})


@final
class SocketFdStream(trio.abc.HalfCloseableStream):
    """A connected socket, read and written through its file descriptor.

    The trio stream interface, plus non-blocking sends: :meth:`send_some_nowait`
    and :meth:`send_file_nowait` never wait and never yield, so a caller can
    find out whether it needs to wait (and set up a deadline) at all. As trio's
    streams do, it raises :class:`trio.BusyResourceError` when two tasks send (or
    two receive) at once.

    Args:
      socket: a connected stream socket; the stream owns it from now on.
    """

    __slots__ = ("_closed", "_eof_sent", "_fd", "_receiving", "_sending", "socket")

    def __init__(self, socket: trio.socket.SocketType) -> None:
        self.socket = socket
        self._fd = socket.fileno()
        self._sending = False
        self._receiving = False
        self._closed = False
        self._eof_sent = False

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Wait until the socket is readable, then read up to ``max_bytes``."""
        if max_bytes is None:
            max_bytes = _DEFAULT_RECEIVE_SIZE
        elif max_bytes.__class__ is not int or max_bytes < 1:
            max_bytes = operator.index(max_bytes)
            if max_bytes < 1:
                raise ValueError("max_bytes must be >= 1")
        if self._receiving:
            raise trio.BusyResourceError("another task is receiving on this stream")
        self._receiving = True
        try:
            while True:
                if self._closed:
                    raise trio.ClosedResourceError("the stream was closed")
                await trio.lowlevel.wait_readable(self._fd)
                try:
                    return os.read(self._fd, max_bytes)
                except BlockingIOError:
                    continue
                except OSError as exc:
                    raise trio.BrokenResourceError(f"socket connection broken: {exc}") from exc
        finally:
            self._receiving = False

    def send_some_nowait(self, data: bytes | bytearray | memoryview) -> int:
        """Send what the kernel takes at once, without waiting or yielding.

        Returns:
          How many bytes were sent, at least one.

        Raises:
          trio.WouldBlock: the kernel cannot take a byte now.
          trio.BrokenResourceError: the peer has gone.
          trio.ClosedResourceError: the stream was closed.
          trio.BusyResourceError: another task is sending.
        """
        if self._sending or self._closed or self._eof_sent:
            self._check_can_send(data=True)
        try:
            return os.write(self._fd, data)
        except BlockingIOError:
            raise trio.WouldBlock from None
        except OSError as exc:
            raise trio.BrokenResourceError(f"socket connection broken: {exc}") from exc

    def send_file_nowait(self, file_fd: int, offset: int, count: int) -> int:
        """``sendfile()`` up to ``count`` bytes of the file ``file_fd`` from
        ``offset``, as far as the kernel takes them at once.

        Returns:
          How many bytes were sent; ``0`` means the file ended before ``offset``.

        Raises:
          trio.WouldBlock: the socket cannot take a byte now.
          trio.BrokenResourceError: the peer has gone.
          OSError: the file cannot be sent (not a regular file, I/O error...).
        """
        self._check_can_send(data=True)
        try:
            return os.sendfile(self._fd, file_fd, offset, count)
        except BlockingIOError:
            raise trio.WouldBlock from None
        except OSError as exc:
            if exc.errno in _FILE_ERRNOS:
                raise  # the file's fault, not the peer's
            raise trio.BrokenResourceError(f"socket connection broken: {exc}") from exc

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Send all of ``data``, waiting for the peer to read as needed."""
        self._check_can_send(data=True)
        self._sending = True
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
            with memoryview(data) as view:
                sent = 0
                waited = False
                while sent < len(view):
                    if self._closed:
                        raise trio.ClosedResourceError("the stream was closed")
                    try:
                        sent += os.write(self._fd, view[sent:])
                        continue
                    except BlockingIOError:
                        pass
                    except OSError as exc:
                        raise trio.BrokenResourceError(f"socket connection broken: {exc}") from exc
                    await trio.lowlevel.wait_writable(self._fd)
                    waited = True
            if not waited:
                await trio.lowlevel.cancel_shielded_checkpoint()
        finally:
            self._sending = False

    async def wait_send_all_might_not_block(self) -> None:
        """Wait until the socket can take bytes."""
        self._check_can_send()
        self._sending = True
        try:
            await trio.lowlevel.wait_writable(self._fd)
        finally:
            self._sending = False

    async def send_eof(self) -> None:
        """Shut down the sending side: the peer reads EOF after what was sent."""
        self._check_can_send()
        self._sending = True
        try:
            await trio.lowlevel.checkpoint()
            if self._closed:
                raise trio.ClosedResourceError("the stream was closed")
            if self._eof_sent:
                return
            try:
                self.socket.shutdown(trio.socket.SHUT_WR)
                self._eof_sent = True
            except OSError as exc:
                raise trio.BrokenResourceError(f"socket connection broken: {exc}") from exc
        finally:
            self._sending = False

    async def aclose(self) -> None:
        """Close the socket; tasks waiting on it get :class:`trio.ClosedResourceError`."""
        self._closed = True
        self.socket.close()
        await trio.lowlevel.checkpoint()

    def _check_can_send(self, *, data: bool = False) -> None:
        if data and self._eof_sent:
            raise trio.ClosedResourceError("can't send data after sending EOF")
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this stream")
        if self._closed:
            raise trio.ClosedResourceError("the stream was closed")


class Transport:
    """One connection's stream, shared in turn by the protocols that speak on it.

    Args:
      stream: the connected stream. A plain socket (:class:`trio.SocketStream`)
          is taken over and used through :class:`SocketFdStream`.
      write_timeout: seconds a write may wait for the peer to read.
      received: bytes of the connection already read from the stream (read
          ahead of a PROXY header that was not there), the first bytes the
          protocol will take.

    Attributes:
      buffered: bytes received that nobody has taken yet.
      peer_closed: the peer closed or reset the connection (the reader saw it).
      broken: a write failed or timed out; nothing more can be sent.

    The attributes are read-only for everyone but the transport.
    """

    __slots__ = (
        "_data_lot",
        "_direct",
        "_discarding",
        "_pending",
        "_reader_gone",
        "_room_lot",
        "_stream",
        "_turn",
        "_write_timeout",
        "broken",
        "buffered",
        "peer_closed",
    )

    def __init__(
        self, stream: trio.abc.Stream, write_timeout: float, received: bytes = b""
    ) -> None:
        if isinstance(stream, trio.SocketStream):
            stream = SocketFdStream(stream.socket)
        self._stream = stream
        self._direct = stream if isinstance(stream, SocketFdStream) else None
        self._write_timeout = write_timeout
        self._pending: list[bytes | bytearray] = [received] if received else []
        self.buffered = len(received)
        self._discarding = False
        # The reader task ended without the peer's close (it was cancelled): a
        # lingering close has to read by itself.
        self._reader_gone = False
        self._data_lot = trio.lowlevel.ParkingLot()
        # Made when first needed: most connections never wait for room to read or
        # for another task's write, and an idle connection's memory counts.
        self._room_lot: trio.lowlevel.ParkingLot | None = None
        self._turn: trio.StrictFIFOLock | None = None
        self.peer_closed = False
        self.broken = False

    # -- reading -------------------------------------------------------------------

    async def read_loop(self, on_peer_closed: Callable[[], None]) -> None:
        """Read until the peer closes, buffering what arrives; then set
        :attr:`peer_closed`, wake the waiters and call ``on_peer_closed()``.

        This is the reader task's body. It may be cancelled and started again (the
        keep-alive deadline does so): nothing read is lost in between.
        """
        receive_some = self._stream.receive_some
        self._reader_gone = False
        try:
            while True:
                while self.buffered >= READ_HIGH_WATER and not self._discarding:
                    if self._room_lot is None:
                        self._room_lot = trio.lowlevel.ParkingLot()
                    await self._room_lot.park()
                data: bytes | bytearray
                try:
                    data = await receive_some(READ_CHUNK)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    data = b""
                if not data:
                    break
                if not self._discarding:
                    self._pending.append(data)
                    self.buffered += len(data)
                    self._data_lot.unpark_all()
                # Not kept while the reader waits: it may be a 256 KiB read, and an
                # idle connection would hold it until its next request.
                del data
        finally:
            self._reader_gone = True
            if self._discarding:
                # A lingering close waiting for this reader reads on by itself.
                self._data_lot.unpark_all()
        self.peer_closed = True
        self._data_lot.unpark_all()
        on_peer_closed()

    @property
    def reading_paused(self) -> bool:
        """The reader has stopped: ``READ_HIGH_WATER`` bytes wait to be taken, so
        what the peer sends now stays in the kernel, unseen."""
        return self.buffered >= READ_HIGH_WATER and not self._discarding

    def take_data(self) -> bytes:
        """Take everything received so far (``b""`` if nothing); the reader may
        read again if it had stopped for room."""
        pending = self._pending
        if not pending:
            return b""
        if len(pending) == 1:
            data = pending[0]
            if data.__class__ is not bytes:
                data = bytes(data)
        else:
            data = b"".join(pending)
        pending.clear()
        self.buffered = 0
        if self._room_lot is not None:
            self._room_lot.unpark_all()
        return data

    async def wait_received(self) -> None:
        """Wait until the reader receives more (bytes, or the peer's close), or
        until :meth:`wake` is called. Callers look at what they wait for first:
        this returns only after something happened."""
        await self._data_lot.park()

    def wake(self) -> None:
        """Wake every task in :meth:`wait_received`, so that it looks again at
        whatever it is waiting for besides the data (a shutdown, a deadline, the
        work of another task)."""
        self._data_lot.unpark_all()

    def discard_input(self) -> None:
        """Drop what was received and whatever arrives from now on."""
        self._discarding = True
        self._pending.clear()
        self.buffered = 0
        if self._room_lot is not None:
            self._room_lot.unpark_all()

    # -- writing -------------------------------------------------------------------

    async def write(
        self,
        data: bytes,
        *,
        shield: bool = False,
        more: bool = False,
        deadline: float = math.inf,
    ) -> None:
        """Send ``data`` within the write deadline (or ``deadline``, if sooner).

        A write cancelled before it began (at its start, or while it waited for
        its turn) has sent nothing. One cancelled after it began leaves the
        stream :attr:`broken`: the peer may have part of it, and nothing written
        after it could be framed.

        Args:
          shield: the write cannot be cancelled: it goes out whole (unless the
              peer is gone or the deadline passes).
          more: more writes follow at once (a streamed body): yield to other tasks
              afterwards, so that a fast producer cannot starve them. (After the
              last write, the writer parks anyway.)
          deadline: a deadline (:func:`trio.current_time`) sooner than the
              write deadline, e.g. for an answer the server gives while it
              stops; it bounds the wait for the turn too. (A shielded write is
              beyond the reach of the caller's own deadlines.)

        Raises:
          ClientDisconnected: the peer is gone, or did not read in time.
        """
        if self.broken:
            raise ClientDisconnected("The client has disconnected")
        if not shield:
            await trio.lowlevel.checkpoint_if_cancelled()
        direct = self._direct
        sent = 0
        if direct is not None and (self._turn is None or not self._turn.locked()):
            try:
                sent = direct.send_some_nowait(data)
            except trio.WouldBlock:
                sent = 0
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                self.broken = True
                raise ClientDisconnected("The client has disconnected") from exc
            if sent == len(data):
                if more:
                    await trio.lowlevel.cancel_shielded_checkpoint()
                return
            data = memoryview(data)[sent:]  # type: ignore[assignment]
        try:
            turn = await self._take_turn(shield=shield, deadline=deadline)
        except trio.Cancelled:
            if sent:
                self.broken = True  # the first part went out; the rest never will
            raise
        if turn is None:
            if sent:
                self.broken = True
            raise ClientDisconnected("The client did not read the response in time")
        try:
            with trio.CancelScope(
                shield=shield, deadline=min(trio.current_time() + self._write_timeout, deadline)
            ) as scope:
                try:
                    await self._stream.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                    self.broken = True
                    raise ClientDisconnected("The client has disconnected") from exc
                except trio.Cancelled:
                    self.broken = True  # how much went out is unknown
                    raise
        finally:
            turn.release()
        if scope.cancelled_caught:
            self.broken = True
            raise ClientDisconnected("The client did not read the response in time")

    def abandon(self) -> None:
        """Give the stream up for writing: what is on the wire can no longer be
        completed, so every later write raises :class:`ClientDisconnected`."""
        self.broken = True

    async def send_file(self, fd: int, offset: int, count: int) -> int:
        """Send ``count`` bytes of the file ``fd`` from ``offset``; return how many
        were sent (fewer only if the file ended first).

        On a plain socket the kernel copies them (``sendfile``), and each wait for
        the peer to read has the write deadline; through other streams (TLS) the
        file is read in chunks and written.

        Raises:
          ClientDisconnected: the peer is gone, or did not read in time.
          OSError: the file cannot be read or sent.
        """
        direct = self._direct
        if direct is None:
            return await self._send_file_by_reading(fd, offset, count)
        if self.broken:
            raise ClientDisconnected("The client has disconnected")
        await trio.lowlevel.checkpoint_if_cancelled()
        turn = await self._take_turn()
        assert turn is not None  # no deadline: only a cancellation ends the wait
        sent = 0
        try:
            while sent < count:
                try:
                    step = direct.send_file_nowait(fd, offset + sent, count - sent)
                except trio.WouldBlock:
                    with trio.move_on_after(self._write_timeout) as scope:
                        await direct.wait_send_all_might_not_block()
                    if scope.cancelled_caught:
                        self.broken = True
                        raise ClientDisconnected(
                            "The client did not read the response in time"
                        ) from None
                    continue
                except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                    self.broken = True
                    raise ClientDisconnected("The client has disconnected") from exc
                if not step:
                    break
                sent += step
        except trio.Cancelled:
            if sent:
                self.broken = True  # part of the file went out; the rest never will
            raise
        finally:
            turn.release()
        return sent

    async def _send_file_by_reading(self, fd: int, offset: int, count: int) -> int:
        sent = 0
        while sent < count:
            chunk = await trio.to_thread.run_sync(
                os.pread, fd, min(FILE_CHUNK, count - sent), offset + sent
            )
            if not chunk:
                break
            await self.write(chunk, more=True)
            sent += len(chunk)
        return sent

    async def _take_turn(
        self, *, shield: bool = False, deadline: float = math.inf
    ) -> trio.StrictFIFOLock | None:
        """Wait for this task's turn to write (``shield``: without being
        cancelled; the write before it has its deadline) until ``deadline``;
        the caller releases it. ``None``: the deadline passed first."""
        turn = self._turn
        if turn is None:
            turn = self._turn = trio.StrictFIFOLock()
        try:
            turn.acquire_nowait()
        except trio.WouldBlock:
            with trio.CancelScope(shield=shield, deadline=deadline):
                await turn.acquire()
                return turn
            return None
        return turn

    # -- closing -------------------------------------------------------------------

    async def linger(self) -> None:
        """Half-close and read (discarding) until the peer closes too, for at most
        ``LINGER_TIMEOUT`` seconds (or the caller's deadline, if sooner), so that
        our last bytes are not lost to a RST. The reader task does the reading
        while it runs; once it has ended (cancelled with the connection), this
        reads itself.

        Only possible on a stream that can half-close; on others it returns at once.
        """
        if self.peer_closed or self.broken:
            return
        self.discard_input()
        stream = self._stream
        if not isinstance(stream, trio.abc.HalfCloseableStream):
            # Without a half-close the peer cannot see the end before we close.
            return
        with trio.move_on_after(LINGER_TIMEOUT):
            try:
                await stream.send_eof()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            while not self.peer_closed:
                if self._reader_gone:
                    await self._discard_one_read()
                else:
                    await self._data_lot.park()

    async def _discard_one_read(self) -> None:
        try:
            data = await self._stream.receive_some(READ_CHUNK)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            data = b""
        if not data:
            self.peer_closed = True

    async def abort(self) -> None:
        """Close the stream at once, under whatever still uses it: a write
        waiting for the peer, even a shielded one, ends with
        :class:`ClientDisconnected`, and a read sees the end."""
        self.broken = True
        await trio.aclose_forcefully(self._stream)

    async def aclose(self) -> None:
        """Close the stream at once, without a goodbye."""
        await trio.aclose_forcefully(self._stream)
