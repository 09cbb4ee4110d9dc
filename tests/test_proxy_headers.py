"""Forwarding headers end to end: what an app behind a proxy sees, over real sockets.

A loopback client is a trusted proxy by default (``forwarded_allow_ips`` is
``127.0.0.1``), and ``forwarded_allow_ips`` naming another address makes it an
untrusted peer. Covered: ``X-Forwarded-For``/``-Proto`` from a trusted peer set
``client`` and ``scheme``, ``-Host``/``-Port`` the ``host`` header only with
``forwarded_host``, and the access log line shows the forwarded client; a
client's broken ``Forwarded`` element cannot cancel the one its proxy appended;
an address with an IPv6 zone (free text) is never a client; from an untrusted peer, or with
``proxy_headers`` off, nothing changes; each mode ignores the other family (a
client cannot smuggle it past a proxy that rewrites only one); ``Forwarded`` in
``forwarded`` mode; a websocket gets ``wss``; Unix-socket peers are trusted by
``unix`` only; an in-memory connection only by ``*``; a malformed header is
ignored, never a 500; and a request without forwarding headers from a trusted
peer is served exactly as before.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from _helpers import Receive, Scope, Send, start

from trioserve import Config, ConfigError
from trioserve.testing import TestConnection, open_test_client, open_test_server

ACCESS = "trioserve.access"


async def report(scope: Scope, receive: Receive, send: Send) -> None:
    """Answers with what the server made of the request, as JSON."""
    if scope["type"] == "lifespan":
        return
    view = {
        "client": list(scope["client"]) if scope["client"] else None,
        "scheme": scope["scheme"],
        "server": list(scope["server"]) if scope["server"] else None,
        "host": [v.decode() for n, v in scope["headers"] if n == b"host"],
    }
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": json.dumps(view)})
        await send({"type": "websocket.close"})
        return
    payload = json.dumps(view).encode()
    await send(start(200, [(b"content-length", b"%d" % len(payload))]))
    await send({"type": "http.response.body", "body": payload})


def config(**keys: Any) -> Config:
    return Config(bind=["127.0.0.1:0"], lifespan="off", **keys)


async def seen(headers: dict[str, str], **keys: Any) -> dict[str, Any]:
    """What the app sees of a GET with ``headers`` from 127.0.0.1."""
    with trio.fail_after(5):
        async with (
            open_test_server(report, config(**keys)) as server,
            httpx.AsyncClient(trust_env=False) as client,
        ):
            response = await client.get(f"{server.url}/", headers=headers)
    assert response.status_code == 200
    result: dict[str, Any] = response.json()
    return result


X_FORWARDED = {
    "X-Forwarded-For": "198.51.100.7, 192.0.2.1",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "shop.example",
    "X-Forwarded-Port": "8443",
}


async def test_x_forwarded_headers_from_a_trusted_peer_set_client_scheme_and_host() -> None:
    result = await seen(X_FORWARDED, forwarded_host=True)
    assert result["client"] == ["192.0.2.1", 0]
    assert result["scheme"] == "https"
    assert result["host"] == ["shop.example:8443"]
    assert result["server"][0] == "127.0.0.1"  # the socket's own address


async def test_x_forwarded_host_and_port_are_ignored_by_default() -> None:
    """nginx set up for X-Forwarded-For and -Proto passes a client's
    X-Forwarded-Host and -Port on: unless ``forwarded_host`` says the proxy sets
    them, they never reach the host header."""
    result = await seen({**X_FORWARDED, "Host": "shop.example"})
    assert result["client"] == ["192.0.2.1", 0]
    assert result["scheme"] == "https"
    assert result["host"] == ["shop.example"]


async def test_a_trusted_proxy_chain_is_walked_from_the_right() -> None:
    headers = {"X-Forwarded-For": "203.0.113.9, 192.0.2.1, 10.1.2.3"}
    assert (await seen(headers, forwarded_allow_ips="127.0.0.1, 10.0.0.0/8"))["client"] == [
        "192.0.2.1",
        0,
    ]
    # Without 10.0.0.0/8 trusted, the nearest untrusted address is the client.
    assert (await seen(headers))["client"] == ["10.1.2.3", 0]


async def test_forwarding_headers_from_an_untrusted_peer_change_nothing() -> None:
    result = await seen(X_FORWARDED, forwarded_allow_ips="192.0.2.200")
    assert result["client"][0] == "127.0.0.1"
    assert result["client"][1] > 0
    assert result["scheme"] == "http"
    assert result["host"][0].startswith("127.0.0.1:")


async def test_proxy_headers_off_changes_nothing_even_from_a_trusted_peer() -> None:
    result = await seen(X_FORWARDED, proxy_headers=False)
    assert result["client"][0] == "127.0.0.1"
    assert result["scheme"] == "http"


async def test_forwarded_is_ignored_in_x_forwarded_mode() -> None:
    # A proxy that rewrites only X-Forwarded-* passes a client's Forwarded on.
    result = await seen({"Forwarded": "for=203.0.113.66;proto=https;host=evil.example"})
    assert result["client"][0] == "127.0.0.1"
    assert result["scheme"] == "http"
    assert result["host"][0].startswith("127.0.0.1:")


async def test_x_forwarded_is_ignored_in_forwarded_mode() -> None:
    headers = {**X_FORWARDED, "Forwarded": 'for="192.0.2.60:4711";proto=https;host=shop.example'}
    result = await seen(headers, proxy_headers_mode="forwarded")
    assert result["client"] == ["192.0.2.60", 4711]
    assert result["scheme"] == "https"
    assert result["host"] == ["shop.example"]
    only_x = await seen(X_FORWARDED, proxy_headers_mode="forwarded")
    assert only_x["client"][0] == "127.0.0.1"
    assert only_x["scheme"] == "http"


async def test_malformed_forwarded_is_ignored_not_a_500() -> None:
    result = await seen(
        {"Forwarded": 'for="[2001:db8::1;proto=https'}, proxy_headers_mode="forwarded"
    )
    assert result["client"][0] == "127.0.0.1"
    assert result["scheme"] == "http"


async def send_raw(request: bytes, **keys: Any) -> dict[str, Any]:
    """What the app sees of ``request``, sent byte for byte from 127.0.0.1."""
    with trio.fail_after(5):
        async with open_test_server(report, config(**keys)) as server:
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            await stream.send_all(request)
            chunks = []
            while data := await stream.receive_some():
                chunks.append(data)
            await stream.aclose()
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), head
    result: dict[str, Any] = json.loads(body)
    return result


@pytest.mark.parametrize(
    "fields",
    [
        b"Forwarded: for=999.0.0.1, for=203.0.113.5;proto=https\r\n",
        b"Forwarded: for=192.0.2.9;for=192.0.2.10\r\nForwarded: for=203.0.113.5;proto=https\r\n",
        b'Forwarded: for="192.0.2.9, for=203.0.113.5;proto=https\r\n',
        b"Forwarded: for=UNKNOWN\r\nForwarded: for=203.0.113.5;proto=https\r\n",
    ],
)
async def test_a_clients_broken_forwarded_element_cannot_cancel_the_proxys(fields: bytes) -> None:
    """The client wrote the broken element; the trusted proxy appended its own
    about the client's connection, to the same line or as a new one."""
    request = b"GET / HTTP/1.1\r\nHost: a\r\n" + fields + b"Connection: close\r\n\r\n"
    result = await send_raw(request, proxy_headers_mode="forwarded")
    assert result["client"] == ["203.0.113.5", 0]
    assert result["scheme"] == "https"


