"""The supervisor: worker processes as tasks of a nursery (``workers > 1``).

::

    supervise()
    ├── signal receiver (SIGINT, SIGTERM, SIGHUP, SIGTTIN, SIGTTOU, SIGUSR1)
    ├── listeners, bound once here and inherited by every worker as fd://N
    └── service nursery                     the signal task, the RSS sampler, the watchdog
        └── worker nursery
            ├── one task per slot           keeps one ready worker in its slot
            ├── one task per worker process reads its status pipe, enforces the
            │                               health check, reaps it
            └── stop tasks                  SIGTERM, then SIGKILL after the deadline

A *slot* is a place for one worker; ``workers`` is the number of slots. Each
slot task reacts to messages in its inbox, one at a time: its worker exited
(replace it after a backoff: the supervisor did not ask it to go), a
replacement (SIGHUP for every slot; ``max_requests`` or too much memory for
one worker, one slot at a time: start a new worker, wait until it is ready,
then stop the old one, so the slot is never empty), ``retire`` (SIGTTOU) and
``stop``. The parent owns the listening sockets for the whole run, so
connections queue in the kernel while workers come and go and none is refused.

A worker that exits with code 2 or 3 before it was ready (a configuration it
cannot use, an app that does not import, a failed lifespan startup) fails the
same way when restarted. At the first start that stops the supervisor with
that code. Later (a SIGHUP with a broken release, a replacement after a crash)
the workers that serve go on, with one error line, and the slot stays empty
until the next SIGHUP; only when no worker serves any more does the
supervisor stop with that code.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from typing import Any

import trio

from ._config import Config
from ._listeners import UnixSocketListener, listener_url, open_listeners_with_tls
from ._logging import reopen_log_files
from ._serve import startup_line
from ._systemd import Notifier
from ._tls import create_server_tls
from ._worker import WorkerSpec, encode_spec

__all__ = ["AppSpec", "supervise"]

logger = logging.getLogger("trioserve.error")

#: Seconds a stopping worker gets beyond ``graceful_timeout`` and
#: ``shutdown_timeout`` (for leaving the process) before it is killed.
KILL_MARGIN = 5.0
#: Seconds a worker forced to stop (a second SIGINT or SIGTERM) gets to cancel its
#: requests, answer their clients and exit, before it is killed.
FORCE_MARGIN = 2.0
#: Seconds between RSS samples when ``worker_max_rss`` is set.
RSS_INTERVAL = 1.0
#: Restart delay after a crash: doubles with each crash in a row, up to the maximum.
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 5.0
#: A worker that ran this many seconds was healthy: the next crash starts the backoff over.
HEALTHY_UPTIME = 10.0

_SIGNALS = (
    signal.SIGINT,
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGTTIN,
    signal.SIGTTOU,
    signal.SIGUSR1,
)
#: The worker's entry point; not ``-m``, which would run the module as __main__
#: and give the unpickled spec a class of another module.
_WORKER_MAIN = "from trioserve._worker import main; main()"
#: A group of its own for each worker: a terminal's Ctrl+C (or hangup) to the
#: foreground group reaches the supervisor only, even while a worker starts and
#: cannot ignore anything yet. (trio's stubs lack Popen's ``process_group``.)
_OWN_PROCESS_GROUP: dict[str, Any] = {"process_group": 0}
_RETIRE = "retire"
_STOP = "stop"


@dataclasses.dataclass(frozen=True)
class AppSpec:
    """The app as the command line names it; only workers import it."""

    app: str
    factory: bool
    app_dir: str


@dataclasses.dataclass(frozen=True)
class _Replace:
    """SIGHUP number ``generation``: replace the slot's worker, whichever it is."""

    generation: int


@dataclasses.dataclass(frozen=True)
class _Recycle:
    """Replace ``worker`` (``max_requests``, ``worker_max_rss``) if it is still the
    slot's; one slot recycles at a time."""

    worker: _Worker


