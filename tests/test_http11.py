"""HTTP/1.1 behaviour of the real server, driven over ``trioserve.testing``.

Covers the HTTP items of ``shared/conformance-checklist.md`` that concern HTTP/1.1
(simple requests, HEAD, keep-alive and its timeout, pipelining, ``Connection:
close``, chunked framing, content-length enforcement, malformed requests, app
errors and invalid ASGI message sequences, early responses, ``Expect:
100-continue``, ``limit_concurrency``, shutdown, scope contents, fragmentation,
huge headers, ``Upgrade: h2c``) and the design behaviours B1-B5, B8-B10, B13,
B14 and B17 of ``shared/design.md``.

Most tests speak raw bytes over in-memory streams (``client.raw`` / a
``TestConnection``) and parse what comes back with an h11 client, so that they
can assert on the exact bytes on the wire. Tests that must prove a connection was
closed *by the behaviour under test* (and not by the keep-alive timer) run under
``autojump_clock`` and check that no virtual time passed.
"""

from __future__ import annotations

import logging
from typing import Any

import h11
import pytest
import trio
import trio.lowlevel
import trio.testing
from _helpers import (
    ERROR_LOGGER,
    GET,
    NODATE,
    Receive,
    Scope,
    Send,
    Wire,
    body,
    dribble,
    error_log_records,
    http_only,
    parse_one,
    parse_single,
    raw_closed_at_once,
    scope_recorder,
    start,
    text_app,
)

from trioserve import Config, LocalProtocolError
from trioserve.testing import open_test_client, open_test_server

# ------------------------------------------------------------- simple requests


# ------------------------------------------------------- B1: server and date


# ------------------------------------------------- B2: keep-alive and close


# --------------------------------------------------------------- pipelining


# ----------------------------------------------------- B3: content-length


# ------------------------------------------------------------- B4: framing


# ---------------------------------------------------------- B5: header checks


# ---------------------------------------------------------------- B10: HEAD


# ------------------------------------------------- B8: receive and early answers


# ------------------------------------------------------- B9: 100-continue


# ---------------------------------------------------------- B13: app errors


class Boom(Exception):
    pass


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


# ----------------------------------------------------- B14: bad requests


BAD_400 = (
    b"HTTP/1.1 400 Bad Request\r\n"
    b"server: trioserve\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"content-length: 30\r\n"
    b"connection: close\r\n"
    b"\r\n"
    b"Invalid HTTP request received."
)


async def test_garbage_gets_400_and_close(autojump_clock: Any) -> None:
    app, calls = scope_recorder()
    async with open_test_client(app, NODATE) as client:
        data = await raw_closed_at_once(client, b"\x16\x03\x01\x02\x00garbage\r\n\r\n")
    assert data == BAD_400
    assert calls == []


@pytest.mark.parametrize(
    "request_line",
    [b"G?T / HTTP/1.1", b"GET /a b HTTP/1.1", b"GET / HTTP1.1"],
    ids=["bad-method", "space-in-target", "bad-version"],
)
async def test_bad_request_line_gets_400(request_line: bytes, autojump_clock: Any) -> None:
    app, calls = scope_recorder()
    async with open_test_client(app, NODATE) as client:
        data = await raw_closed_at_once(client, request_line + b"\r\nHost: x\r\n\r\n")
    assert data == BAD_400
    assert calls == []


@pytest.mark.parametrize(
    "headers",
    [
        b"Host: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n",
        b"Host: x\r\nContent-Length: 3, 4\r\n",
        b"Host: x\r\nX-Bad: a\rb\r\nContent-Length: 4\r\n",
        b" X-Continued-First: a\r\nHost: x\r\nContent-Length: 4\r\n",
        b"Host: x\r\nBad Name: x\r\nContent-Length: 4\r\n",
    ],
    ids=["duplicate-content-length", "list-content-length", "bare-cr", "leading-fold", "name"],
)
async def test_malformed_headers_get_400(headers: bytes, autojump_clock: Any) -> None:
    app, calls = scope_recorder()
    async with open_test_client(app, NODATE) as client:
        data = await raw_closed_at_once(client, b"POST / HTTP/1.1\r\n" + headers + b"\r\nabcd")
    assert data == BAD_400
    assert calls == []


