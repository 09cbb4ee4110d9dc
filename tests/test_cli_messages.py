"""What a user reads while the ``trioserve`` command starts, stops or cannot load
the app: the real command in a subprocess, its exit code and its output.

Each scenario checks the line the user needs (the startup line with every address,
the graceful and the forced shutdown, the one ``Error:`` line) and that nothing
else gets in the way: no Python traceback unless the app itself raised.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import trio
from _pipes import LogWatch

import trioserve

ROOT = Path(__file__).resolve().parent.parent
DEADLINE = 15.0
VERSION = re.escape(trioserve.__version__)

#: A request to /slow waits until the server cancels it; / answers at once.
SLOW_APP = """\
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
    if scope["path"] == "/slow":
        print("request in flight", file=sys.stderr, flush=True)
        await trio.sleep_forever()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})
"""


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIOSERVE_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The command, run to its end (it is expected to fail at once)."""
    return subprocess.run(
        [sys.executable, "-m", "trioserve", *args],
        cwd=cwd,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )


class Server:
    """The command running in a subprocess, its log (stderr) watched."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.log = LogWatch(process.stderr, DEADLINE)

    async def finish(self) -> int:
        with trio.fail_after(DEADLINE):
            while data := await self.log.stream.receive_some():
                self.log.text += data.decode()
            return await self.process.wait()


@asynccontextmanager
async def serving(cwd: Path, *args: str) -> AsyncIterator[Server]:
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "trioserve", *args],
        cwd=str(cwd),
        env=environment(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        yield Server(process)
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()
        assert process.stderr is not None
        await process.stderr.aclose()


def tracebacks(text: str) -> int:
    return text.count("Traceback (most recent call last)")


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("Error:")]


# -- the startup line -------------------------------------------------------------------

MODES = {
    "single": [],
    "workers": ["--workers", "2"],
    "reload": ["--reload"],
}


@pytest.mark.parametrize("mode", MODES)
async def test_one_startup_line_names_version_pid_every_address_and_how_to_stop(
    tmp_path: Path, mode: str
) -> None:
    """Two binds, a TCP port and a Unix socket: one line names both, the version,
    the PID to signal (the supervisor's, the reloader's) and Ctrl+C."""
    (tmp_path / "app.py").write_text(SLOW_APP)
    sock = tmp_path / "s.sock"
    binds = ["--bind", "127.0.0.1:0", "--bind", f"unix:{sock}"]
    async with serving(tmp_path, "app:app", *binds, *MODES[mode]) as server:
        match = await server.log.next(r"\[INFO\] (Serving on .*)\n")
        line = match.group(1)
        server.process.send_signal(signal.SIGINT)
        assert await server.finish() == 0, server.log.text
    workers = ", 2 workers" if mode == "workers" else ""
    expected = (
        rf"Serving on http://127\.0\.0\.1:\d+, unix:{re.escape(str(sock))} "
        rf"\(trioserve {VERSION}, PID {server.process.pid}{workers}\); press Ctrl\+C to stop"
    )
    assert re.fullmatch(expected, line), line
    # Workers leave the announcement to the supervisor.
    assert server.log.text.count("Serving on") == 1, server.log.text
    assert tracebacks(server.log.text) == 0, server.log.text


# -- shutdown: graceful, then forced ---------------------------------------------------


async def _get_slow(port: int, answers: list[bytes]) -> None:
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        await stream.send_all(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
        data = b""
        while chunk := await stream.receive_some():
            data += chunk
        answers.append(data)


@pytest.mark.parametrize("mode", MODES)
async def test_second_ctrl_c_cancels_the_request_answers_503_and_exits_130(
    tmp_path: Path, mode: str
) -> None:
    """The first SIGINT says what is in flight and how to force; the second cancels
    the slow request at once: its client gets a 503 with ``Connection: close``, the
    log names the request, the exit code is 130 and there is no traceback."""
    (tmp_path / "app.py").write_text(SLOW_APP)
    answers: list[bytes] = []
    async with serving(tmp_path, "app:app", "--bind", "127.0.0.1:0", *MODES[mode]) as server:
        port = int((await server.log.next(r"Serving on http://127\.0\.0\.1:(\d+)")).group(1))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_get_slow, port, answers)
            await server.log.next("request in flight")
            server.process.send_signal(signal.SIGINT)
            await server.log.next_all(
                r"[Ss]hutting down gracefully \(1 in flight, up to 30s\)",
                r"; press Ctrl\+C again to force",
            )
            server.process.send_signal(signal.SIGINT)
            assert await server.finish() == 130, server.log.text
    text = server.log.text
    (answer,) = answers
    assert answer.startswith(b"HTTP/1.1 503 "), answer
    assert b"\r\nconnection: close\r\n" in answer.lower(), answer
    assert "Received SIGINT again" in text
    assert "Cancelled 1 request in progress (forced stop): GET /slow" in text
    assert tracebacks(text) == 0, text


async def test_first_ctrl_c_with_nothing_in_flight_says_so_and_exits_0(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(SLOW_APP)
    async with serving(tmp_path, "app:app", "--bind", "127.0.0.1:0") as server:
        await server.log.next("Serving on")
        server.process.send_signal(signal.SIGTERM)
        assert await server.finish() == 0, server.log.text
    assert (
        "Received SIGTERM; shutting down gracefully (0 in flight, up to 30s); "
        "press Ctrl+C again to force" in server.log.text
    )


async def test_ctrl_c_during_lifespan_startup_says_it_stops_once_started(tmp_path: Path) -> None:
    """A signal while the app's startup still runs: the user hears at once that it
    was received, and a second one stops the command without a traceback."""
    (tmp_path / "app.py").write_text(
        textwrap.dedent(
            """\
            import sys
            import trio

            async def app(scope, receive, send):
                await receive()
                print("starting up", file=sys.stderr, flush=True)
                await trio.sleep_forever()
            """
        )
    )
    async with serving(tmp_path, "app:app", "--bind", "127.0.0.1:0") as server:
        await server.log.next("starting up")
        server.process.send_signal(signal.SIGINT)
        await server.log.next(
            r"Received SIGINT while starting; stopping once started; press Ctrl\+C again to force"
        )
        server.process.send_signal(signal.SIGINT)
        assert await server.finish() == 130, server.log.text
    assert tracebacks(server.log.text) == 0, server.log.text


async def test_a_stop_asked_for_during_startup_is_not_followed_by_a_serving_line(
    tmp_path: Path,
) -> None:
    """One signal while the app starts: once startup ends the server stops, and it
    does not first announce that it serves and how to stop it."""
    (tmp_path / "app.py").write_text(
        textwrap.dedent(
            """\
            import sys
            import trio

            def wait_for_go():
                with open("go") as fifo:  # blocks until the test writes
                    fifo.read()

            async def app(scope, receive, send):
                await receive()
                print("starting up", file=sys.stderr, flush=True)
                await trio.to_thread.run_sync(wait_for_go)
                await send({"type": "lifespan.startup.complete"})
                await receive()
                await send({"type": "lifespan.shutdown.complete"})
            """
        )
    )
    os.mkfifo(tmp_path / "go")
    async with serving(tmp_path, "app:app", "--bind", "127.0.0.1:0") as server:
        await server.log.next("starting up")
        server.process.send_signal(signal.SIGINT)
        await server.log.next("Received SIGINT while starting")
        # Opening the FIFO waits for the app's reader, which then goes on.
        (tmp_path / "go").write_text("go")
        assert await server.finish() == 0, server.log.text
    assert "Serving on" not in server.log.text
    assert "Received SIGINT; shutting down gracefully (0 in flight" in server.log.text


async def test_reaching_max_requests_says_why_the_server_stops(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(SLOW_APP)
    async with serving(
        tmp_path, "app:app", "--bind", "127.0.0.1:0", "--max-requests", "1"
    ) as server:
        port = int((await server.log.next(r"Serving on http://127\.0\.0\.1:(\d+)")).group(1))
        async with httpx.AsyncClient(trust_env=False) as client:
            with trio.fail_after(5):
                assert (await client.get(f"http://127.0.0.1:{port}/")).status_code == 200
        assert await server.finish() == 0, server.log.text
    assert "Reached max_requests (1); shutting down gracefully (" in server.log.text


# -- lifespan startup failure -------------------------------------------------------------

RAISES_AFTER_STARTUP = """\
async def app(scope, receive, send):
    await receive()
    raise RuntimeError("database unreachable")
