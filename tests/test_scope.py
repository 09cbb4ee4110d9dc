"""The HTTP scope the app is called with: every key for a plain request (the path
percent-decoded, ``raw_path`` and ``query_string`` as sent, header names
lower-cased, ``root_path`` prefixed to the path), HTTP/1.0 and absolute-form
targets; the same scope however the request's bytes arrive (one byte at a time, or
in fragments on a real socket, which also fills in ``client`` and ``server``); an
``Upgrade: h2c`` request is served as plain HTTP/1.1. (``state`` is in
``test_lifespan.py``.)

Most tests run the real server over in-memory streams; one uses a real loopback
socket.
"""

from __future__ import annotations

import trio
from _helpers import dribble, parse_single, scope_recorder

from trioserve import Config
from trioserve.testing import open_test_client, open_test_server


async def test_scope_contents() -> None:
    app, scopes = scope_recorder()
    request = (
        b"GET /caf%C3%A9/a%2Fb+c?x=1&y=%20z HTTP/1.1\r\nHost: example.com\r\n"
        b"X-Mixed-Case: Some Value\r\nConnection: close\r\n\r\n"
    )
    async with open_test_client(app) as client:
        await client.raw(request)
    (scope,) = scopes
    assert scope["type"] == "http"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.5"}
    assert scope["http_version"] == "1.1"
    assert scope["method"] == "GET"
    assert scope["scheme"] == "http"
    assert scope["path"] == "/café/a/b+c"
    assert scope["raw_path"] == b"/caf%C3%A9/a%2Fb+c"
    assert scope["query_string"] == b"x=1&y=%20z"
    assert scope["root_path"] == ""
    assert [tuple(h) for h in scope["headers"]] == [
        (b"host", b"example.com"),
        (b"x-mixed-case", b"Some Value"),
        (b"connection", b"close"),
    ]
    assert scope["client"] is None
    assert scope["server"] is None
    assert type(scope["state"]) is dict
    assert isinstance(scope["extensions"], dict)


async def test_scope_http_version_10() -> None:
    app, scopes = scope_recorder()
    async with open_test_client(app) as client:
        await client.raw(b"POST /old?q HTTP/1.0\r\nContent-Length: 0\r\n\r\n")
    (scope,) = scopes
    assert scope["http_version"] == "1.0"
    assert scope["method"] == "POST"
    assert scope["query_string"] == b"q"


async def test_root_path_prefixes_path_and_raw_path() -> None:
    app, scopes = scope_recorder()
    async with open_test_client(app, Config(root_path="/api")) as client:
        await client.raw(b"GET /items/%41b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    (scope,) = scopes
    assert scope["root_path"] == "/api"
    assert scope["path"] == "/api/items/Ab"
    assert scope["raw_path"] == b"/api/items/%41b"


async def test_absolute_form_target_gives_its_path() -> None:
    app, scopes = scope_recorder()
    async with open_test_client(app) as client:
        await client.raw(
            b"GET http://example.com/p/q?x=1 HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n"
        )
    (scope,) = scopes
    assert scope["path"] == "/p/q"
    assert scope["raw_path"] == b"/p/q"
    assert scope["query_string"] == b"x=1"


# -- however the bytes arrive --------------------------------------------------------------


async def test_request_sent_one_byte_at_a_time_parses() -> None:
    app, scopes = scope_recorder()
    request = (
        b"POST /frag?a=b HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc"
    )
    async with open_test_client(app) as client:
        conn = await client.connect()
        await dribble(conn, request, 1)
        data = await conn.receive_until_closed()
        await conn.aclose()
    assert parse_single(data, "POST").status == 200
    (scope,) = scopes
    assert scope["path"] == "/frag"
    assert scope["query_string"] == b"a=b"


async def test_fragmented_request_on_a_real_socket() -> None:
    app, scopes = scope_recorder()
    parts = [b"GE", b"T /fr", b"ag HTTP/1.", b"1\r\nHost: x\r", b"\nConnection: close\r\n", b"\r\n"]
    async with open_test_server(app) as server:
        with trio.fail_after(5):
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            async with stream:
                for part in parts:
                    await stream.send_all(part)
                data = b""
                while chunk := await stream.receive_some():
                    data += chunk
    assert parse_single(data).body == b"hello"
    (scope,) = scopes
    assert scope["path"] == "/frag"
    assert scope["client"][0] == "127.0.0.1"
    assert scope["server"] == ("127.0.0.1", server.port)


async def test_upgrade_h2c_request_is_served_as_http11() -> None:
    app, scopes = scope_recorder()
    request = (
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings, close\r\n"
        b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
    )
    async with open_test_client(app) as client:
        data = await client.raw(request)
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"101" not in data.split(b"\r\n", 1)[0]
    assert parse_single(data).body == b"hello"
    (scope,) = scopes
    assert scope["type"] == "http"
    assert scope["http_version"] == "1.1"
