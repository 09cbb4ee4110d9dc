"""WebSockets with real clients over real sockets, and with real frameworks.

The server runs on a loopback port (or a Unix socket) through ``open_test_server``;
the clients are the ``websockets`` library's blocking client (run in a worker
thread, bounded by its own timeouts) and ``trio-websocket``, plus a raw socket
where the test needs to control the bytes (keep-alive requests before the
upgrade, a hang-up without a close frame, a non-websocket ``Upgrade``).

Covered: echo of text and bytes, subprotocol negotiation and extra accept
headers; a Unix socket; ``wss`` with a trustme CA; close codes both ways, a close
before accept (403) and an app failure after accept (1011, logged once); the
upgrade after keep-alive requests on the same connection; graceful shutdown
(1001 to the client and to the app); a client that hangs up (1006, then
``ClientDisconnected``); ping/pong; Starlette and FastAPI websocket endpoints
(echo, JSON, broadcast, denial response, path and query parameters, HTTP routes
alongside); ``ws="none"`` (501); an ``h2c`` upgrade served as plain HTTP/1.1.

Handshakes the server refuses and closes the server begins use the ``websockets``
client only: trio-websocket never closes its socket in those two cases (it
leaks it), so the server's lingering close would wait out its timeout.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import trio
import trustme
from _helpers import (
    Message,
    Receive,
    Scope,
    Send,
    error_log_records,
    error_records,
    respond,
)
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket
from trio_websocket import open_websocket_url
from websockets.exceptions import ConnectionClosed as WsConnectionClosed
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect, unix_connect
from websockets.typing import Subprotocol

from trioserve import ClientDisconnected, Config
from trioserve.testing import open_test_server

T = TypeVar("T")

#: Options for every ``websockets`` client: bounded waits, no proxy from the
#: environment.
WS_OPTIONS: dict[str, Any] = {"open_timeout": 5, "close_timeout": 5, "proxy": None}
BIG = os.urandom(200_000)
EXTRA = [(b"x-extra", b"1")]
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def ws_config(**keys: Any) -> Config:
    return Config(lifespan="off", **keys)


async def in_thread(fn: Callable[[], T]) -> T:
    """Run a blocking client function in a worker thread."""
    return await trio.to_thread.run_sync(fn)


# -- a raw ASGI app ----------------------------------------------------------------------


class WsApp:
    """A raw ASGI app that records what it sees; its websocket behaviour is chosen
    by the path:

    - ``/echo``: accepts (subprotocol ``b`` when offered, header ``x-extra: 1``),
      echoes every message, records the disconnect message;
    - ``/close``: accepts, then closes with 4001 ``custom``;
    - ``/deny``: closes before accepting;
    - ``/boom``: accepts, then raises;
    - ``/hangup``: accepts, records the next message, then records what ``send()``
      raises and lets it escape;
    - ``/sender``: accepts and sends ``ready``, then does not receive until
      :attr:`release` is set; sends ``bye`` and returns.

    HTTP requests get ``200 hello``.
    """

    def __init__(self) -> None:
        self.scopes: list[Scope] = []
        self.accepted = trio.Event()
        self.finished = trio.Event()
        self.disconnects: list[Message] = []
        self.send_errors: list[BaseException] = []
        self.release = trio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scopes.append(scope)
        if scope["type"] == "http":
            await respond(send, b"hello")
            return
        assert scope["type"] == "websocket"
        try:
            assert (await receive())["type"] == "websocket.connect"
            await self._serve(scope["path"], scope, receive, send)
        finally:
            self.finished.set()

    async def _serve(self, path: str, scope: Scope, receive: Receive, send: Send) -> None:
        if path == "/deny":
            await send({"type": "websocket.close", "code": 1008})
            return
        subprotocol = "b" if "b" in scope["subprotocols"] else None
        await send({"type": "websocket.accept", "subprotocol": subprotocol, "headers": EXTRA})
        self.accepted.set()
        if path == "/close":
            await send({"type": "websocket.close", "code": 4001, "reason": "custom"})
        elif path == "/boom":
            raise RuntimeError("boom after accept")
        elif path == "/hangup":
            self.disconnects.append(await receive())
            try:
                await send({"type": "websocket.send", "text": "too late"})
            except Exception as exc:
                self.send_errors.append(exc)
                raise
        elif path == "/sender":
            await send({"type": "websocket.send", "text": "ready"})
            await self.release.wait()
            await send({"type": "websocket.send", "text": "bye"})
        else:
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    self.disconnects.append(message)
                    return
                if message.get("text") is not None:
                    await send({"type": "websocket.send", "text": message["text"]})
                else:
                    await send({"type": "websocket.send", "bytes": message["bytes"]})


# -- a raw client ----------------------------------------------------------------------


class RawClient:
    """A raw TCP client that parses just enough HTTP/1.1 and websocket framing."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = b""

    async def _fill(self) -> None:
        data = await self.stream.receive_some()
        assert data, "the server closed the connection"
        self.buffer += data

    async def read_exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            await self._fill()
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    async def read_head(self) -> bytes:
        while b"\r\n\r\n" not in self.buffer:
            await self._fill()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        return head

    async def read_response(self) -> tuple[bytes, bytes]:
        """The head and the (content-length delimited) body of one response."""
        head = await self.read_head()
        return head, await self.read_exactly(int(header_fields(head)[b"content-length"]))

    async def upgrade(self, path: str) -> bytes:
        """Send an upgrade request, read the 101 and check its accept key."""
        key = base64.b64encode(os.urandom(16))
        await self.stream.send_all(
            b"GET %s HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n" % (path.encode(), key)
        )
        head = await self.read_head()
        assert head.startswith(b"HTTP/1.1 101 "), head
        assert header_fields(head)[b"sec-websocket-accept"] == base64.b64encode(
            hashlib.sha1(key + GUID).digest()
        )
        return head

    async def send_frame(self, opcode: int, payload: bytes) -> None:
        """One final, masked frame (as a client must send)."""
        assert len(payload) < 126
        mask = os.urandom(4)
        masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
        await self.stream.send_all(bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked)

    async def read_frame(self) -> tuple[int, bytes]:
        """The opcode and payload of one unmasked server frame."""
        first, second = await self.read_exactly(2)
        assert first & 0x80, "a fragmented frame"
        assert not second & 0x80, "a server frame must not be masked"
        length = second & 0x7F
        if length == 126:
            length = int.from_bytes(await self.read_exactly(2), "big")
        elif length == 127:
            length = int.from_bytes(await self.read_exactly(8), "big")
        return first & 0x0F, await self.read_exactly(length)


