"""A newcomer's mistakes and an operator's signals, run through the real command:
every one ends with its documented exit code and readable lines, and no output
holds a Python traceback unless the app itself raised.

Each scenario runs ``python -m trioserve`` in a subprocess from a directory holding
the app, as a user would; the server is found from the URL it logs, whatever the
wording around it.
"""

from __future__ import annotations

import functools
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from _pipes import PipeReader, clean_environment, wait_for_exit

APPS = {
    "app.py": """
import sys

import trio


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        message = await receive()
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["path"] == "/slow":
        print("slow request started", file=sys.stderr, flush=True)
        await trio.sleep(3600)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


not_callable = 42
""",
    "failing_startup.py": """
async def app(scope, receive, send):
    assert scope["type"] == "lifespan"
    await receive()
    await send({"type": "lifespan.startup.failed", "message": "database unreachable"})
""",
    "broken.toml": "bind = [\n",
    "typo.toml": 'bnid = ["127.0.0.1:0"]\n',
}

DOCS = Path(__file__).parent.parent / "docs"
URL = r"http://127\.0\.0\.1:(\d+)"


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    for name, text in APPS.items():
        (tmp_path / name).write_text(text)
    return tmp_path


def run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trioserve", *args],
        capture_output=True,
        text=True,
        timeout=20,
        cwd=cwd,
        env=clean_environment(env),
    )


@functools.cache
def listed_errors() -> list[re.Pattern[str]]:
    """The ``Error:`` lines docs/troubleshooting.md explains, as patterns: a word in
    CAPITALS (``KEY``, ``PATH``, ``N``) stands for any text, ``...`` for any rest."""
    page = (DOCS / "troubleshooting.md").read_text()
    patterns = []
    for quoted in re.findall(r"\*\*`(Error: .+?)`\*\*", page, re.S):
        parts = re.split(r"(\.\.\.|…|\b[A-Z][A-Z_]*[A-Z]\b|\bN\b)", " ".join(quoted.split()))
        regex = "".join(
            ".*"
            if part in ("...", "…")
            else ".+?"
            if re.fullmatch(r"[A-Z][A-Z_]*[A-Z]|N", part)
            else re.escape(part)
            for part in parts
        )
        patterns.append(re.compile(regex))
    return patterns


def assert_explained(line: str) -> None:
    assert any(pattern.fullmatch(line) for pattern in listed_errors()), (
        f"not on docs/troubleshooting.md: {line!r}"
    )


def assert_no_traceback(*outputs: str) -> None:
    text = "".join(outputs)
    assert "Traceback" not in text, text
    assert "ExceptionGroup" not in text, text


@pytest.mark.parametrize(
    ("args", "env", "code"),
    [
        (["app:app", "--bogus"], {}, 2),
        (["app:app", "--port", "abc"], {}, 2),
        (["app:app", "--timeout-keep-alive", "abc"], {}, 2),
        (["app:app", "--loop", "uvloop"], {}, 2),
        (["app:app", "-k", "asyncio"], {}, 2),
        (["app:app", "--config", "missing.toml"], {}, 2),
        (["app:app", "--config", "broken.toml"], {}, 2),
        (["app:app", "--config", "typo.toml"], {}, 2),
        (["app:app", "--certfile", "missing.pem", "--keyfile", "missing.pem"], {}, 2),
        (["app:app"], {"TRIOSERVE_KEEP_ALIVE_TIMEOUT": "abc"}, 2),
        (["app:app"], {"TRIOSERVE_NO_SUCH_OPTION": "1"}, 2),
        (["app:app"], {"TRIOSERVE_LOGLEVEL": "debug"}, 2),
        (["app:app", "--access-logfile", "/nonexistent/dir/access.log"], {}, 2),
        (["app:app", "extra"], {}, 2),
        (["app:app", "--host", "0.0.0.0:8000"], {}, 2),
        (["app:app", "--header", "connection: keep-alive"], {}, 2),
        (["app:app"], {"TRIOSERVE_TIMEOUT_KEEP_ALIVE": "5"}, 2),
        ([], {}, 2),
        (["nosuchmodule:app"], {}, 3),
        (["app:nosuch"], {}, 3),
        (["app:not_callable"], {}, 3),
        (["app.py:app"], {}, 3),
        (["failing_startup:app"], {}, 3),
    ],
)
def test_mistake_ends_with_its_code_and_no_traceback(
    app_dir: Path, args: list[str], env: dict[str, str], code: int
) -> None:
    # A scenario that wrongly starts must not take a well-known port.
    args = [*args, "--bind", "127.0.0.1:0"] if args else args
    completed = run(args, app_dir, **env)
    assert completed.returncode == code, completed.stderr
    assert_no_traceback(completed.stdout, completed.stderr)
    errors = [line for line in completed.stderr.splitlines() if line.startswith("Error")]
    assert len(errors) == 1, completed.stderr
    assert_explained(errors[0])


def test_address_in_use_is_exit_3_and_no_traceback(app_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        completed = run(["app:app", "--bind", f"127.0.0.1:{port}"], app_dir)
    assert completed.returncode == 3, completed.stderr
    assert_no_traceback(completed.stdout, completed.stderr)
    errors = [line for line in completed.stderr.splitlines() if line.startswith("Error")]
    assert len(errors) == 1, completed.stderr
    assert_explained(errors[0])


async def start(args: list[str], cwd: Path) -> tuple[trio.Process, PipeReader, PipeReader, int]:
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "trioserve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=str(cwd),
        env=clean_environment({}),
    )
    stdout, stderr = PipeReader(process.stdout), PipeReader(process.stderr)
    with trio.fail_after(15):
        port = int((await stderr.wait_for(URL)).group(1))
    return process, stdout, stderr, port


MODES = [
    pytest.param([], id="one-process"),
    pytest.param(["--workers", "2"], id="workers", marks=pytest.mark.slow),
    pytest.param(["--reload"], id="reload", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("mode", MODES)
async def test_one_signal_stops_cleanly_with_exit_0(app_dir: Path, mode: list[str]) -> None:
    if "--reload" in mode:
        pytest.importorskip("watchfiles")
    process, stdout, stderr, _ = await start(["app:app", "--bind", "127.0.0.1:0", *mode], app_dir)
    process.send_signal(signal.SIGINT)
    await wait_for_exit(process, stdout, stderr)
    assert process.returncode == 0, stderr.text
    assert_no_traceback(stdout.text, stderr.text)


@pytest.mark.parametrize("mode", MODES)
async def test_second_signal_during_a_slow_request_exits_130_without_traceback(
    app_dir: Path, mode: list[str]
) -> None:
    if "--reload" in mode:
        pytest.importorskip("watchfiles")
    process, stdout, stderr, port = await start(
        ["app:app", "--bind", "127.0.0.1:0", *mode], app_dir
    )
    client = await trio.open_tcp_stream("127.0.0.1", port)
    async with client:
        await client.send_all(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
        with trio.fail_after(10):
            await stderr.wait_for("slow request started")
        process.send_signal(signal.SIGINT)
        with trio.fail_after(10):
            await stderr.wait_for(r"(?i)shutting down")
        process.send_signal(signal.SIGINT)
        await wait_for_exit(process, stdout, stderr)
        with trio.fail_after(10):
            answer = b""
            while data := await client.receive_some():
                answer += data
    assert process.returncode == 130, stderr.text
    assert_no_traceback(stdout.text, stderr.text)
    assert answer == b"" or answer.startswith(b"HTTP/1.1 503 "), answer
