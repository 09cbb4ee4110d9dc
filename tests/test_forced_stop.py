"""What the server does with the requests it cuts short, when a forced stop or
the graceful deadline cancels them: a client whose response had not begun gets
``503`` with ``Connection: close`` within a second; a client that does not read
cannot hold the stop (not even in the middle of a response head, a write that a
cancellation cannot reach); a request body left unread does not turn the answer
into a reset; every cancelled request gets its access log line. And a third
signal to the command ends it on the spot.

In-process tests run the real server over in-memory streams (a lockstep stream
is a client that never reads) under ``autojump_clock``; the command's own
signals are tested on a real process with real sockets.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from _helpers import GET, Receive, Scope, Send, http_only, parse_single
from _pipes import LogWatch

from trioserve import Config
from trioserve._serve import ServerControl, serve_listeners
from trioserve.testing import MemoryListener, TestConnection

ROOT = Path(__file__).resolve().parent.parent
ACCESS = "trioserve.access"
#: The access log line of a test: status, request line, body bytes.
FORMAT = "%(s)s|%(r)s|%(B)s"
#: A response larger than a lockstep client takes in one read: its write waits.
BIG = 1_000_000


class Stoppable:
    """A server run in-process with the control a command has over it: a stop
    (the first signal) and a forced stop (the second)."""

    def __init__(self) -> None:
        self.listener = MemoryListener()
        self.stop = trio.Event()
        self.control = ServerControl(pid=os.getpid(), interactive=False, announce=False)
        self.stopped_at = -1.0

    async def connect(self, *, lockstep: bool = False) -> TestConnection:
        return TestConnection(await self.listener.connect(lockstep=lockstep))

    def begin_stop(self) -> None:
        self.stop.set()

    def force(self) -> None:
        self.control.force()


@asynccontextmanager
async def serving(app: Any, config: Config) -> AsyncIterator[Stoppable]:
    """Run ``app``; on leaving the block, wait (at most 100 s of virtual time) for
    the server to end, and note when it did in ``stopped_at``."""
    server = Stoppable()

    async def make_listeners(_: Config) -> list[MemoryListener]:
        return [server.listener]

    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            await nursery.start(
                partial(
                    serve_listeners,
                    app,
                    config,
                    make_listeners,
                    scheme="http",
                    shutdown_trigger=server.stop.wait,
                    install_signal_handlers=False,
                    control=server.control,
                )
            )
            yield server
        server.stopped_at = trio.current_time()


def slow_and_big_app() -> tuple[Any, trio.Event]:
    """``/slow`` waits forever; ``/big`` answers ``BIG`` bytes in one message;
    the event is set once both have started."""
    started = trio.Event()
    count = 0

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal count
        count += 1
        if count == 2:
            started.set()
        if scope["path"] == "/big":
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-length", str(BIG).encode())],
                }
            )
            await send({"type": "http.response.body", "body": b"x" * BIG})
        await trio.sleep_forever()

    return http_only(app), started


# -- a client that does not read cannot hold the stop ------------------------------------


async def test_a_forced_stop_ends_within_a_second_though_clients_do_not_read(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """Two clients that never read: one whose 503 cannot be written, one whose
    response head is being written (shielded, so the cancellation cannot reach
    it). The forced stop gives the answer its second and then aborts the
    connections: the server ends a second after the force, not after the
    30 s write deadline."""
    app, started = slow_and_big_app()
    async with serving(app, Config(lifespan="off")) as server:
        waiting = await server.connect(lockstep=True)
        await waiting.send_all(GET.replace(b"/", b"/slow", 1))
        writing = await server.connect(lockstep=True)
        await writing.send_all(GET.replace(b"/", b"/big", 1))
        await started.wait()
        await trio.sleep(1)
        server.begin_stop()
        await trio.sleep(1)
        forced_at = trio.current_time()
        server.force()
    assert server.stopped_at - forced_at == pytest.approx(1, abs=0.01)
    # Both count as cut short, the aborted response too.
    assert "Cancelled 2 requests in progress (forced stop): " in caplog.text
    assert "GET /big" in caplog.text
    assert "GET /slow" in caplog.text


async def test_the_graceful_deadline_ends_the_stop_though_clients_do_not_read(
    autojump_clock: trio.abc.Clock,
) -> None:
    """The same clients and ``graceful_timeout=1``: the stop ends one second
    after the deadline, with the answer's second."""
    app, started = slow_and_big_app()
    async with serving(app, Config(lifespan="off", graceful_timeout=1)) as server:
        waiting = await server.connect(lockstep=True)
        await waiting.send_all(GET.replace(b"/", b"/slow", 1))
        writing = await server.connect(lockstep=True)
        await writing.send_all(GET.replace(b"/", b"/big", 1))
        await started.wait()
        stop_at = trio.current_time()
        server.begin_stop()
    assert server.stopped_at - stop_at == pytest.approx(2, abs=0.01)