"""

ANSWERS_FAILED = """\
async def app(scope, receive, send):
    await receive()
    await send({"type": "lifespan.startup.failed", "message": "database unreachable"})
"""

STARLETTE = """\
from contextlib import asynccontextmanager

from starlette.applications import Starlette


@asynccontextmanager
async def lifespan(app):
    raise RuntimeError("database unreachable")
    yield


app = Starlette(lifespan=lifespan)
"""


@pytest.mark.parametrize(
    ("source", "expected", "raised"),
    [
        (RAISES_AFTER_STARTUP, "RuntimeError: database unreachable", True),
        (ANSWERS_FAILED, "database unreachable", False),
        # Starlette answers lifespan.startup.failed with a whole traceback as the
        # message, and raises too.
        (STARLETTE, "RuntimeError: database unreachable", True),
    ],
    ids=["raw-raises", "raw-answers-failed", "starlette"],
)
@pytest.mark.parametrize("mode", ["single", "workers"])
def test_lifespan_startup_failure_is_one_error_line_and_exit_3(
    tmp_path: Path, source: str, expected: str, raised: bool, mode: str
) -> None:
    (tmp_path / "app.py").write_text(source)
    result = run(tmp_path, "app:app", "--bind", "127.0.0.1:0", *MODES[mode])
    assert result.returncode == 3, result.stderr
    assert error_lines(result.stderr) == [f"Error: lifespan startup failed: {expected}"]
    assert result.stderr.rstrip().endswith(f"Error: lifespan startup failed: {expected}")
    # The app's own traceback, once per process that ran it, when it raised;
    # nothing contradicting it.
    expected_tracebacks = {1} if mode == "single" else {1, 2}
    assert tracebacks(result.stderr) in (expected_tracebacks if raised else {0}), result.stderr
    assert "unsupported" not in result.stderr
    # Workers too: the startup line waits until every worker is ready.
    assert "Serving on" not in result.stderr, result.stderr


# -- asyncio-only code -----------------------------------------------------------------------

ASYNCIO_IN_REQUEST = """\
import asyncio


