"""Proxies, the pure parts: trusted peers, forwarding headers applied to a scope,
and the PROXY protocol's header parsed byte for byte.

Forwarding headers are checked on scope dicts as the connection builds them; the
PROXY parsers get bytes and must give the exact header length, addresses, or an
error (a :class:`RemoteProtocolError` whose message names what was wrong).
"""

from __future__ import annotations

import re
import struct
from typing import Any

import pytest

from trioserve import RemoteProtocolError
from trioserve.protocol._events import RequestHead
from trioserve.protocol._http11 import HTTP11Protocol
from trioserve.protocol._proxy import (
    MAX_FORWARDED_ENTRIES,
    NO_PROXY_HEADER,
    PROXY_V2_SIGNATURE,
    ForwardedHeaders,
    ProxyHeader,
    TrustedProxies,
    parse_proxy_header,
    proxy_header_bound,
    proxy_signature,
)

PROXIES = TrustedProxies(["127.0.0.1", "10.0.0.0/8", "2001:db8::/32"])
PEER = ("127.0.0.1", 40000)


def scope(*headers: tuple[bytes, bytes], kind: str = "http") -> dict[str, Any]:
    return {
        "type": kind,
        "scheme": "http" if kind == "http" else "ws",
        "client": PEER,
        "server": ("127.0.0.1", 8000),
        "headers": [(b"host", b"internal:8000"), *headers],
    }


def applied(
    *headers: tuple[bytes, bytes], mode: str = "x-forwarded", kind: str = "http", host: bool = False
) -> Any:
    result = scope(*headers, kind=kind)
    ForwardedHeaders(mode, PROXIES, forwarded_host=host).apply(result)
    return result


def applied_with_host(*headers: tuple[bytes, bytes]) -> Any:
    return applied(*headers, host=True)


def host_of(result: dict[str, Any]) -> bytes:
    hosts = [value for name, value in result["headers"] if name == b"host"]
    assert len(hosts) == 1
    return hosts[0]


# -- trusted peers ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "trusted"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", False),
        ("10.200.3.4", True),
        ("11.0.0.1", False),
        ("2001:db8::42", True),
        ("2001:db9::1", False),
        ("::ffff:127.0.0.1", True),  # an IPv4 peer on a dual-stack socket
        ("::ffff:10.1.2.3", True),
        ("::ffff:192.0.2.1", False),
        ("not-an-address", False),
        ("", False),
    ],
)
def test_trusted_proxies_match_addresses_networks_and_mapped_ipv4(host: str, trusted: bool) -> None:
    assert PROXIES.trusts(host) is trusted


def test_an_address_entry_matches_however_the_peer_writes_it() -> None:
    proxies = TrustedProxies(["::1", "2001:DB8::0001"])
    assert proxies.trusts("::1")
    assert proxies.trusts("2001:db8::1")
    assert proxies.trusts("0:0:0:0:0:0:0:1")


def test_star_trusts_every_peer_and_unix_only_unix_sockets() -> None:
    everyone = TrustedProxies(["*"])
    assert everyone.trusts("192.0.2.1")
    assert everyone.trusts_peer(None, unix=True)
    assert everyone.trusts_peer(None, unix=False)
    unix = TrustedProxies(["unix"])
    assert unix.trusts_peer(None, unix=True)
    assert not unix.trusts_peer(("127.0.0.1", 1), unix=False)
    assert not unix.trusts_peer(None, unix=False)  # an in-memory connection
    assert not PROXIES.trusts_peer(None, unix=True)
    assert PROXIES.trusts_peer(("10.1.1.1", 5), unix=False)
    assert not TrustedProxies([]).trusts("127.0.0.1")


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("localhost", "'localhost' is not an IP address, a network, 'unix' or '*'"),
        ("10.0.0.1/8", "'10.0.0.1/8' is not a network"),
        ("10.0.0.0/33", "'10.0.0.0/33' is not a network"),
        ("1.2.3", "'1.2.3' is not an IP address"),
    ],
)
def test_an_entry_that_is_not_an_address_network_unix_or_star_is_refused(
    entry: str, message: str
) -> None:
    with pytest.raises(ValueError, match="^" + message.replace("*", r"\*")):
        TrustedProxies(["127.0.0.1", entry])


