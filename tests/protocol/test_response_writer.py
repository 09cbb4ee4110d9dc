"""The response side of ``HTTP11Protocol`` against h11's, case by case.

trioserve writes responses itself (h11 parses the requests); see the module
docstring of ``trioserve/protocol/_http11_writer.py`` for why. These tests hold that
writer to h11's own server-side behaviour: for every combination of request
method, HTTP version, request ``Connection`` header, status, app framing headers,
app ``Connection`` header, server-side close and body chunks, the same request is
given to a real ``h11.Connection(h11.SERVER)`` and to ``HTTP11Protocol``, the same
response is sent through both, and the results must agree:

- the status line;
- the header fields, compared as a multiset with lower-cased names and the
  ``connection`` tokens merged (h11 writes one field per token, trioserve one field).
  One difference is deliberate: when an app's ``connection: keep-alive`` meets a
  response that closes the connection for another reason, h11 sends both
  ``keep-alive`` and ``close``; trioserve sends only ``close``;
- the body bytes on the wire, byte for byte (chunk framing included);
- whether the connection may carry another request;
- whether the response is refused, and at which step (a body on a 204, too much
  or too little data for a Content-Length, bad framing headers).

Every response trioserve writes is also parsed back by an ``h11.Connection(
h11.CLIENT)``, which must see the same status, headers and body the app sent.
"""

from __future__ import annotations

import http
import itertools
from collections import Counter

import h11
import pytest

from trioserve import LocalProtocolError
from trioserve.protocol._http11 import HTTP11Protocol

Header = tuple[bytes, bytes]

METHODS = [b"GET", b"HEAD", b"POST"]
VERSIONS = [b"1.0", b"1.1"]
REQUEST_CONNECTION = [None, b"close", b"keep-alive"]
STATUSES = [200, 204, 304, 404]
FRAMING = ["none", "content-length", "chunked", "both", "wrong-length"]
APP_CONNECTION = [None, b"close", b"keep-alive", b"Upgrade, Keep-Alive"]
CLOSE = [False, True]
BODIES: list[list[bytes]] = [[], [b"hello"], [b"he", b"", b"llo"]]


def request_bytes(method: bytes, version: bytes, connection: bytes | None) -> bytes:
    lines = [b"%s / HTTP/%s" % (method, version), b"Host: example"]
    if method == b"POST":
        lines.append(b"Content-Length: 0")
    if connection is not None:
        lines.append(b"Connection: " + connection)
    return b"\r\n".join(lines) + b"\r\n\r\n"


def app_headers(framing: str, body: list[bytes], connection: bytes | None) -> list[Header]:
    headers: list[Header] = [(b"content-type", b"text/plain"), (b"x-custom", b"a b\tc")]
    length = b"%d" % len(b"".join(body))
    if framing in ("content-length", "both"):
        headers.append((b"content-length", length))
    if framing == "wrong-length":
        headers.append((b"content-length", b"%d" % (len(b"".join(body)) + 1)))
    if framing in ("chunked", "both"):
        headers.append((b"transfer-encoding", b"chunked"))
    if connection is not None:
        headers.append((b"connection", connection))
    return headers


Outcome = tuple[str, bytes, bool]  # (where it failed or "ok", bytes written, keep-alive)


