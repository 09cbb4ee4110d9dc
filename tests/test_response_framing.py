"""How the body of a response is framed on the wire: the exact bytes of a simple
response; chunked encoding when the app declares no content-length (also for an
empty body); a close-delimited body for an HTTP/1.0 client; the app's
``content-length`` enforced, so that too many or too few bytes are logged and end
the connection instead of corrupting the stream; HEAD responses that carry the GET
headers and no body; a shutdown that begins after a keep-alive head went out lets
the client's next request be answered (with ``connection: close``) instead of
crossing it.

The tests send raw bytes over in-memory streams and check the exact bytes that come
back (see ``_helpers.py``).
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

import h11
import pytest
import trio
from _helpers import (
    ERROR_LOGGER,
    GET,
    GET_CLOSE,
    NODATE,
    Receive,
    Scope,
    Send,
    Wire,
    body,
    error_log_records,
    http_only,
    parse_all,
    parse_one,
    parse_single,
    raw_closed_at_once,
    start,
    streaming_app,
    text_app,
)

import trioserve
from trioserve import Config, LocalProtocolError
from trioserve.testing import open_test_client

# -- a simple response ---------------------------------------------------------------------


async def test_get_request_gets_exact_response_bytes() -> None:
    async with open_test_client(text_app(), NODATE) as client:
        data = await client.raw(GET_CLOSE)
    assert data == (
        b"HTTP/1.1 200 OK\r\n"
        b"content-type: text/plain\r\n"
        b"content-length: 5\r\n"
        b"server: trioserve\r\n"
        b"connection: close\r\n"
        b"\r\n"
        b"hello"
    )


async def test_get_request_via_test_client() -> None:
    async with open_test_client(text_app()) as client:
        response = await client.get("/")
    assert response.status == 200
    assert response.http_version == "1.1"
    assert response.body == b"hello"
    assert response.header("content-type") == "text/plain"


# -- chunked and close-delimited bodies ----------------------------------------------------


async def test_response_without_content_length_is_chunked() -> None:
    async with open_test_client(streaming_app(), NODATE) as client:
        data = await client.raw(GET_CLOSE)
    assert data == (
        b"HTTP/1.1 200 OK\r\n"
        b"content-type: text/plain\r\n"
        b"server: trioserve\r\n"
        b"transfer-encoding: chunked\r\n"
        b"connection: close\r\n"
        b"\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )


async def test_empty_chunked_body_is_terminated_and_connection_reusable() -> None:
    @http_only
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(start(200))
        await send(body(b""))

    async with open_test_client(app, NODATE) as client:
        conn = await client.connect()
        await conn.send_all(GET)
        wire = Wire(conn)
        response = await wire.response()
        assert response.status == 200
        assert response.body == b""
        assert response.header(b"transfer-encoding") == b"chunked"
        second = await conn.request("GET", "/again")
        await conn.aclose()
    assert second.status == 200


async def test_empty_chunked_body_bytes() -> None:
    @http_only
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(start(200))
        await send(body(b""))

    async with open_test_client(app, NODATE) as client:
        data = await client.raw(GET_CLOSE)
    assert data == (
        b"HTTP/1.1 200 OK\r\nserver: trioserve\r\ntransfer-encoding: chunked\r\n"
        b"connection: close\r\n\r\n0\r\n\r\n"
    )


async def test_http10_request_gets_close_delimited_body(autojump_clock: Any) -> None:
    versions: list[str] = []

    @http_only
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        versions.append(scope["http_version"])
        await streaming_app()(scope, receive, send)

    async with open_test_client(app, NODATE) as client:
        data = await raw_closed_at_once(client, b"GET /old HTTP/1.0\r\n\r\n")
    assert versions == ["1.0"]
    assert data == (
        b"HTTP/1.1 200 OK\r\n"
        b"content-type: text/plain\r\n"
        b"server: trioserve\r\n"
        b"connection: close\r\n"
        b"\r\n"
        b"hello world"
    )


async def test_http10_request_with_content_length_response(autojump_clock: Any) -> None:
    async with open_test_client(text_app()) as client:
        data = await raw_closed_at_once(client, b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
    response = parse_single(data)
    assert response.status == 200
    assert response.body == b"hello"
    assert response.header(b"content-length") == b"5"
    assert response.header(b"transfer-encoding") is None
    # HTTP/1.0 has no persistent connections here: the server closes, and says so.
    assert response.header(b"connection") == b"close"


# -- the app's content-length is enforced --------------------------------------------------


async def test_response_body_longer_than_content_length_is_never_written(
    autojump_clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The surplus bytes look like a whole second response. A naive server writes
    them, and the client parses a response the app never meant to send."""
    caplog.set_level(logging.DEBUG, logger=ERROR_LOGGER)
    smuggled = b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nsmuggled"
    calls: list[str] = []
    send_errors: list[Exception] = []

    @http_only
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        calls.append(scope["path"])
        await send(start(200, [(b"content-length", b"3")]))
        await send(body(b"abc", more=True))
        try:
            await send(body(smuggled))
        except Exception as exc:
            send_errors.append(exc)
            raise

    async with open_test_client(app) as client:
        data = await raw_closed_at_once(client, GET + b"GET /second HTTP/1.1\r\nHost: x\r\n\r\n")
    responses, rest = parse_all(data)
    assert [r.body for r in responses] == [b"abc"]
    assert rest == b""
    assert b"smuggled" not in data
    assert calls == ["/"]
    assert len(send_errors) == 1
    assert isinstance(send_errors[0], LocalProtocolError)
    assert error_log_records(caplog)


