"""A gunicorn worker class that serves an ASGI app with trioserve.

::

    gunicorn -k trioserve.workers.TrioserveWorker -w 4 myapp:app

gunicorn's master process binds the sockets, forks the workers, restarts the ones
that die or fall silent, and handles deploys (``HUP``, ``USR2``); each worker runs
:func:`trioserve.serve` in ``trio.run``. Needs ``pip install 'trioserve[gunicorn]'``.

What carries over from gunicorn's settings (``docs/gunicorn.md`` has the table):
the listening sockets (each duplicated, so that closing the worker's copy never
closes gunicorn's), ``max_requests`` with its jitter (as gunicorn computed it),
``graceful_timeout``, ``keepalive``, the request limits, the TLS files and the
error and access logs (trioserve's loggers write through gunicorn's handlers,
in ``access_log_format``). gunicorn's ``timeout`` is the heartbeat: a trio task
notifies the master while the event loop runs, so a worker whose loop is blocked
is restarted.

Signals go through trio, not gunicorn's default handlers: ``TERM`` shuts down
gracefully (in-flight requests finish within ``graceful_timeout``), ``INT`` and
``QUIT`` stop at once, ``USR1`` reopens the log files. ``ABRT`` (gunicorn's
``timeout``) is the exception: the master sends it to a worker whose event loop
is blocked, where no trio task can run, so a plain handler (which Python runs
between two bytecodes, and after a blocking call such as ``time.sleep`` is
interrupted) runs the ``worker_abort`` hook and exits 1 at once.

gunicorn's own ``--reload`` is refused at boot: its reloader thread cannot stop
a trio event loop.
"""

from __future__ import annotations

import logging
import os
import signal
import ssl
import sys
from functools import partial
from typing import Any

import trio

# gunicorn ships no type information, so its base class is Any to mypy.
from gunicorn.workers.base import Worker

from ._config import Config
from ._errors import BindError, ConfigError, LifespanFailure
from ._serve import serve

__all__ = ["TrioserveWorker"]

#: gunicorn's exit code for a worker that could not boot: the master stops then.
_WORKER_BOOT_ERROR = 3
_VERIFY_MODES = {
    ssl.CERT_NONE: "CERT_NONE",
    ssl.CERT_OPTIONAL: "CERT_OPTIONAL",
    ssl.CERT_REQUIRED: "CERT_REQUIRED",
}
_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGUSR1)


