"""The ASGI websocket protocol as an app sees it, over ``trioserve.testing``.

The handshake and the scope, the message sequence (connect, accept with a
subprotocol and headers, receive and send, close before and after accept, the
denial response), what a client's close and a hang-up tell the app, errors in the
app, the limits and deadlines (message size, ping and its timeout, the close
handshake), shutdown, backpressure, and the access log line. Raw frames and their
close codes are in ``test_websocket_frames.py``; real clients over sockets in
``test_websocket_clients.py``.

Timeouts run in virtual time (``autojump_clock``); other waits are on messages.
"""

from __future__ import annotations

import logging
import tracemalloc
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing

from trioserve import ClientDisconnected, Config, LocalProtocolError
from trioserve.connection._websocket import KEEPER_TASK_NAME
from trioserve.testing import (
    WebSocketClosed,
    WebSocketDenied,
    open_test_client,
)

Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

UPGRADE = (
    b"GET /chat?room=1 HTTP/1.1\r\nHost: testserver\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)
GET = b"GET / HTTP/1.1\r\nHost: testserver\r\n\r\n"


def config(**changes: Any) -> Config:
    return Config(lifespan="off", **changes)


class Recorder:
    """An app that accepts, echoes every message, and records what it received,
    the scope, and how its calls ended."""

    def __init__(self, *, accept: Message | None = None) -> None:
        self.accept = accept or {"type": "websocket.accept"}
        self.scopes: list[dict[str, Any]] = []
        self.received: list[Message] = []
        self.errors: list[BaseException] = []
        self.done = trio.Event()

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            body = b"plain http"
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": body})
            return
        self.scopes.append(scope)
        try:
            assert (await receive()) == {"type": "websocket.connect"}
            await send(self.accept)
            while True:
                message = await receive()
                self.received.append(message)
                if message["type"] == "websocket.disconnect":
                    return
                await send({"type": "websocket.send", **_payload(message)})
        except BaseException as exc:
            self.errors.append(exc)
            raise
        finally:
            self.done.set()


def _payload(message: Message) -> Message:
    if message.get("text") is not None:
        return {"text": message["text"]}
    return {"bytes": message["bytes"]}


def disconnects(recorder: Recorder) -> list[Message]:
    return [m for m in recorder.received if m["type"] == "websocket.disconnect"]


# -- the handshake and the scope ----------------------------------------------------


async def test_echo_of_text_and_bytes() -> None:
    app = Recorder()
    async with open_test_client(app, config()) as client, client.websocket("/ws") as ws:
        await ws.send_text("hello")
        assert await ws.receive() == "hello"
        await ws.send_bytes(b"\x00\xff" * 40_000)
        assert await ws.receive() == b"\x00\xff" * 40_000


async def test_scope_of_a_websocket() -> None:
    app = Recorder()
    async with (
        open_test_client(app, config(root_path="/api")) as client,
        client.websocket("/chat%20room?x=1", subprotocols=["one", "two"], headers=[("x-a", "b")]),
    ):
        pass
    with trio.fail_after(5):
        await app.done.wait()
    (scope,) = app.scopes
    assert scope["type"] == "websocket"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.5"}
    assert scope["http_version"] == "1.1"
    assert scope["scheme"] == "ws"
    assert scope["path"] == "/api/chat room"
    assert scope["raw_path"] == b"/api/chat%20room"
    assert scope["query_string"] == b"x=1"
    assert scope["root_path"] == "/api"
    assert scope["subprotocols"] == ["one", "two"]
    assert (b"x-a", b"b") in scope["headers"]
    assert (b"upgrade", b"websocket") in scope["headers"]
    assert scope["extensions"] == {"websocket.http.response": {}}
    assert "method" not in scope
    assert scope["state"] == {}


async def test_accept_with_a_subprotocol_and_extra_headers() -> None:
    app = Recorder(
        accept={"type": "websocket.accept", "subprotocol": "two", "headers": [(b"x-extra", b"1")]}
    )
    async with (
        open_test_client(app, config()) as client,
        client.websocket("/", subprotocols=["one", "two"]) as ws,
    ):
        assert ws.subprotocol == "two"
        assert (b"x-extra", b"1") in ws.headers
        assert (b"server", b"trioserve") in ws.headers


@pytest.mark.parametrize(
    ("accept", "error"),
    [
        ({"type": "websocket.accept", "subprotocol": "three"}, "was not offered"),
        ({"type": "websocket.accept", "headers": [(b"sec-websocket-protocol", b"x")]}, "set by"),
        ({"type": "websocket.accept", "headers": [(b"x-bad", b"a\r\nb")]}, "illegal"),
    ],
)
async def test_an_invalid_accept_fails_the_handshake_with_500(
    accept: Message, error: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = Recorder(accept=accept)
    async with open_test_client(app, config()) as client:
        with pytest.raises(WebSocketDenied) as info:
            async with client.websocket("/", subprotocols=["one"]):
                pass
    assert info.value.response.status == 500  # type: ignore[attr-defined]
    assert isinstance(app.errors[0], LocalProtocolError)
    assert error in str(app.errors[0])


async def test_upgrade_after_keep_alive_requests_on_the_same_connection() -> None:
    app = Recorder()
    async with open_test_client(app, config()) as client:
        conn = await client.connect()
        for _ in range(2):
            response = await conn.request("GET", "/")
            assert response.body == b"plain http"
        ws = await conn.websocket("/ws")
        await ws.send_text("after two requests")
        assert await ws.receive() == "after two requests"
        await conn.aclose()


async def test_frames_right_behind_the_upgrade_request_are_the_first_message() -> None:
    app = Recorder()
    key = b"\x01\x02\x03\x04"
    frame = b"\x81\x85" + key + bytes(c ^ key[i % 4] for i, c in enumerate(b"early"))
    async with open_test_client(app, config()) as client:
        conn = await client.connect()
        await conn.send_all(GET + UPGRADE + frame)  # pipelined: a request, the upgrade, a frame
        data = b""
        with trio.fail_after(5):
            while b"early" not in data:
                data += await conn.receive_some()
        assert data.count(b"HTTP/1.1 200") == 1
        assert b"HTTP/1.1 101 Switching Protocols\r\n" in data
        assert data.endswith(b"\x81\x05early")
        await conn.aclose()


async def test_a_non_websocket_upgrade_is_served_as_http() -> None:
    app = Recorder()
    async with open_test_client(app, config()) as client:
        data = await client.raw(
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\n"
            b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nConnection: close\r\n\r\n"
        )
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\nplain http\r\n" in data
    assert app.scopes == []


async def test_with_websockets_off_an_upgrade_gets_501_and_the_app_never_sees_it() -> None:
    app = Recorder()
    async with open_test_client(app, config(ws="none")) as client:
        with pytest.raises(WebSocketDenied) as info:
            async with client.websocket("/ws"):
                pass
    assert info.value.response.status == 501  # type: ignore[attr-defined]
    assert app.scopes == []


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (UPGRADE.replace(b"Version: 13", b"Version: 8"), 426),
        (UPGRADE.replace(b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", b""), 400),
        (UPGRADE.replace(b"dGhlIHNhbXBsZSBub25jZQ==", b"c2hvcnQ="), 400),
        (UPGRADE.replace(b"dGhlIHNhbXBsZSBub25jZQ==", b"not base64 at all!!"), 400),
        (UPGRADE.replace(b"GET ", b"POST "), 400),
        (UPGRADE.replace(b"HTTP/1.1", b"HTTP/1.0"), 400),
        (UPGRADE.replace(b"\r\n\r\n", b"\r\nContent-Length: 3\r\n\r\nabc"), 400),
    ],
    ids=["version", "no-key", "short-key", "key-not-base64", "post", "http10", "body"],
)
async def test_a_bad_handshake_is_refused_and_the_app_never_runs(
    request_bytes: bytes, status: int
) -> None:
    app = Recorder()
    async with open_test_client(app, config()) as client:
        data = await client.raw(request_bytes)
    assert data.startswith(b"HTTP/1.1 %d " % status)
    if status == 426:
        assert b"\r\nsec-websocket-version: 13\r\n" in data
    assert app.scopes == []


# -- closing ------------------------------------------------------------------------


async def test_the_clients_close_code_and_reason_reach_the_app() -> None:
    app = Recorder()
    async with open_test_client(app, config()) as client:
        async with client.websocket("/") as ws:
            assert await ws.close(1000, "bye") == 1000
        with trio.fail_after(5):
            await app.done.wait()
    assert disconnects(app) == [{"type": "websocket.disconnect", "code": 1000, "reason": "bye"}]


async def test_a_hang_up_without_a_close_frame_reaches_the_app_as_1006() -> None:
    app = Recorder()
    async with open_test_client(app, config()) as client:
        conn = await client.connect()
        await conn.websocket("/")
        await conn.aclose()
        with trio.fail_after(5):
            await app.done.wait()
    assert disconnects(app) == [{"type": "websocket.disconnect", "code": 1006, "reason": ""}]


async def test_close_before_accept_is_answered_403() -> None:
    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.close", "code": 1008})

    async with open_test_client(app, config()) as client:
        with pytest.raises(WebSocketDenied) as info:
            async with client.websocket("/"):
                pass
    response = info.value.response
    assert response.status == 403  # type: ignore[attr-defined]
    assert response.header("connection") == "close"  # type: ignore[attr-defined]


async def test_the_app_closes_with_its_code_and_reason_and_then_hears_the_disconnect() -> None:
    seen: list[Message] = []

    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 4001, "reason": "custom"})
        seen.append(await receive())
        with pytest.raises(LocalProtocolError, match="closed"):
            await send({"type": "websocket.send", "text": "too late"})

    async with open_test_client(app, config()) as client, client.websocket("/") as ws:
        with pytest.raises(WebSocketClosed) as info:
            await ws.receive()
        assert (info.value.code, info.value.reason) == (4001, "custom")
    assert seen == [{"type": "websocket.disconnect", "code": 4001, "reason": "custom"}]