class _Worker:
    """One worker process as the supervisor sees it."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.pid = process.pid
        self.ready = False
        self.ready_at = math.inf
        self.stopping = False
        self.recycling = False
        #: ``worker_max_rss`` does not apply: the worker was over it once started.
        self.rss_exempt = False
        self.error: tuple[int, str] | None = None
        #: The supervisor's end of the control pipe, once the worker runs.
        self.control: trio.lowlevel.FdStream | None = None
        # Set once it is ready or has exited, whichever comes first.
        self.settled = trio.Event()
        self.exited = trio.Event()

    def send_signal(self, signum: int) -> None:
        if self.process.returncode is None:
            self.process.send_signal(signum)

    def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()

    async def force(self) -> None:
        """Ask the worker to stop at once (its requests get a 503); kill it if it
        has not exited within :data:`FORCE_MARGIN`."""
        if self.control is not None:
            with contextlib.suppress(
                trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError
            ):
                await self.control.send_all(b"force\n")
        with trio.move_on_after(FORCE_MARGIN):
            await self.exited.wait()
            return
        self.kill()


class _Slot:
    def __init__(self, number: int) -> None:
        self.number = number
        self.send, self.receive = trio.open_memory_channel[object](math.inf)
        self.current: _Worker | None = None
        self.crashes = 0
        #: Set when the slot is retired or the supervisor stops.
        self.closing = trio.Event()


class _Lines:
    """Lines from a status pipe."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream = stream
        self.buffer = b""

    async def next(self) -> str | None:
        """The next line, or ``None`` at EOF."""
        while b"\n" not in self.buffer:
            data = await self.stream.receive_some()
            if not data:
                return None
            self.buffer += data
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode(errors="replace")


