"""``trioserve.serve`` itself, on real loopback sockets: the URLs it reports through
``task_status``, several binds, graceful shutdown through ``shutdown_trigger``
(in-flight requests finish with ``connection: close``, idle connections close at
once, the listener stops accepting, ``graceful_timeout`` cancels what is stuck, no
task outlives ``serve``), ``limit_concurrency``, ``max_requests`` (+ jitter),
``BindError``, and embedding with ``trio.run(serve, app)`` in a subprocess stopped
by SIGINT / SIGTERM.

Waits are on events, bounded by ``trio.fail_after``; the only real-time timeout is
the small ``graceful_timeout`` whose expiry is the subject of its test.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import h11
import httpx
import pytest
import trio
from _helpers import Scope, free_port, respond
from _pipes import PipeReader

import trioserve
from trioserve import BindError, Config
from trioserve.testing import TestConnection, TestResponse

# -- helpers ---------------------------------------------------------------------------


async def hello_app(scope: Scope, receive: Any, send: Any) -> None:
    """Answers ``hello <server port>``; does not speak lifespan."""
    if scope["type"] != "http":
        return
    await respond(send, b"hello %d" % scope["server"][1])


@dataclasses.dataclass
class Served:
    """One running ``serve()``: its URLs, its shutdown trigger and whether it
    returned."""

    urls: list[str]
    trigger: trio.Event
    returned: trio.Event

    @property
    def port(self) -> int:
        return int(self.urls[0].rsplit(":", 1)[1])


async def start_serve(nursery: trio.Nursery, app: Any, config: Config) -> Served:
    trigger = trio.Event()
    returned = trio.Event()

    async def run(task_status: trio.TaskStatus[list[str]]) -> None:
        await trioserve.serve(app, config, task_status=task_status, shutdown_trigger=trigger.wait)
        returned.set()

    urls = await nursery.start(run)
    return Served(urls, trigger, returned)


def local_config(**changes: Any) -> Config:
    return Config(bind=["127.0.0.1:0"], **changes)


_opened: list[TestConnection] = []


@pytest.fixture(autouse=True)
async def close_client_connections() -> AsyncIterator[None]:
    """Close whatever client connection a test left open (a failing one, say), so
    that its socket cannot raise ResourceWarning in some later test."""
    yield
    while _opened:
        await _opened.pop().aclose()


async def connect(port: int) -> TestConnection:
    """A raw keep-alive HTTP/1.1 connection (h11 client) over a real socket."""
    conn = TestConnection(await trio.open_tcp_stream("127.0.0.1", port))
    _opened.append(conn)
    return conn


async def assert_refused(port: int) -> None:
    with trio.socket.socket() as sock, pytest.raises(ConnectionRefusedError):
        await sock.connect(("127.0.0.1", port))


async def assert_closed_by_server(conn: TestConnection) -> None:
    """The server ends the connection (EOF, nothing more sent); then close our end."""
    try:
        assert await conn.receive_until_closed() == b""
    finally:
        await conn.aclose()


def all_tasks() -> set[trio.lowlevel.Task]:
    """Every task of this trio run, by walking the tree from the root task."""
    tasks = set()
    stack = [trio.lowlevel.current_root_task()]
    while stack:
        task = stack.pop()
        assert task is not None
        tasks.add(task)
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return tasks


class GatedApp:
    """``/slow`` waits for ``release`` (after setting ``started``); anything else
    answers at once. Records the paths it was called for."""

    def __init__(self) -> None:
        self.started = trio.Event()
        self.release = trio.Event()
        self.paths: list[str] = []

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        self.paths.append(scope["path"])
        if scope["path"] == "/slow":
            self.started.set()
            await self.release.wait()
            await respond(send, b"slow done")
        else:
            await respond(send, b"fast")


async def request_and_close(
    conn: TestConnection,
    path: str,
    into: list[TestResponse],
    done: trio.Event | None = None,
) -> None:
    into.append(await conn.request("GET", path))
    await conn.aclose()
    if done is not None:
        done.set()


# -- URLs and binds ----------------------------------------------------------------------


async def test_serve_reports_url_with_the_real_port_and_serves_it() -> None:
    """Port 0 in the config: the URL must carry the port the OS chose (a naive
    server reports the configured ``:0``), and it must already answer."""
    async with trio.open_nursery() as nursery:
        served = await start_serve(nursery, hello_app, local_config())
        [url] = served.urls
        match = re.fullmatch(r"http://127\.0\.0\.1:(\d+)", url)
        assert match is not None
        port = int(match.group(1))
        assert port != 0
        async with httpx.AsyncClient(trust_env=False) as client:
            with trio.fail_after(5):
                response = await client.get(url + "/")
        assert response.status_code == 200
        assert response.text == f"hello {port}"
        served.trigger.set()
        with trio.fail_after(5):
            await served.returned.wait()


async def test_two_binds_both_serve() -> None:
    config = Config(bind=["127.0.0.1:0", "127.0.0.1:0"])
    async with trio.open_nursery() as nursery:
        served = await start_serve(nursery, hello_app, config)
        assert len(served.urls) == 2
        ports = [int(url.rsplit(":", 1)[1]) for url in served.urls]
        assert len(set(ports)) == 2
        assert 0 not in ports
        async with httpx.AsyncClient(trust_env=False) as client:
            for url, port in zip(served.urls, ports, strict=True):
                with trio.fail_after(5):
                    response = await client.get(url + "/")
                assert response.status_code == 200
                assert response.text == f"hello {port}"
        served.trigger.set()
        with trio.fail_after(5):
            await served.returned.wait()


async def test_one_startup_line_names_every_url(caplog: pytest.LogCaptureFixture) -> None:
    """Embedded serve() names every address, the version and the PID in one line;
    it offers no forced stop, since a second signal is not caught."""
    caplog.set_level(logging.INFO, logger="trioserve.error")
    async with trio.open_nursery() as nursery:
        served = await start_serve(nursery, hello_app, Config(bind=["127.0.0.1:0", "127.0.0.1:0"]))
        served.trigger.set()
    messages = [r.getMessage() for r in caplog.records]
    serving = [m for m in messages if m.startswith("Serving on")]
    assert serving == [
        f"Serving on {', '.join(served.urls)} (trioserve {trioserve.__version__}, "
        f"PID {os.getpid()}); press Ctrl+C to stop"
    ]
    assert not any("again to force" in m for m in messages)


# -- graceful shutdown -------------------------------------------------------------------


async def test_in_flight_request_finishes_with_connection_close_after_shutdown_trigger() -> None:
    """Shutdown is triggered while ``/slow`` runs. The request must complete with
    200 (a naive server cancels it or closes the socket) and say ``connection:
    close`` (it will not serve another); ``serve`` returns only after it."""
    app = GatedApp()
    async with trio.open_nursery() as nursery:
        served = await start_serve(nursery, app, local_config(keep_alive_timeout=60))
        idle = await connect(served.port)
        assert (await idle.request("GET", "/")).status == 200
        busy = await connect(served.port)
        responses: list[TestResponse] = []
        nursery.start_soon(request_and_close, busy, "/slow", responses)
        with trio.fail_after(5):
            await app.started.wait()
        served.trigger.set()
        # The idle connection being closed shows that shutdown has begun.
        with trio.fail_after(5):
            await assert_closed_by_server(idle)
        assert not served.returned.is_set()
        assert responses == []
        app.release.set()
        with trio.fail_after(5):
            await served.returned.wait()
    [response] = responses
    assert response.status == 200
    assert response.body == b"slow done"
    assert response.header("connection") == "close"


async def test_idle_keep_alive_connection_is_closed_promptly_on_shutdown() -> None:
    """``keep_alive_timeout`` is 60 s: only shutdown can close the connection within
    the 5 s bound. A naive server leaves idle connections to the keep-alive timer
    (and ``serve`` hangs until then)."""
    async with trio.open_nursery() as nursery:
        served = await start_serve(nursery, hello_app, local_config(keep_alive_timeout=60))
        conn = await connect(served.port)
        response = await conn.request("GET", "/")
        assert response.status == 200
        assert response.header("connection") is None
        served.trigger.set()
        with trio.fail_after(5):
            await assert_closed_by_server(conn)
            await served.returned.wait()


async def test_new_connections_are_refused_once_shutdown_started() -> None:
    """While an in-flight request still holds ``serve`` open, the listening socket
    is already closed: a new connection is refused, not accepted and left hanging."""
    app = GatedApp()
    async with trio.open_nursery() as nursery:
        served = await start_serve(nursery, app, local_config(keep_alive_timeout=60))
        idle = await connect(served.port)
        assert (await idle.request("GET", "/")).status == 200
        responses: list[TestResponse] = []
        nursery.start_soon(request_and_close, await connect(served.port), "/slow", responses)
        with trio.fail_after(5):
            await app.started.wait()
        served.trigger.set()
        with trio.fail_after(5):
            await assert_closed_by_server(idle)
        await assert_refused(served.port)
        assert not served.returned.is_set()
        app.release.set()
        with trio.fail_after(5):
            await served.returned.wait()
    assert [r.status for r in responses] == [200]
    assert app.paths == ["/", "/slow"]


async def test_graceful_timeout_cancels_a_stuck_request_and_its_finally_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The app never answers. ``serve`` waits ``graceful_timeout`` (0.2 s), then
    cancels the request (its client gets a 503); the app's ``finally`` runs before ``serve`` returns. A
    naive server waits forever (or cancels at once, without a grace period)."""
    caplog.set_level(logging.DEBUG, logger="trioserve.error")
    started = trio.Event()
    app_finally = trio.Event()

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        started.set()
        try:
            await trio.sleep_forever()
        finally:
            app_finally.set()

    received: list[bytes] = []

    async def request(conn: TestConnection) -> None:
        await conn.send_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        received.append(await conn.receive_until_closed())
        await conn.aclose()

    async with trio.open_nursery() as nursery:
        served = await start_serve(nursery, app, local_config(graceful_timeout=0.2))
        nursery.start_soon(request, await connect(served.port))
        with trio.fail_after(5):
            await started.wait()
        triggered_at = trio.current_time()
        served.trigger.set()
        with trio.fail_after(5):
            await served.returned.wait()
        waited = trio.current_time() - triggered_at
        assert app_finally.is_set()
    assert waited >= 0.19
    # The app had not started its response: the client is told it was cut short.
    (answer,) = received
    assert answer.startswith(b"HTTP/1.1 503 ")
    assert b"\r\nconnection: close\r\n" in answer.lower()
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        "Cancelled 1 request in progress (the graceful shutdown timed out): GET /"
    ]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_no_task_outlives_serve() -> None:
    """The app answers, then keeps a child task of its own running. When ``serve``
    returns (after ``graceful_timeout``), that task must have been cancelled and
    its ``finally`` run, and no task started since ``serve`` began may be left in
    the task tree. A server that spawns request tasks outside its own nurseries
    returns with them still running."""
    child_finally = trio.Event()
    app_tasks: list[trio.lowlevel.Task] = []

    async def background(task_status: trio.TaskStatus[None]) -> None:
        app_tasks.append(trio.lowlevel.current_task())
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            child_finally.set()

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        app_tasks.append(trio.lowlevel.current_task())
        async with trio.open_nursery() as nursery:
            await nursery.start(background)
            await respond(send, b"answered, still busy")

    before = all_tasks()
    async with trio.open_nursery() as nursery:
        served = await start_serve(nursery, app, local_config(graceful_timeout=0.2))
        conn = await connect(served.port)
        with trio.fail_after(5):
            response = await conn.request("GET", "/")
        assert response.status == 200
        await conn.aclose()
        assert len(app_tasks) == 2
        assert not child_finally.is_set()
        served.trigger.set()
        with trio.fail_after(5):
            await served.returned.wait()
        assert child_finally.is_set()
        assert not set(app_tasks) & all_tasks()
    assert all_tasks() <= before