async def test_obs_fold_is_never_taken_as_a_separate_header() -> None:
    """RFC 9112 §5.2: a server must reject obs-fold (400) or replace it with SP.
    h11 does the latter (it is not a 400 as one might expect from "h11's
    strictness"); either way the continuation line must not become a header."""
    seen: list[list[tuple[bytes, bytes]]] = []

    @http_only
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(list(scope["headers"]))
        await text_app()(scope, receive, send)

    request = b"GET / HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n  b\r\nConnection: close\r\n\r\n"
    async with open_test_client(app) as client:
        response = parse_single(await client.raw(request))
    if response.status == 400:
        assert seen == []
    else:
        assert response.status == 200
        (headers,) = seen
        assert (b"x-folded", b"a b") in headers
        assert all(not name.startswith(b" ") and value != b"b" for name, value in headers)


async def test_unknown_transfer_coding_gets_501(autojump_clock: Any) -> None:
    app, calls = scope_recorder()
    # A coding trioserve does not implement, before the final chunked (RFC 9112 6.1);
    # a list that does not end in chunked is a 400 instead (tests/test_policy.py).
    request = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\nabc"
    async with open_test_client(app, NODATE) as client:
        data = await raw_closed_at_once(client, request)
    assert data.startswith(b"HTTP/1.1 501 Not Implemented\r\n")
    response = parse_single(data)
    assert response.body == b"Not Implemented"
    assert response.header(b"connection") == b"close"
    assert calls == []


def big_head(filler: int) -> bytes:
    return b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * filler + b"\r\n\r\n"


async def test_request_head_over_limit_in_one_write_gets_431(autojump_clock: Any) -> None:
    """h11 limits only incomplete heads; a whole head that arrives in one read slips
    past a naive wrapper."""
    app, calls = scope_recorder()
    async with open_test_client(app, Config(h11_max_incomplete_size=1024)) as client:
        data = await raw_closed_at_once(client, big_head(2000))
    assert data.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    response = parse_single(data)
    assert response.body == b"Request Header Fields Too Large"
    assert response.header(b"connection") == b"close"
    assert calls == []


async def test_request_head_over_limit_dribbled_gets_431() -> None:
    app, calls = scope_recorder()
    async with open_test_client(app, Config(h11_max_incomplete_size=1024)) as client:
        conn = await client.connect()
        await dribble(conn, big_head(2000), 50)
        data = await conn.receive_until_closed()
        await conn.aclose()
    assert data.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert calls == []


async def test_request_head_just_under_limit_is_accepted() -> None:
    head = big_head(0)
    filler = 1024 - len(head) - 10
    async with open_test_client(text_app(), Config(h11_max_incomplete_size=1024)) as client:
        conn = await client.connect()
        await conn.send_all(big_head(filler))
        response = await Wire(conn).response()
        await conn.aclose()
    assert response.status == 200


@pytest.mark.parametrize("how", ["one-write", "dribbled"])
async def test_whitespace_padded_head_over_limit_gets_431(how: str) -> None:
    """docs/behaviour.md: "a larger head gets 431 however its bytes arrive". A head
    of 20 KiB made large by optional whitespace around a value must not be
    accepted in one write while it is refused when dribbled."""
    app, calls = scope_recorder()
    request = b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: " + b" " * 20_000 + b"v\r\n\r\n"
    async with open_test_client(app) as client:
        conn = await client.connect()
        if how == "one-write":
            await conn.send_all(request)
        else:
            await dribble(conn, request, 1000)
        with trio.fail_after(5):
            status = (await Wire(conn).response()).status
        await conn.aclose()
    assert status == 431
    assert calls == []


