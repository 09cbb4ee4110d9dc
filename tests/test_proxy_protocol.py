"""The PROXY protocol over real sockets.

A loopback client is a trusted peer by default; ``forwarded_allow_ips`` naming
another address makes it an untrusted one. Covered: v1 and v2 headers set
``client`` and ``server`` for every request on the connection; v2 ``LOCAL``
keeps the socket's addresses; a malformed header, a missing one (``v1``/``v2``),
or one from an untrusted peer closes the connection before the app sees
anything, with one WARNING line naming the peer; ``auto`` serves connections
with and without a header, also when the first bytes trickle in one at a time
and begin like a signature (``P`` of ``POST``); the header comes before the TLS
handshake; forwarding headers are then trusted by the header's client address;
a peer that leaves without a byte (closing or resetting) is not logged, one that
closes or resets inside the header is; an untrusted peer is warned about only
after a whole signature; a v1 address with an IPv6 zone is malformed;
``header_timeout`` bounds the wait (virtual time); a shutdown drops a connection
still waiting for its header.
"""

from __future__ import annotations

import json
import logging
import socket
import ssl
import struct
from typing import Any

import httpx
import pytest
import trio
import trio.testing
import trustme
from _helpers import Receive, Scope, Send, start

from trioserve import Config
from trioserve.protocol._proxy import PROXY_V2_SIGNATURE
from trioserve.testing import open_test_server

ERROR = "trioserve.error"
V1 = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n"
V2_INET = (
    PROXY_V2_SIGNATURE
    + b"\x21\x11"
    + struct.pack("!H", 12)
    + bytes([192, 0, 2, 1, 198, 51, 100, 2])
    + struct.pack("!HH", 56324, 443)
)
V2_LOCAL = PROXY_V2_SIGNATURE + b"\x20\x00\x00\x00"
GET = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
GET_CLOSE = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"


class Reporter:
    """Answers each request with its client, server, scheme and host as JSON, and
    keeps how many requests it saw."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        self.calls += 1
        view = {
            "client": scope["client"],
            "server": scope["server"],
            "scheme": scope["scheme"],
            "method": scope["method"],
        }
        payload = json.dumps(view).encode()
        await send(start(200, [(b"content-length", b"%d" % len(payload))]))
        await send({"type": "http.response.body", "body": payload})


def config(**keys: Any) -> Config:
    return Config(bind=["127.0.0.1:0"], lifespan="off", **keys)


async def read_until_closed(stream: trio.abc.ReceiveStream) -> bytes:
    chunks = []
    try:
        while data := await stream.receive_some():
            chunks.append(data)
    except trio.BrokenResourceError:
        pass
    return b"".join(chunks)


async def exchange(port: int, *pieces: bytes) -> bytes:
    """Send ``pieces`` (waiting until the server has dealt with each) and return
    everything until the server closes."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    try:
        for piece in pieces:
            await stream.send_all(piece)
            await trio.testing.wait_all_tasks_blocked()
        return await read_until_closed(stream)
    finally:
        await stream.aclose()


def views(data: bytes) -> list[dict[str, Any]]:
    """The JSON bodies of the responses in ``data``."""
    result = []
    for response in data.split(b"HTTP/1.1 ")[1:]:
        assert response.startswith(b"200 OK"), response
        result.append(json.loads(response.split(b"\r\n\r\n", 1)[1]))
    return result


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == ERROR and r.levelno >= logging.WARNING
    ]