# -- X-Forwarded-* -----------------------------------------------------------------------


def test_x_forwarded_for_client_is_the_right_most_untrusted_address() -> None:
    result = applied((b"x-forwarded-for", b"198.51.100.7, 192.0.2.1, 10.0.0.2, 127.0.0.1"))
    assert result["client"] == ("192.0.2.1", 0)


def test_x_forwarded_for_all_trusted_gives_the_left_most() -> None:
    result = applied((b"x-forwarded-for", b"10.0.0.9, 10.0.0.2"))
    assert result["client"] == ("10.0.0.9", 0)


def test_x_forwarded_for_lines_are_one_list_in_order() -> None:
    result = applied(
        (b"x-forwarded-for", b"192.0.2.1"),
        (b"x-forwarded-for", b"198.51.100.2, 10.0.0.1"),
    )
    assert result["client"] == ("198.51.100.2", 0)


@pytest.mark.parametrize(
    ("value", "client"),
    [
        (b"192.0.2.1:4711", ("192.0.2.1", 4711)),
        (b"2001:db9::1", ("2001:db9::1", 0)),
        (b"[2001:db9::1]", ("2001:db9::1", 0)),
        (b"[2001:db9::1]:4711", ("2001:db9::1", 4711)),
        (b" 192.0.2.1 ,, ", ("192.0.2.1", 0)),
    ],
)
def test_x_forwarded_for_entries_may_carry_ports_and_brackets(
    value: bytes, client: tuple[str, int]
) -> None:
    assert applied((b"x-forwarded-for", value))["client"] == client


@pytest.mark.parametrize(
    "value",
    [
        b"unknown",
        b"192.0.2.1, garbage, 10.0.0.1",
        b"192.0.2.1:99999",
        b"[2001:db9::1",
        b"[2001:db9::1]x",
        b"192.0.2.1:port",
        b"<script>",
    ],
)
def test_x_forwarded_for_entry_that_is_not_an_address_leaves_the_client(value: bytes) -> None:
    assert applied((b"x-forwarded-for", value))["client"] == PEER


@pytest.mark.parametrize(
    ("value", "kind", "scheme"),
    [
        (b"https", "http", "https"),
        (b"HTTPS", "http", "https"),
        (b"http", "http", "http"),
        (b"wss", "http", "https"),
        (b"https", "websocket", "wss"),
        (b"http", "websocket", "ws"),
        (b"wss", "websocket", "wss"),
        (b"http, https", "http", "https"),  # the right-most value counts
        (b"ftp", "http", "http"),  # not a scheme a request can have: ignored
        (b"", "http", "http"),
    ],
)
def test_x_forwarded_proto_sets_the_scheme(value: bytes, kind: str, scheme: str) -> None:
    assert applied((b"x-forwarded-proto", value), kind=kind)["scheme"] == scheme


def test_x_forwarded_host_and_port_are_ignored_unless_opted_in() -> None:
    """A proxy that sets only X-Forwarded-For and -Proto passes a client's
    X-Forwarded-Host and -Port on: by default they must not reach the host header."""
    headers = ((b"x-forwarded-host", b"evil.example"), (b"x-forwarded-port", b"1337"))
    assert applied(*headers) == scope(*headers)
    assert host_of(applied_with_host(*headers)) == b"evil.example:1337"


def test_x_forwarded_host_replaces_the_host_header() -> None:
    result = applied_with_host((b"x-forwarded-host", b"example.com"), (b"accept", b"*/*"))
    assert result["headers"] == [
        (b"host", b"example.com"),
        (b"x-forwarded-host", b"example.com"),
        (b"accept", b"*/*"),
    ]
    assert result["server"] == ("127.0.0.1", 8000)  # the socket's, as ASGI defines it


