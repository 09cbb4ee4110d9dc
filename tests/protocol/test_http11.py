"""Pure, synchronous tests of ``trioserve.protocol._http11``: ``HTTP11Protocol`` and
``error_body``.

Bytes in, events out; response parts in, exact bytes out. Covers request parsing
(heads, bodies, pipelining, EOF), h11 errors translated into trioserve's
``RemoteProtocolError`` with the status to answer (400, 431, 501), the request head
size limit however the bytes arrive, byte-exact responses (lower-case framing
headers, reason phrases), HEAD, HTTP/1.0 framing, content-length enforcement,
``100 Continue``, and ``error_response`` in every state (including after an app's
head was refused, and ``b""`` once a head is out). ``test_response_writer.py``
checks the response side against h11's own output.
"""

from __future__ import annotations

import h11
import pytest

from trioserve import LocalProtocolError, RemoteProtocolError
from trioserve.protocol._events import BodyChunk, RequestEnd, RequestHead, Signal
from trioserve.protocol._http11 import HTTP11Protocol
from trioserve.protocol._http11_policy import RequestLimits
from trioserve.protocol._http11_writer import error_body

LIMIT = 16 * 1024


def events(proto: HTTP11Protocol) -> list[object]:
    """Pull events until the protocol needs data, is paused or saw the peer close."""
    out: list[object] = []
    while True:
        event = proto.next_event()
        out.append(event)
        if isinstance(event, Signal):
            return out


def fed(data: bytes, limit: int = LIMIT) -> HTTP11Protocol:
    proto = HTTP11Protocol(RequestLimits(max_head_size=limit))
    proto.receive_data(data)
    return proto


def error_status(proto: HTTP11Protocol) -> int:
    with pytest.raises(RemoteProtocolError) as info:
        events(proto)
    # trioserve's own exception, not h11's leaking through.
    assert not isinstance(info.value, h11.ProtocolError)
    return info.value.status_hint


GET = b"GET /path?q=1 HTTP/1.1\r\nHost: example\r\nX-Mixed-Case: Value\r\n\r\n"


# ---------------------------------------------------------------- receiving


def test_get_request_gives_head_then_end_then_paused() -> None:
    proto = fed(GET)
    assert events(proto) == [
        RequestHead(
            method=b"GET",
            target=b"/path?q=1",
            http_version=b"1.1",
            headers=[(b"host", b"example"), (b"x-mixed-case", b"Value")],
        ),
        RequestEnd(),
        Signal.NEED_DATA,
    ]
    assert proto.request_complete


def test_no_data_gives_need_data() -> None:
    proto = HTTP11Protocol(RequestLimits(max_head_size=LIMIT))
    assert proto.next_event() is Signal.NEED_DATA
    proto.receive_data(b"GET / HT")
    assert proto.next_event() is Signal.NEED_DATA