def header_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The error log's lines about connections closed in or before the header, at
    any level."""
    messages = [r.getMessage() for r in caplog.records if r.name == ERROR]
    return [m for m in messages if m.startswith("Closing the connection") or "sent nothing" in m]


async def test_v1_header_sets_client_and_server_for_every_request() -> None:
    app = Reporter()
    with trio.fail_after(5):
        async with open_test_server(app, config(proxy_protocol="v1")) as server:
            data = await exchange(server.port, V1 + GET + GET_CLOSE)
    expected = {
        "client": ["192.0.2.1", 56324],
        "server": ["198.51.100.2", 443],
        "scheme": "http",
        "method": "GET",
    }
    assert views(data) == [expected, expected]


@pytest.mark.parametrize("mode", ["v2", "auto"])
async def test_v2_header_sets_client_and_server(mode: str) -> None:
    with trio.fail_after(5):
        async with open_test_server(Reporter(), config(proxy_protocol=mode)) as server:
            data = await exchange(server.port, V2_INET + GET_CLOSE)
    [view] = views(data)
    assert view["client"] == ["192.0.2.1", 56324]
    assert view["server"] == ["198.51.100.2", 443]


async def test_v2_local_keeps_the_socket_addresses() -> None:
    with trio.fail_after(5):
        async with open_test_server(Reporter(), config(proxy_protocol="v2")) as server:
            data = await exchange(server.port, V2_LOCAL + GET_CLOSE)
    [view] = views(data)
    assert view["client"][0] == "127.0.0.1"
    assert view["server"] == ["127.0.0.1", server.port]


@pytest.mark.parametrize(
    ("mode", "data", "reason"),
    [
        ("v1", b"PROXY TCP4 192.0.2.1 nonsense 1 2\r\n" + GET, "b'nonsense' is not a TCP4"),
        ("v1", b"PROXY TCP4 192.0.2.1\x1b[31m 1.2.3.4 1 2\r\n", "\\x1b[31m"),  # escaped
        ("v1", GET, "no PROXY protocol v1 header"),
        ("v1", V2_INET + GET, "no PROXY protocol v1 header"),
        ("v2", V1 + GET, "no PROXY protocol v2 header"),
        ("v2", PROXY_V2_SIGNATURE + b"\x21\x41\x00\x00" + GET, "unknown address family 4"),
        ("auto", b"PROXY TCP9 1 2 3 4\r\n" + GET, "unknown protocol b'TCP9'"),
        ("auto", b"PROXY " + b"x" * 200, "longer than 107 bytes"),
    ],
)
async def test_bad_or_missing_header_closes_the_connection_with_one_warning(
    caplog: pytest.LogCaptureFixture, mode: str, data: bytes, reason: str
) -> None:
    app = Reporter()
    with trio.fail_after(5):
        async with open_test_server(app, config(proxy_protocol=mode)) as server:
            received = await exchange(server.port, data)
    assert received == b""
    assert app.calls == 0
    [line] = warnings(caplog)
    assert line.startswith("Closing the connection from 127.0.0.1:")
    assert reason in line
    assert "\x1b" not in line


@pytest.mark.parametrize("header", [V1, V2_INET])
async def test_a_header_from_an_untrusted_peer_closes_the_connection(
    caplog: pytest.LogCaptureFixture, header: bytes
) -> None:
    app = Reporter()
    keys = {"proxy_protocol": "v1", "forwarded_allow_ips": "192.0.2.250"}
    with trio.fail_after(5):
        async with open_test_server(app, config(**keys)) as server:
            received = await exchange(server.port, header + GET)
            served = await exchange(server.port, GET_CLOSE)
    assert received == b""
    assert app.calls == 1
    [line] = warnings(caplog)
    assert "PROXY header from a peer that is not trusted" in line
    # An untrusted peer without a header is served with the socket's addresses.
    assert views(served)[0]["client"][0] == "127.0.0.1"


async def test_auto_serves_connections_with_and_without_a_header() -> None:
    with trio.fail_after(5):
        async with open_test_server(Reporter(), config(proxy_protocol="auto")) as server:
            with_header = await exchange(server.port, V1 + GET_CLOSE)
            without = await exchange(server.port, GET_CLOSE)
    assert views(with_header)[0]["client"] == ["192.0.2.1", 56324]
    assert views(without)[0]["client"][0] == "127.0.0.1"


@pytest.mark.parametrize("header", [V1, V2_INET])
async def test_a_header_arriving_a_byte_at_a_time_is_read_exactly(header: bytes) -> None:
    """Each byte is a separate segment, dealt with before the next is sent; the
    request right behind the header must be left intact."""
    with trio.fail_after(5):
        async with open_test_server(Reporter(), config(proxy_protocol="auto")) as server:
            pieces = [header[i : i + 1] for i in range(len(header))]
            data = await exchange(server.port, *pieces, GET_CLOSE)
    assert views(data)[0]["client"] == ["192.0.2.1", 56324]


@pytest.mark.parametrize(
    "keys",
    [{"proxy_protocol": "auto"}, {"proxy_protocol": "v1", "forwarded_allow_ips": "192.0.2.250"}],
)
async def test_a_request_that_begins_like_a_signature_is_served_whole(keys: dict[str, str]) -> None:
    """``P``, ``PR``... could begin ``PROXY``: the bytes read to find out are
    handed to the connection, not lost."""
    request = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    with trio.fail_after(5):
        async with open_test_server(Reporter(), config(**keys)) as server:
            data = await exchange(server.port, b"P", request[1:])
            propfind = await exchange(server.port, b"PR", b"OPFIND" + GET_CLOSE[3:])
    assert views(data)[0]["method"] == "POST"
    assert views(propfind)[0]["method"] == "PROPFIND"


async def test_forwarding_headers_are_trusted_by_the_headers_client() -> None:
    """After a PROXY header the connection is the header's client's: a client the
    proxy passes through cannot add forwarding headers of its own."""
    xff = b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 203.0.113.5\r\nConnection: close\r\n\r\n"
    trusted_client = b"PROXY TCP4 10.0.0.5 198.51.100.2 56324 443\r\n"
    keys = {"proxy_protocol": "v1", "forwarded_allow_ips": "127.0.0.1,10.0.0.0/8"}
    with trio.fail_after(5):
        async with open_test_server(Reporter(), config(**keys)) as server:
            untrusted = await exchange(server.port, V1 + xff)
            trusted = await exchange(server.port, trusted_client + xff)
    assert views(untrusted)[0]["client"] == ["192.0.2.1", 56324]
    assert views(trusted)[0]["client"] == ["203.0.113.5", 0]


async def test_a_peer_that_leaves_without_a_byte_is_not_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger=ERROR)
    app = Reporter()
    with trio.fail_after(5):
        async with open_test_server(app, config(proxy_protocol="v1")) as server:
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            await stream.aclose()
            # Served after it by the same accept loop: the first one is dealt with.
            await exchange(server.port, V1 + GET_CLOSE)
    assert warnings(caplog) == []
    assert app.calls == 1


async def test_a_close_inside_the_header_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with trio.fail_after(5):
        async with open_test_server(Reporter(), config(proxy_protocol="v1")) as server:
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            await stream.send_all(V1[:10])
            await stream.send_eof()
            assert await read_until_closed(stream) == b""
            await stream.aclose()
    [line] = warnings(caplog)
    assert "connection closed inside the PROXY header" in line


async def test_a_reset_inside_the_header_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with trio.fail_after(5):
        async with open_test_server(Reporter(), config(proxy_protocol="v1")) as server:
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            await stream.send_all(V1[:10])
            await trio.testing.wait_all_tasks_blocked()
            # SO_LINGER with a zero timeout: close() sends a RST.
            stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            await stream.aclose()
            await exchange(server.port, V1 + GET_CLOSE)  # the reset one is dealt with
    [line] = warnings(caplog)
    assert "connection broken in the PROXY header" in line


@pytest.mark.parametrize(
    ("mode", "sent", "trusted", "warned"),
    [
        ("v1", b"", True, True),
        ("v1", V1[:10], True, True),
        ("auto", b"", True, False),
        ("auto", b"PRO", True, True),
        # From a peer that is not trusted, bytes that only begin a signature (a
        # scanner's blank lines) are no header, and not worth a warning.
        ("v1", b"\r\n\r\n", False, False),
        ("auto", PROXY_V2_SIGNATURE[:11], False, False),
        ("auto", b"PROXY", False, False),
    ],
)
async def test_header_timeout_bounds_the_wait_for_the_header(
    autojump_clock: trio.abc.Clock,
    caplog: pytest.LogCaptureFixture,
    mode: str,
    sent: bytes,
    trusted: bool,
    warned: bool,
) -> None:
    caplog.set_level(logging.DEBUG, logger=ERROR)
    app = Reporter()
    keys = {"proxy_protocol": mode, "header_timeout": 7.0, "keep_alive_timeout": 100.0}
    if not trusted:
        keys["forwarded_allow_ips"] = "192.0.2.250"
    async with open_test_server(app, config(**keys)) as server:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        start_time = trio.current_time()
        if sent:
            await stream.send_all(sent)
        assert await read_until_closed(stream) == b""
        elapsed = trio.current_time() - start_time
        await stream.aclose()
    assert 7.0 <= elapsed < 8.0
    assert app.calls == 0
    if warned:
        [line] = warnings(caplog)
        assert "no complete PROXY header within 7s" in line
    else:
        assert warnings(caplog) == []
        [line] = header_lines(caplog)
        assert "within 7s" in line


async def test_a_peer_that_resets_before_a_byte_is_not_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A health checker that connects and closes with a reset (HAProxy's TCP
    check does) left, as one that closes politely."""
    caplog.set_level(logging.DEBUG, logger=ERROR)
    app = Reporter()
    with trio.fail_after(5):
        async with open_test_server(app, config(proxy_protocol="v2")) as server:
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            await trio.testing.wait_all_tasks_blocked()  # the server waits for the header
            stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            await stream.aclose()
            await exchange(server.port, V2_INET + GET_CLOSE)  # the reset one is dealt with
    assert header_lines(caplog) == []
    assert app.calls == 1


