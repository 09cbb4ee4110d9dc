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

A connection first reads its PROXY protocol header here, when the protocol is on
(before anything else, the TLS handshake included); a TLS stream then completes
its handshake, in the connection's own task. Whether the peer is a trusted proxy
is decided once, from the address the connection is from: the PROXY header's
source if one was accepted, else the socket's peer.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import trio

from .._errors import RemoteProtocolError
from .._listeners import describe_client, tls_handshake
from .._logging import escape
from .._proxy_protocol import ProxyHeaderReader
from .._transport import Transport
from ._http11 import HTTP11Connection

if TYPE_CHECKING:
    from .._listeners import Address, ServerAddress, TLSListener
    from .._server_state import ServerState

__all__ = ["serve_stream", "serve_tls_stream"]

error_logger = logging.getLogger("trioserve.error")

#: The addresses of a connection and the bytes read ahead of its PROXY header.
Peer = tuple["Address | None", "ServerAddress | None", bytes]


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
    received = b""
    if server.config.proxy_protocol != "off" and isinstance(stream, trio.SocketStream):
        peer = await _read_proxy_header(server, stream.socket, client, local)
        if peer is None:
            await trio.aclose_forcefully(stream)
            return
        client, local, received = peer
    await _serve(server, scheme, stream, client, local, extensions, received)


async def _serve(
    server: ServerState,
    scheme: str,
    stream: trio.abc.Stream,
    client: Address | None,
    local: ServerAddress | None,
    extensions: dict[str, dict[str, object]] | None,
    received: bytes = b"",
) -> None:
    forwarded = server.forwarded_headers
    if forwarded is not None and not server.proxies.trusts_peer(
        client, unix=local is not None and local[1] is None
    ):
        forwarded = None
    transport = Transport(stream, server.config.write_timeout, received)
    try:
        await HTTP11Connection(
            transport, server, client, local, scheme, extensions, forwarded
        ).run()
    finally:
        await transport.aclose()


async def _read_proxy_header(
    server: ServerState,
    sock: trio.socket.SocketType,
    client: Address | None,
    local: ServerAddress | None,
) -> Peer | None:
    """Read the PROXY header (``proxy_protocol``) of a new connection; return its
    addresses, or ``None`` when the connection is to be closed: the header was
    missing, malformed, came from a peer that is not trusted, or did not arrive
    within ``header_timeout`` (each logged at WARNING, one line), or the peer left
    before sending anything (not logged).

    A peer that is not trusted is logged at WARNING only once it has sent a whole
    signature: a few bytes that merely begin one (``\r\n`` begins version 2's)
    and then a close, a reset or silence are what scanners and stray clients
    send, at DEBUG."""
    config = server.config
    if server.shutting_down:  # pragma: no cover - the same narrow race as a handshake's
        return None
    trusted = server.proxies.trusts_peer(client, unix=local is not None and local[1] is None)
    reader = ProxyHeaderReader(sock)
    problem = None
    result = None
    with trio.move_on_after(config.header_timeout) as scope:
        server.handshakes.add(scope)
        try:
            result = await reader.read(config.proxy_protocol, trusted=trusted)
        except RemoteProtocolError as exc:
            problem = str(exc)
        finally:
            server.handshakes.discard(scope)
    if scope.cancelled_caught and not server.shutting_down:
        required = trusted and config.proxy_protocol != "auto"
        if required or reader.seen:
            problem = f"no complete PROXY header within {config.header_timeout:g}s"
        else:
            error_logger.debug(
                "%s sent nothing within %gs; closing the connection",
                describe_client(client),
                config.header_timeout,
            )
    if problem is not None:
        error_logger.log(
            logging.WARNING if trusted or reader.signed else logging.DEBUG,
            "Closing the connection from %s: %s",
            escape(describe_client(client)),
            escape(problem),
        )
    if result is None:
        return None
    header, received = result
    if header.local:
        return client, local, received
    return header.client, header.server, received


async def serve_tls_stream(
    server: ServerState,
    listener: TLSListener,
    stream: trio.SSLStream[Any],
    client: Address | None,
    local: ServerAddress | None,
) -> None:
    """Read the PROXY header (if the protocol is on), complete the TLS handshake
    of an accepted stream, then serve it as ``https``.

    The handshake runs here, in the connection's own task: in the accept loop, one
    silent client would stop everyone else from being accepted. It is bounded by
    ``ssl_handshake_timeout``, and dropped when a shutdown begins: a connection
    that only now completed its handshake would be closed as idle at once anyway.
    """
    config = server.config
    transport_stream = stream.transport_stream
    if config.proxy_protocol != "off" and isinstance(transport_stream, trio.SocketStream):
        # The TLS stream has read nothing yet: the header is on the socket below it.
        peer = await _read_proxy_header(server, transport_stream.socket, client, local)
        if peer is None or peer[2]:
            # Bytes read ahead of a header that was not there cannot be handed to
            # the TLS layer; they began like a PROXY header, so not like TLS either.
            await trio.aclose_forcefully(stream)
            return
        client, local, _ = peer
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
    await _serve(server, "https", stream, client, local, {"tls": extension})
