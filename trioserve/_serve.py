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
is cancelled. Lifespan shutdown
runs after the connection nursery has exited, so no request is served without the
app's resources. No task outlives ``serve()`` because every task is in one of
these nurseries.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Awaitable, Callable, Sequence
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

if TYPE_CHECKING:
    from ._types import ASGIApp

__all__ = ["serve"]

logger = logging.getLogger("trioserve.error")

ListenerFactory = Callable[[Config], Awaitable[Sequence[trio.abc.Listener[trio.abc.Stream]]]]


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
) -> None:
    """:func:`serve` over listeners made by ``make_listeners`` (after lifespan
    startup). ``trioserve.testing`` uses it with in-memory listeners.

    Connections accepted from a :class:`~trioserve._listeners.TLSListener` are
    served as ``https`` after their handshake; all others as ``scheme``.
    Reaching ``max_requests`` sets ``max_requests_reached`` when it is given and
    the server goes on serving (the caller decides when to stop); without it, the
    server shuts down gracefully.
    """
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
                )
            finally:
                with trio.CancelScope(shield=True):
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
) -> None:
    shutdown = trio.Event()
    reached = shutdown if max_requests_reached is None else max_requests_reached
    server = ServerState(app, config, lifespan_state, reached)

    async with trio.open_nursery() as connection_nursery:
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
                    await accept_nursery.start(_watch_signals, shutdown)
                urls = [listener_url(listener, scheme) for listener in listeners]
                for url in urls:
                    logger.info("Serving on %s", url)
                task_status.started(urls)
                await shutdown.wait()
                accept_nursery.cancel_scope.cancel()
        finally:
            for listener in listeners:
                await trio.aclose_forcefully(listener)
        logger.info("Shutting down: waiting up to %gs for requests", config.graceful_timeout)
        server.begin_shutdown()
        connection_nursery.cancel_scope.deadline = trio.current_time() + config.graceful_timeout
    if connection_nursery.cancel_scope.cancelled_caught:
        logger.warning("Graceful shutdown timed out; cancelled the remaining connections")


async def _set_after(trigger: Callable[[], Awaitable[object]], event: trio.Event) -> None:
    await trigger()
    event.set()


async def _watch_signals(
    event: trio.Event, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        async for signum in signals:
            logger.info("Received %s; shutting down gracefully", signal.Signals(signum).name)
            event.set()
            return