async def app(scope, receive, send):
    if scope["type"] == "http":
        asyncio.get_running_loop()
"""

SNIFFIO_IN_THREAD = """\
import sniffio
import trio


async def app(scope, receive, send):
    if scope["type"] == "http":
        # Sync code in a worker thread asking which async library runs it.
        await trio.to_thread.run_sync(sniffio.current_async_library)
"""

ASYNCIO_IN_LIFESPAN = """\
import asyncio


async def app(scope, receive, send):
    await receive()
    asyncio.Lock()
    await asyncio.sleep(0.01)
"""

#: ``await asyncio.sleep(0)`` yields to asyncio's loop; trio gets the bare yield.
ASYNCIO_SLEEP_IN_REQUEST = """\
import asyncio


async def app(scope, receive, send):
    if scope["type"] == "http":
        await asyncio.sleep(0)
"""

ASYNCIO_SLEEP_IN_LIFESPAN = """\
import asyncio


async def app(scope, receive, send):
    await receive()
    await asyncio.sleep(0)
"""

HINT = "trioserve runs apps on trio, and this library needs asyncio; see docs/asyncio-libraries.md"


@pytest.mark.parametrize(
    "source",
    [ASYNCIO_IN_REQUEST, SNIFFIO_IN_THREAD, ASYNCIO_SLEEP_IN_REQUEST],
    ids=["get_running_loop", "sniffio", "asyncio-sleep"],
)
async def test_asyncio_only_code_in_a_request_gets_one_hint(tmp_path: Path, source: str) -> None:
    (tmp_path / "app.py").write_text(source)
    async with serving(tmp_path, "app:app", "--bind", "127.0.0.1:0") as server:
        port = int((await server.log.next(r"Serving on http://127\.0\.0\.1:(\d+)")).group(1))
        for _ in range(2):
            async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
                await stream.send_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                answer = b""
                while chunk := await stream.receive_some():
                    answer += chunk
            assert answer.startswith(b"HTTP/1.1 500 ")
        server.process.send_signal(signal.SIGTERM)
        assert await server.finish() == 0, server.log.text
    assert server.log.text.count(HINT) == 1, server.log.text
    assert server.log.text.count("Exception in ASGI application") == 2


def test_asyncio_only_code_in_lifespan_startup_gets_the_hint_and_one_error_line(
    tmp_path: Path,
) -> None:
    (tmp_path / "app.py").write_text(ASYNCIO_IN_LIFESPAN)
    result = run(tmp_path, "app:app", "--bind", "127.0.0.1:0")
    assert result.returncode == 3, result.stderr
    assert error_lines(result.stderr) == [
        "Error: lifespan startup failed: RuntimeError: no running event loop"
    ]
    assert result.stderr.count(HINT) == 1, result.stderr


def test_an_asyncio_sleep_in_lifespan_startup_gets_the_hint(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(ASYNCIO_SLEEP_IN_LIFESPAN)
    result = run(tmp_path, "app:app", "--bind", "127.0.0.1:0")
    assert result.returncode == 3, result.stderr
    (error,) = error_lines(result.stderr)
    assert error.startswith(
        "Error: lifespan startup failed: TypeError: trio.run received unrecognized yield message"
    ), error
    assert result.stderr.count(HINT) == 1, result.stderr


# -- loading the app ----------------------------------------------------------------------------

HELLO = """\
async def app(scope, receive, send):
    pass