def test_x_forwarded_host_is_added_when_the_request_had_none() -> None:
    result = {"type": "http", "scheme": "http", "client": PEER, "headers": []}
    ForwardedHeaders("x-forwarded", PROXIES, forwarded_host=True).apply(result)
    assert result["headers"] == []
    result["headers"] = [(b"x-forwarded-host", b"example.com:8443")]
    ForwardedHeaders("x-forwarded", PROXIES, forwarded_host=True).apply(result)
    assert result["headers"][0] == (b"host", b"example.com:8443")


@pytest.mark.parametrize(
    "value",
    [
        b"exa mple.com",
        b"example.com:port",
        b"a/b",
        b"[::1",
        b"example.com:123456",
        b"example.com:65536",
        b"[::1]:99999",
    ],
)
def test_x_forwarded_host_that_is_not_a_host_is_ignored(value: bytes) -> None:
    assert host_of(applied_with_host((b"x-forwarded-host", value))) == b"internal:8000"


@pytest.mark.parametrize(
    ("headers", "host"),
    [
        # The scheme's default port is left out; another one is written.
        ([(b"x-forwarded-proto", b"https"), (b"x-forwarded-port", b"443")], b"internal"),
        ([(b"x-forwarded-port", b"80")], b"internal"),
        ([(b"x-forwarded-port", b"8080")], b"internal:8080"),
        (
            [(b"x-forwarded-host", b"example.com:1"), (b"x-forwarded-port", b"8443")],
            b"example.com:8443",
        ),
        (
            [(b"x-forwarded-host", b"[2001:db8::1]"), (b"x-forwarded-port", b"8443")],
            b"[2001:db8::1]:8443",
        ),
        # A port that is not one is ignored.
        ([(b"x-forwarded-port", b"0")], b"internal:8000"),
        ([(b"x-forwarded-port", b"65536")], b"internal:8000"),
        ([(b"x-forwarded-port", b"eighty")], b"internal:8000"),
    ],
)
def test_x_forwarded_port_sets_the_port_of_the_host_header(
    headers: list[tuple[bytes, bytes]], host: bytes
) -> None:
    assert host_of(applied_with_host(*headers)) == host


def test_x_forwarded_port_without_a_usable_host_header_is_ignored() -> None:
    result = {"type": "http", "scheme": "http", "client": PEER, "headers": []}
    result["headers"] = [(b"x-forwarded-port", b"8443")]
    ForwardedHeaders("x-forwarded", PROXIES, forwarded_host=True).apply(result)
    assert result["headers"] == [(b"x-forwarded-port", b"8443")]
    result["headers"] = [(b"host", b"bad host"), (b"x-forwarded-port", b"8443")]
    ForwardedHeaders("x-forwarded", PROXIES, forwarded_host=True).apply(result)
    assert result["headers"] == [(b"host", b"bad host"), (b"x-forwarded-port", b"8443")]


def test_x_forwarded_mode_ignores_forwarded() -> None:
    result = applied_with_host((b"forwarded", b"for=192.0.2.1;proto=https;host=evil.example"))
    assert result == scope((b"forwarded", b"for=192.0.2.1;proto=https;host=evil.example"))


# -- Forwarded (RFC 7239) ----------------------------------------------------------------


def forwarded(*values: bytes, kind: str = "http") -> dict[str, Any]:
    return applied(*((b"forwarded", value) for value in values), mode="forwarded", kind=kind)


def test_forwarded_sets_client_scheme_and_host_from_the_clients_element() -> None:
    result = forwarded(b"for=192.0.2.60;proto=https;host=example.com, for=10.0.0.1;proto=http")
    assert result["client"] == ("192.0.2.60", 0)
    assert result["scheme"] == "https"
    assert host_of(result) == b"example.com"


def test_forwarded_client_is_the_right_most_untrusted_element() -> None:
    result = forwarded(b"for=198.51.100.1;proto=http, for=192.0.2.60;proto=https, for=10.0.0.1")
    assert result["client"] == ("192.0.2.60", 0)
    assert result["scheme"] == "https"


def test_forwarded_all_trusted_gives_the_left_most_element() -> None:
    result = forwarded(b"for=10.0.0.7;proto=https, for=127.0.0.1;proto=http")
    assert result["client"] == ("10.0.0.7", 0)
    assert result["scheme"] == "https"