def through_h11(
    request: bytes, status: int, headers: list[Header], body: list[bytes], close: bool
) -> Outcome:
    """The response as h11 itself would write it, as trioserve did before it wrote
    responses itself: ``close`` added a ``connection: close`` field, and a body sent
    in answer to HEAD was dropped before h11 saw it."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(request)
    while not isinstance(conn.next_event(), h11.EndOfMessage):
        pass
    if close:
        headers = [*headers, (b"connection", b"close")]
    out = b""
    step = "head"
    try:
        out += (
            conn.send(
                h11.Response(
                    status_code=status, headers=headers, reason=http.HTTPStatus(status).phrase
                )
            )
            or b""
        )
        step = "body"
        for chunk in body:
            if chunk and not request.startswith(b"HEAD "):
                out += conn.send(h11.Data(data=chunk)) or b""
        step = "end"
        out += conn.send(h11.EndOfMessage()) or b""
    except h11.LocalProtocolError:
        return step, out, False
    return "ok", out, conn.our_state is h11.DONE


def through_trioserve(
    request: bytes, status: int, headers: list[Header], body: list[bytes], close: bool
) -> Outcome:
    proto = HTTP11Protocol()
    proto.receive_data(request)
    proto.next_event()
    out = b""
    step = "head"
    try:
        out += proto.response_head(status, list(headers), close=close)
        step = "body"
        for chunk in body:
            out += proto.response_body(chunk)
        step = "end"
        out += proto.response_end()
    except LocalProtocolError:
        return step, out, False
    return "ok", out, proto.keep_alive


def split_response(data: bytes) -> tuple[bytes, Counter[Header], bytes]:
    head, sep, body = data.partition(b"\r\n\r\n")
    assert sep, data
    status_line, *lines = head.split(b"\r\n")
    fields: Counter[Header] = Counter()
    connection: set[bytes] = set()
    for line in lines:
        name, _, value = line.partition(b": ")
        name = name.lower()
        if name == b"connection":
            connection.update(token.strip().lower() for token in value.split(b","))
        else:
            fields[(name, value)] += 1
    if b"close" in connection:
        # With "close", a "keep-alive" token means nothing (see the module docstring).
        connection.discard(b"keep-alive")
    for token in connection:
        fields[(b"connection", token)] += 1
    return status_line, fields, body


@pytest.mark.parametrize("status", STATUSES)
@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("method", METHODS)
def test_response_agrees_with_h11(method: bytes, version: bytes, status: int) -> None:
    cases = itertools.product(REQUEST_CONNECTION, FRAMING, APP_CONNECTION, CLOSE, BODIES)
    for request_connection, framing, app_connection, close, body in cases:
        request = request_bytes(method, version, request_connection)
        headers = app_headers(framing, body, app_connection)
        expected = through_h11(request, status, headers, body, close)
        actual = through_trioserve(request, status, headers, body, close)
        context = (request, status, headers, body, close)
        assert actual[0] == expected[0], context
        assert actual[2] == expected[2], context
        if expected[1]:
            assert split_response(actual[1]) == split_response(expected[1]), context
        if actual[0] == "ok":
            check_with_h11_client(method, actual[1], status, headers, body)


def check_with_h11_client(
    method: bytes, data: bytes, status: int, headers: list[Header], body: list[bytes]
) -> None:
    """An HTTP client (h11's) reads back what the app sent. (h11 sends only
    HTTP/1.1 requests; the framing of a response to HTTP/1.0 reads the same.)"""
    client = h11.Connection(h11.CLIENT)
    client.send(
        h11.Request(
            method=method,
            target="/",
            headers=[
                ("host", "example"),
                *([("content-length", "0")] if method == b"POST" else []),
            ],
        )
    )
    client.send(h11.EndOfMessage())
    client.receive_data(data)
    client.receive_data(b"")  # the server closes after an HTTP/1.0 close-delimited body
    response = client.next_event()
    assert isinstance(response, h11.Response)
    assert response.status_code == status
    sent = {name for name, _ in headers}
    assert {name for name, _ in response.headers if name in sent} <= sent
    received = b""
    while True:
        event = client.next_event()
        if isinstance(event, h11.Data):
            received += bytes(event.data)
        else:
            assert isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)), event
            break
    expected_body = b"" if method == b"HEAD" or status in (204, 304) else b"".join(body)
    assert received == expected_body


@pytest.mark.parametrize(
    ("name", "value"),
    [
        (b"x-bad", b" leading-space"),
        (b"x-bad", b"trailing-space "),
        (b"x-bad", b"a\rb"),
        (b"x-bad", b"a\x0bb"),
        (b"x-b\x80d", b"v"),
        (b"content-length", b"-1"),
        (b"content-length", b"5, 6"),
        (b"content-length", b"1" * 21),
        (b"transfer-encoding", b"gzip"),
        (b"transfer-encoding", b"gzip, chunked"),
    ],
)
def test_header_fields_h11_refuses_are_refused(name: bytes, value: bytes) -> None:
    request = request_bytes(b"GET", b"1.1", None)
    headers = [(name, value)]
    assert through_h11(request, 200, headers, [], False)[0] == "head"
    assert through_trioserve(request, 200, headers, [], False)[0] == "head"


@pytest.mark.parametrize(
    "headers",
    [
        [(b"content-length", b"5"), (b"content-length", b"5")],
        [(b"content-length", b"5, 5")],
        [(b"transfer-encoding", b"Chunked")],
        [(b"x-empty", b"")],
        [(b"x-obs-text", b"caf\xe9")],
    ],
)
def test_header_fields_h11_accepts_are_sent_alike(headers: list[Header]) -> None:
    request = request_bytes(b"GET", b"1.1", None)
    body = [b"hello"]
    expected = through_h11(request, 200, headers, body, False)
    actual = through_trioserve(request, 200, headers, body, False)
    assert expected[0] == actual[0] == "ok"
    assert split_response(actual[1]) == split_response(expected[1])
    assert actual[2] == expected[2]


def test_pipelined_request_after_a_response_is_parsed_by_a_fresh_parser() -> None:
    """The next request, already buffered, is parsed once the response is out; a
    request that asked to close is followed by nothing."""
    proto = HTTP11Protocol()
    proto.receive_data(
        b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        b"GET /3 HTTP/1.1\r\nHost: a\r\n\r\n"
    )
    targets = []
    while True:
        head = proto.next_event()
        targets.append(head.target)  # type: ignore[union-attr]
        proto.next_event()  # the end of the request
        proto.response_head(200, [(b"content-length", b"0")])
        proto.response_end()
        if not proto.start_next_cycle():
            break
    assert targets == [b"/1", b"/2"]
    assert not proto.keep_alive


@pytest.mark.parametrize(
    "offer",
    [
        b"Upgrade: websocket\r\nConnection: Upgrade\r\n",
        b"Upgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\n",
    ],
)
def test_declined_upgrade_keeps_the_connection_for_the_next_request(offer: bytes) -> None:
    """h11 holds a request that offers an Upgrade until the response declines it;
    trioserve never accepts one (no 101), so the connection goes on as usual."""
    proto = HTTP11Protocol()
    proto.receive_data(
        b"GET /1 HTTP/1.1\r\nHost: a\r\n" + offer + b"\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n"
    )
    assert proto.next_event().target == b"/1"  # type: ignore[union-attr]
    proto.next_event()
    proto.response_head(426, [(b"content-length", b"0")])
    proto.response_end()
    assert proto.request_complete
    assert proto.start_next_cycle()
    assert proto.next_event().target == b"/2"  # type: ignore[union-attr]