# -- limit_concurrency -----------------------------------------------------------------


async def test_limit_concurrency_answers_503_with_close_while_the_slot_is_taken() -> None:
    """With ``limit_concurrency=1`` and ``/slow`` in progress, a second request is
    refused at once with 503 and ``connection: close``, without reaching the app
    (a naive server queues it behind ``/slow``: the 5 s bound fails). Once ``/slow``
    is done, requests are served again."""
    app = GatedApp()
    async with trio.open_nursery() as nursery:
        served = await start_serve(nursery, app, local_config(limit_concurrency=1))
        responses: list[TestResponse] = []
        slow_done = trio.Event()
        nursery.start_soon(
            request_and_close, await connect(served.port), "/slow", responses, slow_done
        )
        with trio.fail_after(5):
            await app.started.wait()
        second = await connect(served.port)
        with trio.fail_after(5):
            rejected = await second.request("GET", "/second")
            await assert_closed_by_server(second)
        assert rejected.status == 503
        assert rejected.header("connection") == "close"
        assert app.paths == ["/slow"]
        assert responses == []

        app.release.set()
        with trio.fail_after(5):
            await slow_done.wait()
        assert responses[0].status == 200

        third = await connect(served.port)
        with trio.fail_after(5):
            response = await third.request("GET", "/third")
        assert response.status == 200
        assert response.body == b"fast"
        await third.aclose()
        served.trigger.set()
    assert app.paths == ["/slow", "/third"]