def test_forwarded_lines_are_one_list_in_order() -> None:
    result = forwarded(b"for=198.51.100.1", b"for=192.0.2.60;proto=https", b"for=10.0.0.1")
    assert result["client"] == ("192.0.2.60", 0)


@pytest.mark.parametrize(
    ("value", "client"),
    [
        (b'for="[2001:db9::1]"', ("2001:db9::1", 0)),
        (b'for="[2001:db9::1]:4711"', ("2001:db9::1", 4711)),
        (b'for="192.0.2.43:47011"', ("192.0.2.43", 47011)),
        (b'for="192.0.2.43:_port"', ("192.0.2.43", 0)),
        (b"FOR=192.0.2.43", ("192.0.2.43", 0)),  # parameter names are case-insensitive
        (b'for="\\192.0.2.43"', ("192.0.2.43", 0)),  # a quoted-pair
        (b" for=192.0.2.43 ; proto=https ", ("192.0.2.43", 0)),
        (b",for=192.0.2.43,", ("192.0.2.43", 0)),  # empty list elements
    ],
)
def test_forwarded_for_forms(value: bytes, client: tuple[str, int]) -> None:
    assert forwarded(value)["client"] == client


@pytest.mark.parametrize(
    "value", [b"for=unknown", b"for=_hidden", b'for="_hidden:_port"', b'for="unknown:80"']
)
def test_forwarded_unknown_or_obfuscated_client_keeps_the_address_but_applies_the_rest(
    value: bytes,
) -> None:
    result = forwarded(value + b";proto=https, for=10.0.0.1")
    assert result["client"] == PEER
    assert result["scheme"] == "https"


def test_forwarded_element_without_for_is_the_clients() -> None:
    result = forwarded(b"proto=https;host=example.com")
    assert result["client"] == PEER
    assert result["scheme"] == "https"
    assert host_of(result) == b"example.com"


def test_forwarded_quoted_host_with_port_and_escapes() -> None:
    assert host_of(forwarded(b'host="example.com:8443"')) == b"example.com:8443"
    assert host_of(forwarded(b'host="[2001:db8::1]:8443"')) == b"[2001:db8::1]:8443"
    assert host_of(forwarded(b'host="exa\\mple.com"')) == b"example.com"


def test_forwarded_websocket_scope_gets_wss() -> None:
    assert forwarded(b"proto=https", kind="websocket")["scheme"] == "wss"


@pytest.mark.parametrize(
    "value",
    [
        b"for=[2001:db9::1]",  # an IPv6 node must be quoted
        b"for=192.0.2.1;for=192.0.2.2",  # a parameter twice in one element
        b"for",
        b"for=",
        b'for="192.0.2.1',  # an unterminated quoted-string
        b"for=192.0.2.1 proto=https",  # no separator
        b"for=hello",  # not a node
        b'for="[2001:db9::1"',
        b'for="[2001:db9::1]:99999"',
        b'for="192.0.2.1:99999"',
        b'for="192.0.2.1:p!"',
        b"for=192.0.2.1;proto=https;host=evil\x01.example",
        b"=x",
    ],
)
def test_a_broken_element_reached_by_the_walk_applies_nothing(value: bytes) -> None:
    # The broken element is the right-most; the one left of it says proto=https
    # but is never reached.
    result = forwarded(b"for=192.0.2.9;proto=https", value)
    assert result == scope((b"forwarded", b"for=192.0.2.9;proto=https"), (b"forwarded", value)), (
        value
    )


def test_forwarded_invalid_proto_and_host_values_are_ignored() -> None:
    result = forwarded(b'for=192.0.2.1;proto=gopher;host="a b"')
    assert result["client"] == ("192.0.2.1", 0)
    assert result["scheme"] == "http"
    assert host_of(result) == b"internal:8000"


def test_forwarded_mode_ignores_x_forwarded() -> None:
    headers = [
        (b"x-forwarded-for", b"192.0.2.1"),
        (b"x-forwarded-proto", b"https"),
        (b"x-forwarded-host", b"evil.example"),
        (b"x-forwarded-port", b"8443"),
    ]
    assert applied(*headers, mode="forwarded") == scope(*headers)


