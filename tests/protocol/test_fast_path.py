"""The request fast path of the parser against the h11 path, byte for byte.

``RequestParser`` (and with it ``HTTP11Protocol``) parses plain requests (origin-form target, HTTP/1.0 or 1.1, no
Transfer-Encoding, Expect or Upgrade, the head whole in the buffer) itself and hands
everything else to h11. The fast path may only *accept*: for any bytes, split into
any pieces, a protocol with the fast path must give exactly the trace a protocol
with ``fast_path=False`` (h11 for every request) gives:

- every event (heads with their headers, body chunks, ends, signals);
- every error, with its status and message, at the same step;
- ``request_complete``, ``has_buffered_data``, ``expects_continue``, the bytes
  of a response to each request (framing and ``connection`` field depend on the
  request) and its keep-alive decision, and what ``start_next_cycle`` returns,
  request after request (pipelining, EOF).

The generated heads mix plain requests with everything the fast path must refuse
(obs-fold, bare LF, bare CR, NUL, bad Content-Length forms, duplicate Host, chunked,
Expect, Upgrade, CONNECT, absolute and asterisk forms, other versions, oversized
heads and targets). The test also counts the h11 connections made, so that the
comparison cannot pass by the fast path declining everything: plain requests must
need none.
"""

from __future__ import annotations

import pytest
from _h11count import counting_h11
from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from trioserve import RemoteProtocolError
from trioserve.protocol._events import BodyChunk, RequestEnd, RequestHead, Signal
from trioserve.protocol._http11 import HTTP11Protocol
from trioserve.protocol._http11_policy import RequestLimits

LIMITS = RequestLimits(max_head_size=300, max_target_length=120, max_header_count=6)
SMALL_BODY = RequestLimits(max_head_size=300, max_body_size=8)


def trace(
    pieces: list[bytes], eof: bool, *, fast_path: bool, limits: RequestLimits
) -> list[object]:
    """Feed ``pieces`` (then EOF) and act as the server would: after each complete
    request send a small response and start the next cycle. Return what was seen."""
    proto = HTTP11Protocol(limits, fast_path=fast_path)
    seen: list[object] = []
    inputs = [*pieces, b""] if eof else list(pieces)

    def pull() -> bool:
        """Pull events until none is ready; return False once the connection ends."""
        while True:
            try:
                ev = proto.next_event()
            except RemoteProtocolError as exc:
                seen.append(("error", exc.status_hint, str(exc)))
                return False
            seen.append(ev)
            if isinstance(ev, RequestHead):
                seen.append(("continue", proto.expects_continue))
            elif isinstance(ev, RequestEnd) or ev is Signal.PAUSED:
                seen.append(("complete", proto.request_complete))
                # Every other response has no Content-Length, so its framing (and
                # the keep-alive decision) depends on the request's version too.
                framing = [(b"content-length", b"2")] if len(seen) % 2 else []
                seen.append(
                    proto.response_head(200, framing)
                    + proto.response_body(b"ok")
                    + proto.response_end()
                )
                seen.append(("keep-alive", proto.keep_alive))
                seen.append(("buffered", proto.has_buffered_data))
                again = proto.start_next_cycle()
                seen.append(("next", again))
                if not again:
                    return False
            elif isinstance(ev, Signal):
                return ev is Signal.NEED_DATA

    for data in inputs:
        try:
            proto.receive_data(data)
        except RemoteProtocolError as exc:
            seen.append(("receive-error", exc.status_hint, str(exc)))
            break
        if not pull():
            break
    return seen


def assert_same(pieces: list[bytes], eof: bool, limits: RequestLimits = LIMITS) -> int:
    """Both paths agree; return how many h11 connections the fast path needed."""
    with counting_h11() as made:
        fast = trace(pieces, eof, fast_path=True, limits=limits)
    slow = trace(pieces, eof, fast_path=False, limits=limits)
    assert fast == slow
    return made[0]


# -- the generator --------------------------------------------------------------