async def test_bytes_like_payloads_are_sent_and_a_none_close_code_means_1000() -> None:
    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "bytes": bytearray(b"from a bytearray")})
        await send({"type": "websocket.send", "bytes": memoryview(b"from a memoryview")})
        await send({"type": "websocket.close", "code": None, "reason": None})

    async with open_test_client(app, config()) as client, client.websocket("/") as ws:
        assert await ws.receive() == b"from a bytearray"
        assert await ws.receive() == b"from a memoryview"
        with pytest.raises(WebSocketClosed) as info:
            await ws.receive()
        assert (info.value.code, info.value.reason) == (1000, "")


async def test_a_denial_response_with_a_streamed_body() -> None:
    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        await receive()
        await send(
            {
                "type": "websocket.http.response.start",
                "status": 401,
                "headers": [(b"www-authenticate", b"Bearer")],
            }
        )
        await send({"type": "websocket.http.response.body", "body": b"log ", "more_body": True})
        await send({"type": "websocket.http.response.body", "body": b"in first"})

    async with open_test_client(app, config()) as client:
        with pytest.raises(WebSocketDenied) as info:
            async with client.websocket("/"):
                pass
    response = info.value.response
    assert response.status == 401  # type: ignore[attr-defined]
    assert response.body == b"log in first"  # type: ignore[attr-defined]
    assert response.header("www-authenticate") == "Bearer"  # type: ignore[attr-defined]