@pytest.mark.parametrize(
    "client_part",
    [
        b"for=999.0.0.1",  # valid syntax, not an address
        b"for=192.0.2.9;for=192.0.2.10",  # a parameter twice in one element
        b'for="192.0.2.9',  # an unbalanced quote
        b'for="[::1]:80;proto=https',
        b"for=192.0.2.1 proto=https",
        b"for=[2001:db9::1]",
        b"for",
    ],
)
@pytest.mark.parametrize("same_line", [True, False])
def test_a_broken_client_element_left_of_the_proxys_does_not_matter(
    client_part: bytes, same_line: bool
) -> None:
    """The trusted proxy appends a well-formed element, to the client's line
    (``$http_forwarded, for=...``) or as a line of its own: the client's broken
    element left of it must not cancel it."""
    proxys = b"for=203.0.113.5;proto=https;host=shop.example"
    values = (client_part + b", " + proxys,) if same_line else (client_part, proxys)
    result = forwarded(*values)
    assert result["client"] == ("203.0.113.5", 0)
    assert result["scheme"] == "https"
    assert host_of(result) == b"shop.example"


def test_forwarded_unknown_is_case_insensitive() -> None:
    result = forwarded(b"for=UNKNOWN;proto=https, for=10.0.0.1")
    assert result["client"] == PEER
    assert result["scheme"] == "https"


def test_forwarded_broken_element_between_trusted_ones_stops_the_walk() -> None:
    result = forwarded(b"for=192.0.2.60;proto=https, for=999.1.1.1, for=10.0.0.1;proto=http")
    assert result == scope(
        (b"forwarded", b"for=192.0.2.60;proto=https, for=999.1.1.1, for=10.0.0.1;proto=http")
    )


def test_forwarded_element_with_too_many_parameters_is_broken() -> None:
    def element(extensions: int) -> bytes:
        return b"for=192.0.2.60;proto=https" + b"".join(b";x%d=y" % n for n in range(extensions))

    assert forwarded(element(14))["scheme"] == "https"  # 16 parameters
    assert forwarded(element(15))["scheme"] == "http"


# -- the walk is bounded -------------------------------------------------------------------


def test_x_forwarded_for_walk_looks_at_no_more_than_the_cap() -> None:
    """All of a list within the cap is walked (every entry trusted: the
    left-most); one entry more and the walk stops at the cap, so the client's
    left-most claim is never parsed and the client stays the peer."""
    trusted = [b"10.0.0.%d" % n for n in range(MAX_FORWARDED_ENTRIES - 1)]
    within = b", ".join([b"192.0.2.1", *trusted])
    assert applied((b"x-forwarded-for", within))["client"] == ("192.0.2.1", 0)
    beyond = b", ".join([b"192.0.2.1", b"10.0.0.99", *trusted])
    assert applied((b"x-forwarded-for", beyond))["client"] == PEER
    # Across several lines, and with empty items counted: the same cap.
    lines = [(b"x-forwarded-for", b"192.0.2.1, ,")] + [
        (b"x-forwarded-for", entry) for entry in trusted
    ]
    assert applied(*lines)["client"] == PEER


def test_x_forwarded_for_padding_left_of_the_client_does_not_change_it() -> None:
    """Thousands of junk entries left of the client do not change the answer;
    the walk stops at the client, the first untrusted entry from the right."""
    padded = b"x," * 7000 + b"203.0.113.5, 10.0.0.1"
    assert applied((b"x-forwarded-for", padded))["client"] == ("203.0.113.5", 0)


def test_forwarded_walk_looks_at_no_more_than_the_cap() -> None:
    trusted = b", ".join(b"for=10.0.0.%d" % n for n in range(MAX_FORWARDED_ENTRIES - 1))
    within = forwarded(b"for=192.0.2.1;proto=https, " + trusted)
    assert (within["client"], within["scheme"]) == (("192.0.2.1", 0), "https")
    beyond = forwarded(b"for=192.0.2.1;proto=https, for=10.0.0.99, " + trusted)
    assert (beyond["client"], beyond["scheme"]) == (PEER, "http")


