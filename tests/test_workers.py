"""``trioserve --workers N``: the supervisor and its worker processes, driven as an
operator drives them.

Every test runs the real command (``python -m trioserve fx_workers:app -w 2``) on
127.0.0.1 port 0 and learns the address from the parent's ``Serving on`` log
line and the worker PIDs from its ``Worker PID ready`` lines; the app answers
with the PID of the worker that served the request. Waits are bounded
(``trio.fail_after``) and wait on log lines, PIDs or process exits, never on
time alone. Every request opens its own connection (``connection: close``), so
that the kernel hands each one to whichever worker accepts first.
"""

from __future__ import annotations

import os
import re
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import trio
import trustme
from _pipes import LogWatch

APPS_DIR = Path(__file__).parent / "fixtures" / "apps"
SERVING = r"Serving on (http://127\.0\.0\.1:\d+)"
READY = r"Worker (\d+) ready"
#: What fx_workers prints when a /sleep request has reached the app.
SLEEPING = r"fx_workers \d+: sleeping"


class Supervisor:
    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.log = LogWatch(process.stderr, seconds=30)
        self.url = ""

    async def ready_pids(self, count: int) -> set[int]:
        """The PIDs of the next ``count`` workers that report ready."""
        return {int((await self.log.next(READY)).group(1)) for _ in range(count)}

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    async def finish(self, seconds: float = 30) -> int:
        with trio.fail_after(seconds):
            await self.process.wait()
            await self.log.read_rest()
        assert self.process.returncode is not None
        return self.process.returncode


@asynccontextmanager
async def supervisor(
    *args: str, env: dict[str, str] | None = None, start_new_session: bool = False
) -> AsyncIterator[Supervisor]:
    """``python -m trioserve fx_workers:app ARGS``, started and, if the test left
    it running, stopped with SIGTERM (then SIGKILL)."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TRIOSERVE_")}
    environment.pop("WEB_CONCURRENCY", None)
    environment.update(env or {})
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "trioserve", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=str(APPS_DIR),
        env=environment,
        start_new_session=start_new_session,
    )
    server = Supervisor(process)
    try:
        yield server
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
                with trio.move_on_after(15):
                    await process.wait()
                if process.returncode is None:
                    process.kill()
            assert process.stderr is not None
            await process.stderr.aclose()
            await process.wait()


async def get(url: str, path: str = "/", seconds: float = 20) -> int:
    """GET on a connection of its own; the PID of the worker that answered."""
    async with httpx.AsyncClient(trust_env=False, headers={"connection": "close"}) as client:
        with trio.fail_after(seconds):
            response = await client.get(url + path)
    assert response.status_code == 200
    return int(response.json()["pid"])


async def pids_serving(url: str, expected: set[int], attempts: int = 200) -> set[int]:
    """Send requests, eight at a time, until every PID in ``expected`` has answered."""
    seen: set[int] = set()
    for _ in range(attempts // 8):
        async with trio.open_nursery() as nursery:
            for _ in range(8):
                nursery.start_soon(_record, url, seen)
        if expected <= seen:
            break
    return seen


async def _record(url: str, seen: set[int]) -> None:
    seen.add(await get(url))


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as file:
            # A zombie (state Z) has exited; only its parent has not reaped it yet.
            return file.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def wait_gone(pids: set[int], seconds: float = 30) -> None:
    with trio.fail_after(seconds):
        # A PID has no event to wait on: look every 50 ms.
        while any(alive(pid) for pid in pids):  # noqa: ASYNC110
            await trio.sleep(0.05)


def stop_line(text: str, pid: int) -> int:
    """Where the worker ``pid`` logs that it shuts down (the line may begin with
    its reason)."""
    match = re.search(rf"\[{pid}\] \[INFO\] (?:[^\n]*; )?[Ss]hutting down", text)
    assert match is not None, text
    return match.start()


def serving_counts(text: str) -> list[int]:
    """How many workers serve after each ready or shutdown line of ``text``,
    from the startup line (``Serving on``: every first worker is ready) to the supervisor's first
    ``Received`` line: a worker serves from ``Worker PID ready`` until its own
    shutdown line (which may begin with its reason)."""
    start = text.index("Serving on")
    end = text.find("Received", start)
    serving = {int(pid) for pid in re.findall(READY, text[:start])}
    counts = []
    pattern = re.compile(r"Worker (\d+) ready|\[(\d+)\] \[INFO\] (?:[^\n]*; )?[Ss]hutting down")
    for match in pattern.finditer(text, start, end if end != -1 else len(text)):
        if match.group(1):
            serving.add(int(match.group(1)))
        else:
            serving.discard(int(match.group(2)))
        counts.append(len(serving))
    return counts


def process_group(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as file:
        return int(file.read().rsplit(")", 1)[1].split()[2])


class Load:
    """Requests in a loop on ``tasks`` connections at a time until stopped; every
    failure is kept."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.done = 0
        self.failures: list[str] = []
        self.pids: set[int] = set()
        self.running = True
        self.progress = trio.Event()

    async def until(self, count: int) -> None:
        """Wait until ``count`` requests have been answered."""
        with trio.fail_after(30):
            while self.done < count:
                await self.progress.wait()

    async def run(self, tasks: int = 4) -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(tasks):
                nursery.start_soon(self._loop)

    async def _loop(self) -> None:
        while self.running:
            try:
                self.pids.add(await get(self.url))
                self.done += 1
                self.progress.set()
                self.progress = trio.Event()
            except (httpx.HTTPError, AssertionError, trio.TooSlowError) as exc:
                self.failures.append(repr(exc))