def header_fields(head: bytes) -> dict[bytes, bytes]:
    """A response head's fields by lower-cased name."""
    fields = (line.split(b":", 1) for line in head.split(b"\r\n")[1:])
    return {name.strip().lower(): value.strip() for name, value in fields}


async def raw_connect(port: int) -> RawClient:
    return RawClient(await trio.open_tcp_stream("127.0.0.1", port))


# -- echo, subprotocols, accept headers -------------------------------------------------


async def test_websockets_client_echoes_text_and_bytes_with_subprotocol_and_headers() -> None:
    app = WsApp()
    with trio.fail_after(10):
        async with open_test_server(app, ws_config()) as server:
            url = f"ws://127.0.0.1:{server.port}/echo"

            def client() -> tuple[Any, ...]:
                offered = [Subprotocol("a"), Subprotocol("b")]
                with connect(url, subprotocols=offered, **WS_OPTIONS) as ws:
                    ws.send("hello")
                    text = ws.recv(timeout=5)
                    ws.send(b"\x00\x01\xff")
                    data = ws.recv(timeout=5)
                    ws.send(["frag", "ment", "é"])  # one message in three frames
                    fragmented = ws.recv(timeout=5)
                    ws.send(BIG)
                    big = ws.recv(timeout=5)
                    extra = ws.response.headers.get("x-extra")
                    return text, data, fragmented, big == BIG, ws.subprotocol, extra

            result = await in_thread(client)
            await app.finished.wait()
    assert result == ("hello", b"\x00\x01\xff", "fragmenté", True, "b", "1")
    [scope] = app.scopes
    assert scope["type"] == "websocket"
    assert scope["scheme"] == "ws"
    assert scope["subprotocols"] == ["a", "b"]
    assert app.disconnects == [{"type": "websocket.disconnect", "code": 1000, "reason": ""}]