@pytest.mark.parametrize(
    ("field", "mode"),
    [
        (b"X-Forwarded-For: ::1%<img src=x onerror=alert(1)> or 1=1", "x-forwarded"),
        (b'X-Forwarded-For: ::1%"\x85\x9b31m', "x-forwarded"),
        (b'Forwarded: for="[::1%\\" onmouseover=x]"', "forwarded"),
    ],
)
async def test_a_forwarded_client_is_an_address_never_free_text(field: bytes, mode: str) -> None:
    """An IPv6 zone (``%...``) can hold any text; an entry with one is not an
    address, and the client stays the peer."""
    request = b"GET / HTTP/1.1\r\nHost: a\r\n" + field + b"\r\nConnection: close\r\n\r\n"
    result = await send_raw(request, proxy_headers_mode=mode)
    assert result["client"][0] == "127.0.0.1"


async def test_a_request_without_forwarding_headers_is_unchanged() -> None:
    result = await seen({})
    assert result["client"][0] == "127.0.0.1"
    assert result["scheme"] == "http"


async def test_websocket_scheme_is_wss_behind_a_tls_proxy() -> None:
    with trio.fail_after(5):
        async with open_test_server(report, config()) as server:
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            connection = TestConnection(stream)
            ws = await connection.websocket(
                "/", headers=[("X-Forwarded-Proto", "https"), ("X-Forwarded-For", "192.0.2.5")]
            )
            view = json.loads(await ws.receive_text())
            await connection.aclose()
    assert view["scheme"] == "wss"
    assert view["client"] == ["192.0.2.5", 0]