# -- addresses are addresses -----------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        b"::1%<img src=x onerror=alert(1)> or 1=1",
        b'::1%"\x85\x9b31m',
        b"[fe80::1%eth0]:80",
        b"fe80::1%eth0",
        b"[::1%25]",
    ],
)
def test_x_forwarded_for_address_with_a_zone_is_not_an_address(value: bytes) -> None:
    assert applied((b"x-forwarded-for", value))["client"] == PEER


@pytest.mark.parametrize(
    "value", [b'for="[::1%\\" onmouseover=x]"', b'for="[fe80::1%eth0]:80"', b'for="[::1%1]"']
)
def test_forwarded_node_with_a_zone_is_not_an_address(value: bytes) -> None:
    result = forwarded(value + b";proto=https")
    assert result == scope((b"forwarded", value + b";proto=https"))


def test_a_trusted_link_local_peer_is_written_with_its_zone() -> None:
    proxies = TrustedProxies(["fe80::1%eth0"])
    assert proxies.trusts("fe80::1%eth0")
    assert not proxies.trusts("fe80::1")
    assert not TrustedProxies(["fe80::1"]).trusts("fe80::1%eth0")


# -- the parser notes forwarding headers -------------------------------------------------


@pytest.mark.parametrize(("fast_path"), [True, False])
@pytest.mark.parametrize(
    ("field", "noted"),
    [
        (b"X-Forwarded-For: 1.2.3.4", True),
        (b"x-forwarded-proto: https", True),
        (b"X-Forwarded-Host: a", True),
        (b"X-Forwarded-Port: 1", True),
        (b"Forwarded: for=1.2.3.4", True),
        (b"X-Forwarded-Server: a", False),
        (b"Accept: */*", False),
    ],
)
def test_request_heads_note_forwarding_headers(field: bytes, noted: bool, fast_path: bool) -> None:
    proto = HTTP11Protocol(fast_path=fast_path)
    proto.receive_data(b"GET / HTTP/1.1\r\nHost: a\r\n" + field + b"\r\n\r\n")
    head = proto.next_event()
    assert isinstance(head, RequestHead)
    assert head.forwarded is noted


# -- the PROXY protocol ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "signature"),
    [
        (b"", None),
        (b"P", None),
        (b"PROXY", None),
        (b"PROXY ", 1),
        (b"PROXY TCP4", 1),
        (b"POST / HTTP/1.1", 0),
        (b"PROPFIND", 0),
        (b"\r\n\r\n\x00", None),
        (PROXY_V2_SIGNATURE[:11], None),
        (PROXY_V2_SIGNATURE, 2),
        (b"\r\n\r\nGET", 0),
        (b"\x16\x03\x01", 0),  # a TLS record
    ],
)
def test_proxy_signature(data: bytes, signature: int | None) -> None:
    assert proxy_signature(data) == signature


V1_TCP4 = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n"
V1_TCP6 = b"PROXY TCP6 2001:db8::1 2001:db8::2 56324 8443\r\n"


def test_proxy_v1_tcp4_and_tcp6() -> None:
    assert parse_proxy_header(V1_TCP4 + b"GET / HTTP/1.1\r\n", "v1") == ProxyHeader(
        1, len(V1_TCP4), False, ("192.0.2.1", 56324), ("198.51.100.2", 443)
    )
    assert parse_proxy_header(V1_TCP6, "auto") == ProxyHeader(
        1, len(V1_TCP6), False, ("2001:db8::1", 56324), ("2001:db8::2", 8443)
    )


def test_proxy_v1_unknown_keeps_the_socket_addresses_and_ignores_the_rest() -> None:
    for line in (b"PROXY UNKNOWN\r\n", b"PROXY UNKNOWN 1.2.3.4 what ever\r\n"):
        assert parse_proxy_header(line + b"GET", "v1") == ProxyHeader(1, len(line))