async def test_trio_websocket_client_echoes_text_and_bytes_with_subprotocol_and_headers() -> None:
    app = WsApp()
    with trio.fail_after(10):
        async with open_test_server(app, ws_config()) as server:
            url = f"ws://127.0.0.1:{server.port}/echo"
            async with open_websocket_url(url, subprotocols=["a", "b"]) as ws:
                await ws.send_message("hello")
                text = await ws.get_message()
                await ws.send_message(b"\x00\x01\xff")
                data = await ws.get_message()
                await ws.send_message(BIG)
                assert await ws.get_message() == BIG
                assert ws.subprotocol == "b"
                assert dict(ws.handshake_headers)[b"x-extra"] == b"1"
            await app.finished.wait()
    assert (text, data) == ("hello", b"\x00\x01\xff")
    assert app.scopes[0]["scheme"] == "ws"


async def test_websockets_client_echoes_over_a_unix_socket(sock_dir: Path) -> None:
    app = WsApp()
    path = sock_dir / "ws.sock"
    with trio.fail_after(10):
        async with open_test_server(app, ws_config(bind=(f"unix:{path}",))) as server:
            assert server.url == f"unix:{path}"

            def client() -> Any:
                with unix_connect(str(path), "ws://localhost/echo", **WS_OPTIONS) as ws:
                    ws.send("over unix")
                    return ws.recv(timeout=5)

            assert await in_thread(client) == "over unix"
            await app.finished.wait()
    assert app.scopes[0]["path"] == "/echo"