class TrioserveWorker(Worker):  # type: ignore[misc]  # gunicorn is untyped: Worker is Any
    """The gunicorn worker: ``gunicorn -k trioserve.workers.TrioserveWorker APP``."""

    def init_process(self) -> None:
        """Refuse gunicorn's ``--reload``, then boot as gunicorn does."""
        if self.cfg.reload:
            self.log.error(
                "gunicorn's --reload is not supported by trioserve's worker; use trioserve --reload"
            )
            sys.exit(_WORKER_BOOT_ERROR)
        super().init_process()

    def init_signals(self) -> None:
        """Reset the master's handlers; the worker's signals are received by trio,
        except ``ABRT`` (see :meth:`handle_abort`)."""
        for signum in self.SIGNALS:
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGABRT, self.handle_abort)

    def handle_abort(self, sig: int, frame: object) -> None:
        """``ABRT``: run the ``worker_abort`` hook and exit 1 at once.

        The master sends it when the worker missed its heartbeat, that is when the
        event loop is blocked; the process is ended without unwinding (a
        ``SystemExit`` raised inside the blocking call would have to travel
        through the app and trio's tasks), after the logs are flushed.
        """
        self.alive = False
        self.cfg.worker_abort(self)
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        for handler in logging.getLogger().handlers + self.log.error_log.handlers:
            handler.flush()
        os._exit(1)

    def trioserve_config(self) -> Config:
        """The :class:`~trioserve.Config` made from gunicorn's settings."""
        cfg = self.cfg
        keys: dict[str, Any] = {
            # Duplicated: the listener closes what it is given, and gunicorn's
            # socket objects must stay open for the master's bookkeeping.
            "bind": [f"fd://{os.dup(sock.fileno())}" for sock in self.sockets],
            "max_requests": self.max_requests if cfg.max_requests > 0 else None,
            "accesslog": cfg.accesslog,
            "access_log_format": cfg.access_log_format,
        }
        # A 0 in these gunicorn settings ("none at all", or "unlimited" for the
        # request limits) has no trioserve equivalent: it leaves trioserve's default.
        if cfg.graceful_timeout > 0:
            keys["graceful_timeout"] = cfg.graceful_timeout
        if cfg.keepalive > 0:
            keys["keep_alive_timeout"] = cfg.keepalive
        if cfg.limit_request_line > 0:
            keys["max_target_length"] = cfg.limit_request_line
        if cfg.limit_request_fields > 0:
            keys["max_header_count"] = cfg.limit_request_fields
        if cfg.is_ssl:
            keys.update(
                certfile=cfg.certfile,
                keyfile=cfg.keyfile,
                ca_certs=cfg.ca_certs,
                verify_mode=_VERIFY_MODES.get(cfg.cert_reqs),
            )
            if cfg.ciphers:
                keys["ciphers"] = cfg.ciphers
        return Config(**keys)

    def run(self) -> None:
        """Serve until gunicorn stops the worker (called by ``init_process``)."""
        self._route_logs()
        try:
            config = self.trioserve_config()
            trio.run(self._serve, config)
        except (ConfigError, LifespanFailure, BindError) as exc:
            self.log.error("%s", exc)
            sys.exit(_WORKER_BOOT_ERROR)

    def _route_logs(self) -> None:
        # trioserve's loggers write through gunicorn's handlers, so that gunicorn's
        # log files, levels, syslog and USR1 reopening apply to them too.
        for name, source in (
            ("trioserve.error", self.log.error_log),
            ("trioserve.access", self.log.access_log),
        ):
            target = logging.getLogger(name)
            target.handlers[:] = source.handlers
            target.setLevel(source.level)
            # A logconfig may leave gunicorn's loggers without handlers, passing
            # their records up to the root logger: then so do trioserve's.
            target.propagate = source.propagate

    async def _serve(self, config: Config) -> None:
        graceful = trio.Event()
        error: ConfigError | LifespanFailure | BindError | None = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._heartbeat, graceful)
            try:
                await nursery.start(
                    partial(self._serve_then_stop, config, graceful, nursery.cancel_scope)
                )
            except (ConfigError, LifespanFailure, BindError) as exc:
                # Raised outside the nursery, as itself rather than in a group.
                error = exc
                nursery.cancel_scope.cancel()
            else:
                # Opened after serve() installed its own receiver, so this one gets
                # the signals: gunicorn's INT and QUIT mean "now", not "gracefully".
                await nursery.start(self._handle_signals, graceful, nursery.cancel_scope)
        if error is not None:
            raise error

    async def _serve_then_stop(
        self,
        config: Config,
        graceful: trio.Event,
        done: trio.CancelScope,
        *,
        task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        await serve(self.wsgi, config, task_status=task_status, shutdown_trigger=graceful.wait)
        done.cancel()

    async def _heartbeat(self, graceful: trio.Event) -> None:
        # The master restarts a worker that has not notified within its timeout;
        # notifying from a task proves that the event loop runs.
        interval = min(self.timeout / 2, 1.0) if self.timeout > 0 else 1.0
        while True:
            self.notify()
            if self.ppid != os.getppid() and not graceful.is_set():
                self.log.info("Parent changed, shutting down: %s", self)
                graceful.set()
            await trio.sleep(interval)

    async def _handle_signals(
        self,
        graceful: trio.Event,
        done: trio.CancelScope,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        with trio.open_signal_receiver(*_SIGNALS) as signals:
            task_status.started()
            async for signum in signals:
                if signum == signal.SIGUSR1:
                    self.log.reopen_files()
                elif signum == signal.SIGTERM:
                    self.log.info("Worker %s: shutting down gracefully", self.pid)
                    graceful.set()
                else:
                    self.alive = False
                    self.cfg.worker_int(self)
                    done.cancel()