async def test_idle_keep_alive_connections_do_not_count_toward_limit_concurrency() -> None:
    """An idle keep-alive connection holds no request; with ``limit_concurrency=1``
    another connection must still be served, and the idle one too afterwards. A
    naive limit counting connections answers 503."""
    async with trio.open_nursery() as nursery:
        served = await start_serve(
            nursery, hello_app, local_config(limit_concurrency=1, keep_alive_timeout=60)
        )
        idle = await connect(served.port)
        with trio.fail_after(5):
            assert (await idle.request("GET", "/")).status == 200
            other = await connect(served.port)
            assert (await other.request("GET", "/")).status == 200
            assert (await other.request("GET", "/")).status == 200
            # The idle connection was kept open and is still usable.
            assert (await idle.request("GET", "/")).status == 200
        await idle.aclose()
        await other.aclose()
        served.trigger.set()


# -- max_requests ----------------------------------------------------------------------


async def serve_until_it_stops(config: Config) -> int:
    """Send requests one at a time, a connection each, to a server with
    ``max_requests``; return how many reached the app once it stopped by itself."""
    app = GatedApp()
    async with trio.open_nursery() as nursery:
        served = await start_serve(nursery, app, config)
        # The shutdown trigger is never set: serve must stop on its own.
        with trio.fail_after(5):
            for _ in range(50):
                try:
                    conn = await connect(served.port)
                except OSError:
                    break  # refused: serve has stopped
                try:
                    response = await conn.request("GET", "/")
                except (trio.BrokenResourceError, h11.RemoteProtocolError):
                    break  # reset or closed without an answer: serve has stopped
                finally:
                    await conn.aclose()
                assert response.status == 200
            await served.returned.wait()
        await assert_refused(served.port)
    return len(app.paths)