async def test_send_after_the_client_left_raises_client_disconnected() -> None:
    outcome: list[BaseException] = []
    left = trio.Event()

    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        assert (await receive())["type"] == "websocket.disconnect"
        left.set()
        try:
            await send({"type": "websocket.send", "text": "anyone?"})
        except OSError as exc:
            outcome.append(exc)

    async with open_test_client(app, config()) as client:
        async with client.websocket("/") as ws:
            await ws.close()
        with trio.fail_after(5):
            await left.wait()
    (exc,) = outcome
    assert isinstance(exc, ClientDisconnected)


# -- the app's failures -------------------------------------------------------------


async def test_an_app_failure_after_accept_closes_with_1011_and_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await receive()
        raise ValueError("boom")

    async with open_test_client(app, config()) as client, client.websocket("/") as ws:
        await ws.send_text("go")
        with pytest.raises(WebSocketClosed) as info:
            await ws.receive()
    assert info.value.code == 1011
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert errors[0].exc_info is not None
    assert isinstance(errors[0].exc_info[1], ValueError)


async def test_an_app_failure_before_accept_is_answered_500() -> None:
    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        raise ValueError("boom")

    async with open_test_client(app, config()) as client:
        with pytest.raises(WebSocketDenied) as info:
            async with client.websocket("/"):
                pass
    assert info.value.response.status == 500  # type: ignore[attr-defined]


async def test_an_app_that_returns_without_answering_gets_500_and_an_error_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        await receive()

    async with open_test_client(app, config()) as client:
        with pytest.raises(WebSocketDenied) as info:
            async with client.websocket("/"):
                pass
    assert info.value.response.status == 500  # type: ignore[attr-defined]
    assert any("without accepting" in r.getMessage() for r in caplog.records)


async def test_an_app_that_returns_after_accept_closes_normally() -> None:
    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})

    async with open_test_client(app, config()) as client, client.websocket("/") as ws:
        with pytest.raises(WebSocketClosed) as info:
            await ws.receive()
    assert info.value.code == 1000


async def test_an_app_that_returns_a_value_after_accept_closes_with_1011() -> None:
    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> str:
        await receive()
        await send({"type": "websocket.accept"})
        return "surprise"

    async with open_test_client(app, config()) as client, client.websocket("/") as ws:
        with pytest.raises(WebSocketClosed) as info:
            await ws.receive()
    assert info.value.code == 1011


async def test_a_receive_before_accept_waits_for_the_hang_up_and_then_accept_fails() -> None:
    seen: list[Message] = []
    failures: list[BaseException] = []
    done = trio.Event()

    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        try:
            seen.append(await receive())
            seen.append(await receive())
            await send({"type": "websocket.accept"})
        except ClientDisconnected as exc:
            failures.append(exc)
        finally:
            done.set()

    async with open_test_client(app, config()) as client:
        conn = await client.connect()
        await conn.send_all(UPGRADE)
        await trio.testing.wait_all_tasks_blocked()
        assert seen == [{"type": "websocket.connect"}]
        await conn.aclose()
        with trio.fail_after(5):
            await done.wait()
    assert seen[1] == {"type": "websocket.disconnect", "code": 1006, "reason": ""}
    assert isinstance(failures[0], ClientDisconnected)


async def test_an_unfinished_denial_response_closes_the_connection() -> None:
    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.http.response.start", "status": 403, "headers": []})
        await send({"type": "websocket.http.response.body", "body": b"par", "more_body": True})

    async with open_test_client(app, config()) as client:
        reply = await client.raw(UPGRADE)
    assert reply.startswith(b"HTTP/1.1 403 ")
    assert b"transfer-encoding: chunked" in reply
    assert b"\r\n3\r\npar\r\n" in reply
    assert not reply.endswith(b"0\r\n\r\n")  # no last chunk: the body is incomplete


