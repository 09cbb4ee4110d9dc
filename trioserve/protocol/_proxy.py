"""Proxies, the pure parts: which peers are trusted, what their forwarding headers
say, and the PROXY protocol's header.

Theory of operation
-------------------

A proxy in front of the server hides the client: the socket's peer is the proxy,
and a TLS-terminating proxy speaks plain HTTP even when the client used HTTPS. A
proxy can tell the server what it hid, in one of two ways:

forwarding headers
    ``X-Forwarded-For``/``-Proto``/``-Host``/``-Port`` (the de-facto family) or
    ``Forwarded`` (RFC 7239), added to each request. :class:`ForwardedHeaders`
    reads *one* family, never both: a proxy rewrites the family it knows and
    passes the other through from the client, so reading both would let a client
    smuggle values past it.
the PROXY protocol
    A header at the very start of the connection, before any HTTP or TLS byte,
    with the client's and the server's addresses (:func:`parse_proxy_header`).

Either is believed only from a peer in ``forwarded_allow_ips``
(:class:`TrustedProxies`); anyone else could claim any address.

What forwarding headers change in a scope (and nothing else):

- ``client``: the right-most address that is not a trusted proxy (a list is
  appended to by each proxy, so entries left of the first untrusted one are
  whatever the client claimed); when every entry is trusted, the left-most. An
  entry that is not an IP address (``unknown``, an obfuscated ``_name``, an
  address with an IPv6 zone) stops the walk too, but leaves ``client`` as it
  was: ASGI's ``client`` is an address. A port is taken when the entry has one,
  else it is 0. The walk parses an entry only when it gets there, and looks at
  no more than :data:`MAX_FORWARDED_ENTRIES` of them (reaching the cap stops it
  like an entry that is not an address), so a padded list costs no more than a
  short one.
- ``scheme``: ``http`` or ``https`` (``ws``/``wss`` for a websocket).
- the ``host`` header: the ``host`` of the client's ``Forwarded`` element, or
  (only with ``forwarded_host``) ``X-Forwarded-Host``, and with
  ``X-Forwarded-Port`` its port (left out when it is the scheme's default).
  ``scope["server"]`` stays the socket's local address, as ASGI defines it.

A header that cannot be parsed never fails a request. A ``Forwarded`` element
that cannot be parsed stops the walk when it is reached, and then nothing is
applied; one left of where the walk stops never matters.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from .._errors import RemoteProtocolError

__all__ = [
    "FORWARDING_HEADERS",
    "MAX_FORWARDED_ENTRIES",
    "NO_PROXY_HEADER",
    "PROXY_V1_MAX_LENGTH",
    "PROXY_V2_SIGNATURE",
    "ForwardedHeaders",
    "ProxyHeader",
    "TrustedProxies",
    "parse_proxy_header",
    "proxy_header_bound",
    "proxy_signature",
]

#: Header fields (lower-case) whose presence makes a request's scope worth
#: rewriting; the parser notes them in the pass it makes over the fields anyway.
FORWARDING_HEADERS = frozenset(
    (
        b"forwarded",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-forwarded-port",
    )
)

_IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrustedProxies:
    """The peers whose forwarding headers and PROXY headers are believed.

    Args:
      entries: IP addresses (``127.0.0.1``, ``::1``), networks (``10.0.0.0/8``),
          ``unix`` (peers on a Unix socket) and ``*`` (everyone).

    Raises:
      ValueError: an entry is none of these; the message names it.
    """

    __slots__ = ("_addresses", "_networks", "everyone", "unix")

    def __init__(self, entries: Iterable[str]) -> None:
        self.everyone = False
        self.unix = False
        self._addresses: set[str] = set()
        self._networks: list[_Network] = []
        for entry in entries:
            if entry == "*":
                self.everyone = True
            elif entry == "unix":
                self.unix = True
            elif "/" in entry:
                try:
                    self._networks.append(ipaddress.ip_network(entry))
                except ValueError as exc:
                    raise ValueError(f"{entry!r} is not a network: {exc}") from None
            else:
                try:
                    self._addresses.add(str(ipaddress.ip_address(entry)))
                except ValueError:
                    raise ValueError(
                        f"{entry!r} is not an IP address, a network, 'unix' or '*'"
                    ) from None

    def trusts(self, host: str) -> bool:
        """Whether the IP address ``host`` is a trusted proxy (a string that is
        not an IP address never is, unless everyone is trusted)."""
        if self.everyone or host in self._addresses:
            return True
        try:
            address: _IPAddress = ipaddress.ip_address(host)
        except ValueError:
            return False
        mapped = getattr(address, "ipv4_mapped", None)
        candidates = (address,) if mapped is None else (address, mapped)
        for candidate in candidates:
            if str(candidate) in self._addresses:
                return True
            if any(candidate in network for network in self._networks):
                return True
        return False

    def trusts_peer(self, client: tuple[str, int] | None, *, unix: bool) -> bool:
        """Whether a connection's peer is trusted: ``client`` is its address, if
        it has one; ``unix``: it came in on a Unix socket. A peer without an
        address that is not on a Unix socket (an in-memory connection) is
        trusted only by ``*``."""
        if unix:
            return self.unix or self.everyone
        if client is None:
            return self.everyone
        return self.trusts(client[0])


# -- forwarding headers ---------------------------------------------------------------

_SCHEMES = {"http": "http", "https": "https", "ws": "http", "wss": "https"}
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
# RFC 3986 host (reg-name, IPv4 or a bracketed IPv6 literal) with an optional port.
_HOST = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~!$&'()*+;=%-]+)(?::([0-9]{1,5}))?")
_PORT = re.compile(r"[0-9]{1,5}")
_TOKEN = r"[-!#$%&'*+.^_`|~0-9A-Za-z]+"
_QUOTED = r'"(?:[^"\\\x00-\x08\x0a-\x1f\x7f]|\\[\t\x20-\x7e\x80-\xff])*"'
_PAIR = re.compile(rf"[ \t]*({_TOKEN})=({_TOKEN}|{_QUOTED})[ \t]*")
_SEPARATOR = re.compile(r"[ \t]*(;|\Z)")
_QUOTED_PAIR = re.compile(r"\\(.)")
_OBFUSCATED = re.compile(r"_[A-Za-z0-9._-]+")
_NODE_PORT = re.compile(r"[0-9]{1,5}|_[A-Za-z0-9._-]+")

Client = tuple[str, int]

#: The most items of a forwarding list (``X-Forwarded-For``, ``Forwarded``) the
#: walk from the right looks at. No real chain of trusted proxies is that long; a
#: longer list is padding, and each item looked at costs a parse. Reaching the
#: cap counts as an item that is not an address: the walk stops there.
MAX_FORWARDED_ENTRIES = 32
#: The most parameters of one ``Forwarded`` element (RFC 7239 defines four).
_MAX_PARAMETERS = 16


@dataclasses.dataclass(frozen=True, slots=True)
class _Forwarded:
    """What a forwarding header family says about the client's request.

    ``client`` is ``None`` when it gives no address (the scope keeps its own).
    """

    client: Client | None = None
    scheme: str | None = None
    host: str | None = None
    port: int | None = None


def _from_right(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> Iterator[str | None]:
    """The items of every ``name`` field, right-most first (RFC 9110 5.3: several
    field lines are one list), empty ones skipped. Only the last
    :data:`MAX_FORWARDED_ENTRIES` items (empty ones included) are split off and
    looked at; if there are more, ``None`` comes last instead of the rest."""
    budget = MAX_FORWARDED_ENTRIES
    for field, value in reversed(headers):
        if field != name:
            continue
        for item in reversed(value.rsplit(b",", budget)):
            if budget == 0:
                yield None
                return
            budget -= 1
            item = item.strip()
            if item:
                yield item.decode("latin-1")


def _last(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> str | None:
    """The right-most item of the ``name`` fields: the one the nearest proxy set."""
    return next(_from_right(headers, name), None)


def _scoped(address: _IPAddress) -> bool:
    """Whether ``address`` carries an IPv6 zone (``fe80::1%eth0``): a zone is free
    text, never part of an address a proxy reports for a remote client."""
    return isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None


def _node(text: str) -> tuple[_IPAddress | None, int]:
    """An address with an optional port: ``1.2.3.4``, ``1.2.3.4:80``, ``::1``,
    ``[::1]``, ``[::1]:80``. ``(None, 0)`` for anything else."""
    host, port = text, ""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            return None, 0
        port = rest[1:]
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None, 0
    if _scoped(address):
        return None, 0
    if port:
        if not _PORT.fullmatch(port) or int(port) > 65535:
            return None, 0
        return address, int(port)
    return address, 0


def _host(value: str | None) -> str | None:
    if value is None:
        return None
    match = _HOST.fullmatch(value)
    if match is None or (match.group(2) is not None and int(match.group(2)) > 65535):
        return None
    return value


def _x_forwarded_client(
    headers: Sequence[tuple[bytes, bytes]], proxies: TrustedProxies
) -> Client | None:
    """The client by ``X-Forwarded-For``: the walk from the right parses each
    entry only when it gets there, and stops at the first untrusted one."""
    left_most = None
    for entry in _from_right(headers, b"x-forwarded-for"):
        address, port = (None, 0) if entry is None else _node(entry)
        if address is None:
            return None
        client = (str(address), port)
        if not proxies.trusts(client[0]):
            return client
        left_most = client
    return left_most


def _x_forwarded(
    headers: Sequence[tuple[bytes, bytes]], proxies: TrustedProxies, host: bool
) -> _Forwarded:
    # Of the single-valued fields, the right-most value counts: it is the one the
    # nearest (trusted) proxy set.
    proto = _last(headers, b"x-forwarded-proto")
    if not host:
        return _Forwarded(
            _x_forwarded_client(headers, proxies),
            None if proto is None else _SCHEMES.get(proto.lower()),
        )
    forwarded_port = _last(headers, b"x-forwarded-port")
    port = None
    if forwarded_port and _PORT.fullmatch(forwarded_port) and 0 < int(forwarded_port) <= 65535:
        port = int(forwarded_port)
    return _Forwarded(
        _x_forwarded_client(headers, proxies),
        None if proto is None else _SCHEMES.get(proto.lower()),
        _host(_last(headers, b"x-forwarded-host")),
        port,
    )


def _forwarded_element(text: str) -> dict[str, str] | None:
    """The parameters of one ``Forwarded`` element (RFC 7239 4), names
    lower-cased and values unquoted; ``None`` when it is broken: bad syntax, a
    parameter twice, or more than :data:`_MAX_PARAMETERS` of them."""
    if text.count(";") >= _MAX_PARAMETERS:
        return None
    element: dict[str, str] = {}
    pos = 0
    while True:
        # A pair, or nothing (empty pairs are allowed), then ";" or the end.
        pair = _PAIR.match(text, pos)
        if pair is not None:
            name, value = pair.group(1).lower(), pair.group(2)
            if value.startswith('"'):
                value = _QUOTED_PAIR.sub(r"\1", value[1:-1])
            if name in element:
                return None
            element[name] = value
            pos = pair.end()
        separator = _SEPARATOR.match(text, pos)
        if separator is None:
            return None
        pos = separator.end()
        if not separator.group(1):
            return element


def _forwarded_node(value: str) -> tuple[_IPAddress | None, int]:
    """The node of a ``for`` parameter (RFC 7239 6): an address, ``unknown`` or an
    obfuscated name, each with an optional port (``_name`` ports count as 0).

    Raises:
      ValueError: none of these.
    """
    if value.lower() == "unknown" or _OBFUSCATED.fullmatch(value):
        return None, 0
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or (rest and not (rest[:1] == ":" and _NODE_PORT.fullmatch(rest[1:]))):
            raise ValueError(f"bad node {value!r}")
        address: _IPAddress = ipaddress.IPv6Address(host)
        if _scoped(address):
            raise ValueError(f"a zone in {value!r}")
        port = rest[1:]
    else:
        host, _, port = value.partition(":")
        if port and not _NODE_PORT.fullmatch(port):
            raise ValueError(f"bad node {value!r}")
        if host.lower() == "unknown" or _OBFUSCATED.fullmatch(host):
            return None, 0
        address = ipaddress.IPv4Address(host)
    if port.isdigit():
        if int(port) > 65535:
            raise ValueError(f"bad port in {value!r}")
        return address, int(port)
    return address, 0


def _from_element(element: dict[str, str], node: tuple[_IPAddress | None, int]) -> _Forwarded:
    address, port = node
    proto = element.get("proto")
    return _Forwarded(
        None if address is None else (str(address), port),
        _SCHEMES.get(proto.lower()) if proto is not None else None,
        _host(element.get("host")),
    )


def _rfc7239(headers: Sequence[tuple[bytes, bytes]], proxies: TrustedProxies) -> _Forwarded:
    # Each proxy appends an element about the connection it received: the
    # client's element tells the client's address, and the scheme and host the
    # client used. The walk goes from the right and parses each element only when
    # it gets there, so what a client wrote left of the element a trusted proxy
    # appended never counts, however broken. A comma always ends an element (no
    # value a proxy writes holds one), so a client's unbalanced quote cannot reach
    # into the proxy's element either.
    left_most = None
    for entry in _from_right(headers, b"forwarded"):
        element = None if entry is None else _forwarded_element(entry)
        if element is None:
            return _Forwarded()  # broken, or beyond the walk's reach: nothing is known
        try:
            node = _forwarded_node(element["for"]) if "for" in element else (None, 0)
        except ValueError:
            return _Forwarded()
        if node[0] is None or not proxies.trusts(str(node[0])):
            return _from_element(element, node)
        left_most = (element, node)
    return _Forwarded() if left_most is None else _from_element(*left_most)


class ForwardedHeaders:
    """Applies one family of forwarding headers to the scopes of a trusted peer.

    Args:
      mode: ``"x-forwarded"`` (``X-Forwarded-For``, ``-Proto``, and with
          ``forwarded_host`` ``-Host`` and ``-Port``) or ``"forwarded"`` (RFC 7239
          ``Forwarded``); the other family is left alone.
      proxies: the trusted proxies, for walking the list of addresses.
      forwarded_host: apply ``X-Forwarded-Host`` and ``X-Forwarded-Port`` (in
          ``x-forwarded`` mode). Off, a proxy that sets only ``-For`` and
          ``-Proto`` cannot pass a client's own copies on to the ``host`` header.
    """

    __slots__ = ("_host", "_mode", "_proxies")

    def __init__(self, mode: str, proxies: TrustedProxies, *, forwarded_host: bool = False) -> None:
        self._mode = mode
        self._proxies = proxies
        self._host = forwarded_host

    def apply(self, scope: dict[str, Any]) -> None:
        """Rewrite ``client``, ``scheme`` and the ``host`` header of an HTTP or
        websocket scope from its forwarding headers (see the module docstring)."""
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        if self._mode == "forwarded":
            forwarded = _rfc7239(headers, self._proxies)
        else:
            forwarded = _x_forwarded(headers, self._proxies, self._host)
        if forwarded.client is not None:
            scope["client"] = forwarded.client
        scheme = forwarded.scheme
        if scheme is not None:
            if scope["type"] == "websocket":
                scheme = "wss" if scheme == "https" else "ws"
            scope["scheme"] = scheme
        if forwarded.host is None and forwarded.port is None:
            return
        host = forwarded.host
        if host is None:
            host = next((v.decode("latin-1") for n, v in headers if n == b"host"), None)
            if host is None or not _HOST.fullmatch(host):
                return
        if forwarded.port is not None:
            match = _HOST.fullmatch(host)
            assert match is not None
            host = match.group(1)
            if forwarded.port != _DEFAULT_PORTS.get(scope["scheme"]):
                host = f"{host}:{forwarded.port}"
        value = host.encode("latin-1")
        scope["headers"] = [(b"host", value)] + [(n, v) for n, v in headers if n != b"host"]


# -- the PROXY protocol ---------------------------------------------------------------

_V1_PREFIX = b"PROXY "
#: The first twelve bytes of a PROXY protocol version 2 header.
PROXY_V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
#: The longest version 1 header, CRLF included.
PROXY_V1_MAX_LENGTH = 107
_V2_FIXED = 16
_V1_PORT = re.compile(rb"0|[1-9][0-9]{0,4}")
_V2_ADDRESS_SIZES = {1: 12, 2: 36, 3: 216}


@dataclasses.dataclass(frozen=True, slots=True)
class ProxyHeader:
    """A PROXY protocol header, parsed.

    Attributes:
      version: 1 or 2; 0 for :data:`NO_PROXY_HEADER`.
      length: how many bytes of the connection the header takes.
      local: the socket's own addresses stand: a version 2 ``LOCAL`` command (a
          health check), an ``UNSPEC`` family, or version 1 ``UNKNOWN``.
      client: the client's address, when not ``local`` (``None`` for a client
          on a Unix socket).
      server: the address the client connected to, when not ``local``
          (``(path, None)`` for a Unix socket).
    """

    version: int
    length: int
    local: bool = True
    client: tuple[str, int] | None = None
    server: tuple[str, int | None] | None = None


#: What :func:`parse_proxy_header` returns in ``auto`` mode for a connection that
#: does not begin with a PROXY header.
NO_PROXY_HEADER = ProxyHeader(0, 0)


def proxy_signature(data: bytes) -> int | None:
    """Which PROXY header ``data`` begins with: 1 or 2; 0 if neither; ``None``
    if it is too short to tell (a beginning of a signature, or empty)."""
    if data.startswith(_V1_PREFIX):
        return 1
    if data.startswith(PROXY_V2_SIGNATURE):
        return 2
    if _V1_PREFIX.startswith(data) or PROXY_V2_SIGNATURE.startswith(data):
        return None
    return 0


def proxy_header_bound(data: bytes) -> int:
    """The most bytes the PROXY header at the start of ``data`` can take: how far
    a reader may look ahead without reading into what follows it."""
    if len(data) >= _V2_FIXED and data.startswith(PROXY_V2_SIGNATURE):
        return _V2_FIXED + int.from_bytes(data[14:16], "big")
    return PROXY_V1_MAX_LENGTH


def parse_proxy_header(data: bytes, version: str) -> ProxyHeader | None:
    """Parse the PROXY header at the start of ``data``.

    Args:
      data: the first bytes of a connection (more than the header is fine).
      version: ``"v1"`` or ``"v2"``: that version must come; ``"auto"``: either,
          or none (then :data:`NO_PROXY_HEADER` is returned).

    Returns:
      The header, or ``None`` when ``data`` is an incomplete beginning of one.

    Raises:
      RemoteProtocolError: the header is malformed, or (``v1``, ``v2``) missing.
    """
    signature = proxy_signature(data)
    if signature is None:
        return None
    if signature == 0 or (version != "auto" and f"v{signature}" != version):
        if version == "auto":
            return NO_PROXY_HEADER
        raise RemoteProtocolError(f"no PROXY protocol {version} header")
    if signature == 1:
        return _parse_v1(data)
    return _parse_v2(data)


def _parse_v1(data: bytes) -> ProxyHeader | None:
    end = data.find(b"\r\n", 0, PROXY_V1_MAX_LENGTH)
    if end < 0:
        if len(data) >= PROXY_V1_MAX_LENGTH:
            raise RemoteProtocolError("PROXY v1 header longer than 107 bytes")
        return None
    parts = data[:end].split(b" ")
    if parts[1] == b"UNKNOWN":
        # The sender could not tell; what follows UNKNOWN is to be ignored.
        return ProxyHeader(1, end + 2)
    if parts[1] not in (b"TCP4", b"TCP6"):
        raise RemoteProtocolError(f"PROXY v1 header: unknown protocol {parts[1]!r}")
    if len(parts) != 6:
        raise RemoteProtocolError(f"PROXY v1 header: {len(parts)} fields, not 6")
    family = ipaddress.IPv4Address if parts[1] == b"TCP4" else ipaddress.IPv6Address
    addresses = []
    for field in parts[2:4]:
        try:
            address = family(field.decode("ascii"))
            if _scoped(address):
                raise ValueError("a zone is not part of a client's address")
            addresses.append(str(address))
        except (UnicodeDecodeError, ValueError):
            raise RemoteProtocolError(
                f"PROXY v1 header: {field!r} is not a {parts[1].decode()} address"
            ) from None
    ports = []
    for field in parts[4:6]:
        if not _V1_PORT.fullmatch(field) or int(field) > 65535:
            raise RemoteProtocolError(f"PROXY v1 header: {field!r} is not a port")
        ports.append(int(field))
    return ProxyHeader(1, end + 2, False, (addresses[0], ports[0]), (addresses[1], ports[1]))


def _parse_v2(data: bytes) -> ProxyHeader | None:
    if len(data) < _V2_FIXED:
        return None
    version, command = data[12] >> 4, data[12] & 0x0F
    if version != 2:
        raise RemoteProtocolError(f"PROXY v2 header: version {version}, not 2")
    if command > 1:
        raise RemoteProtocolError(f"PROXY v2 header: unknown command {command}")
    length = _V2_FIXED + int.from_bytes(data[14:16], "big")
    if len(data) < length:
        return None
    family, transport = data[13] >> 4, data[13] & 0x0F
    # LOCAL (0): the proxy speaks for itself (a health check); the address
    # block, whatever it holds, is skipped. So is UNSPEC for PROXY.
    if command == 0 or family == 0:
        return ProxyHeader(2, length)
    size = _V2_ADDRESS_SIZES.get(family)
    if size is None:
        raise RemoteProtocolError(f"PROXY v2 header: unknown address family {family}")
    if transport != 1:
        raise RemoteProtocolError(f"PROXY v2 header: transport {transport} is not a stream")
    if length - _V2_FIXED < size:
        raise RemoteProtocolError(
            f"PROXY v2 header: {length - _V2_FIXED} address bytes, family {family} needs {size}"
        )
    block = data[_V2_FIXED : _V2_FIXED + size]  # TLVs may follow; they are skipped
    if family == 3:
        server_path = block[108:].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        return ProxyHeader(2, length, False, None, (server_path, None) if server_path else None)
    half = (size - 4) // 2
    make = ipaddress.IPv4Address if family == 1 else ipaddress.IPv6Address
    source, destination = str(make(block[:half])), str(make(block[half : 2 * half]))
    source_port = int.from_bytes(block[2 * half : 2 * half + 2], "big")
    destination_port = int.from_bytes(block[2 * half + 2 :], "big")
    return ProxyHeader(2, length, False, (source, source_port), (destination, destination_port))
