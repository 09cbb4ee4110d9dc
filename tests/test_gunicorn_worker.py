"""``gunicorn -k trioserve.workers.TrioserveWorker``: a real gunicorn master with
real workers, driven over loopback.

The app answers with its worker's PID and prints a line to stderr at lifespan
startup and shutdown and when a slow request begins, so that the tests wait on
log lines rather than on time: one worker serves and writes the access log in
gunicorn's format; two workers both boot and serve; ``max_requests`` ends a worker
after its requests and gunicorn boots another; SIGTERM lets an in-flight slow
request finish before the workers and the master exit 0, with lifespan shutdown
run; SIGQUIT stops at once; TLS serves HTTPS from gunicorn's ``certfile`` and
``keyfile``; a lifespan startup failure stops gunicorn with one error line; a
worker whose event loop is blocked past ``timeout`` runs the ``worker_abort`` hook
and exits 1; gunicorn's ``--reload`` is refused with one error line.
"""

from __future__ import annotations

import os
import re
import signal
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import trio
import trustme
from _pipes import LogWatch

pytest.importorskip("gunicorn")

APP = """\
import os
import sys
import time

import trio

FAIL_STARTUP = os.environ.get("FAIL_STARTUP") == "1"


def say(text):
    print(f"{text} {os.getpid()}", file=sys.stderr, flush=True)


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if FAIL_STARTUP:
                    await send({"type": "lifespan.startup.failed", "message": "no database"})
                    return
                say("lifespan startup")
                await send({"type": "lifespan.startup.complete"})
            else:
                say("lifespan shutdown")
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["path"] == "/block":
        say("blocking the event loop")
        time.sleep(30)  # blocking the event loop is the point: gunicorn's timeout fires
    if scope["path"] == "/slow":
        say("slow request began")
        await trio.sleep(1)
    body = str(os.getpid()).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
"""
DEADLINE = 20
LISTENING = r"Listening at: (https?://127\.0\.0\.1:\d+)"


class Gunicorn:
    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.stderr = LogWatch(process.stderr, seconds=DEADLINE)
        self.stdout = LogWatch(process.stdout, seconds=DEADLINE)
        self.url = ""

    async def wait_listening(self) -> str:
        self.url = (await self.stderr.next(LISTENING)).group(1)
        return self.url

    async def finish(self) -> int:
        with trio.fail_after(DEADLINE):
            await self.process.wait()
            await self.stderr.read_rest()
            await self.stdout.read_rest()
        return self.process.returncode


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "gapp.py").write_text(APP)
    return tmp_path


@pytest.fixture
async def start(app_dir: Path) -> AsyncIterator[object]:
    started: list[Gunicorn] = []

    async def run(*args: str, env: dict[str, str] | None = None) -> Gunicorn:
        environment = {**os.environ, **(env or {})}
        process = await trio.lowlevel.open_process(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "-k",
                "trioserve.workers.TrioserveWorker",
                "--bind",
                "127.0.0.1:0",
                *_control_socket(app_dir),
                *args,
                "gapp:app",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=str(app_dir),
            env=environment,
        )
        started.append(Gunicorn(process))
        return started[-1]

    try:
        yield run
    finally:
        for gunicorn in started:
            if gunicorn.process.returncode is None:
                gunicorn.process.kill()
            with trio.CancelScope(shield=True):
                await gunicorn.process.wait()
                # The master is gone; its workers notice and exit, but do not wait.
                for pid in re.findall(r"Booting worker with pid: (\d+)", gunicorn.stderr.text):
                    if _running(int(pid)):
                        os.kill(int(pid), signal.SIGKILL)


def _control_socket(app_dir: Path) -> list[str]:
    # Newer gunicorns open a control socket, by default under $HOME: one per test,
    # so that tests (and other gunicorns) running side by side do not share it.
    from gunicorn.config import KNOWN_SETTINGS

    if any(setting.name == "control_socket" for setting in KNOWN_SETTINGS):
        return ["--control-socket", str(app_dir / "gunicorn.ctl")]
    return []