# -- wss ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[Config, ssl.SSLContext]:
    """A server config with a trustme certificate, and a client context trusting it."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    directory = tmp_path_factory.mktemp("pki")
    certfile, keyfile = directory / "cert.pem", directory / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return ws_config(certfile=str(certfile), keyfile=str(keyfile)), context


async def test_wss_echo_with_both_clients_has_wss_scheme(
    tls: tuple[Config, ssl.SSLContext],
) -> None:
    app = WsApp()
    config, context = tls
    with trio.fail_after(10):
        async with open_test_server(app, config) as server:
            url = f"wss://127.0.0.1:{server.port}/echo"

            def client() -> Any:
                with connect(url, ssl=context, **WS_OPTIONS) as ws:
                    ws.send("secret")
                    return ws.recv(timeout=5)

            assert await in_thread(client) == "secret"
            async with open_websocket_url(url, context) as ws:
                await ws.send_message(b"secret bytes")
                assert await ws.get_message() == b"secret bytes"
    assert [scope["scheme"] for scope in app.scopes] == ["wss", "wss"]
    assert len(app.disconnects) == 2


# -- close codes --------------------------------------------------------------------------


async def test_client_close_code_and_reason_reach_the_app() -> None:
    app = WsApp()
    with trio.fail_after(10):
        async with open_test_server(app, ws_config()) as server:
            async with open_websocket_url(f"ws://127.0.0.1:{server.port}/echo") as ws:
                await ws.aclose(1000, "bye")
            await app.finished.wait()
            url = f"ws://127.0.0.1:{server.port}/echo"

            def client() -> None:
                with connect(url, **WS_OPTIONS) as ws:
                    ws.close(4321, "later")

            await in_thread(client)
    assert app.disconnects == [
        {"type": "websocket.disconnect", "code": 1000, "reason": "bye"},
        {"type": "websocket.disconnect", "code": 4321, "reason": "later"},
    ]


async def test_messages_queued_before_a_cancelled_send_still_arrive_in_order() -> None:
    # A send cancelled before its write began leaves every frame queued (its own
    # too): frames once made go out, in order, with the next write.
    cancelled: list[bool] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        with trio.CancelScope() as cancel_scope:
            cancel_scope.cancel()
            for i in range(40):  # the 32nd send writes the queue, and is cancelled
                await send({"type": "websocket.send", "text": f"m{i}"})
        cancelled.append(cancel_scope.cancelled_caught)
        await send({"type": "websocket.send", "text": "after"})
        await send({"type": "websocket.close"})

    with trio.fail_after(10):
        async with open_test_server(app, ws_config()) as server:
            url = f"ws://127.0.0.1:{server.port}/"

            def client() -> list[str | bytes]:
                with connect(url, **WS_OPTIONS) as ws:
                    return list(ws)

            received = await in_thread(client)
    assert cancelled == [True]
    assert received == [f"m{i}" for i in range(32)] + ["after"]


async def test_app_close_code_and_reason_reach_the_client() -> None:
    app = WsApp()
    with trio.fail_after(10):
        async with open_test_server(app, ws_config()) as server:
            url = f"ws://127.0.0.1:{server.port}/close"

            def client() -> tuple[int | None, str | None]:
                with connect(url, **WS_OPTIONS) as ws:
                    with pytest.raises(WsConnectionClosed):
                        ws.recv(timeout=5)
                    return ws.close_code, ws.close_reason

            assert await in_thread(client) == (4001, "custom")


async def test_close_before_accept_fails_the_handshake_with_403() -> None:
    app = WsApp()
    with trio.fail_after(10):
        async with open_test_server(app, ws_config()) as server:
            url = f"ws://127.0.0.1:{server.port}/deny"

            def client() -> int:
                with pytest.raises(InvalidStatus) as denied:
                    connect(url, **WS_OPTIONS)
                return denied.value.response.status_code

            assert await in_thread(client) == 403


async def test_app_exception_after_accept_closes_with_1011_and_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="trioserve.error")
    app = WsApp()
    with trio.fail_after(10):
        async with open_test_server(app, ws_config()) as server:
            url = f"ws://127.0.0.1:{server.port}/boom"

            def client() -> int | None:
                with connect(url, **WS_OPTIONS) as ws:
                    with pytest.raises(WsConnectionClosed):
                        ws.recv(timeout=5)
                    return ws.close_code

            assert await in_thread(client) == 1011
            await app.finished.wait()
    [error] = error_log_records(caplog)
    assert error.levelno == logging.ERROR
    assert error.exc_info is not None
    assert "boom after accept" in str(error.exc_info[1])


# -- the connection around the websocket -----------------------------------------------


async def test_upgrade_after_keep_alive_requests_on_the_same_connection() -> None:
    app = WsApp()
    with trio.fail_after(10):
        async with open_test_server(app, ws_config()) as server:
            client = await raw_connect(server.port)
            async with client.stream:
                for _ in range(2):
                    await client.stream.send_all(b"GET /page HTTP/1.1\r\nHost: localhost\r\n\r\n")
                    head, body = await client.read_response()
                    assert head.startswith(b"HTTP/1.1 200 ")
                    assert body == b"hello"
                head = await client.upgrade("/echo")
                assert b"x-extra: 1" in head.lower()
                await client.send_frame(0x1, b"after keep-alive")
                assert await client.read_frame() == (0x1, b"after keep-alive")
                await client.send_frame(0x8, (1000).to_bytes(2, "big") + b"done")
                # The server answers the close with the same code, then closes.
                opcode, payload = await client.read_frame()
                assert (opcode, payload[:2]) == (0x8, (1000).to_bytes(2, "big"))
                assert await client.stream.receive_some() == b""
    assert [scope["type"] for scope in app.scopes] == ["http", "http", "websocket"]


async def test_graceful_shutdown_closes_an_idle_websocket_with_1001_promptly() -> None:
    app = WsApp()
    codes: list[int | None] = []
    async with trio.open_nursery() as nursery:
        with trio.fail_after(5):  # graceful_timeout is 30 s: shutdown must not wait for it
            async with open_test_server(app, ws_config(graceful_timeout=30)) as server:
                url = f"ws://127.0.0.1:{server.port}/echo"

                def client() -> None:
                    with connect(url, **WS_OPTIONS) as ws:
                        with pytest.raises(WsConnectionClosed):
                            ws.recv(timeout=5)
                        codes.append(ws.close_code)

                nursery.start_soon(in_thread, client)
                await app.accepted.wait()
            assert app.finished.is_set()
    assert codes == [1001]
    assert [message["code"] for message in app.disconnects] == [1001]
    assert app.disconnects[0]["type"] == "websocket.disconnect"


async def test_client_hang_up_gives_1006_then_send_raises_client_disconnected(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The app lets the ``ClientDisconnected`` escape: the client is gone, so that
    is no app error (nothing at ERROR)."""
    caplog.set_level(logging.DEBUG, logger="trioserve.error")
    app = WsApp()
    with trio.fail_after(10):
        async with open_test_server(app, ws_config()) as server:
            client = await raw_connect(server.port)
            async with client.stream:
                await client.upgrade("/hangup")
                await app.accepted.wait()
                await client.stream.aclose()  # no close frame
                await app.finished.wait()
    assert app.disconnects == [{"type": "websocket.disconnect", "code": 1006, "reason": ""}]
    [error] = app.send_errors
    assert isinstance(error, ClientDisconnected)
    assert isinstance(error, OSError)
    assert error_records(caplog) == []