@pytest.mark.parametrize(
    ("sent", "warned"),
    [(b"\r\n", False), (b"PROX", False), (PROXY_V2_SIGNATURE, True), (b"PROXY ", True)],
)
async def test_an_untrusted_peer_is_warned_about_only_after_a_whole_signature(
    caplog: pytest.LogCaptureFixture, sent: bytes, warned: bool
) -> None:
    """Bytes that merely begin a signature, then a close: a scanner's probe or a
    stray client, logged at DEBUG. A whole signature: a PROXY header the peer may
    not send, a WARNING."""
    caplog.set_level(logging.DEBUG, logger=ERROR)
    keys = {"proxy_protocol": "auto", "forwarded_allow_ips": "192.0.2.250"}
    with trio.fail_after(5):
        async with open_test_server(Reporter(), config(**keys)) as server:
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            await stream.send_all(sent)
            await trio.testing.wait_all_tasks_blocked()
            await stream.aclose()
            await trio.testing.wait_all_tasks_blocked()
            await exchange(server.port, GET_CLOSE)  # the first one is dealt with
    if warned:
        [line] = warnings(caplog)
        assert "not trusted" in line
    else:
        assert warnings(caplog) == []
        [line] = header_lines(caplog)
        assert "connection closed inside the PROXY header" in line


