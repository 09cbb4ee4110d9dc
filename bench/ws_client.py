#!/usr/bin/env python3
"""A websocket load client for the benchmark (standard library only, one thread).

    python bench/ws_client.py --port 8000                   # echo load: 64 connections
    python bench/ws_client.py --port 8000 --connections 16 --warmup 1 --duration 5
    python bench/ws_client.py --port 8000 --idle 1000       # open 1000, hold them idle
    python bench/ws_client.py --port 8000 --check 1         # one connection, checked echoes

Every connection starts with an RFC 6455 handshake (``Sec-WebSocket-Version: 13``, a
random key, no extensions offered: no permessage-deflate); the answer must be
``101`` with the right ``Sec-WebSocket-Accept`` and no extension.

Echo load (the default): each connection repeatedly writes a batch of 16 masked text
frames with 32-byte payloads in one ``send`` and waits for the 16 echoes, then sends
the batch again. The batch (masked bytes) and the echo it must get back (16 unmasked
frames, ``0x81 0x20`` + payload each) are built once per connection, so a reply that
is exactly the expected bytes is checked with one comparison per ``recv``; anything
else (a ping in between, a close, a wrong payload) goes through a frame-by-frame
parser. After ``--warmup`` seconds the measured window of ``--duration`` seconds
starts; no new batch is sent after it, the ones in flight are awaited, and every
connection is closed with a close handshake (code 1000).

Output, one JSON object per line on stdout: ``{"event": "measure_start"}`` and
``{"event": "measure_end"}`` when the window opens and closes (the driver samples the
server's CPU time there), then ``{"event": "result", ...}``: ``messages_per_s``
(echoes received in the window / its length), ``messages``, ``batches`` (completed in
the window), ``batch_rtt_p50_ms`` / ``batch_rtt_p99_ms`` / ``batch_rtt_max_ms``
(write of the batch to its 16th echo), ``client_cpu_util`` (this process's CPU time
/ window: near 1.0 means the client, not the server, was the limit), ``errors``.

``--idle N``: open N connections (handshakes in concurrent batches of
``--handshake-batch``), print ``{"event": "ready", ...}``, then hold them, answering
server pings with pongs, until stdin reaches EOF or SIGTERM/SIGINT arrives; then
close them all with a close handshake and print the result line.

``--check N``: N connections one after another, each echoing a text, a short binary,
a 200-byte text and a 100,000-byte binary message (the three payload length
encodings), each compared with what was sent, then a close handshake. Exit status 0
if all were right.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import math
import os
import select
import selectors
import signal
import socket
import sys
import time
from types import FrameType
from typing import Any

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
BATCH = 16  # frames per write
PAYLOAD = 32  # bytes per text frame
ECHO_FRAME = 2 + PAYLOAD  # an unmasked server frame: 0x81, length, payload
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
CLOSE_NORMAL = (1000).to_bytes(2, "big")
ERROR_KINDS = ("handshake", "closed", "protocol", "mismatch", "timeout", "close")
perf_counter = time.perf_counter


class WSError(Exception):
    """A failure on one connection; ``kind`` is its key in the ``errors`` counts."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class _Stop(Exception):
    """Raised by the SIGTERM/SIGINT handler in idle mode."""


# ----------------------------------------------------------------------------- frames


def mask_payload(payload: bytes, mask: bytes) -> bytes:
    n = len(payload)
    if not n:
        return b""
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")


def client_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """One masked client frame, with a fresh random masking key."""
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
    mask = os.urandom(4)
    return head + mask + mask_payload(payload, mask)


