"""The WebSocket opening handshake over an HTTP/1.1 request, sans-IO (RFC 6455 4.2).

The request head has already been parsed, once, by the HTTP/1.1 parser; what is
decided here works on its header fields as parsed, never on the raw bytes again
(two parsers reading one head differently is how handshake headers get smuggled).

- :func:`is_websocket_upgrade`: the request asks to become a websocket
  (``Upgrade: websocket`` and an ``upgrade`` token in ``Connection``). Any other
  ``Upgrade`` (``h2c``...) is ignored and the request served as HTTP/1.1.
- :func:`check_handshake`: the rest of the handshake is valid: a ``GET`` over
  HTTP/1.1 with no body, a ``Sec-WebSocket-Key`` of 16 base64-encoded bytes, and
  ``Sec-WebSocket-Version: 13`` (426 with the supported version otherwise).
- :func:`accept_head`: the ``101 Switching Protocols`` head, with the negotiated
  subprotocol and extensions and the app's extra header fields.
- :func:`negotiate_deflate`: permessage-deflate (RFC 7692), agreed through
  wsproto's extension machinery.

The frames that follow are wsproto's (:mod:`trioserve.connection._websocket`).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import re
from collections.abc import Sequence

from wsproto.extensions import Extension, PerMessageDeflate
from wsproto.handshake import server_extensions_handshake
from wsproto.utilities import generate_accept_token

from .._errors import LocalProtocolError, RemoteProtocolError
from ._events import RequestHead
from ._http11_policy import comma_tokens

__all__ = [
    "WebSocketRequest",
    "accept_head",
    "check_handshake",
    "is_websocket_upgrade",
    "negotiate_deflate",
]

Headers = Sequence[tuple[bytes, bytes]]

_TOKEN = re.compile(rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+")
_FIELD_VALUE = re.compile(rb"(?:[^\x00\s]+(?:[ \t]+[^\x00\s]+)*)?")
# Header fields of the 101 that the server sets; an app may not set them itself.
_HANDSHAKE_FIELDS = frozenset(
    (
        b"connection",
        b"upgrade",
        b"sec-websocket-accept",
        b"sec-websocket-protocol",
        b"sec-websocket-extensions",
        b"content-length",
        b"transfer-encoding",
    )
)


@dataclasses.dataclass(frozen=True, slots=True)
class WebSocketRequest:
    """What the opening handshake asked for."""

    #: ``Sec-WebSocket-Key`` as sent.
    key: bytes
    #: The subprotocols offered, in order (``Sec-WebSocket-Protocol``).
    subprotocols: list[str]
    #: The extension offers, one string each (``Sec-WebSocket-Extensions``).
    extensions: list[str]


def is_websocket_upgrade(headers: Headers) -> bool:
    """The request asks to become a websocket: ``Upgrade: websocket`` and an
    ``upgrade`` token among the ``Connection`` tokens."""
    upgrade = connection = False
    for name, value in headers:
        if name == b"upgrade":
            upgrade = upgrade or b"websocket" in comma_tokens(value)
        elif name == b"connection":
            connection = connection or b"upgrade" in comma_tokens(value)
    return upgrade and connection


def check_handshake(head: RequestHead, has_body: bool) -> WebSocketRequest:
    """Check the rest of a websocket upgrade request.

    Raises:
      RemoteProtocolError: 400 for a malformed handshake, 426 (with the supported
          ``Sec-WebSocket-Version``) for another protocol version.
    """
    if head.method != b"GET":
        raise RemoteProtocolError("A WebSocket handshake must be a GET request")
    if head.http_version != b"1.1":
        raise RemoteProtocolError("A WebSocket handshake needs HTTP/1.1")
    if has_body:
        raise RemoteProtocolError("A WebSocket handshake has no body")
    keys: list[bytes] = []
    versions: list[bytes] = []
    subprotocols: list[str] = []
    extensions: list[str] = []
    for name, value in head.headers:
        if name == b"sec-websocket-key":
            keys.append(value)
        elif name == b"sec-websocket-version":
            versions.append(value)
        elif name == b"sec-websocket-protocol":
            subprotocols.extend(_comma_list(value))
        elif name == b"sec-websocket-extensions":
            extensions.extend(_comma_list(value))
    if versions != [b"13"]:
        raise RemoteProtocolError(
            "Unsupported Sec-WebSocket-Version", 426, ((b"sec-websocket-version", b"13"),)
        )
    if len(keys) != 1 or not _is_key(keys[0]):
        raise RemoteProtocolError("Missing or invalid Sec-WebSocket-Key")
    return WebSocketRequest(keys[0], subprotocols, extensions)


def _is_key(key: bytes) -> bool:
    try:
        return len(base64.b64decode(key, validate=True)) == 16
    except binascii.Error:
        return False


def _comma_list(value: bytes) -> list[str]:
    return [item for item in (part.strip() for part in value.decode("latin-1").split(",")) if item]


def negotiate_deflate(offers: list[str], enabled: bool) -> tuple[list[Extension], bytes | None]:
    """Agree on permessage-deflate if the client offered it and it is enabled.

    Returns:
      The extensions for the connection (empty, or one fresh
      :class:`PerMessageDeflate`), and the ``Sec-WebSocket-Extensions`` value of
      the 101 (``None`` if nothing was agreed).
    """
    if not enabled or not offers:
        return [], None
    deflate = PerMessageDeflate()
    try:
        accepted = server_extensions_handshake(offers, [deflate])
    except ValueError:
        # Malformed parameters in the offer: decline it rather than fail.
        return [], None
    if accepted is None:
        return [], None
    return [deflate], accepted


def accept_head(
    request: WebSocketRequest,
    subprotocol: str | None,
    extensions: bytes | None,
    headers: Headers,
    own: Headers,
) -> bytes:
    """The ``101 Switching Protocols`` head that completes the handshake.

    Args:
      subprotocol: the app's choice among the offered subprotocols, or ``None``.
      extensions: the agreed ``Sec-WebSocket-Extensions`` value, or ``None``.
      headers: extra fields from the app (``websocket.accept``'s ``headers``).
      own: fields the server adds (``server``, ``date``).

    Raises:
      LocalProtocolError: the subprotocol was not offered, or an app field is not
          allowed (illegal characters, or one the handshake itself sets).
    """
    lines = [
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n",
        b"sec-websocket-accept: %s\r\n" % generate_accept_token(request.key),
    ]
    if subprotocol is not None:
        if subprotocol not in request.subprotocols:
            raise LocalProtocolError(
                f"websocket.accept: subprotocol {subprotocol!r} was not offered by the client"
            )
        lines.append(b"sec-websocket-protocol: %s\r\n" % subprotocol.encode("latin-1"))
    if extensions is not None:
        lines.append(b"sec-websocket-extensions: %s\r\n" % extensions)
    for name, value in headers:
        if not _TOKEN.fullmatch(name) or not _FIELD_VALUE.fullmatch(value):
            raise LocalProtocolError(f"websocket.accept: illegal header field {name!r}: {value!r}")
        if name in _HANDSHAKE_FIELDS:
            raise LocalProtocolError(
                f"websocket.accept: header field {name.decode()!r} is set by the server"
            )
        lines.append(b"%s: %s\r\n" % (name, value))
    lines.extend(b"%s: %s\r\n" % field for field in own)
    lines.append(b"\r\n")
    return b"".join(lines)