# -- the default run ------------------------------------------------------------------


async def test_requests_spread_over_the_workers_and_sigterm_ends_them_all() -> None:
    async with supervisor("fx_workers:app", "-w", "2", "-b", "127.0.0.1:0") as server:
        pids = await server.ready_pids(2)
        url = (await server.log.next(SERVING)).group(1)
        assert os.getpid() not in pids
        assert await pids_serving(url, pids) == pids
        server.signal(signal.SIGTERM)
        assert await server.finish() == 0, server.log.text
    await wait_gone(pids)
    assert "Received SIGTERM; stopping the workers gracefully" in server.log.text
    assert "Traceback" not in server.log.text


@pytest.mark.slow
async def test_a_killed_worker_is_replaced_and_the_new_one_serves() -> None:
    async with supervisor("fx_workers:app", "-w", "2", "-b", "127.0.0.1:0") as server:
        pids = await server.ready_pids(2)
        url = (await server.log.next(SERVING)).group(1)
        victim = min(pids)
        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        await server.log.next(rf"Worker {victim} was killed by SIGKILL; replacing it in [\d.]+s")
        (replacement,) = await server.ready_pids(1)
        print(f"worker replaced {time.monotonic() - killed_at:.2f}s after kill -9")
        assert replacement not in pids
        survivors = (pids - {victim}) | {replacement}
        assert await pids_serving(url, survivors) == survivors


