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
(replace it, after a backoff if it crashed), ``replace`` (SIGHUP, too much
memory: start a new worker, wait until it is ready, then stop the old one, so
the slot is never empty), ``retire`` (SIGTTOU) and ``stop``. The parent owns
the listening sockets for the whole run, so connections queue in the kernel
while workers come and go and none is refused.

A worker that exits with code 2 or 3 before it was ready (a configuration it
cannot use, an app that does not import, a failed lifespan startup) stops the
supervisor with that code: a restart would fail the same way.
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

import trio

from ._config import Config
from ._listeners import UnixSocketListener, listener_url, open_listeners_with_tls
from ._logging import reopen_log_files
from ._systemd import Notifier
from ._tls import create_server_tls
from ._worker import WorkerSpec, encode_spec

__all__ = ["AppSpec", "supervise"]

logger = logging.getLogger("trioserve.error")

#: Seconds a stopping worker gets beyond ``graceful_timeout`` (for lifespan
#: shutdown and leaving the process) before it is killed.
KILL_MARGIN = 5.0
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
_REPLACE = "replace"
_RETIRE = "retire"
_STOP = "stop"


@dataclasses.dataclass(frozen=True)
class AppSpec:
    """The app as the command line names it; only workers import it."""

    app: str
    factory: bool
    app_dir: str