def parse_frame(buf: bytes, pos: int) -> tuple[bool, int, bytes, int] | None:
    """The server frame at ``buf[pos:]`` as (fin, opcode, payload, end), or None if it
    is not complete yet. A masked frame or one with RSV bits is a protocol error (no
    extension was negotiated)."""
    avail = len(buf) - pos
    if avail < 2:
        return None
    b0, b1 = buf[pos], buf[pos + 1]
    if b1 & 0x80:
        raise WSError("protocol", "masked frame from the server")
    if b0 & 0x70:
        raise WSError("protocol", f"RSV bits set in {b0:#04x}")
    n, head = b1 & 0x7F, 2
    if n == 126:
        if avail < 4:
            return None
        n, head = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
    elif n == 127:
        if avail < 10:
            return None
        n, head = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
    end = pos + head + n
    if len(buf) < end:
        return None
    return bool(b0 & 0x80), b0 & 0x0F, buf[pos + head : end], end


# -------------------------------------------------------------------------- connections


class Conn:
    """One websocket connection and its pre-built batch."""

    __slots__ = ("batch", "buf", "expected", "got", "index", "out", "payloads", "sent_at", "sock")

    def __init__(self, sock: socket.socket, index: int) -> None:
        self.sock = sock
        self.index = index
        self.buf = b""  # received bytes not yet consumed (a partial frame)
        self.got = 0  # echoes of the current batch received
        self.sent_at = 0.0
        self.out = b""  # the part of a batch the socket did not take yet
        self.payloads: list[bytes] = []
        self.batch = b""
        self.expected = b""

    def build_batch(self) -> None:
        self.payloads = [
            f"conn {self.index:05d} msg {i:02d} ".encode().ljust(PAYLOAD, b".")
            for i in range(BATCH)
        ]
        assert all(len(p) == PAYLOAD for p in self.payloads)
        self.batch = b"".join(client_frame(OP_TEXT, p) for p in self.payloads)
        self.expected = b"".join(bytes([0x80 | OP_TEXT, PAYLOAD]) + p for p in self.payloads)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def accept_value(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


def check_handshake(head: bytes, key: bytes) -> None:
    lines = head.decode("latin-1").split("\r\n")
    if not lines[0].startswith("HTTP/1.1 101"):
        raise WSError("handshake", f"status line {lines[0]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("upgrade", "").lower() != "websocket":
        raise WSError("handshake", f"upgrade: {headers.get('upgrade')!r}")
    if "upgrade" not in [t.strip() for t in headers.get("connection", "").lower().split(",")]:
        raise WSError("handshake", f"connection: {headers.get('connection')!r}")
    if headers.get("sec-websocket-accept", "").encode() != accept_value(key):
        raise WSError("handshake", "wrong sec-websocket-accept")
    if "sec-websocket-extensions" in headers:
        raise WSError("handshake", f"extension not offered: {headers['sec-websocket-extensions']}")


class Counts:
    """Error counts by kind, and the first few messages."""

    def __init__(self) -> None:
        self.errors = dict.fromkeys(ERROR_KINDS, 0)
        self.samples: list[str] = []

    def add(self, kind: str, message: str) -> None:
        self.errors[kind] += 1
        if len(self.samples) < 5:
            self.samples.append(f"{kind}: {message}")


def open_connections(
    host: str, port: int, path: str, count: int, batch: int, timeout: float, counts: Counts
) -> list[Conn]:
    """``count`` handshaken connections, opened ``batch`` at a time (each batch's
    requests all written before any answer is read). Failures are counted, not
    raised; the connections returned are non-blocking."""
    conns: list[Conn] = []
    for first in range(0, count, batch):
        pending: dict[socket.socket, tuple[Conn, bytes]] = {}
        sel = selectors.DefaultSelector()
        for index in range(first, min(count, first + batch)):
            key = base64.b64encode(os.urandom(16))
            request = (
                f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key.decode()}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
            try:
                sock = socket.create_connection((host, port), timeout=timeout)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.sendall(request)
            except OSError as exc:
                counts.add("handshake", f"connect/send: {exc}")
                continue
            sock.setblocking(False)
            pending[sock] = (Conn(sock, index), key)
            sel.register(sock, selectors.EVENT_READ, sock)
        deadline = perf_counter() + timeout
        while pending and perf_counter() < deadline:
            for sel_key, _ in sel.select(deadline - perf_counter()):
                sock = sel_key.data
                conn, key = pending[sock]
                try:
                    data = sock.recv(65536)
                except BlockingIOError:
                    continue
                except OSError as exc:
                    data, error = b"", str(exc)
                else:
                    error = "EOF"
                conn.buf += data
                done, failure = False, None
                if not data:
                    done, failure = True, f"no answer ({error})"
                elif b"\r\n\r\n" in conn.buf:
                    head, conn.buf = conn.buf.split(b"\r\n\r\n", 1)
                    done = True
                    try:
                        check_handshake(head, key)
                    except WSError as exc:
                        failure = str(exc)
                if done:
                    sel.unregister(sock)
                    del pending[sock]
                    if failure is None:
                        conns.append(conn)
                    else:
                        counts.add("handshake", failure)
                        conn.close()
        for conn, _ in pending.values():
            counts.add("handshake", f"no answer in {timeout} s")
            conn.close()
        sel.close()
    return conns


def close_all(conns: list[Conn], timeout: float, counts: Counts) -> int:
    """Close handshake on every connection: send close 1000, read until the server's
    close frame (or EOF), bounded by ``timeout``. Returns how many got a close frame;
    the others are counted as ``close`` errors."""
    sel = selectors.DefaultSelector()
    closing: dict[socket.socket, Conn] = {}
    frame = client_frame(OP_CLOSE, CLOSE_NORMAL)
    for conn in conns:
        try:
            conn.sock.setblocking(False)
            conn.sock.send(frame)  # 8 bytes to an idle socket: taken whole
        except OSError as exc:
            counts.add("close", f"sending close: {exc}")
            conn.close()
            continue
        closing[conn.sock] = conn
        sel.register(conn.sock, selectors.EVENT_READ, conn)
    clean = 0
    deadline = perf_counter() + timeout
    while closing and perf_counter() < deadline:
        for sel_key, _ in sel.select(deadline - perf_counter()):
            conn = sel_key.data
            sock = conn.sock
            outcome: str | None = None
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError as exc:
                data, outcome = b"", f"recv: {exc}"
            if not data:
                outcome = outcome or "EOF before the server's close frame"
            else:
                conn.buf += data
                pos = 0
                try:
                    while (frame_ := parse_frame(conn.buf, pos)) is not None:
                        _, opcode, _, pos = frame_
                        if opcode == OP_CLOSE:
                            outcome = "clean"
                            break
                    conn.buf = conn.buf[pos:]
                except WSError as exc:
                    outcome = str(exc)
            if outcome is not None:
                if outcome == "clean":
                    clean += 1
                else:
                    counts.add("close", outcome)
                sel.unregister(sock)
                del closing[sock]
                conn.close()
    for conn in closing.values():
        counts.add("close", f"no close frame in {timeout} s")
        conn.close()
    sel.close()
    return clean


# ---------------------------------------------------------------------------- echo load


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def percentile(ordered: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an ascending list."""
    if not ordered:
        return None
    rank = max(1, math.ceil(round(q * len(ordered), 9)))
    return ordered[min(len(ordered), rank) - 1]


def run_echo(conns: list[Conn], args: argparse.Namespace, counts: Counts) -> dict[str, Any]:
    # epoll itself rather than selectors: the loop wakes up once per few frames, and
    # selectors' wrapper would be a good part of the client's CPU time.
    poller = select.epoll()
    READ, WRITE = select.EPOLLIN, select.EPOLLOUT
    live: dict[int, Conn] = {}  # by file descriptor
    in_flight: set[Conn] = set()  # connections waiting for their batch's echoes

    def fail(conn: Conn, kind: str, message: str) -> None:
        counts.add(kind, message)
        in_flight.discard(conn)
        fd = conn.sock.fileno()
        if live.pop(fd, None) is not None:
            poller.unregister(fd)
        conn.close()

    def send_batch(conn: Conn) -> None:
        conn.sent_at = perf_counter()
        try:
            n = conn.sock.send(conn.batch)
        except BlockingIOError:
            n = 0
        except OSError as exc:
            fail(conn, "closed", f"send: {exc}")
            return
        if n < len(conn.batch):
            conn.out = conn.batch[n:]
            poller.modify(conn.sock.fileno(), READ | WRITE)

    for c in conns:
        c.build_batch()
        poller.register(c.sock.fileno(), READ)
        live[c.sock.fileno()] = c
        in_flight.add(c)
    for c in list(live.values()):
        send_batch(c)

    messages = reads = 0
    rtts: list[float] = []
    phase = 0  # 0 warm-up, 1 measured, 2 draining
    now = perf_counter()
    start_at = now + args.warmup
    end_at = start_at + args.duration
    drain_at = end_at + args.drain_timeout
    t_start = t_end = now
    cpu_start = cpu_end = 0.0
    while in_flight:
        deadline = start_at if phase == 0 else end_at if phase == 1 else drain_at
        events = poller.poll(max(0.0, deadline - now))
        now = perf_counter()
        if phase == 0 and now >= start_at:
            phase, t_start = 1, now
            times = os.times()
            cpu_start = times.user + times.system
            emit({"event": "measure_start"})
        if phase == 1 and now >= end_at:
            phase, t_end = 2, now
            times = os.times()
            cpu_end = times.user + times.system
            emit({"event": "measure_end"})
        if phase == 2 and now >= drain_at:
            break
        for fd, mask in events:
            conn = live.get(fd)
            if conn is None:
                continue
            if mask & WRITE:
                try:
                    n = conn.sock.send(conn.out)
                except BlockingIOError:
                    n = 0
                except OSError as exc:
                    fail(conn, "closed", f"send: {exc}")
                    continue
                conn.out = conn.out[n:]
                if not conn.out:
                    poller.modify(fd, READ)
            if not mask & READ:
                continue
            try:
                data = conn.sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError as exc:
                fail(conn, "closed", f"recv: {exc}")
                continue
            if not data:
                fail(conn, "closed", "EOF from the server")
                continue
            if conn.buf:
                data = conn.buf + data
            n = len(data)
            offset = conn.got * ECHO_FRAME
            if data == conn.expected[offset : offset + n]:
                # The common case: exactly the next bytes of the expected echo.
                frames = n // ECHO_FRAME
                conn.got += frames
                conn.buf = data[frames * ECHO_FRAME :]
            else:
                try:
                    frames = _parse_echo(conn, data)
                except WSError as exc:
                    fail(conn, exc.kind, str(exc))
                    continue
            if phase == 1:
                messages += frames
                reads += 1
            if conn.got == BATCH:
                if phase == 1:
                    rtts.append(perf_counter() - conn.sent_at)
                conn.got = 0
                if phase == 2:
                    in_flight.discard(conn)
                else:
                    send_batch(conn)
    if phase < 2:  # every connection failed before the window closed
        t_end = perf_counter()
        times = os.times()
        cpu_end = times.user + times.system
        if phase == 0:
            t_start, cpu_start = t_end, cpu_end
    for c in in_flight:
        counts.add("timeout", f"batch unanswered {args.drain_timeout} s after the window")
        del live[c.sock.fileno()]
        c.close()
    poller.close()
    seconds = t_end - t_start
    rtts.sort()
    result: dict[str, Any] = {
        "messages_per_s": messages / seconds if seconds > 0 else 0.0,
        "messages": messages,
        "duration_s": seconds,
        "batches": len(rtts),
        "batch_rtt_p50_ms": _ms(percentile(rtts, 0.50)),
        "batch_rtt_p99_ms": _ms(percentile(rtts, 0.99)),
        "batch_rtt_max_ms": _ms(rtts[-1] if rtts else None),
        "client_cpu_util": (cpu_end - cpu_start) / seconds if seconds > 0 else None,
        "reads_per_batch": reads / len(rtts) if rtts else None,
    }
    result["closed_cleanly"] = close_all(list(live.values()), args.close_timeout, counts)
    return result


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def _parse_echo(conn: Conn, data: bytes) -> int:
    """Frame by frame: the slow path for anything but the exact expected bytes.
    Returns how many echoes it found; answers pings; keeps a partial frame."""
    pos = found = 0
    while (frame := parse_frame(data, pos)) is not None:
        fin, opcode, payload, pos = frame
        if opcode == OP_TEXT and fin:
            if conn.got >= BATCH or payload != conn.payloads[conn.got]:
                raise WSError("mismatch", f"echo {conn.got}: {payload[:40]!r}")
            conn.got += 1
            found += 1
        elif opcode == OP_PING:
            conn.sock.sendall(client_frame(OP_PONG, payload))  # tiny: fits the buffer
        elif opcode == OP_PONG:
            pass
        elif opcode == OP_CLOSE:
            raise WSError("closed", f"close frame from the server: {payload[:2].hex()}")
        else:
            raise WSError("protocol", f"unexpected frame: opcode {opcode}, fin {fin}")
    conn.buf = data[pos:]
    return found


# ----------------------------------------------------------------------------- idle mode


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop


def run_idle(conns: list[Conn], args: argparse.Namespace, counts: Counts) -> dict[str, Any]:
    """Hold the connections until stdin is at EOF or a signal; answer pings."""
    sel = selectors.DefaultSelector()
    live = {conn.sock: conn for conn in conns}
    for conn in conns:
        sel.register(conn.sock, selectors.EVENT_READ, conn)
    try:
        stdin = sys.stdin.fileno()
        sel.register(stdin, selectors.EVENT_READ, None)
    except (OSError, ValueError):  # e.g. a regular file: epoll refuses it
        stdin = -1
    pings = 0
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)
    try:
        while True:
            for key, _ in sel.select():
                if key.data is None:
                    if not os.read(stdin, 4096):
                        raise _Stop
                    continue
                conn = key.data
                try:
                    data = conn.sock.recv(65536)
                    if not data:
                        raise WSError("closed", "EOF from the server while idle")
                    conn.buf += data
                    pos = 0
                    while (frame := parse_frame(conn.buf, pos)) is not None:
                        _, opcode, payload, pos = frame
                        if opcode == OP_PING:
                            conn.sock.sendall(client_frame(OP_PONG, payload))
                            pings += 1
                        elif opcode == OP_CLOSE:
                            raise WSError("closed", f"close frame while idle: {payload[:2].hex()}")
                        elif opcode != OP_PONG:
                            raise WSError("protocol", f"unexpected frame while idle: {opcode}")
                    conn.buf = conn.buf[pos:]
                except BlockingIOError:
                    continue
                except (WSError, OSError) as exc:
                    counts.add(exc.kind if isinstance(exc, WSError) else "closed", str(exc))
                    sel.unregister(conn.sock)
                    del live[conn.sock]
                    conn.close()
    except _Stop:
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        sel.close()
    open_at_end = len(live)
    clean = close_all(list(live.values()), args.close_timeout, counts)
    return {"open_at_end": open_at_end, "pings_answered": pings, "closed_cleanly": clean}


# ---------------------------------------------------------------------------- check mode


def read_message(conn: Conn) -> tuple[int, bytes]:
    """The next data message (opcode, payload) on a blocking connection; pings are
    answered, fragments joined."""
    opcode_seen: int | None = None
    parts: list[bytes] = []
    while True:
        frame = parse_frame(conn.buf, 0)
        if frame is None:
            data = conn.sock.recv(65536)
            if not data:
                raise WSError("closed", "EOF while waiting for an echo")
            conn.buf += data
            continue
        fin, opcode, payload, end = frame
        conn.buf = conn.buf[end:]
        if opcode == OP_PING:
            conn.sock.sendall(client_frame(OP_PONG, payload))
        elif opcode == OP_PONG:
            continue
        elif opcode == OP_CLOSE:
            raise WSError("closed", f"close frame instead of an echo: {payload[:2].hex()}")
        elif opcode in (OP_TEXT, OP_BINARY) and opcode_seen is None:
            opcode_seen = opcode
            parts.append(payload)
        elif opcode == OP_CONT and opcode_seen is not None:
            parts.append(payload)
        else:
            raise WSError("protocol", f"unexpected opcode {opcode}")
        if fin and opcode_seen is not None:
            return opcode_seen, b"".join(parts)


def run_check(args: argparse.Namespace, counts: Counts) -> dict[str, Any]:
    messages = [
        (OP_TEXT, "hello, websocket \N{CHECK MARK}".encode()),
        (OP_BINARY, bytes(range(16))),
        (OP_TEXT, b"t" * 200),
        (OP_BINARY, os.urandom(100_000)),
    ]
    for _ in range(args.check):
        conns = open_connections(args.host, args.port, args.path, 1, 1, args.timeout, counts)
        if not conns:
            raise WSError("handshake", counts.samples[-1] if counts.samples else "handshake failed")
        conn = conns[0]
        conn.sock.settimeout(args.timeout)
        try:
            for opcode, payload in messages:
                conn.sock.sendall(client_frame(opcode, payload))
                got_opcode, got = read_message(conn)
                if (got_opcode, got) != (opcode, payload):
                    raise WSError(
                        "mismatch",
                        f"sent opcode {opcode}, {len(payload)} B; got opcode {got_opcode}, "
                        f"{len(got)} B: {got[:40]!r}",
                    )
        except OSError as exc:
            raise WSError("closed", str(exc)) from exc
        finally:
            conn.sock.setblocking(False)
        if close_all([conn], args.timeout, counts) != 1:
            raise WSError("close", counts.samples[-1] if counts.samples else "no close frame")
    return {"check": "ok", "connections": args.check, "messages_each": len(messages)}


# ---------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/")
    parser.add_argument("--connections", type=int, default=64, help="echo load (default 64)")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before the window")
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds")
    parser.add_argument("--idle", type=int, metavar="N", help="hold N idle connections")
    parser.add_argument("--check", type=int, metavar="N", help="check N connections, exit")
    parser.add_argument("--handshake-batch", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=30.0, help="handshake timeout")
    parser.add_argument("--drain-timeout", type=float, default=10.0)
    parser.add_argument("--close-timeout", type=float, default=10.0)
    args = parser.parse_args(argv)

    import resource

    wanted = (args.idle or args.connections) + 64
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(
            resource.RLIMIT_NOFILE, (wanted if hard == resource.RLIM_INFINITY else hard, hard)
        )

    counts = Counts()
    result: dict[str, Any]
    if args.check:
        try:
            result = run_check(args, counts)
        except WSError as exc:
            print(f"websocket check failed ({exc.kind}): {exc}", file=sys.stderr)
            return 1
        emit({"event": "result", **result})
        return 0

    count = args.idle if args.idle else args.connections
    started = perf_counter()
    conns = open_connections(
        args.host, args.port, args.path, count, args.handshake_batch, args.timeout, counts
    )
    handshake_s = perf_counter() - started
    if args.idle:
        emit(
            {
                "event": "ready",
                "connections": len(conns),
                "handshake_s": handshake_s,
                "errors": counts.errors,
            }
        )
        result = {"mode": "idle", "connections": len(conns), **run_idle(conns, args, counts)}
    else:
        result = {"mode": "echo", "connections": len(conns)}
        if conns:
            result.update(run_echo(conns, args, counts))
    result.update(
        handshake_s=handshake_s,
        errors=counts.errors,
        error_count=sum(counts.errors.values()),
        error_samples=counts.samples,
    )
    emit({"event": "result", **result})
    return 0 if conns else 1


if __name__ == "__main__":
    sys.exit(main())
