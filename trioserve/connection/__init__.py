"""Connections: from an accepted stream to the protocol spoken on it.

Every accepted stream gets a :class:`~trioserve._transport.Transport` (the
reader, the writes with their deadline, the lingering close) and is then served
by a connection kind that speaks on it:

``_http11.py``
    HTTP/1.1: the request loop, keep-alive and the wire side of each request.
``_request.py``
    The ASGI HTTP request cycle, over the narrow channel a connection kind gives
    it; the same cycle can serve requests of other HTTP versions.
``_keep_alive.py``
    The keep-alive deadline, one cancel scope for the connection's life.

A TLS stream first completes its handshake here, in the connection's own task.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import trio

from .._listeners import describe_client, tls_handshake
from .._transport import Transport
from ._http11 import HTTP11Connection

if TYPE_CHECKING:
    from .._listeners import Address, ServerAddress, TLSListener
    from .._server_state import ServerState

__all__ = ["serve_stream", "serve_tls_stream"]

error_logger = logging.getLogger("trioserve.error")


async def serve_stream(
    server: ServerState,
    scheme: str,
    stream: trio.abc.Stream,
    client: Address | None,
    local: ServerAddress | None,
    extensions: dict[str, dict[str, object]] | None = None,
) -> None:
    """Serve one accepted stream until the connection ends, then close it.

    Args:
      server: the shared server state.
      scheme: ``"http"`` or ``"https"`` (the scope's ``scheme``).
      stream: the connected stream.
      client: the peer's address, if known.
      local: the local address, if known.
      extensions: ASGI scope extensions of this connection (e.g. ``tls``).
    """
    transport = Transport(stream, server.config.write_timeout)
    try:
        await HTTP11Connection(transport, server, client, local, scheme, extensions).run()
    finally:
        await transport.aclose()


async def serve_tls_stream(
    server: ServerState,
    listener: TLSListener,
    stream: trio.SSLStream[Any],
    client: Address | None,
    local: ServerAddress | None,
) -> None:
    """Complete the TLS handshake of an accepted stream, then serve it as ``https``.

    The handshake runs here, in the connection's own task: in the accept loop, one
    silent client would stop everyone else from being accepted. It is bounded by
    ``ssl_handshake_timeout``, and dropped when a shutdown begins: a connection
    that only now completed its handshake would be closed as idle at once anyway.
    """
    config = server.config
    extension = None
    # Shutdown closes the listeners before it begins, so a connection starting
    # after that is a narrow race; it would only be closed as idle anyway.
    if not server.shutting_down:  # pragma: no branch
        with trio.move_on_after(config.ssl_handshake_timeout) as scope:
            server.handshakes.add(scope)
            try:
                extension = await tls_handshake(stream, listener.tls, client)
            finally:
                server.handshakes.discard(scope)
        if scope.cancelled_caught and not server.shutting_down:
            error_logger.debug(
                "TLS handshake with %s not done after %gs; dropping it",
                describe_client(client),
                config.ssl_handshake_timeout,
            )
    if extension is None:
        await trio.aclose_forcefully(stream)
        return
    await serve_stream(server, "https", stream, client, local, {"tls": extension})
