"""What happens when the app gets the response wrong: an exception before the
response starts gives a 500 (logged with its traceback), once the body has started
the connection is closed instead; an exception (or a return value, or one message
too many) after a complete response is logged and the connection carries the next
request, because the framing on the wire is intact (what Starlette's error
middleware relies on: it sends a whole 500 and re-raises); an app that returns
without a complete response gives a 500 or a closed connection, never a hang; an
invalid message or message sequence makes ``send()`` raise ``LocalProtocolError``
(a ``RuntimeError``) and aborts the response, even when the app catches the error.

The tests send raw bytes over in-memory streams and check the exact bytes that come
back (see ``_helpers.py``); the keep-alive after an error is also checked over a
real loopback socket and with FastAPI and a pooled httpx client.
"""

from __future__ import annotations

import logging
from typing import Any

import h11
import httpx
import pytest
import trio
from _helpers import (
    ERROR_LOGGER,
    GET,
    GET_CLOSE,
    NODATE,
    Parsed,
    Receive,
    Scope,
    Send,
    body,
    error_log_records,
    http_only,
    parse_all,
    parse_one,
    parse_single,
    raw_closed_at_once,
    start,
    text_app,
)
from fastapi import FastAPI, Request

from trioserve import LocalProtocolError
from trioserve.connection._http11 import DRAIN_LIMIT
from trioserve.testing import open_test_client, open_test_server


class Boom(Exception):
    pass


# -- exceptions ----------------------------------------------------------------------------


async def test_app_exception_before_response_gives_500_and_close(
    autojump_clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=ERROR_LOGGER)

    @http_only
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise Boom("kaput")

    async with open_test_client(app, NODATE) as client:
        data = await raw_closed_at_once(client, GET + GET)
    assert data == (
        b"HTTP/1.1 500 Internal Server Error\r\n"
        b"server: trioserve\r\n"
        b"content-type: text/plain; charset=utf-8\r\n"
        b"content-length: 21\r\n"
        b"connection: close\r\n"
        b"\r\n"
        b"Internal Server Error"
    )
    (record,) = error_log_records(caplog)
    assert record.getMessage() == "Exception in ASGI application"
    assert record.exc_info is not None
    assert record.exc_info[0] is Boom


async def test_app_exception_after_start_before_body_gives_500(autojump_clock: Any) -> None:
    @http_only
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(start(200, [(b"x-app", b"1")]))
        raise Boom

    async with open_test_client(app) as client:
        data = await raw_closed_at_once(client, GET)
    response = parse_single(data)
    assert response.status == 500
    assert response.header(b"x-app") is None