# Plain choices are repeated, so that about half the generated requests are plain
# ones the fast path takes, and the rest differ from one in one or two places.
METHODS = [b"GET", b"HEAD", b"POST"] * 4 + [b"OPTIONS", b"CONNECT", b"G@T", b"get"]
TARGETS = [b"/", b"/a/b?c=d&e"] * 6 + [
    b"/",
    b"/a/b?c=d&e",
    b"/%7E~!$&'()*+,;=:@",
    b"*",
    b"http://example/x",
    b"example:80",
    b"/" + b"x" * 130,
    b"/a b",
    b"/\xc3\xa9",
    b"/\x7f",
    b"",
]
VERSIONS = [b"HTTP/1.1"] * 12 + [
    b"HTTP/1.0",
    b"HTTP/2.0",
    b"HTTP/0.9",
    b"HTTP/1.2",
    b"http/1.1",
    b"HTTP/1.1 ",
]
NAMES = [
    b"Host",
    b"host",
    b"HOST",
    b"Content-Length",
    b"content-length",
    b"Connection",
    b"Transfer-Encoding",
    b"Expect",
    b"Upgrade",
    b"X-Thing",
    b"Bad Name",
    b"",
    b"X\x00",
    b" Folded",
]
VALUES = [
    b"",
    b"x",
    b" x ",
    b"\tx\t",
    b"a  b",
    b"close",
    b"Keep-Alive, CLOSE",
    b"keep-alive",
    b"chunked",
    b"gzip, chunked",
    b"100-continue",
    b"websocket",
    b"0",
    b"3",
    b"5",
    b"05",
    b"3,3",
    b"3, 5",
    b"-1",
    b"+3",
    b"9" * 21,
    b"\x80\xff",
    b"a\x00b",
    b"a\rb",
    b"a\x0bb",
]
LINE_ENDS = [b"\r\n"] * 16 + [b"\n", b"\r\r\n"]
PLAIN_FIELDS = [
    b"X-Thing: a b",
    b"Content-Length: 3",
    b"Content-Length: 0",
    b"Connection: keep-alive",
    b"Connection: close",
    b"content-length:5",
    b"Content-Length: 12",
    b"Accept: */*",
    b"Connection: Keep-Alive, Close",
    b"X-Forwarded-For: 192.0.2.1",
    b"forwarded: for=192.0.2.1",
]

header_line = st.one_of(
    st.sampled_from(PLAIN_FIELDS),
    st.sampled_from(PLAIN_FIELDS),
    st.sampled_from(PLAIN_FIELDS),
    st.tuples(st.sampled_from(NAMES), st.sampled_from(VALUES)).map(lambda f: f[0] + b":" + f[1]),
    st.sampled_from([b"no colon", b" continued", b"X: " + b"v" * 200]),
)


@st.composite
def request(draw: st.DrawFn) -> bytes:
    if draw(st.booleans()):
        # A plain request, which the fast path must take.
        line = b"%s %s %s" % (
            draw(st.sampled_from([b"GET", b"HEAD", b"POST", b"DELETE"])),
            draw(st.sampled_from([b"/", b"/a/b?c=d&e", b"/%7E~!$&'()*+,;=:@", b"/" + b"x" * 130])),
            draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.0"])),
        )
        fields = draw(st.lists(st.sampled_from(PLAIN_FIELDS), max_size=4, unique=True))
        fields.insert(draw(st.integers(0, len(fields))), b"Host: example")
        end = b"\r\n"
        prefix = b""
    else:
        line = b" ".join(
            [
                draw(st.sampled_from(METHODS)),
                draw(st.sampled_from(TARGETS)),
                draw(st.sampled_from(VERSIONS)),
            ]
        )
        fields = draw(st.lists(header_line, max_size=6))
        host = draw(st.sampled_from([[b"Host: example"]] * 8 + [[], [b"Host: a", b"host: b"]]))
        fields[draw(st.integers(0, len(fields))) : 0] = host
        end = draw(st.sampled_from(LINE_ENDS))
        prefix = draw(st.sampled_from([b""] * 16 + [b"\r\n", b" "]))
    body = draw(st.binary(max_size=12))
    return prefix + line + end + b"".join(f + end for f in fields) + end + body


@st.composite
def stream(draw: st.DrawFn) -> tuple[list[bytes], bool]:
    data = b"".join(draw(st.lists(request(), min_size=1, max_size=3)))
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=3)))
    pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    return [p for p in pieces if p], draw(st.booleans())