async def test_ping_gets_its_pong_with_both_clients() -> None:
    app = WsApp()
    with trio.fail_after(10):
        async with open_test_server(app, ws_config()) as server:
            url = f"ws://127.0.0.1:{server.port}/echo"

            def client() -> tuple[bool, bool, Any]:
                with connect(url, **WS_OPTIONS) as ws:
                    first = ws.ping(b"one").wait(5)
                    second = ws.ping().wait(5)
                    ws.send("still open")
                    return first, second, ws.recv(timeout=5)

            assert await in_thread(client) == (True, True, "still open")
            async with open_websocket_url(url) as ws:
                await ws.ping(b"trio")  # returns once the pong came back
                await ws.send_message("after ping")
                assert await ws.get_message() == "after ping"


async def test_ping_is_answered_while_the_app_only_sends() -> None:
    """The app does not call ``receive()``: the server still answers the ping, and
    the app's later message and the closing after it arrive in order."""
    app = WsApp()
    with trio.fail_after(10):
        async with open_test_server(app, ws_config()) as server:
            url = f"ws://127.0.0.1:{server.port}/sender"

            def client() -> tuple[Any, bool, Any, int | None]:
                with connect(url, **WS_OPTIONS) as ws:
                    ready = ws.recv(timeout=5)
                    pong = ws.ping(b"anyone").wait(5)
                    trio.from_thread.run_sync(app.release.set)
                    bye = ws.recv(timeout=5)
                    with pytest.raises(WsConnectionClosed):
                        ws.recv(timeout=5)
                    return ready, pong, bye, ws.close_code

            assert await in_thread(client) == ("ready", True, "bye", 1000)


# -- Starlette and FastAPI --------------------------------------------------------------


class StarletteContext:
    def __init__(self, clients: int) -> None:
        self.expected = clients
        self.connected: set[WebSocket] = set()
        self.all_connected = trio.Event()


def make_starlette_app(ctx: StarletteContext) -> Starlette:
    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        async for text in websocket.iter_text():
            await websocket.send_text(text)

    async def json_echo(websocket: WebSocket) -> None:
        await websocket.accept()
        async for data in websocket.iter_json():
            await websocket.send_json({"got": data, "keys": sorted(data)})

    async def broadcast(websocket: WebSocket) -> None:
        await websocket.accept()
        ctx.connected.add(websocket)
        if len(ctx.connected) == ctx.expected:
            ctx.all_connected.set()
        try:
            async for text in websocket.iter_text():
                for other in list(ctx.connected):
                    await other.send_text(text)
        finally:
            ctx.connected.discard(websocket)

    async def deny(websocket: WebSocket) -> None:
        if hasattr(websocket, "send_denial_response"):
            await websocket.send_denial_response(Response("go away", status_code=401))
        else:
            await websocket.close(code=1008)

    async def hello(request: Any) -> PlainTextResponse:
        return PlainTextResponse("plain http")

    return Starlette(
        routes=[
            WebSocketRoute("/echo", echo),
            WebSocketRoute("/json", json_echo),
            WebSocketRoute("/broadcast", broadcast),
            WebSocketRoute("/deny", deny),
            Route("/hello", hello),
        ]
    )


async def test_starlette_text_and_json_echo() -> None:
    ctx = StarletteContext(1)
    with trio.fail_after(10):
        async with open_test_server(make_starlette_app(ctx), ws_config()) as server:
            base = f"ws://127.0.0.1:{server.port}"
            async with open_websocket_url(f"{base}/echo") as ws:
                await ws.send_message("hi starlette")
                assert await ws.get_message() == "hi starlette"
            async with open_websocket_url(f"{base}/json") as ws:
                await ws.send_message('{"b": 2, "a": [1]}')
                assert await ws.get_message() == '{"got":{"b":2,"a":[1]},"keys":["a","b"]}'


async def test_starlette_broadcast_reaches_every_connected_client() -> None:
    ctx = StarletteContext(3)
    received: dict[int, str | bytes] = {}
    with trio.fail_after(10):
        async with open_test_server(make_starlette_app(ctx), ws_config()) as server:
            url = f"ws://127.0.0.1:{server.port}/broadcast"

            async def member(index: int) -> None:
                async with open_websocket_url(url) as ws:
                    if index == 0:
                        await ctx.all_connected.wait()
                        await ws.send_message("to everyone")
                    received[index] = await ws.get_message()

            async with trio.open_nursery() as nursery:
                for index in range(3):
                    nursery.start_soon(member, index)
    assert received == {0: "to everyone", 1: "to everyone", 2: "to everyone"}