async def test_app_exception_after_body_started_closes_without_500(
    autojump_clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A naive server appends a 500 to the half-sent response."""
    caplog.set_level(logging.DEBUG, logger=ERROR_LOGGER)

    @http_only
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(start(200))
        await send(body(b"partial", more=True))
        raise Boom

    async with open_test_client(app, NODATE) as client:
        data = await raw_closed_at_once(client, GET + GET)
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert data.endswith(b"\r\n\r\n7\r\npartial\r\n")
    assert b"500" not in data
    with pytest.raises(h11.RemoteProtocolError):
        parse_one(data, eof=True)
    (record,) = error_log_records(caplog)
    assert record.exc_info is not None
    assert record.exc_info[0] is Boom


async def test_app_exception_after_complete_response_is_logged_and_connection_kept(
    autojump_clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """What Starlette's error middleware does: a whole 500, then the exception
    re-raised. The framing on the wire is intact, so the connection carries the
    next request; the traceback is logged once per request."""
    caplog.set_level(logging.DEBUG, logger=ERROR_LOGGER)

    @http_only
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(start(500, [(b"content-length", b"4")]))
        await send(body(b"oops"))
        raise Boom("after the response")

    async with open_test_client(app, NODATE) as client:
        data = await raw_closed_at_once(client, GET + GET_CLOSE)
    responses, rest = parse_all(data)
    assert [(r.status, r.body) for r in responses] == [(500, b"oops"), (500, b"oops")]
    assert responses[0].header(b"connection") is None
    assert responses[1].header(b"connection") == b"close"
    assert rest == b""
    records = error_log_records(caplog)
    assert [r.getMessage() for r in records] == ["Exception in ASGI application"] * 2
    assert all(r.exc_info is not None and r.exc_info[0] is Boom for r in records)


async def test_app_exception_after_chunked_response_keeps_connection(autojump_clock: Any) -> None:
    @http_only
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(start(200))
        await send(body(b"part", more=True))
        await send(body(b""))
        raise Boom

    async with open_test_client(app) as client:
        data = await raw_closed_at_once(client, GET + GET_CLOSE)
    responses, rest = parse_all(data)
    assert [(r.status, r.body) for r in responses] == [(200, b"part"), (200, b"part")]
    assert rest == b""


async def read_socket_response(stream: trio.SocketStream, buf: bytes) -> tuple[Parsed, bytes]:
    """One response off a socket, and the bytes after it."""
    while True:
        parsed, rest = parse_one(buf, eof=False)
        if parsed is not None:
            return parsed, rest
        data = await stream.receive_some()
        assert data, "the server closed the connection"
        buf += data


async def test_app_exception_after_complete_response_keeps_socket_open() -> None:
    """Two requests, one after the other, on one real loopback connection."""

    @http_only
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(start(500, [(b"content-length", b"4")]))
        await send(body(b"oops"))
        raise Boom

    async with open_test_server(app) as server:
        with trio.fail_after(5):
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            async with stream:
                buf = b""
                for _ in range(2):
                    await stream.send_all(GET)
                    response, buf = await read_socket_response(stream, buf)
                    assert (response.status, response.body) == (500, b"oops")
                    assert response.header(b"connection") is None


async def test_fastapi_route_error_keeps_the_pooled_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A FastAPI route that raises: Starlette sends a whole 500 and re-raises. The
    pooled httpx connection serves the next request (the same client port)."""
    caplog.set_level(logging.DEBUG, logger=ERROR_LOGGER)
    api = FastAPI()

    @api.get("/boom")
    async def boom() -> None:
        raise Boom("route failed")

    @api.get("/peer")
    async def peer(request: Request) -> dict[str, int]:
        assert request.client is not None
        return {"port": request.client.port}

    async with (
        open_test_server(api) as server,
        httpx.AsyncClient(base_url=server.url, trust_env=False) as client,
    ):
        with trio.fail_after(10):
            before = (await client.get("/peer")).json()
            failed = await client.get("/boom")
            after = (await client.get("/peer")).json()
    assert (failed.status_code, failed.text) == (500, "Internal Server Error")
    assert "close" not in failed.headers.get("connection", "")
    assert before == after
    (record,) = error_log_records(caplog)
    assert record.exc_info is not None
    assert record.exc_info[0] is Boom


UNREAD = b"POST / HTTP/1.1\r\nHost: example\r\nContent-Length: %d\r\n\r\n"


async def test_app_exception_after_response_drains_small_unread_body(
    autojump_clock: Any,
) -> None:
    @http_only
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(start(200, [(b"content-length", b"2")]))
        await send(body(b"ok"))
        raise Boom

    async with open_test_client(app) as client:
        data = await raw_closed_at_once(client, UNREAD % 10 + b"0123456789" + GET_CLOSE)
    responses, rest = parse_all(data)
    assert [(r.status, r.body) for r in responses] == [(200, b"ok"), (200, b"ok")]
    assert rest == b""


async def test_app_exception_after_response_closes_on_large_unread_body(
    autojump_clock: Any,
) -> None:
    """More unread body than the drain limit: the connection closes after the
    (complete) response, as it does when the app does not raise."""

    @http_only
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(start(200, [(b"content-length", b"2")]))
        await send(body(b"ok"))
        raise Boom

    size = DRAIN_LIMIT * 2
    async with open_test_client(app) as client:
        data = await raw_closed_at_once(client, UNREAD % size + b"x" * size + GET)
    responses, rest = parse_all(data)
    assert [(r.status, r.body) for r in responses] == [(200, b"ok")]
    assert rest == b""


# -- returning without a complete response -------------------------------------------------


async def test_app_returning_without_response_gives_500(
    autojump_clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=ERROR_LOGGER)

    @http_only
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        return None

    async with open_test_client(app) as client:
        data = await raw_closed_at_once(client, GET + GET)
    response = parse_single(data)
    assert response.status == 500
    assert response.header(b"connection") == b"close"
    assert response.body == b"Internal Server Error"
    (record,) = error_log_records(caplog)
    assert "returned without completing the response" in record.getMessage()


async def test_app_returning_after_start_only_gives_500(autojump_clock: Any) -> None:
    """Never a hang: the head is not on the wire yet, so a whole 500 can be sent."""

    @http_only
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(start(200, [(b"content-length", b"5")]))

    async with open_test_client(app) as client:
        data = await raw_closed_at_once(client, GET)
    response = parse_single(data)
    assert response.status == 500


async def test_app_returning_mid_body_closes_connection(
    autojump_clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=ERROR_LOGGER)

    @http_only
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(start(200, [(b"content-length", b"10")]))
        await send(body(b"12345", more=True))

    async with open_test_client(app) as client:
        data = await raw_closed_at_once(client, GET + GET)
    assert data.endswith(b"\r\n\r\n12345")
    assert b"500" not in data
    with pytest.raises(h11.RemoteProtocolError):
        parse_one(data, eof=True)
    assert error_log_records(caplog)


async def test_app_return_value_after_complete_response_is_logged_and_connection_kept(
    autojump_clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=ERROR_LOGGER)
    calls: list[str] = []

    @http_only
    async def app(scope: Scope, receive: Receive, send: Send) -> Any:
        calls.append(scope["path"])
        await text_app()(scope, receive, send)
        return "surprise"

    async with open_test_client(app) as client:
        data = await raw_closed_at_once(client, GET + GET_CLOSE)
    responses, rest = parse_all(data)
    assert [(r.status, r.body) for r in responses] == [(200, b"hello"), (200, b"hello")]
    assert responses[0].header(b"connection") is None
    assert rest == b""
    assert calls == ["/", "/"]
    records = error_log_records(caplog)
    assert len(records) == 2
    assert "surprise" in records[0].getMessage()


# -- invalid messages ----------------------------------------------------------------------


SEQUENCES = {
    "duplicate-start": ([start(), start()], 1, "'http.response.start'"),
    "body-before-start": ([body(b"x")], 0, "'http.response.body'"),
    "unknown-type": ([start(), {"type": "http.response.bogus"}], 1, "'http.response.bogus'"),
    "no-type": ([{"status": 200}], 0, "'type'"),
}


@pytest.mark.parametrize(("messages", "bad_index", "named"), SEQUENCES.values(), ids=SEQUENCES)
async def test_invalid_message_sequence_raises_local_protocol_error_and_aborts(
    messages: list[dict[str, Any]],
    bad_index: int,
    named: str,
    autojump_clock: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger=ERROR_LOGGER)
    raised: list[tuple[int, BaseException]] = []

    @http_only
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        for index, message in enumerate(messages):
            try:
                await send(message)
            except Exception as exc:
                raised.append((index, exc))
                raise

    async with open_test_client(app) as client:
        data = await raw_closed_at_once(client, GET + GET)
    assert len(raised) == 1
    index, exc = raised[0]
    assert index == bad_index
    assert isinstance(exc, LocalProtocolError)
    assert isinstance(exc, RuntimeError)
    assert named in str(exc)
    response = parse_single(data)
    assert response.status == 500
    assert error_log_records(caplog)


async def test_message_after_response_complete_raises_and_keeps_connection(
    autojump_clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The complete response stands and its framing is intact: ``send()`` raises,
    nothing of the extra message reaches the wire, and the next request is served."""
    caplog.set_level(logging.DEBUG, logger=ERROR_LOGGER)
    raised: list[BaseException] = []

    @http_only
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await text_app()(scope, receive, send)
        try:
            await send(body(b"more"))
        except Exception as exc:
            raised.append(exc)
            raise

    async with open_test_client(app) as client:
        data = await raw_closed_at_once(client, GET + GET_CLOSE)
    assert len(raised) == 2
    assert isinstance(raised[0], LocalProtocolError)
    assert "already complete" in str(raised[0])
    responses, rest = parse_all(data)
    assert [(r.status, r.body) for r in responses] == [(200, b"hello"), (200, b"hello")]
    assert b"more" not in data
    assert rest == b""
    assert len(error_log_records(caplog)) == 2


ABORTED = {
    "duplicate-start": [start(), start(), body(b"after")],
    "body-before-start": [body(b"x"), start(), body(b"after")],
    "unknown-type": [start(), {"type": "http.response.bogus"}, body(b"after")],
}


@pytest.mark.parametrize("messages", ABORTED.values(), ids=ABORTED)
async def test_response_stays_aborted_when_app_swallows_local_protocol_error(
    messages: list[dict[str, Any]], autojump_clock: Any
) -> None:
    """docs/behaviour.md: "the response is aborted even if the app catches the
    error". An app that catches the error and carries on must not get its
    response out as if nothing had happened."""
    raised: list[BaseException] = []

    @http_only
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        for message in messages:
            try:
                await send(message)
            except Exception as exc:
                raised.append(exc)

    async with open_test_client(app) as client:
        data = await raw_closed_at_once(client, GET + GET)
    assert isinstance(raised[0], LocalProtocolError)
    assert b"after" not in data
    if data:
        assert parse_single(data).status == 500