async def test_pipelined_oversized_head_in_same_write_gets_431() -> None:
    """A head over the limit that arrives in the same write as a small request
    before it must be refused like any other ("however its bytes arrive")."""
    calls: list[str] = []

    @http_only
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        calls.append(scope["path"])
        await text_app()(scope, receive, send)

    big = b"GET /big HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 2000 + b"\r\n\r\n"
    async with open_test_client(app, Config(h11_max_incomplete_size=1024)) as client:
        conn = await client.connect()
        await conn.send_all(GET + big)
        wire = Wire(conn)
        with trio.fail_after(5):
            first = await wire.response()
            second = await wire.response()
        await conn.aclose()
    assert first.status == 200
    assert second.status == 431
    assert calls == ["/"]


async def test_huge_headers_rejected_by_default_accepted_with_raised_limit() -> None:
    seen: list[int] = []

    @http_only
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.extend(len(v) for k, v in scope["headers"] if k == b"x-big")
        await text_app()(scope, receive, send)

    request = big_head(20 * 1024)
    async with open_test_client(app) as client:
        conn = await client.connect()
        await conn.send_all(request)
        refused = await Wire(conn).response()
        await conn.aclose()
    async with open_test_client(app, Config(h11_max_incomplete_size=64 * 1024)) as client:
        conn = await client.connect()
        await conn.send_all(request)
        accepted = await Wire(conn).response()
        await conn.aclose()
    assert refused.status == 431
    assert accepted.status == 200
    assert seen == [20 * 1024]


# ------------------------------------------------------------ B17: scope


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


async def test_lifespan_state_copied_into_each_request_and_not_shared_back() -> None:
    seen: list[dict[str, Any]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            assert (await receive())["type"] == "lifespan.startup"
            scope["state"]["db"] = "pool"
            await send({"type": "lifespan.startup.complete"})
            assert (await receive())["type"] == "lifespan.shutdown"
            await send({"type": "lifespan.shutdown.complete"})
            return
        seen.append(dict(scope["state"]))
        scope["state"]["leak"] = scope["path"]
        await text_app()(scope, receive, send)

    async with open_test_client(app, Config(lifespan="on")) as client:
        await client.get("/one")
        await client.get("/two")
    assert seen == [{"db": "pool"}, {"db": "pool"}]


# ------------------------------------------------- other checklist items


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


async def test_limit_concurrency_gives_503_and_idle_connections_do_not_count() -> None:
    started = trio.Event()
    release = trio.Event()
    calls: list[str] = []

    @http_only
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        calls.append(scope["path"])
        if scope["path"] == "/slow":
            started.set()
            await release.wait()
        await text_app()(scope, receive, send)

    async with open_test_client(app, Config(limit_concurrency=1)) as client:
        busy = await client.connect()
        await busy.send_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        with trio.fail_after(5):
            await started.wait()
            rejected = parse_single(await client.raw(b"GET /over HTTP/1.1\r\nHost: x\r\n\r\n"))
        release.set()
        slow = await Wire(busy).response()
        # ``busy`` is now an idle keep-alive connection: it must not count.
        after = await client.get("/after")
        await busy.aclose()
    assert rejected.status == 503
    assert rejected.reason == b"Service Unavailable"
    assert rejected.body == b"Service Unavailable"
    assert rejected.header(b"connection") == b"close"
    assert slow.status == 200
    assert after.status == 200
    assert calls == ["/slow", "/after"]


async def test_server_with_lifespan_off_shuts_down_at_once(autojump_clock: Any) -> None:
    """lifespan="off" never starts the lifespan task, so there is nothing to wait
    for on shutdown (a server that waits for a lifespan.shutdown answer that
    cannot come stalls for shutdown_timeout)."""
    async with open_test_client(text_app(), Config(lifespan="off")) as client:
        assert (await client.get("/")).status == 200
        leaving = trio.current_time()
    assert trio.current_time() - leaving < 1