class _Worker:
    """One worker process as the supervisor sees it."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.pid = process.pid
        self.ready = False
        self.ready_at = math.inf
        self.stopping = False
        self.recycling = False
        self.error: tuple[int, str] | None = None
        # Set once it is ready or has exited, whichever comes first.
        self.settled = trio.Event()
        self.exited = trio.Event()

    def send_signal(self, signum: int) -> None:
        if self.process.returncode is None:
            self.process.send_signal(signum)

    def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()


class _Slot:
    def __init__(self, number: int) -> None:
        self.number = number
        self.send, self.receive = trio.open_memory_channel[object](math.inf)
        self.current: _Worker | None = None
        self.crashes = 0


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


def _describe_exit(returncode: int) -> str:
    if returncode < 0:
        return f"was killed by {signal.Signals(-returncode).name}"
    return f"exited with code {returncode}"


class _Supervisor:
    def __init__(
        self, config: Config, spec: WorkerSpec, fds: Sequence[int], notifier: Notifier | None
    ) -> None:
        self.config = config
        self.payload = encode_spec(spec)
        self.fds = tuple(fds)
        self.notifier = notifier
        self.slots: list[_Slot] = []
        self.live: set[_Worker] = set()
        self.stopping = trio.Event()
        self.result: tuple[int, str | None] = (0, None)
        self.unready = config.workers
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
            slot.send.send_nowait(_STOP)

    def _fail(self, code: int, message: str) -> None:
        if self.result[1] is None:
            self.result = (code, message)
        self._request_stop()

    # -- slots ---------------------------------------------------------------------

    async def _run_slot(self, slot: _Slot, initial: bool) -> None:
        worker = await self._start(slot)
        if worker is not None and initial:
            self._one_more_ready()
        while worker is not None:
            slot.current = worker
            message = await slot.receive.receive()
            if self.stopping.is_set() or message in (_STOP, _RETIRE):
                break
            if message == _REPLACE:
                new = await self._start(slot)
                self._stop_soon(worker)
                worker = new
            elif message is worker:
                worker = await self._start(slot, self._exit_delay(slot, worker))
        slot.current = None
        if worker is not None:
            await self._stop(worker)

    def _one_more_ready(self) -> None:
        self.unready -= 1
        if self.unready == 0:
            logger.info("All %d workers are ready", self.config.workers)
            if self.notifier is not None:
                self.notifier.notify("READY=1")
                assert self.service_nursery is not None
                self.service_nursery.start_soon(self.notifier.watchdog)

    def _exit_delay(self, slot: _Slot, worker: _Worker) -> float:
        """Log why the slot's worker exited; the delay before its replacement."""
        code = worker.process.returncode
        assert code is not None
        if code == 0:
            logger.info("Worker %d stopped by itself (max_requests); replacing it", worker.pid)
            return 0.0
        uptime = trio.current_time() - worker.ready_at
        slot.crashes = 1 if uptime >= HEALTHY_UPTIME else slot.crashes + 1
        delay = _backoff(slot.crashes)
        logger.warning("Worker %d %s; replacing it in %gs", worker.pid, _describe_exit(code), delay)
        return delay

    async def _start(self, slot: _Slot, delay: float = 0.0) -> _Worker | None:
        """A ready worker for ``slot``, or ``None`` when the supervisor stops first."""
        while True:
            if delay > 0:
                with trio.move_on_after(delay):
                    await self.stopping.wait()
            if self.stopping.is_set():
                return None
            assert self.workers_nursery is not None
            worker: _Worker = await self.workers_nursery.start(self._run_worker, slot)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_set_after, worker.settled, nursery.cancel_scope)
                nursery.start_soon(_set_after, self.stopping, nursery.cancel_scope)
            if worker.ready:
                return worker
            if self.stopping.is_set():
                self._stop_soon(worker)
                return None
            code = worker.process.returncode
            assert code is not None
            if worker.error is not None and worker.error[0] in (2, 3):
                self._fail(*worker.error)
                return None
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
        with trio.move_on_after(self.config.graceful_timeout + KILL_MARGIN):
            await worker.exited.wait()
            return
        logger.warning(
            "Worker %d still runs %gs after SIGTERM; killing it",
            worker.pid,
            self.config.graceful_timeout + KILL_MARGIN,
        )
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
        control = trio.lowlevel.FdStream(control_write)
        status = trio.lowlevel.FdStream(status_read)
        try:
            # If it died at once, the status pipe's EOF says so.
            with contextlib.suppress(trio.BrokenResourceError):
                await control.send_all(self.payload)
            await self._read_status(worker, _Lines(status))
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

    async def _read_status(self, worker: _Worker, lines: _Lines) -> None:
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
                    worker.settled.set()
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
                    logger.warning("Received %s again; killing the workers", name)
                    self.result = (130, self.result[1])
                    for worker in list(self.live):
                        worker.kill()
                    continue
                logger.info("Received %s; stopping the workers gracefully", name)
                self._request_stop()
            elif self.stopping.is_set():
                continue
            elif signum == signal.SIGHUP:
                logger.info("Received SIGHUP; replacing every worker")
                for slot in self.slots:
                    slot.send.send_nowait(_REPLACE)
            elif signum == signal.SIGTTIN:
                self._add_slot(initial=False)
                logger.info("Received SIGTTIN; adding a worker (now %d)", len(self.slots))
            elif signum == signal.SIGTTOU:
                if len(self.slots) == 1:
                    logger.info("Received SIGTTOU; keeping the last worker")
                    continue
                self.slots.pop().send.send_nowait(_RETIRE)
                logger.info("Received SIGTTOU; retiring a worker (now %d)", len(self.slots))
            elif signum == signal.SIGUSR1:
                reopen_log_files()
                for worker in list(self.live):
                    if worker.ready:
                        worker.send_signal(signal.SIGUSR1)
                logger.info("Received SIGUSR1; reopened the log files")

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
                rss = _rss_mib(worker.pid)
                if rss is not None and rss > limit:
                    logger.warning(
                        "Worker %d uses %.0f MiB (worker_max_rss %d); replacing it",
                        worker.pid,
                        rss,
                        limit,
                    )
                    worker.recycling = True
                    slot.send.send_nowait(_REPLACE)


async def _set_after(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


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
            for listener in secure:
                logger.info("Serving on %s", listener_url(listener, scheme))
            for listener in insecure:
                logger.info("Serving on %s", listener_url(listener, "http"))
            worker_config = config.replace(
                bind=[f"fd://{_listener_fd(listener)}" for listener in secure],
                insecure_bind=[f"fd://{_listener_fd(listener)}" for listener in insecure],
            )
            spec = WorkerSpec(worker_config, app.app, app.factory, app.app_dir)
            fds = [_listener_fd(listener) for listener in (*secure, *insecure)]
            supervisor = _Supervisor(config, spec, fds, notifier)
            logger.info("Starting %d workers", config.workers)
            await supervisor.run(signals)
        finally:
            for listener in (*secure, *insecure):
                await trio.aclose_forcefully(listener)
    return supervisor.result