async def test_access_log_shows_the_forwarded_client(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS)
    await seen({"X-Forwarded-For": "192.0.2.77"}, accesslog="-")
    [line] = [r.getMessage() for r in caplog.records if r.name == ACCESS]
    assert line.startswith('192.0.2.77:0 - "GET ')


async def get_over_unix(path: Path, headers: dict[str, str]) -> dict[str, Any]:
    transport = httpx.AsyncHTTPTransport(uds=str(path))
    async with httpx.AsyncClient(transport=transport) as client:
        response = await client.get("http://proxy.local/", headers=headers)
    result: dict[str, Any] = response.json()
    return result


@pytest.mark.parametrize(
    ("allow", "client"),
    [
        ("unix", ["192.0.2.1", 0]),
        # Everyone trusted: every address in the list is a proxy's, so the left-most.
        ("*", ["198.51.100.7", 0]),
        ("127.0.0.1", None),
    ],
)
async def test_unix_socket_peers_are_trusted_by_unix(
    sock_dir: Path, allow: str, client: list[object] | None
) -> None:
    path = sock_dir / "app.sock"
    keys = {"bind": [f"unix:{path}"], "lifespan": "off", "forwarded_allow_ips": allow}
    with trio.fail_after(5):
        async with open_test_server(report, Config(**keys)):
            result = await get_over_unix(path, X_FORWARDED)
    assert result["client"] == client
    assert result["scheme"] == ("http" if client is None else "https")


@pytest.mark.parametrize(("allow", "applied"), [("*", True), ("127.0.0.1", False)])
async def test_in_memory_connections_are_trusted_only_by_star(allow: str, applied: bool) -> None:
    async with open_test_client(report, Config(forwarded_allow_ips=allow)) as client:
        response = await client.get("/", headers=[("X-Forwarded-Proto", "https")])
    assert json.loads(response.body)["scheme"] == ("https" if applied else "http")


# -- the forwarded_allow_ips key -------------------------------------------------------


def test_forwarded_allow_ips_defaults_to_the_environment_then_loopback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("FORWARDED_ALLOW_IPS", raising=False)
    assert Config().forwarded_allow_ips == ("127.0.0.1",)
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", " 10.0.0.0/8 ,unix,, ::1")
    assert Config().forwarded_allow_ips == ("10.0.0.0/8", "unix", "::1")
    # A value given wins over the variable, as a string or a list.
    assert Config(forwarded_allow_ips="*").forwarded_allow_ips == ("*",)
    assert Config(forwarded_allow_ips=["192.0.2.1"]).forwarded_allow_ips == ("192.0.2.1",)
    assert Config(forwarded_allow_ips=[]).forwarded_allow_ips == ()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (5, "forwarded_allow_ips must be a list or a comma-separated string, got 5 (int)"),
        (["127.0.0.1", 5], "forwarded_allow_ips must be a list of strings"),
        ("127.0.0.1,eth0", "forwarded_allow_ips: 'eth0' is not an IP address"),
    ],
)
def test_bad_forwarded_allow_ips_is_a_config_error_naming_the_entry(
    value: object, message: str
) -> None:
    with pytest.raises(ConfigError, match="^" + re.escape(message)):
        Config(forwarded_allow_ips=value)