def _rss_mib(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/statm") as file:
            resident_pages = int(file.read().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)


def _listener_fd(listener: trio.abc.Listener[trio.abc.Stream]) -> int:
    if isinstance(listener, UnixSocketListener):
        listener = listener.socket_listener
    assert isinstance(listener, trio.SocketListener)
    return listener.socket.fileno()


def _backoff(crashes: int) -> float:
    return min(BACKOFF_MAX, BACKOFF_FIRST * 2.0 ** (crashes - 1))


#: What a start gives: a ready worker, the worker's error (code 2 or 3) when it
#: cannot start, or ``None`` when the slot closed first.
_Started = _Worker | tuple[int, str] | None


def _describe_exit(returncode: int) -> str:
    if returncode < 0:
        return f"was killed by {signal.Signals(-returncode).name}"
    return f"exited with code {returncode}"


class _Supervisor:
    def __init__(
        self, config: Config, spec: WorkerSpec, fds: Sequence[int], notifier: Notifier | None
    ) -> None:
        self.config = config
        #: Logged once every first worker is ready: only then is the app served.
        self.startup_line = "Serving"
        self.payload = encode_spec(spec)
        self.fds = tuple(fds)
        self.notifier = notifier
        self.slots: list[_Slot] = []
        self.live: set[_Worker] = set()
        self.stopping = trio.Event()
        self.result: tuple[int, str | None] = (0, None)
        self.unready = config.workers
        #: One recycle (``max_requests``, ``worker_max_rss``) at a time.
        self.recycle_lock = trio.Lock()
        self.generation = 0
        self.reported_generation = 0
        self.workers_nursery: trio.Nursery | None = None
        self.service_nursery: trio.Nursery | None = None

    # -- the run -----------------------------------------------------------------

    async def run(self, signals: AsyncIterator[int]) -> None:
        async with trio.open_nursery() as service:
            self.service_nursery = service
            service.start_soon(self._handle_signals, signals)
            if self.config.worker_max_rss is not None:
                service.start_soon(self._sample_rss, self.config.worker_max_rss)
            async with trio.open_nursery() as workers:
                self.workers_nursery = workers
                for _ in range(self.config.workers):
                    self._add_slot(initial=True)
            service.cancel_scope.cancel()

    def _add_slot(self, *, initial: bool) -> None:
        assert self.workers_nursery is not None
        slot = _Slot(len(self.slots) + 1)
        self.slots.append(slot)
        self.workers_nursery.start_soon(self._run_slot, slot, initial)

    def _request_stop(self) -> None:
        if self.stopping.is_set():
            return
        self.stopping.set()
        if self.notifier is not None:
            self.notifier.notify("STOPPING=1")
        for slot in self.slots:
            slot.closing.set()
            slot.send.send_nowait(_STOP)

    def _fail(self, code: int, message: str) -> None:
        if self.result[1] is None:
            self.result = (code, message)
        self._request_stop()

    # -- slots ---------------------------------------------------------------------

    async def _run_slot(self, slot: _Slot, initial: bool) -> None:
        started = await self._start(slot)
        if isinstance(started, tuple) and initial:
            self._fail(*started)
        elif initial and started is not None:
            self._one_more_ready()
        worker = self._settle(slot, started, None)
        while not slot.closing.is_set():
            message = await slot.receive.receive()
            if slot.closing.is_set():
                break
            if isinstance(message, _Replace) or (
                isinstance(message, _Recycle) and message.worker is worker
            ):
                worker = await self._replace(slot, worker, message)
            elif message is worker and worker is not None:
                slot.current = None
                started = await self._start(slot, self._exit_delay(slot, worker))
                worker = self._settle(slot, started, None)
        slot.current = None
        if worker is not None:
            await self._stop(worker)

    async def _replace(
        self, slot: _Slot, old: _Worker | None, message: _Replace | _Recycle
    ) -> _Worker | None:
        """Start a worker for ``slot``, then stop ``old``; if the new one cannot
        start, ``old`` goes on."""
        if isinstance(message, _Replace):
            started = await self._start(slot)
        else:
            acquired = False
            async with _cancelled_when(slot.closing):
                await self.recycle_lock.acquire()
                acquired = True
            if not acquired:
                return old
            try:
                started = await self._start(slot)
            finally:
                self.recycle_lock.release()
        if isinstance(started, _Worker) and old is not None:
            self._stop_soon(old)
        generation = message.generation if isinstance(message, _Replace) else None
        return self._settle(slot, started, old, generation)

    def _settle(
        self, slot: _Slot, started: _Started, old: _Worker | None, generation: int | None = None
    ) -> _Worker | None:
        """The slot's worker after a start: the new one, or ``old`` if it could not
        start (with one error line; per SIGHUP ``generation``, one in all)."""
        if not isinstance(started, tuple):
            slot.current = started if started is not None else old
            return slot.current
        slot.current = old
        code, message = started
        if self.stopping.is_set():
            return old
        if old is None and not any(other.current is not None for other in self.slots):
            self._fail(code, message)
            return None
        if generation is not None:
            if generation <= self.reported_generation:
                return old
            self.reported_generation = generation
        going_on = "the old workers go on" if old is not None else "the other workers go on"
        logger.error("A new worker could not start, %s serving: %s", going_on, message)
        return old

    def _one_more_ready(self) -> None:
        self.unready -= 1
        if self.unready == 0:
            logger.info(self.startup_line)
            if self.notifier is not None:
                self.notifier.notify("READY=1")
                assert self.service_nursery is not None
                self.service_nursery.start_soon(self.notifier.watchdog)

    def _exit_delay(self, slot: _Slot, worker: _Worker) -> float:
        """Log why the slot's worker exited; the delay before its replacement."""
        code = worker.process.returncode
        assert code is not None
        uptime = trio.current_time() - worker.ready_at
        slot.crashes = 1 if uptime >= HEALTHY_UPTIME else slot.crashes + 1
        delay = _backoff(slot.crashes)
        logger.warning("Worker %d %s; replacing it in %gs", worker.pid, _describe_exit(code), delay)
        return delay

    async def _start(self, slot: _Slot, delay: float = 0.0) -> _Started:
        """A ready worker for ``slot``; its error if it cannot start (code 2 or 3);
        ``None`` if the slot closes first."""
        while True:
            if delay > 0:
                with trio.move_on_after(delay):
                    await slot.closing.wait()
            if slot.closing.is_set():
                return None
            assert self.workers_nursery is not None
            worker: _Worker = await self.workers_nursery.start(self._run_worker, slot)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_set_after, worker.settled, nursery.cancel_scope)
                nursery.start_soon(_set_after, slot.closing, nursery.cancel_scope)
            if worker.ready and not slot.closing.is_set():
                return worker
            if slot.closing.is_set():
                self._stop_soon(worker)
                return None
            code = worker.process.returncode
            assert code is not None
            if worker.error is not None and worker.error[0] in (2, 3):
                return worker.error
            slot.crashes += 1
            delay = _backoff(slot.crashes)
            logger.warning(
                "Worker %d %s before it was ready; starting another in %gs",
                worker.pid,
                _describe_exit(code),
                delay,
            )

    def _stop_soon(self, worker: _Worker) -> None:
        assert self.workers_nursery is not None
        self.workers_nursery.start_soon(self._stop, worker)

    async def _stop(self, worker: _Worker) -> None:
        worker.stopping = True
        worker.send_signal(signal.SIGTERM)
        # A worker stopping gracefully may take graceful_timeout for its requests
        # and then shutdown_timeout for the app's lifespan shutdown.
        allowed = self.config.graceful_timeout + self.config.shutdown_timeout + KILL_MARGIN
        with trio.move_on_after(allowed):
            await worker.exited.wait()
            return
        logger.warning("Worker %d still runs %gs after SIGTERM; killing it", worker.pid, allowed)
        worker.kill()
        await worker.exited.wait()

    # -- one worker process --------------------------------------------------------

    async def _run_worker(self, slot: _Slot, *, task_status: trio.TaskStatus[_Worker]) -> None:
        control_read, control_write = os.pipe()
        status_read, status_write = os.pipe()
        try:
            process = await trio.lowlevel.open_process(
                [sys.executable, "-c", _WORKER_MAIN, str(control_read), str(status_write)],
                pass_fds=(*self.fds, control_read, status_write),
                stdin=subprocess.DEVNULL,
                **_OWN_PROCESS_GROUP,
            )
        except BaseException:
            os.close(control_write)
            os.close(status_read)
            raise
        finally:
            os.close(control_read)
            os.close(status_write)
        worker = _Worker(process)
        self.live.add(worker)
        task_status.started(worker)
        control = worker.control = trio.lowlevel.FdStream(control_write)
        status = trio.lowlevel.FdStream(status_read)
        try:
            # If it died at once, the status pipe's EOF says so.
            with contextlib.suppress(trio.BrokenResourceError):
                await control.send_all(self.payload)
            await self._read_status(slot, worker, _Lines(status))
            await process.wait()
        finally:
            with trio.CancelScope(shield=True):
                worker.kill()
                await process.wait()
                await control.aclose()
                await status.aclose()
            self.live.discard(worker)
            worker.exited.set()
            worker.settled.set()
            slot.send.send_nowait(worker)

    async def _read_status(self, slot: _Slot, worker: _Worker, lines: _Lines) -> None:
        while True:
            timeout = math.inf
            if worker.ready and not worker.stopping:
                timeout = self.config.worker_healthcheck_timeout
            with trio.move_on_after(timeout):
                line = await lines.next()
                if line is None:
                    return
                if line == "ready":
                    worker.ready = True
                    worker.ready_at = trio.current_time()
                    logger.info("Worker %d ready", worker.pid)
                    self._check_fresh_rss(worker)
                    worker.settled.set()
                elif line == "recycle" and not worker.recycling:
                    logger.info("Worker %d reached max_requests; replacing it", worker.pid)
                    worker.recycling = True
                    slot.send.send_nowait(_Recycle(worker))
                elif line.startswith("error "):
                    code, _, message = line[len("error ") :].partition(" ")
                    worker.error = (int(code), message)
                continue
            logger.error("Worker %d sent no heartbeat for %gs; killing it", worker.pid, timeout)
            worker.kill()
            return

    # -- signals and memory ----------------------------------------------------------

    async def _handle_signals(self, signals: AsyncIterator[int]) -> None:
        async for signum in signals:
            name = signal.Signals(signum).name
            if signum in (signal.SIGINT, signal.SIGTERM):
                if self.stopping.is_set():
                    logger.warning("Received %s again; stopping the workers now", name)
                    self.result = (130, self.result[1])
                    assert self.service_nursery is not None
                    for worker in list(self.live):
                        self.service_nursery.start_soon(worker.force)
                    continue
                logger.info(
                    "Received %s; stopping the workers gracefully (%d running, up to %gs); "
                    "press Ctrl+C again to force",
                    name,
                    len(self.live),
                    self.config.graceful_timeout,
                )
                self._request_stop()
            elif self.stopping.is_set():
                continue
            elif signum == signal.SIGHUP:
                logger.info("Received SIGHUP; replacing every worker")
                self.generation += 1
                for slot in self.slots:
                    slot.send.send_nowait(_Replace(self.generation))
            elif signum == signal.SIGTTIN:
                self._add_slot(initial=False)
                logger.info("Received SIGTTIN; adding a worker (now %d)", len(self.slots))
            elif signum == signal.SIGTTOU:
                if len(self.slots) == 1:
                    logger.info("Received SIGTTOU; keeping the last worker")
                    continue
                retired = self.slots.pop()
                retired.closing.set()
                retired.send.send_nowait(_RETIRE)
                logger.info("Received SIGTTOU; retiring a worker (now %d)", len(self.slots))
            elif signum == signal.SIGUSR1:
                reopen_log_files()
                for worker in list(self.live):
                    if worker.ready:
                        worker.send_signal(signal.SIGUSR1)
                logger.info("Received SIGUSR1; reopened the log files")

    def _check_fresh_rss(self, worker: _Worker) -> None:
        """Exempt from ``worker_max_rss`` a worker over it as soon as it is ready:
        its replacement would be just as large, and replaced in turn, forever."""
        limit = self.config.worker_max_rss
        rss = _rss_mib(worker.pid) if limit is not None else None
        if limit is not None and rss is not None and rss > limit:
            logger.error(
                "Worker %d uses %.0f MiB once started, over worker_max_rss %d; "
                "the limit does not apply to it",
                worker.pid,
                rss,
                limit,
            )
            worker.rss_exempt = True

    async def _sample_rss(self, limit: int) -> None:
        if _rss_mib(os.getpid()) is None:
            logger.warning("worker_max_rss needs /proc/PID/statm (Linux); not enforced")
            return
        while True:
            await trio.sleep(RSS_INTERVAL)
            for slot in list(self.slots):
                worker = slot.current
                if worker is None or not worker.ready or worker.recycling or worker.stopping:
                    continue
                rss = None if worker.rss_exempt else _rss_mib(worker.pid)
                if rss is None or rss <= limit:
                    continue
                logger.warning(
                    "Worker %d uses %.0f MiB (worker_max_rss %d); replacing it",
                    worker.pid,
                    rss,
                    limit,
                )
                worker.recycling = True
                slot.send.send_nowait(_Recycle(worker))