def test_post_body_comes_as_chunks_then_end() -> None:
    proto = fed(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhello")
    head, chunk, need = events(proto)
    assert isinstance(head, RequestHead)
    assert head.method == b"POST"
    assert chunk == BodyChunk(b"hello")
    assert need is Signal.NEED_DATA
    assert not proto.request_complete
    proto.receive_data(b"world")
    assert events(proto) == [BodyChunk(b"world"), RequestEnd(), Signal.NEED_DATA]
    assert proto.request_complete


def test_chunked_request_body() -> None:
    proto = fed(
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )
    out = events(proto)
    assert b"".join(e.data for e in out if isinstance(e, BodyChunk)) == b"hello world"
    assert out[-2:] == [RequestEnd(), Signal.NEED_DATA]


def test_body_chunk_data_is_bytes() -> None:
    proto = fed(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
    chunk = events(proto)[1]
    assert isinstance(chunk, BodyChunk)
    assert type(chunk.data) is bytes


def test_request_sent_one_byte_at_a_time() -> None:
    proto = HTTP11Protocol(RequestLimits(max_head_size=LIMIT))
    seen: list[object] = []
    for byte in GET:
        proto.receive_data(bytes([byte]))
        seen.extend(e for e in events(proto) if not isinstance(e, Signal))
    assert [type(e) for e in seen] == [RequestHead, RequestEnd]


def test_eof_between_requests_gives_peer_closed() -> None:
    proto = HTTP11Protocol(RequestLimits(max_head_size=LIMIT))
    proto.receive_data(b"")
    assert proto.next_event() is Signal.PEER_CLOSED


def test_data_after_eof_is_a_remote_protocol_error() -> None:
    proto = HTTP11Protocol(RequestLimits(max_head_size=LIMIT))
    proto.receive_data(b"")
    with pytest.raises(RemoteProtocolError):
        proto.receive_data(b"GET / HTTP/1.1\r\n")


def test_eof_inside_body_is_a_remote_protocol_error() -> None:
    proto = fed(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
    events(proto)
    proto.receive_data(b"")
    assert error_status(proto) == 400


def test_pipelined_request_parsed_only_after_response_completes() -> None:
    proto = fed(GET + b"GET /second HTTP/1.1\r\nHost: x\r\n\r\n")
    assert [type(e) for e in events(proto)] == [RequestHead, RequestEnd, Signal]
    assert proto.has_buffered_data
    assert not proto.start_next_cycle()  # the response is not out yet
    assert proto.next_event() is Signal.PAUSED
    proto.response_head(200, [(b"content-length", b"0")])
    proto.response_end()
    assert proto.keep_alive
    assert proto.start_next_cycle()
    head = proto.next_event()
    assert isinstance(head, RequestHead)
    assert head.target == b"/second"


def test_connection_close_request_ends_keep_alive() -> None:
    """Seed 001: the I/O layer must not parse past a ``Connection: close``
    request; h11 would call the pipelined bytes an error."""
    proto = fed(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET /2 HTTP/1.1\r\n\r\n")
    assert isinstance(proto.next_event(), RequestHead)
    assert proto.next_event() == RequestEnd()
    assert proto.request_complete
    head = proto.response_head(200, [(b"content-length", b"0")])
    assert head == b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    proto.response_end()
    assert not proto.keep_alive
    assert not proto.start_next_cycle()


# ------------------------------------------------------ malformed requests


@pytest.mark.parametrize(
    "data",
    [
        b"\x16\x03\x01\x02\x00garbage\r\n\r\n",
        b"G?T / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Bad: a\rb\r\n\r\n",
        b"GET / HTTP/1.1\r\n X-Fold-First: a\r\nHost: x\r\n\r\n",
    ],
    ids=[
        "garbage",
        "bad-method",
        "space-in-target",
        "bad-version",
        "no-host",
        "duplicate-content-length",
        "bare-cr",
        "leading-fold",
    ],
)
def test_malformed_request_is_400(data: bytes) -> None:
    assert error_status(fed(data)) == 400


def test_unknown_transfer_coding_before_chunked_is_501() -> None:
    proto = fed(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n")
    assert error_status(proto) == 501


def test_transfer_coding_list_not_ending_in_chunked_is_400() -> None:
    # RFC 9112 6.3: the body length cannot be determined; a server MUST answer 400.
    proto = fed(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n")
    assert error_status(proto) == 400


def test_content_length_with_transfer_encoding_is_400_not_smuggled() -> None:
    # h11 alone lets Transfer-Encoding win and serves the request.
    proto = fed(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n0\r\n\r\n"
    )
    assert error_status(proto) == 400


def big_head(filler: int, target: bytes = b"/") -> bytes:
    return b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * filler + b"\r\n\r\n"


def test_complete_oversized_head_in_one_piece_is_431() -> None:
    """h11 limits only incomplete heads: a naive wrapper accepts this one."""
    assert error_status(fed(big_head(300), limit=200)) == 431


def test_oversized_head_dribbled_is_431() -> None:
    proto = HTTP11Protocol(RequestLimits(max_head_size=200))
    data = big_head(300)
    status = None
    for i in range(0, len(data), 10):
        proto.receive_data(data[i : i + 10])
        try:
            events(proto)
        except RemoteProtocolError as exc:
            status = exc.status_hint
            break
    assert status == 431


def test_head_just_under_limit_is_accepted() -> None:
    filler = 200 - len(big_head(0)) - 10
    head = events(fed(big_head(filler), limit=200))[0]
    assert isinstance(head, RequestHead)


def test_large_body_after_small_head_is_not_counted_as_head() -> None:
    data = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + b"b" * 1000
    out = events(fed(data + b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n", limit=200))
    assert [type(e) for e in out] == [RequestHead, BodyChunk, RequestEnd, Signal]


def test_pipelined_oversized_head_in_same_piece_is_431() -> None:
    """The limit holds "however the bytes arrive": a big head that comes in the same
    read as a small request before it must be refused like any other."""
    proto = fed(GET + big_head(3000, b"/big"), limit=1000)
    assert [type(e) for e in events(proto)] == [RequestHead, RequestEnd, Signal]
    proto.response_head(200, [(b"content-length", b"0")])
    proto.response_end()
    assert proto.start_next_cycle()
    assert error_status(proto) == 431


def test_whitespace_padded_head_in_one_piece_is_431() -> None:
    """Optional whitespace around a value is part of the head's size; the same head
    dribbled is refused by h11, so one piece must be refused as well."""
    data = b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: " + b" " * 3000 + b"v\r\n\r\n"
    assert error_status(fed(data, limit=1000)) == 431


# ---------------------------------------------------------------- sending


def test_response_head_is_byte_exact_with_reason_phrase() -> None:
    proto = fed(GET)
    events(proto)
    head = proto.response_head(200, [(b"content-type", b"text/plain"), (b"content-length", b"5")])
    assert head == b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\n\r\n"
    assert proto.response_body(b"hello") == b"hello"
    assert proto.response_end() == b""
    assert proto.keep_alive


@pytest.mark.parametrize(
    ("status", "line"),
    [
        (201, b"HTTP/1.1 201 Created\r\n"),
        (404, b"HTTP/1.1 404 Not Found\r\n"),
        (418, b"HTTP/1.1 418 I'm a Teapot\r\n"),
        (503, b"HTTP/1.1 503 Service Unavailable\r\n"),
    ],
)
def test_reason_phrase_filled_in(status: int, line: bytes) -> None:
    proto = fed(GET)
    events(proto)
    assert proto.response_head(status, [(b"content-length", b"0")]).startswith(line)


def test_chunked_response_has_lowercase_transfer_encoding() -> None:
    """h11 would write ``Transfer-Encoding: chunked``."""
    proto = fed(GET)
    events(proto)
    head = proto.response_head(200, [(b"content-type", b"text/plain")])
    assert head == (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    assert proto.response_body(b"hello") == b"5\r\nhello\r\n"
    assert proto.response_body(b"") == b""  # an empty chunk would end the body
    assert proto.response_end() == b"0\r\n\r\n"
    assert proto.keep_alive


def test_close_adds_lowercase_connection_close() -> None:
    """The framing headers come after the app's, ``connection`` last."""
    proto = fed(GET)
    events(proto)
    head = proto.response_head(200, [], close=True)
    assert head == (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n")
    proto.response_end()
    assert not proto.keep_alive


def test_app_connection_close_header_is_sent_once_lowercase() -> None:
    proto = fed(GET)
    events(proto)
    head = proto.response_head(200, [(b"connection", b"close"), (b"content-length", b"0")])
    assert head.count(b"onnection") == 1
    assert b"\r\nconnection: close\r\n" in head
    proto.response_end()
    assert not proto.keep_alive
    assert not proto.start_next_cycle()


def test_http10_response_is_close_delimited() -> None:
    proto = fed(b"GET / HTTP/1.0\r\n\r\n")
    head = events(proto)[0]
    assert isinstance(head, RequestHead)
    assert head.http_version == b"1.0"
    assert proto.response_head(200, []) == b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n"
    assert proto.response_body(b"hello") == b"hello"
    assert proto.response_end() == b""
    assert not proto.keep_alive


def test_head_response_keeps_content_length_and_drops_body() -> None:
    proto = fed(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
    events(proto)
    head = proto.response_head(200, [(b"content-length", b"5")])
    assert head == b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"
    assert proto.response_body(b"hello") == b""
    assert proto.response_end() == b""
    assert proto.keep_alive
    assert proto.start_next_cycle()


def test_head_response_of_streaming_app_keeps_transfer_encoding() -> None:
    proto = fed(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
    events(proto)
    head = proto.response_head(200, [])
    assert head == b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
    assert proto.response_body(b"part one") == b""
    assert proto.response_body(b"part two") == b""
    assert proto.response_end() == b""
    assert proto.keep_alive


def test_head_flag_reset_for_next_request() -> None:
    proto = fed(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
    events(proto)
    proto.response_head(200, [(b"content-length", b"2")])
    proto.response_end()
    assert proto.start_next_cycle()
    events(proto)
    proto.response_head(200, [(b"content-length", b"2")])
    assert proto.response_body(b"ok") == b"ok"


def test_body_longer_than_content_length_raises_local_protocol_error() -> None:
    proto = fed(GET)
    events(proto)
    proto.response_head(200, [(b"content-length", b"3")])
    with pytest.raises(LocalProtocolError):
        proto.response_body(b"hello")


def test_body_shorter_than_content_length_raises_at_end() -> None:
    proto = fed(GET)
    events(proto)
    proto.response_head(200, [(b"content-length", b"10")])
    assert proto.response_body(b"hello") == b"hello"
    with pytest.raises(LocalProtocolError):
        proto.response_end()


@pytest.mark.parametrize(
    "header",
    [
        (b"x-bad", b"a\r\nx-injected: 1"),
        (b"x-bad", b"a\nb"),
        (b"x-bad", b"a\x00b"),
        (b"bad name", b"v"),
        (b"bad:name", b"v"),
        (b"", b"v"),
    ],
    ids=["crlf-value", "lf-value", "nul-value", "space-name", "colon-name", "empty-name"],
)
def test_invalid_response_header_raises_local_protocol_error(header: tuple[bytes, bytes]) -> None:
    proto = fed(GET)
    events(proto)
    with pytest.raises(LocalProtocolError) as info:
        proto.response_head(200, [header])
    assert isinstance(info.value, RuntimeError)
    assert "Invalid response head" in str(info.value)


def test_header_value_with_htab_and_visible_characters_is_sent() -> None:
    value = b"a\tb !~\"'(){}"
    proto = fed(GET)
    events(proto)
    head = proto.response_head(200, [(b"x-value", value), (b"content-length", b"0")])
    assert b"\r\nx-value: " + value + b"\r\n" in head


# ------------------------------------------------------------ 100-continue


def test_expect_100_continue() -> None:
    proto = fed(b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
    events(proto)
    assert proto.expects_continue
    assert proto.informational_continue() == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert not proto.expects_continue
    proto.receive_data(b"hello")
    assert events(proto) == [BodyChunk(b"hello"), RequestEnd(), Signal.NEED_DATA]


def test_no_expect_header_means_no_continue_expected() -> None:
    proto = fed(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n")
    events(proto)
    assert not proto.expects_continue


def test_final_response_ends_the_wait_for_100_continue() -> None:
    proto = fed(b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
    events(proto)
    proto.response_head(200, [(b"content-length", b"0")])
    assert not proto.expects_continue


# ----------------------------------------------------------- error_response


def test_error_response_is_byte_exact() -> None:
    proto = fed(b"garbage\r\n\r\n")
    assert error_status(proto) == 400
    data = proto.error_response(400, [(b"server", b"trioserve")])
    assert data == (
        b"HTTP/1.1 400 Bad Request\r\n"
        b"server: trioserve\r\n"
        b"content-type: text/plain; charset=utf-8\r\n"
        b"content-length: 30\r\n"
        b"connection: close\r\n"
        b"\r\n"
        b"Invalid HTTP request received."
    )


def test_error_response_431() -> None:
    proto = fed(big_head(300), limit=200)
    assert error_status(proto) == 431
    assert proto.error_response(431, []) == (
        b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
        b"content-type: text/plain; charset=utf-8\r\n"
        b"content-length: 31\r\n"
        b"connection: close\r\n"
        b"\r\n"
        b"Request Header Fields Too Large"
    )


def test_error_response_after_invalid_app_header_put_h11_in_error() -> None:
    """h11 refuses to send anything once it refused a head; a wrapper that builds
    the 500 through h11 cannot answer at all."""
    proto = fed(GET)
    events(proto)
    with pytest.raises(LocalProtocolError):
        proto.response_head(200, [(b"x-bad", b"a\r\nb")])
    assert proto.error_response(500, []) == (
        b"HTTP/1.1 500 Internal Server Error\r\n"
        b"content-type: text/plain; charset=utf-8\r\n"
        b"content-length: 21\r\n"
        b"connection: close\r\n"
        b"\r\n"
        b"Internal Server Error"
    )


def test_error_response_is_empty_once_a_head_was_sent() -> None:
    proto = fed(GET)
    events(proto)
    proto.response_head(200, [])
    proto.response_body(b"partial")
    assert proto.error_response(500, []) == b""


def test_error_response_only_once() -> None:
    proto = fed(GET)
    events(proto)
    assert proto.error_response(500, []).startswith(b"HTTP/1.1 500 ")
    assert proto.error_response(500, []) == b""


def test_error_response_after_100_continue_is_still_possible() -> None:
    proto = fed(b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
    events(proto)
    proto.informational_continue()
    assert proto.error_response(500, []).startswith(b"HTTP/1.1 500 Internal Server Error\r\n")


def test_error_response_to_head_request_has_no_body() -> None:
    proto = fed(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
    events(proto)
    data = proto.error_response(500, [])
    assert data.endswith(b"content-length: 21\r\nconnection: close\r\n\r\n")


def test_error_response_503() -> None:
    proto = fed(GET)
    events(proto)
    data = proto.error_response(503, [(b"server", b"trioserve")])
    assert data.startswith(b"HTTP/1.1 503 Service Unavailable\r\nserver: trioserve\r\n")
    assert data.endswith(b"\r\n\r\nService Unavailable")


@pytest.mark.parametrize(
    ("status", "text"),
    [
        (400, b"Invalid HTTP request received."),
        (500, b"Internal Server Error"),
        (408, b"Request Timeout"),
        (431, b"Request Header Fields Too Large"),
        (501, b"Not Implemented"),
        (503, b"Service Unavailable"),
        (599, b"Error"),
    ],
)
def test_error_body(status: int, text: bytes) -> None:
    assert error_body(status) == text


# -- response framing rules (h11's, as trioserve relies on them) ---------------------

GET_10 = b"GET / HTTP/1.0\r\n\r\n"


def test_http10_client_gets_a_close_delimited_body_even_if_the_app_asks_for_chunked() -> None:
    proto = fed(GET_10)
    events(proto)
    head = proto.response_head(200, [(b"transfer-encoding", b"chunked")])
    assert head == b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n"
    assert proto.response_body(b"abc") == b"abc"  # no chunk framing for 1.0
    assert proto.response_end() == b""
    assert not proto.keep_alive


def test_chunked_from_the_app_wins_over_its_content_length() -> None:
    proto = fed(GET)
    events(proto)
    head = proto.response_head(200, [(b"content-length", b"3"), (b"transfer-encoding", b"chunked")])
    assert head == b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
    assert proto.response_body(b"abcdef") == b"6\r\nabcdef\r\n"


@pytest.mark.parametrize(
    "headers",
    [
        [(b"content-length", b"2"), (b"content-length", b"3")],
        [(b"content-length", b"-1")],
        [(b"content-length", b"0x10")],
        [(b"transfer-encoding", b"gzip")],
        [(b"bad name", b"v")],
        [(b"", b"v")],
    ],
)
def test_response_headers_that_cannot_be_sent_are_refused(
    headers: list[tuple[bytes, bytes]],
) -> None:
    proto = fed(GET)
    events(proto)
    with pytest.raises(LocalProtocolError):
        proto.response_head(200, headers)
    # Nothing was written, so the client can still be told 500.
    assert proto.error_response(500, []).startswith(b"HTTP/1.1 500 ")


@pytest.mark.parametrize("status", [204, 304])
def test_bodyless_statuses_get_no_framing(status: int) -> None:
    proto = fed(GET)
    events(proto)
    head = proto.response_head(status, [])
    assert b"transfer-encoding" not in head
    assert b"content-length" not in head
    assert proto.response_body(b"") == b""
    assert proto.response_end() == b""
    assert proto.keep_alive


@pytest.mark.parametrize("status", [204, 304])
def test_bodyless_statuses_refuse_a_body(status: int) -> None:
    proto = fed(GET)
    events(proto)
    proto.response_head(status, [])
    with pytest.raises(LocalProtocolError, match="Too much data"):
        proto.response_body(b"x")