def _running(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return status.rsplit(")", 1)[1].split()[0] != "Z"


async def get(url: str, **client: object) -> httpx.Response:
    async with httpx.AsyncClient(trust_env=False, **client) as http:  # type: ignore[arg-type]
        with trio.fail_after(DEADLINE):
            return await http.get(url, headers={"connection": "close"})


async def test_a_worker_serves_and_writes_gunicorns_access_log(start: object) -> None:
    gunicorn = await start("--access-logfile", "-")  # type: ignore[operator]
    url = await gunicorn.wait_listening()
    worker = (await gunicorn.stderr.next(r"lifespan startup (\d+)")).group(1)
    response = await get(url + "/hello")
    assert response.status_code == 200
    assert response.text == worker
    line = (await gunicorn.stdout.next(r".*\n")).group(0)
    # gunicorn's own default format, with trioserve's atoms (``h`` is host:port).
    assert re.fullmatch(
        r'127\.0\.0\.1:\d+ - - \[.+\] "GET /hello HTTP/1\.1" 200 \d+ "-" "python-httpx/.+"\n', line
    ), line
    gunicorn.process.send_signal(signal.SIGTERM)
    assert await gunicorn.finish() == 0, gunicorn.stderr.text
    assert f"lifespan shutdown {worker}" in gunicorn.stderr.text
    assert "Traceback" not in gunicorn.stderr.text


async def test_two_workers_both_boot_and_serve(start: object) -> None:
    gunicorn = await start("--workers", "2")  # type: ignore[operator]
    await gunicorn.wait_listening()
    # Each worker says where it serves, through gunicorn's error log (with its PID).
    serving = r"\[(\d+)\] \[INFO\] Serving on http://127\.0\.0\.1:\d+"
    first = (await gunicorn.stderr.next(serving)).group(1)
    second = (await gunicorn.stderr.next(serving)).group(1)
    assert first != second
    started = re.findall(r"lifespan startup (\d+)", gunicorn.stderr.text)
    assert sorted(started) == sorted([first, second])
    gunicorn.process.send_signal(signal.SIGTERM)
    assert await gunicorn.finish() == 0, gunicorn.stderr.text
    assert {first, second} <= set(re.findall(r"lifespan shutdown (\d+)", gunicorn.stderr.text))


async def test_max_requests_ends_the_worker_and_gunicorn_boots_another(start: object) -> None:
    gunicorn = await start("--max-requests", "2")  # type: ignore[operator]
    url = await gunicorn.wait_listening()
    first = (await gunicorn.stderr.next(r"lifespan startup (\d+)")).group(1)
    assert [(await get(url)).text for _ in range(2)] == [first, first]
    await gunicorn.stderr.next(rf"lifespan shutdown {first}")
    second = (await gunicorn.stderr.next(r"lifespan startup (\d+)")).group(1)
    assert second != first
    assert (await get(url)).text == second
    gunicorn.process.send_signal(signal.SIGTERM)
    assert await gunicorn.finish() == 0, gunicorn.stderr.text


@pytest.mark.slow
async def test_sigterm_lets_an_in_flight_request_finish(start: object) -> None:
    gunicorn = await start()  # type: ignore[operator]
    url = await gunicorn.wait_listening()
    worker = (await gunicorn.stderr.next(r"lifespan startup (\d+)")).group(1)
    responses: list[httpx.Response] = []

    async def slow() -> None:
        responses.append(await get(url + "/slow"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(slow)
        await gunicorn.stderr.next(r"slow request began")
        gunicorn.process.send_signal(signal.SIGTERM)
        await gunicorn.stderr.next(rf"\[{worker}\] \[INFO\] Shutting down")
    assert [(r.status_code, r.text) for r in responses] == [(200, worker)]
    assert await gunicorn.finish() == 0, gunicorn.stderr.text
    assert f"lifespan shutdown {worker}" in gunicorn.stderr.text


async def test_sigquit_stops_at_once(start: object) -> None:
    gunicorn = await start("--graceful-timeout", "60")  # type: ignore[operator]
    url = await gunicorn.wait_listening()
    await gunicorn.stderr.next(r"lifespan startup (\d+)")
    statuses: list[int] = []

    async def slow() -> None:
        # Cut short before it answered: the worker answers for it.
        statuses.append((await get(url + "/slow")).status_code)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(slow)
        await gunicorn.stderr.next(r"slow request began")
        gunicorn.process.send_signal(signal.SIGQUIT)
    assert statuses == [503]
    assert await gunicorn.finish() == 0, gunicorn.stderr.text


async def test_tls_from_gunicorns_certfile_and_keyfile(start: object, tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    gunicorn = await start("--certfile", str(certfile), "--keyfile", str(keyfile))  # type: ignore[operator]
    url = await gunicorn.wait_listening()
    assert url.startswith("https://")
    worker = (await gunicorn.stderr.next(r"lifespan startup (\d+)")).group(1)
    context = ssl.create_default_context()
    ca.configure_trust(context)
    response = await get(url, verify=context)
    assert response.text == worker
    gunicorn.process.send_signal(signal.SIGTERM)
    assert await gunicorn.finish() == 0, gunicorn.stderr.text


async def test_lifespan_startup_failure_stops_gunicorn_with_one_error_line(
    start: object,
) -> None:
    gunicorn = await start(env={"FAIL_STARTUP": "1"})  # type: ignore[operator]
    assert await gunicorn.finish() != 0
    errors = [line for line in gunicorn.stderr.text.splitlines() if "no database" in line]
    assert len(errors) == 1, gunicorn.stderr.text
    assert "[ERROR]" in errors[0]
    assert "Traceback" not in gunicorn.stderr.text


@pytest.mark.slow
async def test_a_timeout_runs_the_worker_abort_hook_and_the_worker_exits_1(
    start: object, app_dir: Path
) -> None:
    """gunicorn's ``timeout`` fires only while the event loop is blocked: the hook
    must run then, not from a trio task that cannot."""
    (app_dir / "hooks.py").write_text(
        "def worker_abort(worker):\n"
        "    worker.log.warning('worker_abort hook ran in %s', worker.pid)\n"
    )
    gunicorn = await start("-c", "hooks.py", "--timeout", "2")  # type: ignore[operator]
    url = await gunicorn.wait_listening()
    worker = (await gunicorn.stderr.next(r"lifespan startup (\d+)")).group(1)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_expect_hang_up, url + "/block")
        await gunicorn.stderr.next("blocking the event loop")
        await gunicorn.stderr.next(rf"worker_abort hook ran in {worker}")
        await gunicorn.stderr.next(rf"Worker \(pid:{worker}\) exited with code 1")
    assert "SIGKILL" not in gunicorn.stderr.text
    gunicorn.process.send_signal(signal.SIGTERM)
    assert await gunicorn.finish() == 0, gunicorn.stderr.text


async def _expect_hang_up(url: str) -> None:
    with pytest.raises(httpx.TransportError):
        await get(url)


async def test_gunicorns_reload_is_refused_with_one_error_line(start: object) -> None:
    gunicorn = await start("--reload")  # type: ignore[operator]
    assert await gunicorn.finish() == 3, gunicorn.stderr.text
    errors = [line for line in gunicorn.stderr.text.splitlines() if "--reload" in line]
    assert len(errors) == 1, gunicorn.stderr.text
    assert errors[0].endswith(
        "[ERROR] gunicorn's --reload is not supported by trioserve's worker; use trioserve --reload"
    )
    assert "Traceback" not in gunicorn.stderr.text