async def test_max_requests_stops_serve_by_itself() -> None:
    """A naive server ignores ``max_requests``: the loop runs into the 5 s bound."""
    assert await serve_until_it_stops(local_config(max_requests=2)) == 2


async def test_max_requests_jitter_lands_between_max_and_max_plus_jitter() -> None:
    """Ten servers with ``max_requests=1, max_requests_jitter=3``: each stops after
    1..4 requests, and they do not all stop at the same count (the chance that
    they would with a uniform jitter is 4 / 4**10). A server ignoring the jitter
    stops every one after exactly 1."""
    counts = [
        await serve_until_it_stops(local_config(max_requests=1, max_requests_jitter=3))
        for _ in range(10)
    ]
    assert all(1 <= count <= 4 for count in counts), counts
    assert len(set(counts)) > 1, counts


# -- BindError -------------------------------------------------------------------------


async def test_bind_error_when_the_port_is_taken_comes_before_started() -> None:
    """The error comes out of ``nursery.start`` (so ``task_status.started`` was
    never called), as a plain ``BindError`` (an ``OSError`` with the errno), not an
    ExceptionGroup."""
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        config = Config(bind=[f"127.0.0.1:{port}"])
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                with pytest.raises(BindError) as excinfo:
                    await nursery.start(partial(trioserve.serve, hello_app, config))
    assert isinstance(excinfo.value, OSError)
    assert excinfo.value.errno == errno.EADDRINUSE
    assert str(port) in str(excinfo.value)