def test_proxy_v1_longest_header_is_107_bytes() -> None:
    six = ":".join(["ffff"] * 8).encode()
    longest_tcp = b"PROXY TCP6 %s %s 65535 65535\r\n" % (six, six)
    header = parse_proxy_header(longest_tcp, "v1")
    assert header is not None
    assert header.length == len(longest_tcp) == 104
    longest = b"PROXY UNKNOWN %s %s 65535 65535\r\n" % (six, six)
    assert parse_proxy_header(longest, "v1") == ProxyHeader(1, 107)
    assert parse_proxy_header(b"PROXY UNKNOWN " + b"x" * 91 + b"\r\n", "v1") is not None
    with pytest.raises(RemoteProtocolError, match="longer than 107 bytes"):
        parse_proxy_header(b"PROXY UNKNOWN " + b"x" * 92 + b"\r\n", "v1")
    with pytest.raises(RemoteProtocolError, match="longer than 107 bytes"):
        parse_proxy_header(b"PROXY " + b"x" * 101, "v1")


@pytest.mark.parametrize("cut", range(len(V1_TCP4)))
def test_proxy_v1_incomplete_needs_more(cut: int) -> None:
    assert parse_proxy_header(V1_TCP4[:cut], "v1") is None
    assert parse_proxy_header(V1_TCP4[:cut], "auto") is None


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2", "unknown protocol b'TCP5'"),
        (b"PROXY  TCP4 1.2.3.4 5.6.7.8 1 2", "unknown protocol b''"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1", "5 fields, not 6"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3", "7 fields, not 6"),
        (b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2", "7 fields, not 6"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 ", "7 fields, not 6"),
        (b"PROXY TCP4 ::1 5.6.7.8 1 2", "b'::1' is not a TCP4 address"),
        (b"PROXY TCP6 1.2.3.4 ::1 1 2", "b'1.2.3.4' is not a TCP6 address"),
        (b"PROXY TCP4 1.2.3.04 5.6.7.8 1 2", "b'1.2.3.04' is not a TCP4 address"),
        (b"PROXY TCP4 1.2.3.\xff 5.6.7.8 1 2", "b'1.2.3.\\xff' is not a TCP4 address"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2", "b'65536' is not a port"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2", "b'01' is not a port"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 -2", "b'-2' is not a port"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 ", "b'' is not a port"),
        (b"PROXY TCP6 ::1%eth0 ::1 1 2", "b'::1%eth0' is not a TCP6 address"),
        (b"PROXY TCP6 ::1 ::1%1 1 2", "b'::1%1' is not a TCP6 address"),
        (b"PROXY TCP6 ::1%\nFORGED_LINE_200 ::1 1 2", "b'::1%\\nFORGED_LINE_200' is not a TCP6"),
    ],
)
def test_proxy_v1_malformed(line: bytes, message: str) -> None:
    with pytest.raises(RemoteProtocolError, match="^PROXY v1 header: " + _escaped(message)):
        parse_proxy_header(line + b"\r\n", "v1")


def _escaped(text: str) -> str:
    return re.escape(text)


def v2(
    command: int = 1,
    family: int = 1,
    transport: int = 1,
    block: bytes = b"",
    *,
    version: int = 2,
    length: int | None = None,
) -> bytes:
    size = len(block) if length is None else length
    return (
        PROXY_V2_SIGNATURE
        + bytes([version << 4 | command, family << 4 | transport])
        + struct.pack("!H", size)
        + block
    )


INET = bytes([192, 0, 2, 1, 198, 51, 100, 2]) + struct.pack("!HH", 56324, 443)
INET6 = (
    bytes.fromhex("20010db8000000000000000000000001")
    + bytes.fromhex("20010db8000000000000000000000002")
    + struct.pack("!HH", 56324, 8443)
)
UNIX = b"/run/client.sock".ljust(108, b"\0") + b"/run/app.sock".ljust(108, b"\0")