async def test_a_v1_address_with_a_zone_closes_the_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An IPv6 zone is free text: it could carry a line break into the access
    log. Such a header is malformed."""
    caplog.set_level(logging.INFO, logger="trioserve.access")
    app = Reporter()
    header = b"PROXY TCP6 ::1%\nFORGED_LINE_200 ::1 1 2\r\n"
    with trio.fail_after(5):
        async with open_test_server(app, config(proxy_protocol="v1", accesslog="-")) as server:
            received = await exchange(server.port, header + GET_CLOSE)
    assert received == b""
    assert app.calls == 0
    [line] = warnings(caplog)
    assert "is not a TCP6 address" in line
    assert "\n" not in line
    assert [r for r in caplog.records if r.name == "trioserve.access"] == []


async def test_shutdown_drops_a_connection_waiting_for_its_header() -> None:
    with trio.fail_after(5):
        async with open_test_server(Reporter(), config(proxy_protocol="v1")) as server:
            silent = await trio.open_tcp_stream("127.0.0.1", server.port)
            await exchange(server.port, V1 + GET_CLOSE)
        assert await read_until_closed(silent) == b""
        await silent.aclose()


# -- before TLS ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[trustme.CA, dict[str, str]]:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    directory = tmp_path_factory.mktemp("pki")
    cert.cert_chain_pems[0].write_to_path(str(directory / "cert.pem"))
    cert.private_key_pem.write_to_path(str(directory / "key.pem"))
    return ca, {"certfile": str(directory / "cert.pem"), "keyfile": str(directory / "key.pem")}


async def test_the_header_comes_before_the_tls_handshake(
    tls_files: tuple[trustme.CA, dict[str, str]], caplog: pytest.LogCaptureFixture
) -> None:
    ca, files = tls_files
    context = ssl.create_default_context()
    ca.configure_trust(context)
    with trio.fail_after(5):
        async with open_test_server(Reporter(), config(proxy_protocol="v2", **files)) as server:
            tcp = await trio.open_tcp_stream("127.0.0.1", server.port)
            await tcp.send_all(V2_INET)
            tls = trio.SSLStream(tcp, context, server_hostname="localhost")
            await tls.send_all(GET_CLOSE)
            data = await read_until_closed(tls)
            await tls.aclose()
            # Without the header the handshake never starts.
            tcp = await trio.open_tcp_stream("127.0.0.1", server.port)
            tls = trio.SSLStream(tcp, context, server_hostname="localhost")
            with pytest.raises(trio.BrokenResourceError):
                await tls.do_handshake()
            await tcp.aclose()
    [view] = views(data)
    assert view["client"] == ["192.0.2.1", 56324]
    assert view["server"] == ["198.51.100.2", 443]
    assert view["scheme"] == "https"
    [line] = warnings(caplog)
    assert "no PROXY protocol v2 header" in line


async def test_auto_on_a_tls_bind_serves_clients_without_a_header(
    tls_files: tuple[trustme.CA, dict[str, str]],
) -> None:
    ca, files = tls_files
    context = ssl.create_default_context()
    ca.configure_trust(context)
    with trio.fail_after(5):
        async with (
            open_test_server(Reporter(), config(proxy_protocol="auto", **files)) as server,
            httpx.AsyncClient(verify=context, trust_env=False) as client,
        ):
            response = await client.get(f"https://localhost:{server.port}/")
    assert response.json()["scheme"] == "https"
    assert response.json()["client"][0] == "127.0.0.1"
