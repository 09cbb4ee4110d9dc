"""The request body as the app receives it: a body with a content-length or a
chunked one arrives whole; when a request has both ``Transfer-Encoding`` and
``Content-Length``, the content-length is never used; a client that hangs up in the
middle of the body gives ``http.disconnect``; ``Expect: 100-continue`` is answered
only once the app first calls ``receive()``, never when it answers without reading.
(How fast the body is read, and what happens to a body the app does not read, is in
``test_flow_control.py``.)

The tests run the real server over in-memory streams; the ``100 Continue`` tests run
under ``autojump_clock``.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
import trio
from _helpers import (
    ERROR_LOGGER,
    Receive,
    Scope,
    Send,
    Wire,
    body,
    echo_app,
    error_log_records,
    http_only,
    parse_single,
    raw_closed_at_once,
    read_body,
    start,
    text_app,
)

from trioserve.testing import open_test_client

# -- the body arrives whole ----------------------------------------------------------------


async def test_post_body_is_delivered_to_app() -> None:
    payload = bytes(range(256)) * 100
    async with open_test_client(echo_app()) as client:
        response = await client.request("POST", "/upload", body=payload)
    assert response.status == 200
    assert response.body == payload


async def test_chunked_request_body_is_delivered_to_app() -> None:
    request = (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )
    async with open_test_client(echo_app()) as client:
        response = parse_single(await client.raw(request))
    assert response.status == 200
    assert response.body == b"hello world"


async def test_request_with_transfer_encoding_and_content_length_is_not_smuggled() -> None:
    """CL says the body is ``3\\r\\nab``; TE says ``abc``. Either h11 refuses the
    request (400) or Transfer-Encoding wins; Content-Length must never be used."""
    bodies: list[bytes] = []

    @http_only
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        data = await read_body(receive)
        bodies.append(data)
        await send(start(200, [(b"content-length", str(len(data)).encode())]))
        await send(body(data))

    request = (
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n"
        b"Connection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    )
    async with open_test_client(app) as client:
        response = parse_single(await client.raw(request), "POST")
    if response.status == 400:
        assert bodies == []
    else:
        assert response.status == 200
        assert bodies == [b"abc"]
        assert response.body == b"abc"


async def test_client_disconnect_mid_body_gives_http_disconnect(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger=ERROR_LOGGER)
    messages: list[dict[str, Any]] = []
    got_first = trio.Event()
    done = trio.Event()

    @http_only
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        messages.append(await receive())
        got_first.set()
        messages.append(await receive())
        done.set()

    async with open_test_client(app) as client:
        conn = await client.connect()
        await conn.send_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n01234")
        with trio.fail_after(5):
            await got_first.wait()
            await conn.aclose()
            await done.wait()
    assert messages == [
        {"type": "http.request", "body": b"01234", "more_body": True},
        {"type": "http.disconnect"},
    ]
    assert error_log_records(caplog) == []


# -- Expect: 100-continue ------------------------------------------------------------------


async def test_100_continue_sent_only_when_app_calls_receive(autojump_clock: Any) -> None:
    go = trio.Event()

    @http_only
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await go.wait()
        data = await read_body(receive)
        await send(start(200, [(b"content-length", str(len(data)).encode())]))
        await send(body(data))

    async with open_test_client(app) as client:
        conn = await client.connect()
        await conn.send_all(
            b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"
        )
        with trio.move_on_after(3):
            early = await conn.receive_some()
            pytest.fail(f"server answered before the app called receive(): {early!r}")
        go.set()
        expected = b"HTTP/1.1 100 Continue\r\n\r\n"
        got = b""
        while len(got) < len(expected):
            got += await conn.receive_some(len(expected) - len(got))
        assert got == expected
        await conn.send_all(b"hello")
        response = await Wire(conn).response("POST")
        await conn.aclose()
    assert response.status == 200
    assert response.body == b"hello"


async def test_100_continue_never_sent_when_app_answers_without_reading(
    autojump_clock: Any,
) -> None:
    async with open_test_client(text_app(b"no thanks")) as client:
        data = await raw_closed_at_once(
            client,
            b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
        )
    assert b"100 Continue" not in data
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    response = parse_single(data, "POST")
    assert response.informational == []
    assert response.body == b"no thanks"