def test_proxy_v2_inet_inet6_and_unix() -> None:
    assert parse_proxy_header(v2(block=INET) + b"GET", "v2") == ProxyHeader(
        2, 28, False, ("192.0.2.1", 56324), ("198.51.100.2", 443)
    )
    assert parse_proxy_header(v2(family=2, block=INET6), "auto") == ProxyHeader(
        2, 52, False, ("2001:db8::1", 56324), ("2001:db8::2", 8443)
    )
    assert parse_proxy_header(v2(family=3, block=UNIX), "v2") == ProxyHeader(
        2, 232, False, None, ("/run/app.sock", None)
    )


def test_proxy_v2_tlvs_after_the_addresses_are_skipped() -> None:
    tlvs = b"\x20\x00\x05\x01\x00\x00\x00\x00" + b"\x04\x00\x03abc"  # SSL, NOOP
    header = parse_proxy_header(v2(block=INET + tlvs) + b"\x16\x03\x01", "v2")
    assert header == ProxyHeader(
        2, 28 + len(tlvs), False, ("192.0.2.1", 56324), ("198.51.100.2", 443)
    )


def test_proxy_v2_local_and_unspec_keep_the_socket_addresses() -> None:
    assert parse_proxy_header(v2(command=0, family=0, transport=0), "v2") == ProxyHeader(2, 16)
    # LOCAL ignores whatever address block it carries.
    assert parse_proxy_header(v2(command=0, block=INET), "v2") == ProxyHeader(2, 28)
    assert parse_proxy_header(v2(command=0, family=9, block=b"xy"), "v2") == ProxyHeader(2, 18)
    assert parse_proxy_header(v2(family=0, transport=0, block=b"abc"), "v2") == ProxyHeader(2, 19)


@pytest.mark.parametrize("cut", range(28))
def test_proxy_v2_incomplete_needs_more(cut: int) -> None:
    assert parse_proxy_header(v2(block=INET)[:cut], "v2") is None
    assert parse_proxy_header(v2(block=INET)[:cut], "auto") is None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (v2(version=1, block=INET), "version 1, not 2"),
        (v2(command=2, block=INET), "unknown command 2"),
        (v2(family=4, block=INET), "unknown address family 4"),
        (v2(transport=2, block=INET), "transport 2 is not a stream"),
        (v2(transport=0, block=INET), "transport 0 is not a stream"),
        (v2(block=INET[:11]), "11 address bytes, family 1 needs 12"),
        (v2(family=2, block=INET), "12 address bytes, family 2 needs 36"),
        (v2(family=3, block=INET6), "36 address bytes, family 3 needs 216"),
    ],
)
def test_proxy_v2_malformed(data: bytes, message: str) -> None:
    with pytest.raises(RemoteProtocolError, match="^PROXY v2 header: " + _escaped(message)):
        parse_proxy_header(data, "v2")


@pytest.mark.parametrize(
    ("data", "version", "message"),
    [
        (b"GET / HTTP/1.1\r\n", "v1", "no PROXY protocol v1 header"),
        (b"GET / HTTP/1.1\r\n", "v2", "no PROXY protocol v2 header"),
        (V1_TCP4, "v2", "no PROXY protocol v2 header"),
        (v2(block=INET), "v1", "no PROXY protocol v1 header"),
        (b"\x16\x03\x01\x02\x00", "v1", "no PROXY protocol v1 header"),
    ],
)
def test_missing_or_other_version_header_is_an_error(
    data: bytes, version: str, message: str
) -> None:
    with pytest.raises(RemoteProtocolError, match=f"^{message}$"):
        parse_proxy_header(data, version)


@pytest.mark.parametrize(
    "data", [b"GET / HTTP/1.1\r\n", b"\x16\x03\x01", b"PROPFIND", b"\r\n\r\nX"]
)
def test_auto_without_a_header_is_no_header(data: bytes) -> None:
    assert parse_proxy_header(data, "auto") is NO_PROXY_HEADER


def test_proxy_header_bound_is_how_far_a_reader_may_look() -> None:
    assert proxy_header_bound(b"") == 107
    assert proxy_header_bound(b"PROXY TCP4") == 107
    assert proxy_header_bound(PROXY_V2_SIGNATURE) == 107  # the length is not known yet
    assert proxy_header_bound(v2(block=INET)[:16]) == 28
    assert proxy_header_bound(v2(length=65535)) == 16 + 65535
