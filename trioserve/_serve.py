"""``serve()``: lifespan, listeners, connections and shutdown as one nursery tree.

::

    serve()
    └── server nursery
        ├── lifespan task          startup before listening, shutdown after draining
        └── connection nursery     per connection: TLS handshake (if any), then
            │                      the connection kind (connection.serve_stream)
            └── accept nursery     an accept loop per listener, the shutdown watchers

Shutdown is a sequence of scope operations, not a protocol between tasks: cancel
the accept nursery (stop accepting), close the listeners, ask each connection to
close when idle and drop the TLS handshakes still in progress (a connection
that is only now starting would be closed as idle anyway), then give the
connection nursery a deadline of ``graceful_timeout``; what is still running then
is cancelled (a request whose response had not started is answered 503). Lifespan
shutdown runs after the connection nursery has exited, so no request is served
without the app's resources. No task outlives ``serve()`` because every task is in
one of these nurseries.

A :class:`ServerControl` is how the command's process talks to its server: it
names the process in the startup line, gives the reason of a stop for the
shutdown line, and can force the stop (a second Ctrl+C): that cancels the
connection nursery at once and skips the lifespan shutdown.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Awaitable, Callable, Iterator, Sequence
from functools import partial
from typing import TYPE_CHECKING

import trio

from ._config import Config
from ._errors import BindError, ConfigError, LifespanFailure
from ._lifespan import Lifespan
from ._listeners import TLSListener, accept_loop, listener_url, open_listeners_with_tls
from ._server_state import ServerState
from ._tls import create_server_tls
from .connection import serve_stream, serve_tls_stream
from .connection._request import CANCELLED_ANSWER_TIMEOUT

if TYPE_CHECKING:
    from ._types import ASGIApp

__all__ = ["ServerControl", "serve"]

logger = logging.getLogger("trioserve.error")

ListenerFactory = Callable[[Config], Awaitable[Sequence[trio.abc.Listener[trio.abc.Stream]]]]

#: Request lines a forced or timed-out shutdown names in its log line; the
#: count covers the rest.
_CANCELLED_SHOWN = 3


class ServerControl:
    """What a process that watches the signals itself tells its server, and what
    it asks of it: the reason of a stop, for the log, and a forced stop.

    Args:
      pid: the process to signal to stop this server, named in the startup line.
      interactive: a SIGINT (Ctrl+C) stops the server: the startup line says so.
      forceable: a second SIGINT forces the stop (the command line): the shutdown
          line says so. Default: ``interactive``.
      announce: log the startup line (a worker leaves that to its supervisor).

    Attributes:
      reason: why the server stops, e.g. ``"Received SIGTERM"``; set it before
          setting the stop event.
      forced: :meth:`force` was called.
    """

    def __init__(
        self,
        *,
        pid: int,
        interactive: bool,
        forceable: bool | None = None,
        announce: bool = True,
    ) -> None:
        self.pid = pid
        self.interactive = interactive
        self.forceable = interactive if forceable is None else forceable
        self.announce = announce
        self.reason = ""
        self.forced = False
        #: The server has started serving (lifespan startup done, listening).
        self.serving = False
        self._scopes: set[trio.CancelScope] = set()

    def stop_requested(self, reason: str) -> None:
        """Note why the server is to stop, before the caller sets its stop event.
        The server logs the reason when its shutdown begins; a stop that comes
        while it still starts is logged here, since the shutdown waits for that."""
        self.reason = reason
        if not self.serving and self.forceable:
            logger.info(
                "%s while starting; stopping once started; press Ctrl+C again to force", reason
            )

    def force(self) -> None:
        """Stop at once: cancel what is in progress, including the lifespan
        shutdown, which an ordinary cancellation leaves to finish."""
        self.forced = True
        for scope in self._scopes:
            scope.cancel()

    @contextlib.contextmanager
    def cancelled_by_force(self, scope: trio.CancelScope) -> Iterator[None]:
        """Within the block, :meth:`force` cancels ``scope`` (at once if forced)."""
        if self.forced:
            scope.cancel()
        self._scopes.add(scope)
        try:
            yield
        finally:
            self._scopes.discard(scope)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def startup_line(urls: Sequence[str], pid: int, interactive: bool, workers: int = 0) -> str:
    """The line that says a server is up: where, which version, which process
    stops it and how."""
    from . import __version__

    about = f"trioserve {__version__}, PID {pid}"
    if workers:
        about += f", {_plural(workers, 'worker')}"
    line = f"Serving on {', '.join(urls)} ({about})"
    return line + "; press Ctrl+C to stop" if interactive else line


async def serve(
    app: ASGIApp,
    config: Config | None = None,
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
    shutdown_trigger: Callable[[], Awaitable[object]] | None = None,
) -> None:
    """Serve an ASGI 3 application until shut down.

    ``trio.run(serve, app)`` serves on http://127.0.0.1:8000 until SIGINT or
    SIGTERM. ``await nursery.start(serve, app, config)`` returns once every listener
    is bound and lifespan startup has finished, with the URLs served (so port 0
    works without a race).

    Args:
      app: the ASGI 3 application (``async def app(scope, receive, send)``).
      config: the configuration; ``None`` means ``Config()``.
      task_status: given the list of bound URLs, e.g. ``["http://127.0.0.1:8000"]``.
      shutdown_trigger: an async callable; when it returns, the server shuts down
          gracefully. When ``serve`` runs in the main thread, SIGINT and SIGTERM do
          the same; a second signal during the graceful period is not caught.

    Raises:
      ConfigError: the TLS files (``certfile``, ``keyfile``, ``ca_certs``) cannot
          be loaded; raised before lifespan startup and before any port is bound.
      LifespanFailure: lifespan startup failed; raised before any port is bound.
      BindError: an address could not be bound.

    Resource handling:
      Every task serve starts lives in a nursery inside it: when it returns or
      raises, no task and no socket it opened is left.
    """
    install_signals = threading.current_thread() is threading.main_thread()
    config = config or Config()
    # Load the certificates before anything starts: a wrong path is the
    # operator's mistake and should not first run the app's lifespan startup.
    tls = create_server_tls(config)
    await serve_listeners(
        app,
        config,
        partial(open_listeners_with_tls, tls=tls),
        scheme="http",
        task_status=task_status,
        shutdown_trigger=shutdown_trigger,
        install_signal_handlers=install_signals,
        # A second signal is not caught here: the shutdown line does not offer it.
        control=ServerControl(pid=os.getpid(), interactive=install_signals, forceable=False),
    )


async def serve_listeners(
    app: ASGIApp,
    config: Config,
    make_listeners: ListenerFactory,
    *,
    scheme: str,
    task_status: trio.TaskStatus[list[str]],
    shutdown_trigger: Callable[[], Awaitable[object]] | None,
    install_signal_handlers: bool,
    max_requests_reached: trio.Event | None = None,
    control: ServerControl | None = None,
) -> None:
    """:func:`serve` over listeners made by ``make_listeners`` (after lifespan
    startup). ``trioserve.testing`` uses it with in-memory listeners.

    Connections accepted from a :class:`~trioserve._listeners.TLSListener` are
    served as ``https`` after their handshake; all others as ``scheme``.
    Reaching ``max_requests`` sets ``max_requests_reached`` when it is given and
    the server goes on serving (the caller decides when to stop); without it, the
    server shuts down gracefully. ``control`` (default: no startup line, no
    hints) names the process in the log lines and can force the stop.
    """
    control = control or ServerControl(pid=os.getpid(), interactive=False, announce=False)
    error: LifespanFailure | BindError | ConfigError | None = None
    async with trio.open_nursery() as server_nursery:
        lifespan = Lifespan(app, config)
        try:
            if config.lifespan != "off":
                await lifespan.startup(server_nursery)
            listeners = await make_listeners(config)
        except (LifespanFailure, BindError, ConfigError) as exc:
            # Raised outside the nursery below, so that callers see the error itself
            # rather than an exception group.
            error = exc
            if not isinstance(exc, LifespanFailure):
                # Startup went through, so the app is owed its shutdown (it may hold
                # connections or files it opened in startup).
                with trio.CancelScope(shield=True):
                    await lifespan.shutdown()
            server_nursery.cancel_scope.cancel()
        else:
            state = lifespan.state if config.lifespan != "off" else None
            try:
                await _serve_connections(
                    app,
                    config,
                    listeners,
                    scheme,
                    state,
                    task_status,
                    shutdown_trigger,
                    install_signal_handlers,
                    max_requests_reached,
                    control,
                )
            finally:
                # Shielded: the app is owed its shutdown even when the server is
                # cancelled from outside; only a forced stop skips it.
                shutdown_scope = trio.CancelScope(shield=True)
                with shutdown_scope, control.cancelled_by_force(shutdown_scope):
                    await lifespan.shutdown()
    if error is not None:
        raise error


async def _serve_connections(
    app: ASGIApp,
    config: Config,
    listeners: Sequence[trio.abc.Listener[trio.abc.Stream]],
    scheme: str,
    lifespan_state: dict[str, object] | None,
    task_status: trio.TaskStatus[list[str]],
    shutdown_trigger: Callable[[], Awaitable[object]] | None,
    install_signal_handlers: bool,
    max_requests_reached: trio.Event | None,
    control: ServerControl,
) -> None:
    shutdown = trio.Event()
    reached = shutdown if max_requests_reached is None else max_requests_reached
    server = ServerState(app, config, lifespan_state, reached)

    deadline_scope: trio.CancelScope | None = None
    cut_off = _CutOff(server, control)
    try:
        async with trio.open_nursery() as cut_off_nursery:
            cut_off_nursery.start_soon(cut_off.run)
            try:
                with trio.CancelScope() as forced, control.cancelled_by_force(forced):
                    async with trio.open_nursery() as connection_nursery:
                        deadline_scope = connection_nursery.cancel_scope
                        await _accept_until_shutdown(
                            listeners,
                            scheme,
                            server,
                            connection_nursery,
                            shutdown,
                            shutdown_trigger,
                            install_signal_handlers,
                            control,
                            task_status,
                        )
                        if server.reached_max_requests and not control.reason:
                            control.reason = f"Reached max_requests ({config.max_requests})"
                        in_flight = server.in_flight()
                        logger.info(_shutdown_line(control, in_flight, config.graceful_timeout))
                        server.begin_shutdown()
                        deadline = trio.current_time() + config.graceful_timeout
                        connection_nursery.cancel_scope.deadline = deadline
                        cut_off.at(deadline)
            finally:
                cut_off.done()
    finally:
        # Also when the server is cancelled from outside: say what that cut short.
        if control.forced:
            why = "forced stop"
        elif deadline_scope is not None and deadline_scope.cancelled_caught:
            why = "the graceful shutdown timed out"
        else:
            why = "the server was cancelled"
        _log_cancelled(server, why)


class _CutOff:
    """Aborts the connections the server cancelled (a forced stop, the graceful
    deadline, a cancellation from outside) once their requests have had
    :data:`CANCELLED_ANSWER_TIMEOUT` seconds to answer: what still runs then is
    a write shielded from the cancellation (a response head, an answer) to a
    client that does not read, and the stop must not wait for it."""

    def __init__(self, server: ServerState, control: ServerControl) -> None:
        self._server = server
        self._control = control
        self._wait = trio.CancelScope()
        self._grace = trio.CancelScope(shield=True)

    def at(self, deadline: float) -> None:
        """The connections are cancelled at ``deadline`` (the graceful one)."""
        self._wait.deadline = deadline

    def done(self) -> None:
        """The connections have ended: nothing is left to abort."""
        self._wait.cancel()
        self._grace.cancel()

    async def run(self) -> None:
        """Wait for the cut-off (or a forced stop, or a cancellation from
        outside), give the requests their time to answer, then abort."""
        try:
            with self._wait, self._control.cancelled_by_force(self._wait):
                await trio.sleep_forever()
        finally:
            # Shielded: a forced stop cancels this task's scopes too, and this is
            # what makes the forced stop finish at once.
            with self._grace:
                await trio.sleep(CANCELLED_ANSWER_TIMEOUT)
                await self._server.abort_connections()


def _shutdown_line(control: ServerControl, in_flight: int, timeout: float) -> str:
    line = f"shutting down gracefully ({in_flight} in flight, up to {timeout:g}s)"
    if control.reason:
        line = f"{control.reason}; {line}"
    if control.forceable:
        line += "; press Ctrl+C again to force"
    return line[0].upper() + line[1:]


def _log_cancelled(server: ServerState, why: str) -> None:
    count, shown = server.cancelled_requests()
    if not count:
        return
    what = ", ".join(shown[:_CANCELLED_SHOWN])
    if count > _CANCELLED_SHOWN:
        what += f" and {count - _CANCELLED_SHOWN} more"
    logger.warning("Cancelled %s in progress (%s): %s", _plural(count, "request"), why, what)


async def _accept_until_shutdown(
    listeners: Sequence[trio.abc.Listener[trio.abc.Stream]],
    scheme: str,
    server: ServerState,
    connection_nursery: trio.Nursery,
    shutdown: trio.Event,
    shutdown_trigger: Callable[[], Awaitable[object]] | None,
    install_signal_handlers: bool,
    control: ServerControl,
    task_status: trio.TaskStatus[list[str]],
) -> None:
    """Accept connections until ``shutdown`` is set, then close the listeners."""
    try:
        async with trio.open_nursery() as accept_nursery:
            for listener in listeners:
                handler: Callable[..., Awaitable[None]] = (
                    partial(serve_tls_stream, server, listener)
                    if isinstance(listener, TLSListener)
                    else partial(serve_stream, server, scheme)
                )
                accept_nursery.start_soon(accept_loop, listener, connection_nursery, handler)
            if shutdown_trigger is not None:
                accept_nursery.start_soon(_set_after, shutdown_trigger, shutdown)
            if install_signal_handlers:
                await accept_nursery.start(_watch_signals, shutdown, control)
            urls = [listener_url(listener, scheme) for listener in listeners]
            if control.announce and not control.reason:
                # (A stop asked for while starting was logged then: no "serving" now.)
                logger.info(startup_line(urls, control.pid, control.interactive))
            task_status.started(urls)
            control.serving = True
            await shutdown.wait()
            accept_nursery.cancel_scope.cancel()
    finally:
        for listener in listeners:
            await trio.aclose_forcefully(listener)


async def _set_after(trigger: Callable[[], Awaitable[object]], event: trio.Event) -> None:
    await trigger()
    event.set()


async def _watch_signals(
    event: trio.Event,
    control: ServerControl,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        async for signum in signals:
            control.stop_requested(f"Received {signal.Signals(signum).name}")
            event.set()
            return