async def other_app(scope, receive, send):
    pass


def helper(x):
    return x
"""


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            "app.py:app",
            "invalid app 'app.py:app': give a module name, not a file; did you mean 'app:app'?",
        ),
        ("app.py", "invalid app 'app.py': give a module name, not a file; did you mean 'app:app'?"),
        (
            "sub/nested.py:app",
            "invalid app 'sub/nested.py:app': give a module name, not a "
            "file; did you mean '--app-dir sub nested:app'?",
        ),
        (
            "missing.py:app",
            "invalid app 'missing.py:app': give a module name, not a file; "
            "did you mean 'missing:app'?",
        ),
        ("nested:app", "module 'nested' not found in {cwd}; it is in sub/: pass --app-dir sub"),
        (
            "nowhere:app",
            "module 'nowhere' not found in {cwd}; run trioserve from the app's "
            "directory or pass --app-dir DIR",
        ),
        (
            "app:nope",
            "attribute 'nope' not found in module 'app'; "
            "ASGI apps in it: 'app:app', 'app:other_app'",
        ),
        (
            "noapp",
            "attribute 'app' not found in module 'noapp' ('noapp' means 'noapp:app'); "
            "ASGI apps in it: 'noapp:other_app'",
        ),
        (
            "empty",
            "attribute 'app' not found in module 'empty' ('empty' means 'empty:app'); "
            "it has nothing that looks like an ASGI app",
        ),
    ],
    ids=[
        "file-and-attr",
        "file",
        "file-in-subdir",
        "file-not-there",
        "module-in-subdir",
        "module-nowhere",
        "no-such-attr",
        "module-alone",
        "nothing-asgi",
    ],
)
def test_an_app_that_cannot_load_is_one_line_with_a_hint_and_exit_3(
    tmp_path: Path, spec: str, expected: str
) -> None:
    (tmp_path / "app.py").write_text(HELLO)
    (tmp_path / "noapp.py").write_text(HELLO.replace("async def app(", "async def _app("))
    (tmp_path / "empty.py").write_text("X = 1\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "nested.py").write_text(HELLO)
    result = run(tmp_path, spec, "--bind", "127.0.0.1:0")
    assert result.returncode == 3, result.stderr
    assert result.stderr.splitlines() == ["Error: " + expected.format(cwd=tmp_path)]


def test_a_factory_that_returns_none_says_so(tmp_path: Path) -> None:
    (tmp_path / "odd.py").write_text("def factory():\n    app = object\n")
    result = run(tmp_path, "odd:factory", "--factory", "--bind", "127.0.0.1:0")
    assert result.returncode == 3, result.stderr
    assert result.stderr.splitlines() == [
        "Error: app factory 'odd:factory' returned None, not an ASGI app; "
        "does it end with 'return app'?"
    ]


@pytest.mark.parametrize("spec", ["nosuch:app", "app:app"], ids=["bad-module", "failing-lifespan"])
def test_workers_that_cannot_serve_never_announce_serving(tmp_path: Path, spec: str) -> None:
    """With workers the supervisor binds first, but says ``Serving on`` only once
    every worker has loaded the app and finished its startup."""
    (tmp_path / "app.py").write_text(ANSWERS_FAILED)
    result = run(tmp_path, spec, "--bind", "127.0.0.1:0", "--workers", "2")
    assert result.returncode == 3, result.stderr
    assert "Serving on" not in result.stderr, result.stderr
    assert len(error_lines(result.stderr)) == 1, result.stderr


async def test_a_module_name_alone_means_its_app_attribute(tmp_path: Path) -> None:
    """As in Hypercorn: ``trioserve app`` serves ``app:app``."""
    (tmp_path / "app.py").write_text(SLOW_APP)
    async with serving(tmp_path, "app", "--bind", "127.0.0.1:0") as server:
        await server.log.next("Serving on")
        server.process.send_signal(signal.SIGTERM)
        assert await server.finish() == 0, server.log.text
    assert not error_lines(server.log.text)


def test_ctrl_c_while_the_app_is_imported_exits_130_quietly(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(
        "import sys, time\nprint('importing', file=sys.stderr, flush=True)\ntime.sleep(30)\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "trioserve", "app:app", "--bind", "127.0.0.1:0"],
        cwd=tmp_path,
        env=environment(),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        assert process.stderr.readline() == "importing\n"
        process.send_signal(signal.SIGINT)
        rest = process.stderr.read()
        assert process.wait(timeout=DEADLINE) == 130
    finally:
        process.kill()
        process.wait()
        if process.stderr is not None:
            process.stderr.close()
    assert rest == ""


WEBSOCKET_APP = """\
import sys

import trio


async def app(scope, receive, send):
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        print("websocket open", file=sys.stderr, flush=True)
        await trio.sleep_forever()
"""

UPGRADE = (
    b"GET /live HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\nconnection: upgrade\r\n"
    b"sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n"
)


async def test_a_forced_stop_names_the_websockets_it_cancelled(tmp_path: Path) -> None:
    """A websocket counts as in flight, and the forced stop names it."""
    (tmp_path / "app.py").write_text(WEBSOCKET_APP)
    async with serving(tmp_path, "app:app", "--bind", "127.0.0.1:0") as server:
        port = int((await server.log.next(r"Serving on http://127\.0\.0\.1:(\d+)")).group(1))
        async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
            await stream.send_all(UPGRADE)
            await server.log.next("websocket open")
            server.process.send_signal(signal.SIGINT)
            await server.log.next(r"shutting down gracefully \(1 in flight")
            server.process.send_signal(signal.SIGINT)
            assert await server.finish() == 130, server.log.text
    assert "Cancelled 1 request in progress (forced stop): WebSocket /live" in server.log.text
    assert tracebacks(server.log.text) == 0, server.log.text
