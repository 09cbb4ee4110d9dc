"""What happens when the app gets the response wrong: an exception before the
response starts gives a 500 (logged with its traceback), once the body has started
the connection is closed instead; an app that returns without a complete response
gives a 500 or a closed connection, never a hang; a return value other than ``None``
is logged; an invalid message or message sequence makes ``send()`` raise
``LocalProtocolError`` (a ``RuntimeError``) and aborts the response, even when the
app catches the error.

The tests send raw bytes over in-memory streams and check the exact bytes that come
back (see ``_helpers.py``).
"""

from __future__ import annotations

import logging
from typing import Any

import h11
import pytest
from _helpers import (
    ERROR_LOGGER,
    GET,
    NODATE,
    Receive,
    Scope,
    Send,
    body,
    error_log_records,
    http_only,
    parse_one,
    parse_single,
    raw_closed_at_once,
    start,
    text_app,
)

from trioserve import LocalProtocolError
from trioserve.testing import open_test_client


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


async def test_app_return_value_is_logged_and_connection_closed(
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
        data = await raw_closed_at_once(client, GET + GET)
    response = parse_single(data)
    assert (response.status, response.body) == (200, b"hello")
    assert calls == ["/"]
    (record,) = error_log_records(caplog)
    assert "surprise" in record.getMessage()


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


async def test_message_after_response_complete_raises_and_closes(
    autojump_clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
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
        data = await raw_closed_at_once(client, GET + GET)
    (exc,) = raised
    assert isinstance(exc, LocalProtocolError)
    assert "already complete" in str(exc)
    # The complete first response stands, nothing follows it, the pipelined
    # second request is not served.
    response = parse_single(data)
    assert (response.status, response.body) == (200, b"hello")
    assert b"more" not in data
    assert error_log_records(caplog)


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