async def _set_after(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


@contextlib.asynccontextmanager
async def _cancelled_when(event: trio.Event) -> AsyncIterator[None]:
    """Run the body until it ends or ``event`` is set, whichever comes first."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_set_after, event, nursery.cancel_scope)
        yield
        nursery.cancel_scope.cancel()


async def supervise(
    config: Config, app: AppSpec, notifier: Notifier | None
) -> tuple[int, str | None]:
    """Bind every address, run ``config.workers`` worker processes serving ``app``
    on them until SIGINT or SIGTERM, and return the exit code with an error
    message (``None`` after a clean shutdown).

    Raises:
      ConfigError: the TLS files cannot be loaded (nothing is bound then).
      BindError: an address could not be bound.
    """
    tls = create_server_tls(config)
    scheme = "https" if tls is not None else "http"
    with trio.open_signal_receiver(*_SIGNALS) as signals:
        secure = await open_listeners_with_tls(config.replace(insecure_bind=()), None)
        insecure: list[trio.abc.Listener[trio.abc.Stream]] = []
        try:
            if config.insecure_bind:
                insecure = await open_listeners_with_tls(
                    config.replace(bind=config.insecure_bind, insecure_bind=()), None
                )
            urls = [listener_url(listener, scheme) for listener in secure]
            urls += [listener_url(listener, "http") for listener in insecure]
            worker_config = config.replace(
                bind=[f"fd://{_listener_fd(listener)}" for listener in secure],
                insecure_bind=[f"fd://{_listener_fd(listener)}" for listener in insecure],
            )
            spec = WorkerSpec(worker_config, app.app, app.factory, app.app_dir)
            fds = [_listener_fd(listener) for listener in (*secure, *insecure)]
            supervisor = _Supervisor(config, spec, fds, notifier)
            supervisor.startup_line = startup_line(urls, os.getpid(), True, config.workers)
            logger.info("Starting %d workers", config.workers)
            await supervisor.run(signals)
        finally:
            for listener in (*secure, *insecure):
                await trio.aclose_forcefully(listener)
    return supervisor.result