async def test_response_body_longer_than_content_length_in_one_message(
    autojump_clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=ERROR_LOGGER)

    @http_only
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(start(200, [(b"content-length", b"3")]))
        await send(body(b"hello"))

    async with open_test_client(app) as client:
        data = await raw_closed_at_once(client, GET + GET)
    # Extra bytes are refused before anything is written: no response of the app's
    # goes out (at most a 500 of the server's own), and never the surplus.
    assert b"hello" not in data
    assert b"200 OK" not in data
    if data:
        assert parse_single(data).status == 500
    assert error_log_records(caplog)


async def test_response_body_shorter_than_content_length_closes_connection(
    autojump_clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Too few bytes: the client must see an incomplete response, not a complete
    one followed by the next response glued onto the missing bytes."""
    caplog.set_level(logging.DEBUG, logger=ERROR_LOGGER)
    calls: list[str] = []

    @http_only
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        calls.append(scope["path"])
        await send(start(200, [(b"content-length", b"10")]))
        await send(body(b"hello", more=True))
        await send(body(b""))

    async with open_test_client(app) as client:
        data = await raw_closed_at_once(client, GET + GET)
    assert data.endswith(b"\r\n\r\nhello")
    with pytest.raises(h11.RemoteProtocolError):
        parse_one(data, eof=True)
    assert calls == ["/"]
    assert error_log_records(caplog)


async def test_response_body_shorter_than_content_length_in_one_message(
    autojump_clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=ERROR_LOGGER)

    @http_only
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(start(200, [(b"content-length", b"10")]))
        await send(body(b"hello"))

    async with open_test_client(app) as client:
        data = await raw_closed_at_once(client, GET + GET)
    assert b"200 OK" not in data
    if data:
        assert parse_single(data).status == 500
    assert error_log_records(caplog)


# -- HEAD ----------------------------------------------------------------------------------


async def test_head_response_has_get_headers_and_no_body() -> None:
    """HEAD then GET on one connection: if the HEAD response carried a body, the
    GET response would not parse."""
    async with open_test_client(text_app(), NODATE) as client:
        data = await client.raw(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n" + GET_CLOSE)
    (head, get), rest = parse_all(data, ["HEAD", "GET"])
    assert rest == b""
    assert head.status == get.status == 200
    assert head.body == b""
    assert get.body == b"hello"
    assert head.headers == [h for h in get.headers if h[0] != b"connection"]
    assert head.header(b"content-length") == b"5"
    assert data.startswith(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\n"
        b"server: trioserve\r\n\r\nHTTP/1.1 200 OK\r\n"
    )


async def test_head_response_of_streaming_app_keeps_transfer_encoding() -> None:
    async with open_test_client(streaming_app(), NODATE) as client:
        data = await client.raw(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n" + GET_CLOSE)
    head_end = data.index(b"\r\n\r\n") + 4
    assert data[:head_end] == (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nserver: trioserve\r\n"
        b"transfer-encoding: chunked\r\n\r\n"
    )
    assert data[head_end:].startswith(b"HTTP/1.1 200 OK\r\n")  # no chunk, no 0\r\n\r\n
    (head, get), rest = parse_all(data, ["HEAD", "GET"])
    assert rest == b""
    assert head.body == b""
    assert get.body == b"hello world"


async def test_head_request_via_test_client() -> None:
    async with open_test_client(text_app(b"x" * 1000)) as client:
        response = await client.request("HEAD", "/")
    assert response.status == 200
    assert response.header("content-length") == "1000"
    assert response.body == b""


# -- graceful shutdown -----------------------------------------------------------------------


async def test_response_whose_head_preceded_a_shutdown_lets_the_next_request_be_answered() -> None:
    """The shutdown begins after a response's head went out announcing keep-alive.
    Closing right after that response would cross a request the client sends at
    once, and the client could not tell the close from a failure; the server waits
    a moment instead, and answers it with ``connection: close``."""
    release = trio.Event()
    head_out = trio.Event()

    @http_only
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/stream":
            await send(start(200))
            await send(body(b"first", more=True))
            head_out.set()
            await release.wait()
            await send(body(b""))
        else:
            await text_app()(scope, receive, send)

    trigger = trio.Event()
    config = Config(bind=["127.0.0.1:0"], keep_alive_timeout=60)
    async with trio.open_nursery() as nursery:
        urls = await nursery.start(
            partial(trioserve.serve, app, config, shutdown_trigger=trigger.wait)
        )
        port = int(urls[0].rsplit(":", 1)[1])
        with trio.fail_after(10):
            idle = await trio.open_tcp_stream("127.0.0.1", port)
            busy = await trio.open_tcp_stream("127.0.0.1", port)
            await busy.send_all(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
            await head_out.wait()
            trigger.set()
            # The idle connection closing shows that the shutdown has begun.
            assert await idle.receive_some() == b""
            release.set()
            buf = b""
            while (parsed := parse_one(buf, eof=False)[0]) is None:
                buf += await busy.receive_some()
            assert (parsed.status, parsed.body) == (200, b"first")
            assert parsed.header(b"connection") is None
            await busy.send_all(GET)
            rest = b""
            while data := await busy.receive_some():
                rest += data
        await idle.aclose()
        await busy.aclose()
    response = parse_single(rest)
    assert (response.status, response.body) == (200, b"hello")
    assert response.header(b"connection") == b"close"