async def test_bind_error_on_second_bind_closes_the_first_listener() -> None:
    first_port = free_port()
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        taken = blocker.getsockname()[1]
        config = Config(bind=[f"127.0.0.1:{first_port}", f"127.0.0.1:{taken}"])
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                with pytest.raises(BindError):
                    await nursery.start(partial(trioserve.serve, hello_app, config))
    await assert_refused(first_port)


# -- embedding: trio.run(serve, app) in a subprocess, stopped by a signal ---------------

EMBED_SCRIPT = """
import logging
import sys

import trio

import trioserve

logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(message)s")


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    if scope["path"] == "/wait-for-stdin":
        print("request started", file=sys.stderr, flush=True)
        await trio.to_thread.run_sync(sys.stdin.readline)
    body = b"embedded"
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


trio.run(trioserve.serve, app, trioserve.Config(bind=["127.0.0.1:0"]))
"""


async def start_embedded() -> tuple[trio.Process, PipeReader, str]:
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-c", EMBED_SCRIPT],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stderr is not None
    reader = PipeReader(proc.stderr)
    try:
        with trio.fail_after(15):
            match = await reader.wait_for(r"Serving on (http://127\.0\.0\.1:\d+)")
    except BaseException:
        await stop_process(proc)
        raise
    return proc, reader, match.group(1)


async def stop_process(proc: trio.Process) -> None:
    """Kill the process if it is still running, close its pipes and reap it."""
    if proc.returncode is None:
        proc.kill()
    with trio.CancelScope(shield=True):
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                await pipe.aclose()
        await proc.wait()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
async def test_embedded_serve_exits_cleanly_on_signal(signum: signal.Signals) -> None:
    """``trio.run(serve, app)`` in its own process: serving, then the signal ends it
    within a few seconds with exit status 0 and no traceback (a naive server dies
    with KeyboardInterrupt / -SIGTERM, or ignores the signal)."""
    proc, reader, url = await start_embedded()
    try:
        async with httpx.AsyncClient(trust_env=False) as client:
            with trio.fail_after(5):
                response = await client.get(url + "/")
        assert response.status_code == 200
        assert response.text == "embedded"
        proc.send_signal(signum)
        with trio.fail_after(5):
            await proc.wait()
            log = await reader.read_rest()
    finally:
        await stop_process(proc)
    assert proc.returncode == 0, log
    assert f"Received {signum.name}" in log
    assert "Traceback" not in log


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
async def test_embedded_serve_finishes_in_flight_request_on_signal(
    signum: signal.Signals,
) -> None:
    """The signal arrives while a request is in the app. The server logs that it is
    shutting down (the test waits for that line), the app is then let go, and the
    request still completes with 200 and ``connection: close`` before the process
    exits 0."""
    proc, reader, url = await start_embedded()
    port = int(url.rsplit(":", 1)[1])
    assert proc.stdin is not None
    responses: list[TestResponse] = []
    try:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                conn = await connect(port)
                nursery.start_soon(request_and_close, conn, "/wait-for-stdin", responses)
                await reader.wait_for("request started")
                proc.send_signal(signum)
                await reader.wait_for("shutting down gracefully")
                await assert_refused(port)
                await proc.stdin.send_all(b"go\n")
            await proc.wait()
            log = await reader.read_rest()
    finally:
        await stop_process(proc)
    assert proc.returncode == 0, log
    [response] = responses
    assert response.status == 200
    assert response.body == b"embedded"
    assert response.header("connection") == "close"
    assert "Traceback" not in log
