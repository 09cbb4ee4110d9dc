"""Reading a PROXY protocol header off an accepted socket.

Theory of operation
-------------------

The header comes before anything else on the connection, before the first HTTP
byte and before the TLS handshake. The reader takes *exactly* the header's bytes
from the socket and leaves everything after it in the kernel, so that the
connection afterwards is an ordinary socket: the transport's plain-socket fast
path, or a TLS handshake that reads the ``ClientHello`` itself, needs no wrapper
that would hold bytes read too far.

It looks at what has arrived with ``MSG_PEEK`` (bounded by the most the header
can take, :func:`~trioserve.protocol._proxy.proxy_header_bound`), and the pure
parser says whether that is a complete header (then exactly its bytes are
received), a beginning of one, or no header at all. Bytes that are a beginning
of a header are received as they come, since a peek that finds nothing new
would not wait for more; the header cannot end inside them. Only where they
could still turn out to be no header at all (``auto``, or a peer that is not
trusted, and a few bytes that begin like a signature, as ``P`` begins ``POST``)
does it matter: such bytes are handed back to the caller, which gives them to the
transport as the connection's first bytes.

The caller bounds the whole read with ``header_timeout``.
"""

from __future__ import annotations

import errno
import socket

import trio

from ._errors import RemoteProtocolError
from .protocol._proxy import (
    NO_PROXY_HEADER,
    ProxyHeader,
    parse_proxy_header,
    proxy_header_bound,
    proxy_signature,
)

__all__ = ["ProxyHeaderReader"]


class ProxyHeaderReader:
    """Reads the PROXY header at the start of one accepted socket.

    Args:
      sock: the connection's socket, nothing read from it yet.

    Attributes:
      seen: bytes have arrived that may begin a PROXY header (so a connection
          that ends or times out now was cut off inside one).
      signed: a whole signature has arrived (``PROXY `` or the twelve bytes of
          version 2), not just bytes that could begin one: the peer meant to send
          a header. A few bytes such as ``\r\n`` begin the version 2 signature
          and are also what scanners and stray clients send.
    """

    __slots__ = ("_sock", "seen", "signed")

    def __init__(self, sock: trio.socket.SocketType) -> None:
        self._sock = sock
        self.seen = False
        self.signed = False

    async def read(self, version: str, *, trusted: bool) -> tuple[ProxyHeader, bytes] | None:
        """Read the header.

        Args:
          version: ``"v1"``, ``"v2"`` (required from a trusted peer) or ``"auto"``.
          trusted: the peer may send one; an untrusted peer must not.

        Returns:
          The header (:data:`NO_PROXY_HEADER` if there is none and none was
          required) and the bytes read that are not part of it (usually none),
          or ``None`` if the peer left before sending anything (closed or
          reset: how health checkers end their probes).

        Raises:
          RemoteProtocolError: a malformed header, a missing one (``v1``, ``v2``),
              one from an untrusted peer, or a close inside the header.
        """
        sock = self._sock
        received = b""
        while True:
            try:
                data = await sock.recv(
                    proxy_header_bound(received) - len(received), socket.MSG_PEEK
                )
            except OSError as exc:
                if not received and exc.errno == errno.ECONNRESET:
                    return None
                raise RemoteProtocolError(f"connection broken in the PROXY header: {exc}") from exc
            if not data:
                if not received:
                    return None
                raise RemoteProtocolError("connection closed inside the PROXY header")
            data = received + data
            if proxy_signature(data):
                self.signed = True
            if trusted:
                header = parse_proxy_header(data, version)
            else:
                signature = proxy_signature(data)
                if signature:
                    raise RemoteProtocolError("PROXY header from a peer that is not trusted")
                header = None if signature is None else NO_PROXY_HEADER
            if header is None:
                # A beginning of a header: take it, then wait for the rest.
                self.seen = True
                await self._receive_exactly(len(data) - len(received))
                received = data
                continue
            if header is NO_PROXY_HEADER:
                return header, received
            await self._receive_exactly(header.length - len(received))
            return header, b""

    async def _receive_exactly(self, count: int) -> None:
        """Take ``count`` bytes the peek has shown to be there."""
        while count:
            try:
                data = await self._sock.recv(count)
            except OSError as exc:  # pragma: no cover - peeked bytes are there to take
                raise RemoteProtocolError(f"connection broken in the PROXY header: {exc}") from exc
            if not data:  # pragma: no cover - as above
                raise RemoteProtocolError("connection closed inside the PROXY header")
            count -= len(data)