@pytest.mark.parametrize(
    ("app", "message"),
    [
        ("fx_import_error:app", "error importing module 'fx_import_error'"),
        ("fx_lifespan_fails:app", "cannot reach db:5432"),
        ("fx_not_there:app", "module 'fx_not_there' not found"),
    ],
)
async def test_a_worker_that_cannot_start_stops_the_supervisor_with_exit_3(
    app: str, message: str
) -> None:
    started = time.monotonic()
    async with supervisor(app, "-w", "2", "-b", "127.0.0.1:0") as server:
        assert await server.finish() == 3
    errors = [line for line in server.log.text.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, server.log.text
    assert message in errors[0]
    assert "Traceback" not in server.log.text
    assert "replacing" not in server.log.text  # no restart loop
    assert time.monotonic() - started < 10


@pytest.mark.slow
async def test_ctrl_c_to_the_process_group_finishes_requests_in_flight() -> None:
    """A terminal's Ctrl+C reaches the supervisor and every worker at once: the
    workers leave it to the supervisor, which stops them gracefully, so a request
    in progress still gets its answer."""
    async with supervisor(
        "fx_workers:app", "-w", "2", "-b", "127.0.0.1:0", start_new_session=True
    ) as server:
        await server.ready_pids(2)
        url = (await server.log.next(SERVING)).group(1)
        answers: list[int] = []
        async with trio.open_nursery() as nursery:

            async def slow_request() -> None:
                answers.append(await get(url, "/sleep?1"))

            nursery.start_soon(slow_request)
            await server.log.next(SLEEPING)
            os.killpg(server.process.pid, signal.SIGINT)
        assert len(answers) == 1
        assert await server.finish() == 0, server.log.text
    assert server.log.text.count("Received SIGINT") == 1


async def test_web_concurrency_is_the_default_worker_count() -> None:
    async with supervisor(
        "fx_workers:app", "-b", "127.0.0.1:0", env={"WEB_CONCURRENCY": "2"}
    ) as server:
        await server.log.next("Starting 2 workers")
        await server.log.next(r"Serving on .*, 2 workers\)")
    async with supervisor(
        "fx_workers:app", "-w", "3", "-b", "127.0.0.1:0", env={"WEB_CONCURRENCY": "2"}
    ) as server:
        await server.log.next("Starting 3 workers")


async def test_a_bind_that_fails_in_the_supervisor_exits_3_before_any_worker() -> None:
    with trio.socket.socket() as taken:
        await taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        async with supervisor("fx_workers:app", "-w", "2", "-b", f"127.0.0.1:{port}") as server:
            assert await server.finish() == 3
    [error] = [line for line in server.log.text.splitlines() if line.startswith("Error:")]
    assert f"cannot bind 127.0.0.1:{port}: Address already in use" in error
    assert "Starting" not in server.log.text


async def test_unix_socket_is_served_by_the_workers_and_removed_by_the_supervisor(
    sock_dir: Path,
) -> None:
    path = sock_dir / "app.sock"
    async with supervisor("fx_workers:app", "-w", "2", "--uds", str(path)) as server:
        pids = await server.ready_pids(2)
        transport = httpx.AsyncHTTPTransport(uds=str(path))
        async with httpx.AsyncClient(transport=transport) as client:
            with trio.fail_after(10):
                response = await client.get("http://app/")
        assert response.json()["pid"] in pids
        server.signal(signal.SIGTERM)
        assert await server.finish() == 0
    assert not path.exists()


async def test_an_ipv6_address_is_bound_once_and_served_by_the_workers() -> None:
    async with supervisor("fx_workers:app", "-w", "2", "-b", "[::1]:0") as server:
        pids = await server.ready_pids(2)
        url = (await server.log.next(r"Serving on (http://\[::1\]:\d+)")).group(1)
        assert await pids_serving(url, pids) == pids
        server.signal(signal.SIGTERM)
        assert await server.finish() == 0, server.log.text


# -- long ones ------------------------------------------------------------------------


@pytest.mark.slow
async def test_sighup_replaces_every_worker_without_a_failed_request() -> None:
    async with supervisor("fx_workers:app", "-w", "2", "-b", "127.0.0.1:0") as server:
        old = await server.ready_pids(2)
        url = (await server.log.next(SERVING)).group(1)
        load = Load(url)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(load.run)
            await load.until(20)
            server.signal(signal.SIGHUP)
            await server.log.next("Received SIGHUP; replacing every worker")
            new = await server.ready_pids(2)
            # Both old workers have finished shutting down.
            await wait_gone(old)
            await load.until(load.done + 20)
            load.running = False
        assert not new & old
        # Overlap: a new worker was ready before an old one began to shut down.
        text = server.log.text
        first_ready = min(text.index(f"Worker {pid} ready") for pid in new)
        first_stop = min(stop_line(text, pid) for pid in old)
        assert first_ready < first_stop
        assert load.failures == []
        assert new <= load.pids
        assert await pids_serving(url, new) == new


@pytest.mark.slow
async def test_sigttin_adds_a_worker_and_sigttou_removes_one() -> None:
    async with supervisor("fx_workers:app", "-w", "2", "-b", "127.0.0.1:0") as server:
        pids = await server.ready_pids(2)
        url = (await server.log.next(SERVING)).group(1)
        server.signal(signal.SIGTTIN)
        await server.log.next(r"Received SIGTTIN; adding a worker \(now 3\)")
        (added,) = await server.ready_pids(1)
        pids.add(added)
        assert await pids_serving(url, pids) == pids
        server.signal(signal.SIGTTOU)
        await server.log.next(r"Received SIGTTOU; retiring a worker \(now 2\)")
        await wait_gone({added})
        assert all(alive(pid) for pid in pids - {added})
        # One at a time: a signal that arrives twice before it is handled counts once.
        server.signal(signal.SIGTTOU)
        await server.log.next(r"Received SIGTTOU; retiring a worker \(now 1\)")
        server.signal(signal.SIGTTOU)
        await server.log.next("Received SIGTTOU; keeping the last worker")


@pytest.mark.slow
async def test_a_worker_stuck_in_a_blocking_call_is_killed_after_the_healthcheck_timeout() -> None:
    async with supervisor(
        "fx_workers:app",
        "-w",
        "2",
        "-b",
        "127.0.0.1:0",
        "--worker-healthcheck-timeout",
        "1",
    ) as server:
        pids = await server.ready_pids(2)
        url = (await server.log.next(SERVING)).group(1)
        outcome: list[str] = []

        async def blocked_request() -> None:
            try:
                await get(url, "/block?60", seconds=20)
            except httpx.HTTPError as exc:
                outcome.append(type(exc).__name__)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(blocked_request)
            match = await server.log.next(r"Worker (\d+) sent no heartbeat for 1s; killing it")
            stuck = int(match.group(1))
            assert stuck in pids
            (replacement,) = await server.ready_pids(1)
        assert outcome  # the blocked request's connection ended with the worker
        survivors = (pids - {stuck}) | {replacement}
        assert await pids_serving(url, survivors) == survivors


@pytest.mark.slow
async def test_a_worker_over_worker_max_rss_is_replaced_gracefully() -> None:
    async with supervisor(
        "fx_workers:app", "-w", "2", "-b", "127.0.0.1:0", "--worker-max-rss", "120"
    ) as server:
        pids = await server.ready_pids(2)
        url = (await server.log.next(SERVING)).group(1)
        grown = await get(url, "/alloc?150")
        match = await server.log.next(r"Worker (\d+) uses (\d+) MiB \(worker_max_rss 120\)")
        assert int(match.group(1)) == grown
        assert int(match.group(2)) > 120
        (replacement,) = await server.ready_pids(1)
        # Stopped only after its replacement was ready.
        await server.log.next(rf"\[{grown}\] \[INFO\] (?:[^\n]*; )?[Ss]hutting down")
        await wait_gone({grown})
        survivors = (pids - {grown}) | {replacement}
        assert await pids_serving(url, survivors) == survivors


@pytest.mark.slow
async def test_sigusr1_reopens_the_access_log_after_it_was_renamed(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    async with supervisor(
        "fx_workers:app", "-w", "2", "-b", "127.0.0.1:0", "--access-logfile", str(log)
    ) as server:
        await server.ready_pids(2)
        url = (await server.log.next(SERVING)).group(1)
        await get(url, "/before")
        rotated = tmp_path / "access.log.1"
        log.rename(rotated)
        server.signal(signal.SIGUSR1)
        for _ in range(2):
            await server.log.next(r"\[\d+\] \[INFO\] Reopened the log files")
        await get(url, "/after")
        server.signal(signal.SIGTERM)
        assert await server.finish() == 0
    assert "GET /before" in rotated.read_text()
    assert "/after" not in rotated.read_text()
    assert "GET /after" in log.read_text()


async def test_sigusr1_reopens_the_access_log_of_a_single_process_server(
    tmp_path: Path,
) -> None:
    log = tmp_path / "access.log"
    async with supervisor(
        "fx_workers:app", "-b", "127.0.0.1:0", "--access-logfile", str(log)
    ) as server:
        url = (await server.log.next(SERVING)).group(1)
        pid = await get(url, "/before")
        assert pid == server.process.pid
        rotated = tmp_path / "access.log.1"
        log.rename(rotated)
        server.signal(signal.SIGUSR1)
        await server.log.next(r"\[INFO\] Reopened the log files")
        await get(url, "/after")
        server.signal(signal.SIGTERM)
        assert await server.finish() == 0
    assert "GET /before" in rotated.read_text()
    assert "/after" not in rotated.read_text()
    assert "GET /after" in log.read_text()


@pytest.mark.slow
async def test_a_slow_lifespan_shutdown_has_its_shutdown_timeout_before_a_worker_is_killed() -> (
    None
):
    """The supervisor allows a stopping worker ``graceful_timeout`` for its requests
    and then ``shutdown_timeout`` for the app's lifespan shutdown; killing it at
    ``graceful_timeout`` plus a margin would cut a slow shutdown short."""
    async with supervisor(
        "fx_workers:app", "-w", "2", "-b", "127.0.0.1:0", "--graceful-timeout", "0.2",
        env={"FX_SHUTDOWN_SECONDS": "6"},
    ) as server:  # fmt: skip
        pids = await server.ready_pids(2)
        server.signal(signal.SIGTERM)
        assert await server.finish(seconds=40) == 0, server.log.text
    await wait_gone(pids)
    assert server.log.text.count("shutdown done") == 2, server.log.text
    assert "killing it" not in server.log.text


@pytest.mark.slow
async def test_workers_shut_down_when_the_supervisor_is_killed() -> None:
    async with supervisor("fx_workers:app", "-w", "2", "-b", "127.0.0.1:0") as server:
        pids = await server.ready_pids(2)
        server.process.kill()
        await wait_gone(pids)
        await server.log.read_rest()
    assert server.log.text.count("The supervisor is gone; shutting down") == 2


@pytest.mark.slow
async def test_a_second_sigterm_kills_workers_that_are_still_finishing() -> None:
    async with supervisor(
        "fx_workers:app", "-w", "2", "-b", "127.0.0.1:0", "--graceful-timeout", "60"
    ) as server:
        pids = await server.ready_pids(2)
        url = (await server.log.next(SERVING)).group(1)
        async with trio.open_nursery() as nursery:

            async def slow_request() -> None:
                async with httpx.AsyncClient(trust_env=False) as client:
                    with trio.fail_after(20):
                        try:
                            response = await client.get(url + "/sleep?60")
                        except httpx.RemoteProtocolError:
                            # A worker forced to stop on a loaded machine may close
                            # before its 503 leaves; this test holds the stop
                            # itself, and the 503 is held by the forced-stop tests
                            # (tests/test_forced_stop.py, tests/test_cli_messages.py).
                            return
                # Cut short before it answered: the worker answers for it.
                assert response.status_code == 503

            nursery.start_soon(slow_request)
            await server.log.next(SLEEPING)
            server.signal(signal.SIGTERM)
            await server.log.next("Received SIGTERM; stopping the workers gracefully")
            server.signal(signal.SIGTERM)
            await server.log.next("Received SIGTERM again; stopping the workers now")
            assert await server.finish() == 130
        await wait_gone(pids)


@pytest.mark.slow
async def test_max_requests_replaces_a_worker_only_once_its_replacement_is_ready() -> None:
    """Both workers reach max_requests together (no jitter). Each goes on serving
    until its replacement is ready; one slot recycles at a time, so two workers
    serve throughout and no request waits for a worker to start."""
    async with supervisor(
        "fx_workers:app", "-w", "2", "-b", "127.0.0.1:0", "--max-requests", "6"
    ) as server:
        first = await server.ready_pids(2)
        url = (await server.log.next(SERVING)).group(1)
        load = Load(url)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(load.run, 2)
            recycled = set()
            for _ in range(2):
                match = await server.log.next(r"Worker (\d+) reached max_requests; replacing it")
                recycled.add(int(match.group(1)))
            assert recycled == first
            await wait_gone(first)
            load.running = False
        server.signal(signal.SIGTERM)
        assert await server.finish() == 0, server.log.text
    assert load.failures == []
    assert len(load.pids - first) >= 1  # a replacement served too
    counts = serving_counts(server.log.text)
    assert len(counts) >= 4, server.log.text  # two replacements ready, two old stopped
    assert min(counts) >= 2, (counts, server.log.text)
    assert "Traceback" not in server.log.text


async def test_workers_are_in_a_process_group_of_their_own() -> None:
    """A terminal's group signals (Ctrl+C, hangup) reach the supervisor only."""
    async with supervisor("fx_workers:app", "-w", "2", "-b", "127.0.0.1:0") as server:
        pids = await server.ready_pids(2)
        groups = {process_group(pid) for pid in pids}
        assert process_group(server.process.pid) not in groups
        assert groups == pids


async def test_ctrl_c_while_the_workers_start_exits_0_without_a_traceback() -> None:
    async with supervisor(
        "fx_workers:app", "-w", "2", "-b", "127.0.0.1:0", start_new_session=True
    ) as server:
        await server.log.next("Starting 2 workers")
        os.killpg(server.process.pid, signal.SIGINT)
        assert await server.finish() == 0, server.log.text
    assert "Traceback" not in server.log.text
    assert "KeyboardInterrupt" not in server.log.text


@pytest.mark.slow
async def test_a_worker_that_exits_by_itself_with_code_0_is_backed_off_as_a_crash() -> None:
    """Only a worker that announced max_requests is recycled without a backoff; an
    exit 0 nobody asked for (an operator's kill -TERM to a worker, an app calling
    sys.exit) counts as a crash."""
    async with supervisor("fx_workers:app", "-w", "2", "-b", "127.0.0.1:0") as server:
        pids = await server.ready_pids(2)
        victim = min(pids)
        os.kill(victim, signal.SIGTERM)
        await server.log.next(rf"Worker {victim} exited with code 0; replacing it in 0\.1s")
        (replacement,) = await server.ready_pids(1)
        os.kill(replacement, signal.SIGTERM)
        await server.log.next(rf"Worker {replacement} exited with code 0; replacing it in 0\.2s")
        await server.ready_pids(1)
        server.signal(signal.SIGTERM)
        assert await server.finish() == 0
    assert "max_requests" not in server.log.text


async def test_worker_max_rss_below_a_fresh_worker_is_one_error_not_a_replacement_loop() -> None:
    async with supervisor(
        "fx_workers:app", "-w", "2", "-b", "127.0.0.1:0", "--worker-max-rss", "1"
    ) as server:
        pids = await server.ready_pids(2)
        url = (await server.log.next(SERVING)).group(1)
        # Each worker is measured when it reports ready, before the last is counted
        # and the startup line says the workers serve.
        over = r"\[ERROR\] Worker (\d+) uses \d+ MiB once started, over worker_max_rss 1; "
        over += "the limit does not apply to it"
        assert {int(pid) for pid in re.findall(over, server.log.text)} == pids
        assert await pids_serving(url, pids) == pids
        server.signal(signal.SIGTERM)
        assert await server.finish() == 0
    assert "replacing it" not in server.log.text
    assert server.log.text.count("the limit does not apply") == 2


@pytest.mark.slow
async def test_sighup_with_a_release_that_cannot_start_keeps_the_old_workers(
    tmp_path: Path,
) -> None:
    release = tmp_path / "release"
    release.write_text("good")
    env = {"FX_RELEASE": str(release)}
    async with supervisor("fx_release:app", "-w", "2", "-b", "127.0.0.1:0", env=env) as server:
        old = await server.ready_pids(2)
        url = (await server.log.next(SERVING)).group(1)
        release.write_text("broken")
        server.signal(signal.SIGHUP)
        await server.log.next(
            r"\[ERROR\] A new worker could not start, the old workers go on serving: "
            r"error importing module 'fx_release': .*this release is broken"
        )
        assert await pids_serving(url, old) == old
        # The fixed release is picked up by the next SIGHUP.
        release.write_text("good")
        server.signal(signal.SIGHUP)
        new = await server.ready_pids(2)
        await wait_gone(old)
        assert await pids_serving(url, new) == new
        server.signal(signal.SIGTERM)
        assert await server.finish() == 0, server.log.text
    assert server.log.text.count("could not start") == 1
    assert not [line for line in server.log.text.splitlines() if line.startswith("Error:")]
    assert "Traceback" not in server.log.text


@pytest.mark.slow
async def test_a_crashed_worker_whose_replacement_cannot_start_leaves_the_others_serving(
    tmp_path: Path,
) -> None:
    """Its slot stays empty; once no worker serves any more, the supervisor exits
    with the worker's code and error."""
    release = tmp_path / "release"
    release.write_text("good")
    env = {"FX_RELEASE": str(release)}
    async with supervisor("fx_release:app", "-w", "2", "-b", "127.0.0.1:0", env=env) as server:
        first, second = sorted(await server.ready_pids(2))
        url = (await server.log.next(SERVING)).group(1)
        release.write_text("broken")
        os.kill(first, signal.SIGKILL)
        await server.log.next(
            r"\[ERROR\] A new worker could not start, the other workers go on serving: "
            r"error importing module 'fx_release'"
        )
        assert await pids_serving(url, {second}, attempts=16) == {second}
        os.kill(second, signal.SIGKILL)
        assert await server.finish() == 3
    [error] = [line for line in server.log.text.splitlines() if line.startswith("Error:")]
    assert "this release is broken" in error
    assert "Traceback" not in server.log.text


@pytest.mark.slow
async def test_sigttou_retires_a_slot_whose_worker_keeps_crashing_while_it_starts(
    tmp_path: Path,
) -> None:
    release = tmp_path / "release"
    release.write_text("good")
    env = {"FX_RELEASE": str(release)}
    async with supervisor("fx_release:app", "-w", "2", "-b", "127.0.0.1:0", env=env) as server:
        await server.ready_pids(2)
        release.write_text("crash")
        server.signal(signal.SIGTTIN)
        await server.log.next(r"Received SIGTTIN; adding a worker \(now 3\)")
        for _ in range(2):
            await server.log.next("exited with code 1 before it was ready")
        server.signal(signal.SIGTTOU)
        await server.log.next(r"Received SIGTTOU; retiring a worker \(now 2\)")
        # The retired slot starts nothing more: without it, the next start
        # would come after a backoff of well under a second.
        with trio.move_on_after(3) as quiet:
            await server.log.next(r"fx_release \d+: crashing|before it was ready")
        assert quiet.cancelled_caught, server.log.text[server.log.position - 300 :]
        server.signal(signal.SIGTERM)
        assert await server.finish() == 0


@pytest.mark.parametrize("value", ["zero", "0"])
async def test_a_bad_web_concurrency_exits_2_with_one_line(value: str) -> None:
    async with supervisor(
        "fx_workers:app", "-b", "127.0.0.1:0", env={"WEB_CONCURRENCY": value}
    ) as server:
        assert await server.finish() == 2
    assert server.log.text.splitlines() == [
        f"Error: WEB_CONCURRENCY must be an integer >= 1, got '{value}'"
    ]


async def test_workers_serve_tls_on_the_inherited_socket(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    async with supervisor(
        "fx_workers:app",
        "-w",
        "2",
        "-b",
        "127.0.0.1:0",
        "--certfile",
        str(certfile),
        "--keyfile",
        str(keyfile),
    ) as server:
        pids = await server.ready_pids(2)
        url = (await server.log.next(r"Serving on (https://127\.0\.0\.1:\d+)")).group(1)
        context = ssl.create_default_context()
        ca.configure_trust(context)
        async with httpx.AsyncClient(verify=context, trust_env=False) as client:
            with trio.fail_after(10):
                response = await client.get(url)
        assert response.json()["pid"] in pids
