"""One serving process under a process manager: a worker of the supervisor, or
the single process of a systemd ``Type=notify`` service.

A worker is started by :mod:`trioserve._supervisor` as ``python -c 'from
trioserve._worker import main; main()' CONTROL_FD STATUS_FD``, with the listening sockets inherited
(its configuration binds them as ``fd://N``):

- it reads its :class:`WorkerSpec` (the configuration and where the app is)
  from the control pipe, pickled behind an 8-byte length; the pipe then stays
  open: a line on it (a second Ctrl+C to the supervisor) forces the stop, and
  its end (EOF) means the supervisor is gone: the worker shuts down;
- it loads the app, serves, and writes one line per message to the status
  pipe: ``ready`` once it is listening, ``beat`` every heartbeat interval from
  a task of its event loop (a loop that is blocked stops the beats, and the
  supervisor kills the worker), ``recycle`` once it has served ``max_requests``
  (it goes on serving until the supervisor, with a replacement ready, stops
  it), and ``error CODE MESSAGE`` when it cannot start (the worker prints
  nothing; the supervisor decides what the error means);
- SIGTERM is a graceful shutdown, SIGUSR1 reopens the log files. SIGINT,
  SIGHUP, SIGTTIN and SIGTTOU are ignored for the whole life of the worker:
  what they mean is for the supervisor to decide. The supervisor starts each
  worker in a process group of its own, so a terminal's signals to the
  foreground group (Ctrl+C) never reach it anyway; ignoring them covers a
  ``kill`` to a group the worker is in, and lets a worker write to a terminal
  that stops background writers (``stty tostop``).
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import math
import os
import pickle
import signal
import struct
import sys
from functools import partial

import trio

from ._config import Config
from ._errors import AppLoadError, BindError, ConfigError, LifespanFailure
from ._listeners import open_listeners_with_tls
from ._serve import ServerControl, serve_listeners
from ._systemd import Notifier
from ._tls import create_server_tls
from ._types import ASGIApp

__all__ = [
    "WorkerSpec",
    "encode_spec",
    "heartbeat_interval",
    "main",
    "serve_in_process",
    "serve_until",
    "watch_control_pipe",
]

logger = logging.getLogger("trioserve.error")

_LENGTH = struct.Struct("!Q")
#: Seconds between heartbeats at most; a short health check makes them closer.
_MAX_HEARTBEAT_INTERVAL = 1.0
#: Signals a terminal sends to the whole process group; the supervisor acts on them.
_GROUP_SIGNALS = (signal.SIGINT, signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU)


@dataclasses.dataclass(frozen=True)
class WorkerSpec:
    """What a worker needs to serve: its configuration (binds as ``fd://N``) and
    the app as the command line named it."""

    config: Config
    app: str
    factory: bool
    app_dir: str


def encode_spec(spec: WorkerSpec) -> bytes:
    """``spec`` as the supervisor writes it to the control pipe."""
    data = pickle.dumps(spec)
    return _LENGTH.pack(len(data)) + data


def heartbeat_interval(timeout: float) -> float:
    """Seconds between heartbeats for a health check of ``timeout`` seconds:
    several beats fit in the timeout, so one late beat is not a missed one."""
    return min(_MAX_HEARTBEAT_INTERVAL, timeout / 4) if math.isfinite(timeout) else 1.0


async def serve_until(
    app: ASGIApp,
    config: Config,
    stop: trio.Event,
    *,
    max_requests_reached: trio.Event | None = None,
    control: ServerControl | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """:func:`trioserve.serve` that shuts down when ``stop`` is set and installs
    no signal handlers (the caller decides what a signal means). With
    ``max_requests_reached``, reaching ``max_requests`` sets it instead of
    shutting down. ``control`` names the process in the log lines and can force
    the stop."""
    tls = create_server_tls(config)
    await serve_listeners(
        app,
        config,
        partial(open_listeners_with_tls, tls=tls),
        scheme="http",
        task_status=task_status,
        shutdown_trigger=stop.wait,
        install_signal_handlers=False,
        max_requests_reached=max_requests_reached,
        control=control,
    )


async def _serve_then_cancel(
    app: ASGIApp,
    config: Config,
    stop: trio.Event,
    scope: trio.CancelScope,
    *,
    max_requests_reached: trio.Event | None = None,
    control: ServerControl | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    await serve_until(
        app,
        config,
        stop,
        max_requests_reached=max_requests_reached,
        control=control,
        task_status=task_status,
    )
    scope.cancel()


async def serve_in_process(app: ASGIApp, config: Config, notifier: Notifier | None) -> int:
    """Serve in this process, as the command does without workers, until SIGINT or
    SIGTERM; with a ``notifier`` tell the service manager: ``READY=1`` once
    listening, ``STOPPING=1`` when shutdown begins, ``WATCHDOG=1`` pings.

    The first SIGINT or SIGTERM shuts down gracefully; a second one during the
    graceful period cancels what is left at once; a third one ends the process
    on the spot (``os._exit(130)``), should the forced stop ever hang. SIGUSR1 reopens the log files
    (after a log rotation). The signals are watched for the whole run, whatever
    handlers the process inherited (a launcher may start it with SIGINT ignored).
    Returns the exit code: 0, or 130 after a second signal.

    Raises:
      ConfigError, LifespanFailure, BindError: as :func:`trioserve.serve`.
    """
    stop = trio.Event()
    hurried = trio.Event()
    control = ServerControl(pid=os.getpid(), interactive=True)
    error: ConfigError | LifespanFailure | BindError | None = None
    # The signals are watched outside the scope a forced stop cancels, so that a
    # third one still finds a receiver.
    serving = trio.CancelScope()
    async with trio.open_nursery() as watching:
        await watching.start(_act_on_signals, stop, hurried, notifier, serving, control)
        try:
            with serving:
                async with trio.open_nursery() as nursery:
                    try:
                        await nursery.start(
                            partial(_serve_then_cancel, control=control),
                            app,
                            config,
                            stop,
                            nursery.cancel_scope,
                        )
                    except (ConfigError, LifespanFailure, BindError) as exc:
                        # Raised outside the nursery, so that the caller sees the
                        # error itself.
                        error = exc
                        nursery.cancel_scope.cancel()
                    else:
                        if notifier is not None:
                            notifier.notify("READY=1")
                            nursery.start_soon(notifier.watchdog)
        finally:
            watching.cancel_scope.cancel()
    if not stop.is_set() and notifier is not None:
        notifier.notify("STOPPING=1")
    if error is not None:
        raise error
    return 130 if hurried.is_set() else 0


async def _act_on_signals(
    stop: trio.Event,
    hurried: trio.Event,
    notifier: Notifier | None,
    scope: trio.CancelScope,
    control: ServerControl,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    from ._logging import reopen_log_files

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGUSR1) as signals:
        task_status.started()
        async for signum in signals:
            name = signal.Signals(signum).name
            if signum == signal.SIGUSR1:
                reopen_log_files()
                logger.info("Reopened the log files")
            elif hurried.is_set():
                # The forced stop is itself stuck (it should not be): the last resort.
                logger.warning("Received %s a third time; exiting immediately", name)
                os._exit(130)
            elif stop.is_set():
                # As the supervisor and the reloader do: a second signal means now.
                logger.warning("Received %s again; exiting now", name)
                hurried.set()
                control.force()
                scope.cancel()
            else:
                # The server logs the line, with what is in flight.
                control.stop_requested(f"Received {name}")
                if notifier is not None:
                    notifier.notify("STOPPING=1")
                stop.set()


# -- the worker process -------------------------------------------------------------


def _read_exactly(fd: int, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = os.read(fd, size - len(data))
        if not chunk:
            raise EOFError("the supervisor closed the control pipe")
        data += chunk
    return data


def _read_spec(fd: int) -> WorkerSpec:
    (size,) = _LENGTH.unpack(_read_exactly(fd, _LENGTH.size))
    spec = pickle.loads(_read_exactly(fd, size))
    assert isinstance(spec, WorkerSpec)
    return spec


def _error_line(code: int, message: str) -> bytes:
    return f"error {code} {' '.join(message.split())}\n".encode()


async def watch_control_pipe(
    pipe: trio.lowlevel.FdStream,
    stop: trio.Event,
    control: ServerControl,
    scope: trio.CancelScope,
    parent: str,
) -> None:
    """Read the pipe from the parent process (the supervisor, the reloader) after
    the spec: a line on it forces the stop, its end (the parent is gone) is a
    graceful one."""
    async with pipe:
        while await pipe.receive_some():
            if not control.forced:
                logger.warning("Stopping now: the %s forced the stop", parent)
                control.force()
                scope.cancel()
    if not stop.is_set():
        logger.warning("The %s is gone; shutting down", parent)
        stop.set()


async def _handle_signals(
    stop: trio.Event,
    control: ServerControl,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    from ._logging import reopen_log_files

    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGUSR1) as signals:
        task_status.started()
        async for signum in signals:
            if signum == signal.SIGTERM:
                # The supervisor logs the signal it got; the server logs its
                # shutdown, with what is in flight.
                stop.set()
            elif signum == signal.SIGUSR1:
                reopen_log_files()
                logger.info("Reopened the log files")


async def _report(
    status: trio.lowlevel.FdStream, interval: float, stop: trio.Event, recycle: trio.Event
) -> None:
    """The status lines after ``ready``: a beat every ``interval``, and ``recycle``
    at once when ``max_requests`` is reached (one task, so that lines never mix)."""
    announced = False
    try:
        while True:
            if recycle.is_set() and not announced:
                announced = True
                await status.send_all(b"recycle\n")
            else:
                await status.send_all(b"beat\n")
            if announced:
                await trio.sleep(interval)
            else:
                with trio.move_on_after(interval):
                    await recycle.wait()
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        stop.set()


async def _run(app: ASGIApp, config: Config, control_fd: int, status_fd: int) -> int:
    status = trio.lowlevel.FdStream(status_fd)
    stop = trio.Event()
    recycle = trio.Event()
    code = 0
    control = ServerControl(pid=os.getpid(), interactive=False, announce=False)
    async with status, trio.open_nursery() as nursery:
        pipe = trio.lowlevel.FdStream(control_fd)
        nursery.start_soon(
            watch_control_pipe, pipe, stop, control, nursery.cancel_scope, "supervisor"
        )
        await nursery.start(_handle_signals, stop, control)
        try:
            await nursery.start(
                partial(_serve_then_cancel, max_requests_reached=recycle, control=control),
                app,
                config,
                stop,
                nursery.cancel_scope,
            )
        except ConfigError as exc:
            code = 2
            await status.send_all(_error_line(code, str(exc)))
            nursery.cancel_scope.cancel()
        except (LifespanFailure, BindError) as exc:
            code = 3
            await status.send_all(_error_line(code, str(exc)))
            nursery.cancel_scope.cancel()
        else:
            await status.send_all(b"ready\n")
            interval = heartbeat_interval(config.worker_healthcheck_timeout)
            nursery.start_soon(_report, status, interval, stop, recycle)
    return code


def main() -> None:
    """Run a worker; ``sys.argv[1:]`` are the control and status pipe descriptors."""
    # Group signals for good; SIGUSR1 until the event loop takes it over (SIGTERM
    # may end a worker that starts: the supervisor sends it to stop a worker).
    for signum in (*_GROUP_SIGNALS, signal.SIGUSR1):
        signal.signal(signum, signal.SIG_IGN)
    control_fd, status_fd = int(sys.argv[1]), int(sys.argv[2])
    spec = _read_spec(control_fd)
    config = spec.config
    from ._app_loader import load_app
    from ._logging import configure_logging

    try:
        configure_logging(
            loglevel=config.loglevel,
            errorlog=config.errorlog,
            accesslog=config.accesslog,
            logconfig=config.logconfig,
            announce=False,
        )
        app = load_app(spec.app, factory=spec.factory, app_dir=spec.app_dir)
    except ConfigError as exc:
        os.write(status_fd, _error_line(2, str(exc)))
        sys.exit(2)
    except AppLoadError as exc:
        os.write(status_fd, _error_line(3, str(exc)))
        sys.exit(3)
    # As in the single-process command: what lives as long as the process
    # leaves the collector's reach.
    gc.collect()
    gc.freeze()
    sys.exit(trio.run(_run, app, config, control_fd, status_fd))