async def test_an_app_failure_after_the_denial_start_gives_500(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.http.response.start", "status": 403, "headers": []})
        raise ValueError("boom")

    async with open_test_client(app, config()) as client:
        reply = await client.raw(UPGRADE)
    assert reply.startswith(b"HTTP/1.1 500 ")
    assert [r.levelno for r in caplog.records if r.levelno >= logging.ERROR] == [logging.ERROR]


async def test_configured_headers_go_on_the_101_and_on_a_denial() -> None:
    async def deny(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.http.response.start", "status": 403, "headers": []})
        await send({"type": "websocket.http.response.body", "body": b"no"})

    settings = config(headers=[("x-site", "one")])
    async with open_test_client(Recorder(), settings) as client, client.websocket("/") as ws:
        assert (b"x-site", b"one") in ws.headers
    async with open_test_client(deny, settings) as client:
        with pytest.raises(WebSocketDenied) as info:
            async with client.websocket("/"):
                pass
    assert info.value.response.header("x-site") == "one"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("messages", "named"),
    [
        ([{"type": "websocket.send", "text": "x"}], "'websocket.send'"),
        ([{"type": "websocket.accept"}, {"type": "websocket.accept"}], "'websocket.accept'"),
        ([{"type": "websocket.accept"}, {"type": "websocket.send"}], "exactly one"),
        (
            [{"type": "websocket.accept"}, {"type": "websocket.send", "text": "a", "bytes": b"b"}],
            "exactly one",
        ),
        ([{"type": "websocket.accept"}, {"type": "websocket.close", "code": 1005}], "'code'"),
        ([{"type": "websocket.accept", "subprotocol": b"one"}], "'subprotocol'"),
        ([{"type": "websocket.accept"}, {"type": "websocket.send", "text": b"x"}], "'text'"),
        ([{"type": "websocket.accept"}, {"type": "websocket.send", "bytes": "x"}], "'bytes'"),
        (
            [{"type": "websocket.accept"}, {"type": "websocket.close", "reason": b"x"}],
            "'reason'",
        ),
        (
            [
                {"type": "websocket.accept"},
                {"type": "websocket.close"},
                {"type": "websocket.close"},
            ],
            "'websocket.close'",
        ),
        (
            [
                {"type": "websocket.accept"},
                {"type": "websocket.http.response.start", "status": 403},
            ],
            "'websocket.http.response.start'",
        ),
        ([{"type": "websocket.accept"}, {"text": "x"}], "without a 'type'"),
        ([{"type": "websocket.http.response.body", "body": b""}], "response.body"),
        ([{"type": "http.response.start", "status": 200}], "'http.response.start'"),
    ],
    ids=[
        "send-first",
        "accept-twice",
        "send-nothing",
        "send-both",
        "bad-code",
        "subprotocol-not-str",
        "text-not-str",
        "bytes-not-bytes",
        "reason-not-str",
        "close-twice",
        "denial-after-accept",
        "no-type",
        "body-first",
        "http",
    ],
)
async def test_an_invalid_message_sequence_raises_a_clear_error(
    messages: list[Message], named: str
) -> None:
    errors: list[BaseException] = []

    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        await receive()
        try:
            for message in messages:
                await send(message)
        except LocalProtocolError as exc:
            errors.append(exc)

    async with open_test_client(app, config()) as client:
        with trio.fail_after(5):
            conn = await client.connect()
            try:
                ws = await conn.websocket("/")
                with pytest.raises(WebSocketClosed):
                    await ws.receive()
            except WebSocketDenied:
                pass
            await conn.aclose()
    (error,) = errors
    assert named in str(error)


# -- limits and liveness --------------------------------------------------------------


async def test_a_message_over_the_size_limit_closes_with_1009() -> None:
    app = Recorder()
    async with (
        open_test_client(app, config(websocket_max_message_size=1000)) as client,
        client.websocket("/") as ws,
    ):
        await ws.send_text("x" * 1000)
        assert await ws.receive() == "x" * 1000
        await ws.send_text("y" * 1001)
        with pytest.raises(WebSocketClosed) as info:
            await ws.receive()
        assert info.value.code == 1009
    assert disconnects(app)[0]["code"] == 1009


def masked(opcode: int, payload: bytes) -> bytes:
    """A client frame (masked, FIN set) with a short payload."""
    key = b"\x0f\x1e\x2d\x3c"
    body = bytes(c ^ key[i % 4] for i, c in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + key + body


def masked_long(opcode: int, payload: bytes) -> bytes:
    """A client frame (masked, FIN set) with a payload of 126 to 65535 bytes."""
    key = b"\x0f\x1e\x2d\x3c"
    body = bytes(c ^ key[i % 4] for i, c in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | 126]) + len(payload).to_bytes(2, "big") + key + body


async def test_the_server_pings_an_idle_websocket_and_keeps_it_while_pongs_come(
    autojump_clock: trio.testing.MockClock,
) -> None:
    app = Recorder()
    settings = config(websocket_ping_interval=10.0, websocket_ping_timeout=5.0)
    async with open_test_client(app, settings) as client:
        conn = await client.connect()
        await conn.websocket("/")
        start = trio.current_time()
        for n in range(1, 4):
            frame = await conn.receive_some()
            assert frame[:2] == b"\x89\x04"  # a ping with a 4-byte payload
            assert trio.current_time() - start == pytest.approx(10.0 * n)
            await conn.send_all(masked(0xA, frame[2:6]))  # its pong
        await conn.send_all(masked(0x1, b"alive"))
        assert await conn.receive_some() == b"\x81\x05alive"
        await conn.aclose()
    assert app.received[0] == {"type": "websocket.receive", "text": "alive"}


async def test_a_peer_that_stops_answering_pings_is_closed_with_1011(
    autojump_clock: trio.testing.MockClock,
) -> None:
    app = Recorder()
    settings = config(websocket_ping_interval=10.0, websocket_ping_timeout=5.0)
    async with open_test_client(app, settings) as client:
        conn = await client.connect()
        await conn.websocket("/")
        start = trio.current_time()
        with trio.fail_after(60):
            await app.done.wait()  # the client reads nothing, so it answers no ping
        assert trio.current_time() - start == pytest.approx(15.0)
        await conn.aclose()
    assert disconnects(app)[0]["code"] == 1011


async def test_a_peer_that_never_answers_our_close_is_dropped_at_the_close_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close"})

    settings = config(websocket_close_timeout=3.0, websocket_ping_interval=None)
    async with open_test_client(app, settings) as client:
        conn = await client.connect()
        await conn.websocket("/")
        start = trio.current_time()
        with trio.fail_after(60):
            data = await conn.receive_until_closed()  # never answers the close frame
        assert data == b"\x88\x02\x03\xe8"  # our close frame, 1000
        assert trio.current_time() - start == pytest.approx(3.0)


async def test_shutdown_closes_websockets_with_1001_and_tells_the_app() -> None:
    app = Recorder()
    closed: list[int] = []
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery, open_test_client(app, config()) as client:
            conn = await client.connect()
            ws = await conn.websocket("/")

            async def client_side() -> None:
                with pytest.raises(WebSocketClosed) as info:
                    await ws.receive()  # answers the server's close frame
                closed.append(info.value.code)
                await conn.aclose()

            nursery.start_soon(client_side)
            await trio.testing.wait_all_tasks_blocked()
            # Leaving open_test_client shuts the server down gracefully.
    assert closed == [1001]
    assert disconnects(app) == [{"type": "websocket.disconnect", "code": 1001, "reason": ""}]


async def test_an_upgrade_read_while_the_shutdown_begins_is_closed_with_1001(
    autojump_clock: trio.testing.MockClock,
) -> None:
    app = Recorder()
    received = b""
    async with trio.open_nursery() as nursery:
        async with open_test_client(app, config(graceful_timeout=30)) as client:
            conn = await client.connect()
            await conn.send_all(UPGRADE[:40])

            async def client_side() -> None:
                nonlocal received
                await trio.sleep(1)  # the shutdown begins meanwhile
                await conn.send_all(UPGRADE[40:])
                while not received.endswith(b"\x88\x02\x03\xe9"):  # close, 1001
                    received += await conn.receive_some()
                await conn.send_all(masked(0x8, b"\x03\xe9"))
                await conn.aclose()

            nursery.start_soon(client_side)
            await trio.testing.wait_all_tasks_blocked()
            # Leaving open_test_client shuts the server down gracefully.
        assert trio.current_time() < 30  # not cancelled at graceful_timeout
    assert received.startswith(b"HTTP/1.1 101 ")
    assert disconnects(app) == [{"type": "websocket.disconnect", "code": 1001, "reason": ""}]


async def test_an_app_that_only_sends_still_gets_the_clients_close(
    autojump_clock: trio.testing.MockClock,
) -> None:
    outcome: list[BaseException] = []

    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        try:
            while True:
                await send({"type": "websocket.send", "text": "tick"})
                await trio.sleep(0.001)
        except ClientDisconnected as exc:
            outcome.append(exc)

    async with open_test_client(app, config()) as client, client.websocket("/") as ws:
        assert await ws.receive() == "tick"
        # The keeper processes the close for the app, and answers it.
        assert await ws.close(1000) == 1000
    assert len(outcome) == 1


async def test_an_app_that_sends_but_never_receives_still_gets_the_clients_close(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The client's messages wait for the app, which never takes them; the
    # close behind them is still answered, and the app's send() hears it.
    outcome: list[BaseException] = []

    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        try:
            while True:
                await send({"type": "websocket.send", "text": "tick"})
                await trio.sleep(0.01)
        except ClientDisconnected as exc:
            outcome.append(exc)

    async with open_test_client(app, config()) as client, client.websocket("/") as ws:
        await ws.send_text("subscribe")
        await ws.send_text("anything else")
        assert await ws.receive() == "tick"
        with trio.fail_after(1):
            assert await ws.close(1000) == 1000
    assert len(outcome) == 1


async def test_pongs_behind_messages_the_app_never_takes_keep_the_websocket(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ticks = 0

    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        nonlocal ticks
        await receive()
        await send({"type": "websocket.accept"})
        while True:
            await send({"type": "websocket.send", "text": "tick"})
            ticks += 1
            await trio.sleep(1)

    settings = config(websocket_ping_interval=10.0, websocket_ping_timeout=5.0)
    async with open_test_client(app, settings) as client, client.websocket("/") as ws:
        await ws.send_text("subscribe")
        with trio.move_on_after(60):
            while True:
                assert await ws.receive() == "tick"  # answers the pings as they come
        # No keepalive timeout in a minute of pings: the websocket is still open.
        with trio.fail_after(1):
            assert await ws.close(1000) == 1000
    assert ticks >= 59


async def test_a_slow_handler_keeps_a_websocket_whose_peer_answers_pings(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        message = await receive()
        await trio.sleep(60)  # far past the ping interval and timeout
        await send({"type": "websocket.send", "text": "done with " + message["text"]})
        await receive()

    settings = config(websocket_ping_interval=10.0, websocket_ping_timeout=5.0)
    async with open_test_client(app, settings) as client, client.websocket("/") as ws:
        await ws.send_text("job")
        with trio.fail_after(120):
            assert await ws.receive() == "done with job"  # answering pings meanwhile


async def test_a_silent_peer_is_found_while_the_app_is_busy_elsewhere(
    autojump_clock: trio.testing.MockClock,
) -> None:
    seen: list[Message] = []
    go = trio.Event()
    done = trio.Event()

    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await go.wait()  # not receiving: what the peer sent waits for it
        seen.append(await receive())
        seen.append(await receive())
        done.set()

    settings = config(websocket_ping_interval=10.0, websocket_ping_timeout=5.0)
    async with open_test_client(app, settings) as client:
        conn = await client.connect()
        await conn.websocket("/")
        await conn.send_all(masked(0x1, b"hello"))  # then it goes silent
        start = trio.current_time()
        with trio.fail_after(60):
            data = b""
            while not data.endswith(b"keepalive ping timeout"):
                data += await conn.receive_some()
        assert trio.current_time() - start == pytest.approx(15.0)
        await conn.aclose()
        go.set()
        with trio.fail_after(60):
            await done.wait()
    # What arrived before is still the app's, then the end.
    assert seen == [
        {"type": "websocket.receive", "text": "hello"},
        {"type": "websocket.disconnect", "code": 1011, "reason": "keepalive ping timeout"},
    ]


async def test_a_silent_peer_is_found_behind_more_than_the_app_lets_be_processed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # 80 KiB of messages: more than is processed for an app that does not
    # receive, so some wait unprocessed; none of them is a sign of life after
    # the ping.
    go = trio.Event()

    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await go.wait()

    settings = config(websocket_ping_interval=10.0, websocket_ping_timeout=5.0)
    async with open_test_client(app, settings) as client:
        conn = await client.connect()
        await conn.websocket("/")
        await conn.send_all(masked_long(0x2, b"m" * 1000) * 80)  # then it goes silent
        start = trio.current_time()
        with trio.fail_after(60):
            data = b""
            while not data.endswith(b"keepalive ping timeout"):
                data += await conn.receive_some()
        assert trio.current_time() - start == pytest.approx(15.0)
        await conn.aclose()
        go.set()


async def test_pongs_stuck_behind_unread_bytes_do_not_fail_the_websocket(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The app does not receive, the server has stopped reading, and the client's
    # pongs wait in the connection behind its messages: the server cannot know
    # that the client is silent, so it keeps the websocket.
    go = trio.Event()

    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await go.wait()

    settings = config(websocket_ping_interval=10.0, websocket_ping_timeout=5.0)
    async with open_test_client(app, settings) as client:
        conn = await client.connect()
        await conn.websocket("/")
        await conn.send_all(masked_long(0x2, b"m" * 16000) * 64)  # 1 MB
        with trio.move_on_after(60):
            while True:
                frame = await conn.receive_some()
                assert frame[:2] == b"\x89\x04", frame  # pings only, never a close
                await conn.send_all(masked(0xA, frame[2:6]))
        await conn.aclose()
        go.set()


async def test_an_app_that_sends_but_never_receives_still_bounds_what_it_holds() -> None:
    release = trio.Event()
    done = trio.Event()

    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await release.wait()
        await send({"type": "websocket.send", "text": "one"})
        await done.wait()

    async with open_test_client(app, config()) as client:
        conn = await client.connect(lockstep=True)
        ws = await conn.websocket("/")
        await ws.send_text("first")  # waits for the app, so its send() holds on
        release.set()
        assert await ws.receive() == "one"
        sent = 0
        with trio.move_on_after(1) as scope:
            while True:
                await ws.send_bytes(b"x" * 16384)
                sent += 1
        assert scope.cancelled_caught
        assert sent * 16384 < 1024 * 1024
        done.set()
        await conn.aclose()


async def test_an_app_that_does_not_receive_stops_the_reader() -> None:
    release = trio.Event()

    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await receive()  # one message, then it stops reading for a while
        await release.wait()
        while (await receive())["type"] != "websocket.disconnect":
            pass

    async with open_test_client(app, config()) as client:
        conn = await client.connect(lockstep=True)
        ws = await conn.websocket("/")
        sent = 0
        with trio.move_on_after(1) as scope:
            while True:
                await ws.send_bytes(b"x" * 16384)
                sent += 1
        # The server stopped taking bytes: its buffer is bounded.
        assert scope.cancelled_caught
        assert sent * 16384 < 1024 * 1024
        release.set()
        await conn.aclose()


async def test_websocket_sessions_count_toward_limit_concurrency() -> None:
    app = Recorder()
    async with open_test_client(app, config(limit_concurrency=1)) as client:
        async with client.websocket("/"):
            with pytest.raises(WebSocketDenied) as info:
                async with client.websocket("/"):
                    pass
            assert info.value.response.status == 503  # type: ignore[attr-defined]
        async with client.websocket("/"):
            pass


async def test_the_keeper_task_ends_with_the_websocket() -> None:
    app = Recorder()
    async with open_test_client(app, config()) as client:
        async with client.websocket("/") as ws:
            await ws.send_text("x")
            await ws.receive()
            assert any(t.name == KEEPER_TASK_NAME for t in _tasks())
            await ws.close()
        with trio.fail_after(5):
            await app.done.wait()
        await trio.testing.wait_all_tasks_blocked()
        assert not any(t.name == KEEPER_TASK_NAME for t in _tasks())


def _tasks() -> list[trio.lowlevel.Task]:
    root = trio.lowlevel.current_root_task()
    assert root is not None
    found: list[trio.lowlevel.Task] = []

    def walk(task: trio.lowlevel.Task) -> None:
        found.append(task)
        for nursery in task.child_nurseries:
            for child in nursery.child_tasks:
                walk(child)

    walk(root)
    return found


# -- the access log -----------------------------------------------------------------


async def test_one_access_log_line_per_websocket_session(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="trioserve.access")
    app = Recorder()
    async with open_test_client(app, config(accesslog="-")) as client:
        async with client.websocket("/chat?x=1") as ws:
            for text in ("a", "bb", "ccc"):
                await ws.send_text(text)
                await ws.receive()
            await ws.close(1000)
        with trio.fail_after(5):
            await app.done.wait()
    lines = [r.getMessage() for r in caplog.records if r.name == "trioserve.access"]
    assert len(lines) == 1
    assert (
        '"GET /chat?x=1 HTTP/1.1" 101 Switching Protocols websocket close=1000/1000 in=3/6 '
        "out=3/6 time=" in lines[0]
    )


async def test_a_refused_websocket_logs_its_status_and_no_close_codes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.close"})

    caplog.set_level(logging.INFO, logger="trioserve.access")
    async with open_test_client(app, config(accesslog="-")) as client:
        with pytest.raises(WebSocketDenied):
            async with client.websocket("/chat"):
                pass
    lines = [r.getMessage() for r in caplog.records if r.name == "trioserve.access"]
    assert len(lines) == 1
    assert '"GET /chat HTTP/1.1" 403 Forbidden websocket close=-/- in=0/0 out=0/0 time=' in lines[0]


async def test_a_deflate_bomb_is_closed_with_1009_without_inflating_it() -> None:
    # 64 MiB of zeros compress to about 64 KiB; the limit is 1 MiB.
    compressor = zlib.compressobj(wbits=-15)
    payload = compressor.compress(b"\0" * (64 * 1024 * 1024))
    payload += compressor.flush(zlib.Z_SYNC_FLUSH)
    payload = payload[:-4]
    key = b"\x11\x22\x33\x44"
    assert 125 < len(payload) < 65536
    head = b"\xc2\xfe" + len(payload).to_bytes(2, "big") + key  # FIN, RSV1, binary, masked
    frame = head + bytes(c ^ key[i % 4] for i, c in enumerate(payload))
    app = Recorder()
    settings = config(websocket_max_message_size=1024 * 1024)
    async with open_test_client(app, settings) as client, client.websocket("/", deflate=True) as ws:
        assert ws.extensions == ["permessage-deflate"]
        tracemalloc.start()
        try:
            await ws.send_raw(frame)
            with pytest.raises(WebSocketClosed) as info:
                await ws.receive()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert info.value.code == 1009
    # The limit plus a few small slices' worth, nowhere near the 64 MiB inside.
    assert peak < 16 * 1024 * 1024


@pytest.mark.parametrize(
    "offer",
    [
        "permessage-deflate; client_max_window_bits=x",
        "permessage-deflate; client_max_window_bits=99",
        "x-webkit-deflate-frame",
    ],
    ids=["malformed-deflate-offer", "unusable-deflate-offer", "unknown-extension"],
)
async def test_an_extension_offer_the_server_cannot_take_is_declined_not_refused(
    offer: str,
) -> None:
    app = Recorder()
    headers = [("Sec-WebSocket-Extensions", offer)]
    async with (
        open_test_client(app, config()) as client,
        client.websocket("/", headers=headers) as ws,
    ):
        assert ws.extensions == []
        assert not any(name == b"sec-websocket-extensions" for name, _ in ws.headers)
        await ws.send_text("plain")
        assert await ws.receive() == "plain"


async def test_permessage_deflate_can_be_turned_off() -> None:
    app = Recorder()
    settings = config(websocket_per_message_deflate=False)
    async with open_test_client(app, settings) as client, client.websocket("/", deflate=True) as ws:
        assert ws.extensions == []
        await ws.send_text("plain")
        assert await ws.receive() == "plain"


async def test_after_a_clean_close_handshake_the_server_closes_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The client answers the close and keeps its side open: the server closes
    # the connection anyway, without lingering (RFC 6455: the server closes first).
    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 4000})
        await receive()

    async with open_test_client(app, config()) as client:
        conn = await client.connect()
        ws = await conn.websocket("/")
        with pytest.raises(WebSocketClosed):
            await ws.receive()  # answers the close frame
        start = trio.current_time()
        assert await conn.receive_until_closed() == b""
    assert trio.current_time() == start  # shutdown found nothing left to wait for


async def test_a_peer_that_stops_reading_is_dropped_at_the_write_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    outcome: list[BaseException] = []
    dropped = trio.Event()
    sent = [0]

    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        try:
            while True:
                await send({"type": "websocket.send", "bytes": b"x" * 4096})
                sent[0] += 1
        except ClientDisconnected as exc:
            outcome.append(exc)
            dropped.set()

    async with open_test_client(app, config(write_timeout=7.0)) as client:
        conn = await client.connect(lockstep=True)
        await conn.websocket("/")
        start = trio.current_time()
        with trio.fail_after(60):
            await dropped.wait()  # the client reads nothing
        assert trio.current_time() - start == pytest.approx(7.0, abs=1.0)
        await conn.aclose()
    # What the server holds for a peer that does not read is bounded (the queue
    # and one write), not what the app tried to send.
    assert sent[0] < 64


async def test_a_send_the_app_cancels_partway_loses_the_websocket_instead_of_corrupting_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Part of the frame is on the wire: a frame written after it would land
    # inside its payload, so the websocket is over and the app hears 1006.
    outcome: list[Any] = []

    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": "first"})
        await trio.sleep(1)  # meanwhile the keeper writes the first frame
        with trio.move_on_after(5) as cancelled:
            await send({"type": "websocket.send", "bytes": b"b" * (1024 * 1024)})
        outcome.append(cancelled.cancelled_caught)
        try:
            await send({"type": "websocket.send", "text": "after"})
        except ClientDisconnected as exc:
            outcome.append(exc)
        outcome.append(await receive())

    async with open_test_client(app, config()) as client:
        conn = await client.connect(lockstep=True)
        await conn.websocket("/")
        with trio.fail_after(60):
            assert await conn.receive_some(7) == b"\x81\x05first"
            await trio.sleep(10)  # then it reads nothing for a while
            received = await conn.receive_until_closed()
        await conn.aclose()
    assert outcome[0] is True
    assert isinstance(outcome[1], ClientDisconnected)
    assert outcome[2] == {"type": "websocket.disconnect", "code": 1006, "reason": ""}
    assert b"after" not in received


@pytest.mark.parametrize("deflate", [False, True], ids=["plain", "deflate"])
async def test_frames_of_a_send_cancelled_while_waiting_to_write_keep_their_place(
    deflate: bool, autojump_clock: trio.testing.MockClock
) -> None:
    # Two app tasks send while the client reads slowly. A's 32nd send writes the
    # queue and waits behind a big frame; B sends meanwhile; then A's send is
    # cancelled by the app's timeout. B's message must not overtake A's (nor
    # upset the client's inflater).
    cancelled: list[bool] = []

    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})

        async def big() -> None:
            await send({"type": "websocket.send", "bytes": bytes(range(256)) * 160})

        async def a_task() -> None:
            await trio.sleep(0.1)
            with trio.move_on_after(0.1) as scope:
                for i in range(1, 33):
                    await send({"type": "websocket.send", "text": f"A{i}"})
            cancelled.append(scope.cancelled_caught)

        async def b_task() -> None:
            await trio.sleep(0.15)  # while A's write waits for its turn
            await send({"type": "websocket.send", "text": "B1"})

        async with trio.open_nursery() as nursery:
            nursery.start_soon(big)
            nursery.start_soon(a_task)
            nursery.start_soon(b_task)
        await send({"type": "websocket.close"})

    async with open_test_client(app, config()) as client:
        conn = await client.connect(lockstep=True)
        ws = await conn.websocket("/", deflate=deflate)
        await trio.sleep(1)  # a slow reader
        received: list[str | bytes] = []

        async def read_all() -> None:
            while True:
                received.append(await ws.receive())

        with trio.fail_after(10), pytest.raises(WebSocketClosed) as closed:
            await read_all()
    assert closed.value.code == 1000
    assert cancelled == [True]
    assert received == [bytes(range(256)) * 160] + [f"A{i}" for i in range(1, 33)] + ["B1"]


async def test_shutdown_cancels_an_app_that_does_not_return_at_graceful_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    cancelled = trio.Event()

    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        try:
            await trio.sleep_forever()  # neither receives nor sends
        finally:
            cancelled.set()

    closed: list[int] = []
    async with trio.open_nursery() as nursery:
        async with open_test_client(app, config(graceful_timeout=5.0)) as client:
            conn = await client.connect()
            ws = await conn.websocket("/")

            async def client_side() -> None:
                with pytest.raises(WebSocketClosed) as info:
                    await ws.receive()
                closed.append(info.value.code)

            nursery.start_soon(client_side)
            await trio.testing.wait_all_tasks_blocked()
            start = trio.current_time()
        assert trio.current_time() - start == pytest.approx(5.0)
    assert cancelled.is_set()
    assert closed == [1001]