@settings(max_examples=1500, deadline=None)
@given(stream())
@example(([b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"], True))
def test_fast_path_gives_the_same_trace_as_h11(case: tuple[list[bytes], bool]) -> None:
    pieces, eof = case
    made = assert_same(pieces, eof)
    heads = sum(
        isinstance(e, RequestHead) for e in trace(pieces, eof, fast_path=False, limits=LIMITS)
    )
    event("some heads on the fast path" if made < heads else "every head through h11")


@settings(max_examples=300, deadline=None)
@given(stream())
def test_fast_path_agrees_under_a_body_size_limit(case: tuple[list[bytes], bool]) -> None:
    pieces, eof = case
    assert_same(pieces, eof, SMALL_BODY)


# -- which requests take which path ---------------------------------------------

PLAIN = [
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /x?y HTTP/1.0\r\n\r\n",
    b"HEAD / HTTP/1.1\r\nhost:a\r\nConnection: close\r\n\r\n",
    b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nX-Y: \t a b \r\n\r\nabc",
    b"PUT /p HTTP/1.1\r\nHost: a\r\ncontent-length: 0\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-Proto: https\r\n\r\n",
]


@pytest.mark.parametrize("data", PLAIN)
def test_plain_requests_need_no_h11(data: bytes) -> None:
    assert assert_same([data], eof=False) == 0
    # Pipelined behind each other, and then closed: still none.
    assert assert_same([data * 3], eof=True) == 0


NOT_PLAIN = [
    b"GET / HTTP/1.1\r\nHost: a\r\n",  # incomplete
    b"GET / HTTP/1.1\nHost: a\n\n",  # bare LF
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
    b"CONNECT /x HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.1\r\n\r\n",  # no Host
    b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 1\r\n\r\nx",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
    b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",  # obs-fold
    b"GET / HTTP/2.0\r\nHost: a\r\n\r\n",
    b"GET http://a/ HTTP/1.1\r\nHost: a\r\nForwarded: proto=https\r\n\r\n",
]


@pytest.mark.parametrize("data", NOT_PLAIN)
def test_other_requests_go_to_h11_with_the_same_result(data: bytes) -> None:
    assert assert_same([data], eof=False) == 1


def test_a_head_over_the_size_limit_goes_to_h11_and_gets_431() -> None:
    data = b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"v" * 400 + b"\r\n\r\n"
    assert assert_same([data], eof=False) == 1
    seen = trace([data], False, fast_path=True, limits=LIMITS)
    assert seen[-1] == ("error", 431, "Request head too large")


def test_eof_inside_a_plain_body_is_the_error_h11_gives() -> None:
    data = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nab"
    assert assert_same([data], eof=True) == 0
    seen = trace([data], True, fast_path=True, limits=LIMITS)
    assert seen[-1] == (
        "error",
        400,
        "peer closed connection without sending complete message body "
        "(received 2 bytes, expected 5)",
    )


def test_bytes_after_a_closing_plain_request_are_an_error_as_with_h11() -> None:
    """A request with ``Connection: close`` is the last; h11 refuses more bytes."""
    proto = HTTP11Protocol(LIMITS)
    proto.receive_data(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\nGET")
    assert isinstance(proto.next_event(), RequestHead)
    assert proto.next_event() == RequestEnd()
    with pytest.raises(RemoteProtocolError, match="Got data when expecting EOF"):
        proto.next_event()


def test_a_plain_body_is_handed_over_as_it_arrives() -> None:
    proto = HTTP11Protocol(LIMITS)
    proto.receive_data(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\n\r\nab")
    assert isinstance(proto.next_event(), RequestHead)
    assert proto.next_event() == BodyChunk(b"ab")
    assert proto.next_event() is Signal.NEED_DATA
    assert not proto.request_complete
    proto.receive_data(b"cdefGET / HTTP/1.1\r\n")
    assert proto.next_event() == BodyChunk(b"cdef")
    assert proto.next_event() == RequestEnd()
    assert proto.request_complete
    assert proto.has_buffered_data
    assert proto.next_event() is Signal.PAUSED
