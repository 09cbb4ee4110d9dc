"""Binds to listeners, and the accept loop that turns accepted streams into
connections.

This is the only layer that knows about sockets: it reads the peer and local
addresses off each accepted socket and hands them to the connection as plain
parameters, so the connection code runs the same over in-memory streams.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import trio

from ._config import parse_bind
from ._errors import BindError

if TYPE_CHECKING:
    from ._config import Config

__all__ = ["accept_loop", "listener_url", "open_listeners"]

error_logger = logging.getLogger("trioserve.error")

#: accept() errors that mean "out of resources for now", not "broken listener".
_CAPACITY_ERRNOS = frozenset(
    {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS, errno.ECONNABORTED}
)
#: Pause before accepting again after such an error.
_ACCEPT_BACKOFF = 0.1

Address = tuple[str, int]


async def open_listeners(config: Config) -> list[trio.SocketListener]:
    """Open a listener for every configured bind.

    Raises:
      BindError: an address could not be bound (in use, permission denied, ...).
    """
    listeners: list[trio.SocketListener] = []
    try:
        for bind in config.bind:
            host, port = parse_bind(bind)
            try:
                listeners.extend(
                    await trio.open_tcp_listeners(port, host=host or None, backlog=config.backlog)
                )
            except OSError as exc:
                raise BindError(exc.errno, f"cannot bind {bind}: {exc.strerror or exc}") from exc
    except BaseException:
        for listener in listeners:
            await trio.aclose_forcefully(listener)
        raise
    return listeners


def listener_url(listener: trio.abc.Listener[trio.abc.Stream], scheme: str) -> str:
    """The URL a listener serves, e.g. ``http://127.0.0.1:8000``."""
    if isinstance(listener, trio.SocketListener):
        host, port = listener.socket.getsockname()[:2]
        if ":" in host:
            host = f"[{host}]"
        return f"{scheme}://{host}:{port}"
    return f"{scheme}://{type(listener).__name__}"


def _addresses(stream: trio.abc.Stream) -> tuple[Address | None, Address | None]:
    if isinstance(stream, trio.SocketStream):
        sock = stream.socket
        peer = sock.getpeername()
        local = sock.getsockname()
        return (str(peer[0]), int(peer[1])), (str(local[0]), int(local[1]))
    return None, None


async def accept_loop(
    listener: trio.abc.Listener[trio.abc.Stream],
    nursery: trio.Nursery,
    handler: Callable[[trio.abc.Stream, Address | None, Address | None], Awaitable[None]],
) -> None:
    """Accept connections forever, starting ``handler(stream, client, server)`` for
    each in ``nursery`` (the connection nursery, which outlives this loop so that
    in-flight connections survive the end of accepting)."""
    while True:
        try:
            stream = await listener.accept()
        except OSError as exc:
            if exc.errno not in _CAPACITY_ERRNOS:
                raise
            # Out of file descriptors or memory: accepting again at once would spin.
            error_logger.error("accept() failed: %s; pausing before accepting again", exc)
            await trio.sleep(_ACCEPT_BACKOFF)
            continue
        try:
            client, server = _addresses(stream)
        except OSError:
            # The peer left before we looked (ENOTCONN): nothing to serve.
            await trio.aclose_forcefully(stream)
            continue
        nursery.start_soon(handler, stream, client, server)