async def test_a_client_that_reads_gets_its_503_at_once_on_a_forced_stop(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A client that reads does not wait for anyone: the 503 comes, with
    ``connection: close``, and the server ends as soon as it is out."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        started.set()
        await trio.sleep_forever()

    started = trio.Event()
    async with serving(http_only(app), Config(lifespan="off")) as server:
        client = await server.connect()
        await client.send_all(GET)
        await started.wait()
        server.begin_stop()
        await trio.sleep(1)
        forced_at = trio.current_time()
        server.force()
    assert server.stopped_at == forced_at
    response = parse_single(await client.receive_until_closed())
    assert response.status == 503
    assert response.values(b"connection") == [b"close"]


# -- the access log line of a cancelled request ------------------------------------------


async def test_requests_a_stop_cancels_get_their_access_log_line(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """The one that got its 503 is logged as 503; the one whose client did not
    take the answer as 499 (nothing sent); the one cut short in its response
    with the status it sent."""
    caplog.set_level(logging.INFO, logger=ACCESS)
    app, started = slow_and_big_app()
    config = Config(lifespan="off", accesslog="-", access_log_format=FORMAT)
    async with serving(app, config) as server:
        reading = await server.connect()
        await reading.send_all(GET.replace(b"/", b"/slow?reads", 1))
        waiting = await server.connect(lockstep=True)
        await waiting.send_all(GET.replace(b"/", b"/slow", 1))
        writing = await server.connect(lockstep=True)
        await writing.send_all(GET.replace(b"/", b"/big", 1))
        await started.wait()
        await trio.sleep(1)
        server.begin_stop()
        server.force()
    logged = sorted(r.getMessage() for r in caplog.records if r.name == ACCESS)
    assert logged == [
        "200|GET /big HTTP/1.1|0",
        "499|GET /slow HTTP/1.1|0",
        "503|GET /slow?reads HTTP/1.1|19",
    ]


async def test_a_websocket_the_graceful_deadline_cancels_gets_its_session_line(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """An app that ignores the 1001 is cancelled at the deadline; its session is
    logged as any other."""
    caplog.set_level(logging.INFO, logger=ACCESS)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.accept"})
            accepted.set()
            await trio.sleep_forever()

    accepted = trio.Event()
    config = Config(
        lifespan="off", graceful_timeout=1, accesslog="-", access_log_format="%(s)s %(U)s"
    )
    async with serving(app, config) as server:
        client = await server.connect()
        await client.websocket("/live")
        await accepted.wait()
        server.begin_stop()
    logged = [r.getMessage() for r in caplog.records if r.name == ACCESS]
    (line,) = logged
    assert line.startswith("101 /live websocket close=1001/-"), line


# -- the command: real processes and sockets ---------------------------------------------

#: ``/slow`` waits until cancelled; ``/shielded`` cannot be cancelled at all; the
#: rest answers 200 KB.
APP = """\
import sys

import trio


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            kind = message["type"].rsplit(".", 1)[1]
            await send({"type": f"lifespan.{kind}.complete"})
            if kind == "shutdown":
                return
    print("request in flight", scope["path"], file=sys.stderr, flush=True)
    if scope["path"] == "/slow":
        await trio.sleep_forever()
    if scope["path"] == "/shielded":
        with trio.CancelScope(shield=True):
            await trio.sleep_forever()
    size = 200_000
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(size).encode())]})
    await send({"type": "http.response.body", "body": b"x" * size})
"""


class Command:
    """The ``trioserve`` command in a subprocess, its log (stderr) watched."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.log = LogWatch(process.stderr, 15)
        self.port = 0

    def signal(self) -> None:
        self.process.send_signal(signal.SIGINT)

    async def exit_code(self, seconds: float) -> int:
        """Wait (at most ``seconds``) for the command to end; its exit code."""
        with trio.fail_after(seconds):
            return await self.process.wait()


@asynccontextmanager
async def command(tmp_path: Path, *args: str) -> AsyncIterator[Command]:
    (tmp_path / "app.py").write_text(APP)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIOSERVE_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "trioserve", "app:app", "--bind", "127.0.0.1:0", *args],
        cwd=str(tmp_path),
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        running = Command(process)
        match = await running.log.next(r"Serving on http://127\.0\.0\.1:(\d+)")
        running.port = int(match.group(1))
        yield running
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()
        assert process.stderr is not None
        await process.stderr.aclose()


async def test_the_second_ctrl_c_exits_at_once_though_a_client_does_not_read(
    tmp_path: Path,
) -> None:
    """A client that sent pipelined requests and reads nothing: the server's
    write of a response waits for it, shielded. The second SIGINT still ends
    the command within about a second, with 130."""
    async with command(tmp_path, "--no-access-log") as server:
        sock = trio.socket.socket()
        sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, 4096)
        await sock.connect(("127.0.0.1", server.port))
        async with trio.SocketStream(sock) as stream:
            await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 20)
            await server.log.next("request in flight /")
            server.signal()
            await server.log.next(r"shutting down gracefully \(1 in flight")
            server.signal()
            await server.log.next("Received SIGINT again; exiting now")
            assert await server.exit_code(5) == 130, server.log.text


async def test_a_third_ctrl_c_exits_on_the_spot_when_the_forced_stop_hangs(
    tmp_path: Path,
) -> None:
    """An app that cannot be cancelled holds even the forced stop; the third
    SIGINT says so and ends the process, with 130."""
    async with command(tmp_path) as server:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        await stream.send_all(b"GET /shielded HTTP/1.1\r\nHost: x\r\n\r\n")
        await server.log.next("request in flight /shielded")
        server.signal()
        await server.log.next(r"shutting down gracefully \(1 in flight")
        server.signal()
        await server.log.next("Received SIGINT again; exiting now")
        server.signal()
        await server.log.next("Received SIGINT a third time; exiting immediately")
        assert await server.exit_code(5) == 130, server.log.text
        await stream.aclose()


CLIENTS = 20
UNREAD = 200_000


async def _post_unread_body(port: int, answers: list[bytes], sent: trio.Semaphore) -> None:
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        head = f"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: {UNREAD}\r\n\r\n"
        # The body goes in the background: the server reads only its start.
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stream.send_all, head.encode() + b"a" * UNREAD)
            sent.release()
            data = b""
            try:
                while chunk := await stream.receive_some():
                    data += chunk
            except trio.BrokenResourceError as exc:  # a reset
                data += f"<{exc.__cause__!r}>".encode()
            nursery.cancel_scope.cancel()
        answers.append(data)


async def test_a_request_body_left_unread_does_not_turn_the_503_into_a_reset(
    tmp_path: Path,
) -> None:
    """Twenty clients each POST a 200 KB body the app never reads; a forced stop
    answers every one of them 503, and none of those answers is destroyed by a
    reset (closing a socket with unread bytes sends one)."""
    answers: list[bytes] = []
    async with command(tmp_path, "--no-access-log") as server:
        sent = trio.Semaphore(0)
        async with trio.open_nursery() as nursery:
            for _ in range(CLIENTS):
                nursery.start_soon(_post_unread_body, server.port, answers, sent)
            for _ in range(CLIENTS):
                await sent.acquire()
                await server.log.next("request in flight /slow")
            server.signal()
            await server.log.next(rf"shutting down gracefully \({CLIENTS} in flight")
            server.signal()
            assert await server.exit_code(10) == 130, server.log.text
    assert len(answers) == CLIENTS
    for answer in answers:
        assert answer.startswith(b"HTTP/1.1 503 "), answer[:200]
        assert answer.endswith(b"Service Unavailable"), answer[-200:]