async def test_starlette_denial_response_reaches_the_client() -> None:
    ctx = StarletteContext(1)
    has_denial = hasattr(WebSocket, "send_denial_response")
    with trio.fail_after(10):
        async with open_test_server(make_starlette_app(ctx), ws_config()) as server:
            url = f"ws://127.0.0.1:{server.port}/deny"

            def client() -> tuple[int, bytes]:
                with pytest.raises(InvalidStatus) as denied:
                    connect(url, **WS_OPTIONS)
                return denied.value.response.status_code, bytes(denied.value.response.body)

            status, body = await in_thread(client)
    if has_denial:
        assert (status, body) == (401, b"go away")
    else:
        assert status == 403


async def test_starlette_websocket_and_http_routes_on_one_server() -> None:
    ctx = StarletteContext(1)
    with trio.fail_after(10):
        async with (
            open_test_server(make_starlette_app(ctx), ws_config()) as server,
            httpx.AsyncClient(base_url=server.url, trust_env=False) as http,
            open_websocket_url(f"ws://127.0.0.1:{server.port}/echo") as ws,
        ):
            await ws.send_message("before")
            assert await ws.get_message() == "before"
            response = await http.get("/hello")
            await ws.send_message("after")
            assert await ws.get_message() == "after"
            missing = await http.get("/echo")
    assert response.status_code == 200
    assert response.text == "plain http"
    assert missing.status_code == 404  # a websocket route does not answer plain HTTP


def make_fastapi_app() -> FastAPI:
    app = FastAPI()

    @app.websocket("/rooms/{room}")
    async def room(websocket: WebSocket, room: str, token: str | None = None) -> None:
        await websocket.accept()
        async for data in websocket.iter_json():
            await websocket.send_json({"room": room, "token": token, "data": data})

    return app


async def test_fastapi_websocket_with_path_and_query_parameters() -> None:
    with trio.fail_after(10):
        async with open_test_server(make_fastapi_app(), ws_config()) as server:
            url = f"ws://127.0.0.1:{server.port}/rooms/lobby?token=abc"
            async with open_websocket_url(url) as ws:
                await ws.send_message('{"n": 1}')
                reply = await ws.get_message()
            bare = f"ws://127.0.0.1:{server.port}/rooms/hall"

            def client() -> Any:
                with connect(bare, **WS_OPTIONS) as ws:
                    ws.send('"x"')
                    return ws.recv(timeout=5)

            bare_reply = await in_thread(client)
    assert reply == '{"room":"lobby","token":"abc","data":{"n":1}}'
    assert bare_reply == '{"room":"hall","token":null,"data":"x"}'


# -- upgrades that are not served as websockets ------------------------------------------


async def test_ws_none_answers_an_upgrade_with_501_and_the_app_sees_no_websocket() -> None:
    app = WsApp()
    with trio.fail_after(10):
        async with open_test_server(app, ws_config(ws="none")) as server:
            url = f"ws://127.0.0.1:{server.port}/echo"

            def client() -> int:
                with pytest.raises(InvalidStatus) as refused:
                    connect(url, **WS_OPTIONS)
                return refused.value.response.status_code

            assert await in_thread(client) == 501
    assert [scope["type"] for scope in app.scopes] == []


async def test_h2c_upgrade_is_served_as_plain_http11() -> None:
    app = WsApp()
    with trio.fail_after(10):
        async with open_test_server(app, ws_config()) as server:
            client = await raw_connect(server.port)
            async with client.stream:
                await client.stream.send_all(
                    b"GET /h2 HTTP/1.1\r\nHost: localhost\r\n"
                    b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
                    b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
                )
                head, body = await client.read_response()
                # The connection goes on as HTTP/1.1.
                await client.stream.send_all(b"GET /next HTTP/1.1\r\nHost: localhost\r\n\r\n")
                next_head, next_body = await client.read_response()
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"upgrade" not in head.lower()
    assert body == b"hello"
    assert next_head.startswith(b"HTTP/1.1 200 ")
    assert next_body == b"hello"
    assert [(scope["type"], scope["path"]) for scope in app.scopes] == [
        ("http", "/h2"),
        ("http", "/next"),
    ]
