"""Property-based tests (hypothesis) of the HTTP/1.1 engine over the in-memory test
client:

- any valid request (method, percent-escaped path, query, up to ten headers, a body
  framed by Content-Length or chunked) split at any byte boundaries gives the app
  the same scope (method, path, raw_path, query_string, headers) and the same body
  as when it arrives in one piece, and both are what the request says;
- any byte string (arbitrary bytes, HTTP-like garbage after a valid request line,
  valid requests with CR/LF/NUL and other separators inserted or cut short) gets
  well-formed HTTP/1.1 responses, any 4xx/5xx last and with ``connection: close``,
  and a close: at once, or at a deadline when the bytes are an incomplete prefix.
  Nothing escapes the server (an exception would end ``trio.run``), nothing is
  logged at ERROR, nothing hangs past the deadlines (each example is bounded in
  virtual time), the server still answers a fresh GET afterwards, and its graceful
  shutdown finds nothing left to wait for.

Each example is a plain ``trio.run`` with ``MockClock(autojump_threshold=0)``: the
server's timeouts pass in virtual time, so waiting for a deadline costs nothing.
Between the pieces of a split request the test waits until every task is blocked
(``wait_all_tasks_blocked``), so the server really parses each piece on its own
instead of finding them all joined in its buffer.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import unquote

import h11
import trio
import trio.testing
from _helpers import Receive, Scope, Send
from hypothesis import event, given, settings
from hypothesis import strategies as st

from trioserve import Config
from trioserve.testing import TestClient, open_test_client

# -- strategies ------------------------------------------------------------------------

TCHAR = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
# Fields that change framing or connection handling: the test adds its own.
RESERVED = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "expect", "upgrade", "te"}
)
VISIBLE = "".join(chr(c) for c in range(0x21, 0x7F))
PCHAR = "abcxyzABCXYZ0189-._~!$&'()*+,;=:@"
HEX = "0123456789ABCDEFabcdef"

percent_escape = st.tuples(st.sampled_from(HEX), st.sampled_from(HEX)).map(
    lambda t: "%" + "".join(t)
)
segment = st.lists(st.sampled_from(PCHAR) | percent_escape, max_size=8).map("".join)
raw_paths = st.lists(segment, min_size=1, max_size=6).map(lambda s: ("/" + "/".join(s)).encode())
queries = st.none() | st.lists(st.sampled_from(PCHAR + "/?") | percent_escape, max_size=20).map(
    lambda q: "".join(q).encode()
)
header_names = st.text(TCHAR, min_size=1, max_size=16).filter(lambda n: n.lower() not in RESERVED)
header_values = st.text(VISIBLE + " ", max_size=24).map(str.strip)


@dataclass
class Request:
    method: bytes
    raw_path: bytes
    query: bytes | None
    #: The generated fields, as sent (names in any case).
    fields: list[tuple[bytes, bytes]]
    body: bytes
    #: "none", "length" or "chunked"
    framing: str
    #: Sizes of the chunks when chunked (they add up to len(body)).
    chunks: list[int]
    chunk_extension: bool
    trailer: bool

    @property
    def target(self) -> bytes:
        return self.raw_path if self.query is None else self.raw_path + b"?" + self.query

    def head_fields(self) -> list[tuple[bytes, bytes]]:
        fields = [(b"host", b"example.com"), *self.fields]
        if self.framing == "length":
            fields.append((b"content-length", b"%d" % len(self.body)))
        elif self.framing == "chunked":
            fields.append((b"transfer-encoding", b"chunked"))
        fields.append((b"connection", b"close"))
        return fields

    def encode(self) -> bytes:
        head = b"%s %s HTTP/1.1\r\n" % (self.method, self.target)
        head += b"".join(name + b": " + value + b"\r\n" for name, value in self.head_fields())
        if self.framing != "chunked":
            return head + b"\r\n" + self.body
        body = b""
        position = 0
        for size in self.chunks:
            extension = b";ext=1" if self.chunk_extension else b""
            body += b"%x%s\r\n%s\r\n" % (size, extension, self.body[position : position + size])
            position += size
        trailer = b"x-trailer: t\r\n" if self.trailer else b""
        return head + b"\r\n" + body + b"0\r\n" + trailer + b"\r\n"

    def expected(self) -> Observed:
        """What the app must see, worked out from the request itself."""
        headers = [(name.lower(), value) for name, value in self.head_fields()]
        return Observed(
            self.method.decode(),
            unquote(self.raw_path.decode()),
            self.raw_path,
            self.query or b"",
            headers,
            self.body,
        )


@st.composite
def requests(draw: st.DrawFn) -> Request:
    method = draw(st.sampled_from([b"GET", b"POST", b"PUT", b"DELETE", b"PATCH"]))
    fields = draw(
        st.lists(st.tuples(header_names, header_values), max_size=10).map(
            lambda fs: [(n.encode(), v.encode()) for n, v in fs]
        )
    )
    body = draw(st.binary(max_size=300))
    framing = draw(st.sampled_from(["length", "chunked"] + (["none"] if not body else [])))
    chunks: list[int] = []
    if framing == "chunked" and body:
        cuts = (
            draw(st.lists(st.integers(1, len(body) - 1), unique=True, max_size=5))
            if len(body) > 1
            else []
        )
        bounds = [0, *sorted(cuts), len(body)]
        chunks = [b - a for a, b in itertools.pairwise(bounds)]
    return Request(
        method,
        draw(raw_paths),
        draw(queries),
        fields,
        body,
        framing,
        chunks,
        draw(st.booleans()),
        draw(st.booleans()),
    )


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(set(cuts)), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds) if b > a]


# -- the app and the client side ------------------------------------------------------------


@dataclass
class Observed:
    method: str
    path: str
    raw_path: bytes
    query_string: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes


class RecordingApp:
    """Reads the whole body, records what it saw, answers 200 with ``ok``."""

    def __init__(self) -> None:
        self.seen: list[Observed] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        self.seen.append(
            Observed(
                scope["method"],
                scope["path"],
                scope["raw_path"],
                scope["query_string"],
                list(scope["headers"]),
                body,
            )
        )
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
        )
        await send({"type": "http.response.body", "body": b"ok"})


@dataclass
class Reply:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


def parse_replies(raw: bytes) -> list[Reply]:
    """Everything a server sent on one connection up to its close, parsed by an h11
    client: it must be a sequence of well-formed HTTP/1.1 responses and nothing else
    (``100 Continue`` responses are skipped). A close with no response is allowed."""
    conn = h11.Connection(h11.CLIENT)
    conn.receive_data(raw)
    conn.receive_data(b"")
    replies: list[Reply] = []
    while True:
        if conn.trailing_data == (b"", True):
            return replies  # closed with no (further) response
        # A dummy request per response: h11 only parses a response it is waiting for.
        conn.send(h11.Request(method="GET", target="/", headers=[("host", "x")]))
        conn.send(h11.EndOfMessage())
        head: h11.Response | None = None
        body = b""
        while True:
            event = conn.next_event()
            assert event is not h11.NEED_DATA  # EOF was fed
            assert not isinstance(event, h11.ConnectionClosed)
            if isinstance(event, h11.Response):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
        assert head is not None
        replies.append(Reply(head.status_code, list(head.headers), body))
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
            continue
        assert conn.trailing_data == (b"", True), f"bytes after the last response: {raw!r}"
        return replies


async def send_in_pieces(client: TestClient, pieces: list[bytes]) -> bytes:
    """Send each piece on one new connection, letting the server process each one
    before the next; return all it sends until it closes the connection."""
    conn = await client.connect()
    for piece in pieces:
        await conn.send_all(piece)
        await trio.testing.wait_all_tasks_blocked()
    received = await conn.receive_until_closed()
    await conn.aclose()
    return received


@contextmanager
def error_records() -> Iterator[list[logging.LogRecord]]:
    """Collect the records logged at ERROR or above by ``trioserve.error``."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.ERROR)
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("trioserve.error")
    level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


# -- a. split at any byte boundaries ----------------------------------------------------------


@settings(max_examples=80, deadline=None)
@given(request=requests(), data=st.data())
def test_request_split_at_any_byte_boundaries_gives_the_same_scope_and_body(
    request: Request, data: st.DataObject
) -> None:
    """A server that parses each read on its own (a header name cut in two, a CRLF
    split between reads, a chunk-size line in pieces) gives the app a different
    scope or body, or never answers; here the split request must be seen exactly
    as the whole one, and both as the request says."""
    raw = request.encode()
    cuts = data.draw(st.lists(st.integers(1, len(raw) - 1), max_size=40), label="cuts")
    pieces = split_at(raw, cuts)
    app = RecordingApp()

    async def main() -> None:
        with trio.fail_after(60):
            async with open_test_client(app) as client:
                whole = parse_replies(await send_in_pieces(client, [raw]))
                split = parse_replies(await send_in_pieces(client, pieces))
        assert [r.status for r in whole] == [r.status for r in split] == [200]

    with error_records() as errors:
        trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert not errors
    seen_whole, seen_split = app.seen
    assert seen_split == seen_whole
    assert seen_whole == request.expected()


# -- b. any bytes ------------------------------------------------------------------------------

FUZZ_CONFIG = Config(max_body_size=1000)
#: Virtual seconds one example may take: longer than any single deadline (the
#: read timeout, 30 s, is the longest) plus the linger after an error.
EXAMPLE_DEADLINE = 60

request_lines = st.sampled_from(
    [
        b"GET / HTTP/1.1\r\n",
        b"GET / HTTP/1.1\r\nhost: a\r\n",
        b"POST /x?y=1 HTTP/1.1\r\nhost: a\r\n",
        b"GET / HTTP/1.0\r\n",
        b"OPTIONS * HTTP/1.1\r\nhost: a\r\n",
        b"GET http://a/b HTTP/1.1\r\n",
        b"CONNECT a:443 HTTP/1.1\r\nhost: a\r\n",
        b"GET / HTTP/2.0\r\nhost: a\r\n",
        b"PUT /" + b"p" * 9000 + b" HTTP/1.1\r\nhost: a\r\n",
    ]
)
field_names = st.sampled_from(
    [b"host", b"content-length", b"transfer-encoding", b"expect", b"connection", b"x-a"]
) | st.binary(max_size=12)
field_values = st.sampled_from(
    [b"a", b"5", b"5000", b"-1", b"chunked", b"gzip, chunked", b"100-continue", b"close"]
) | st.binary(max_size=30)
header_ish = st.lists(st.tuples(field_names, field_values), max_size=8).map(
    lambda fields: b"".join(n + b": " + v + b"\r\n" for n, v in fields)
)
endings = st.sampled_from([b"", b"\r\n", b"\r\n\r\n", b"\r\n0\r\n\r\n", b"\r\nhello"])
#: A request line, header-like fields (often valid), maybe raw bytes, an ending.
http_like_garbage = st.builds(
    lambda line, fields, raw, end: line + fields + raw + end,
    request_lines,
    header_ish,
    st.just(b"") | st.binary(max_size=200),
    endings,
)

SEPARATORS = [b"\r", b"\n", b"\0", b" ", b"\t", b":", b",", b";", b"0", b"f", b"\r\n", b"\r\n\r\n"]


@st.composite
def mangled_requests(draw: st.DrawFn) -> bytes:
    """A valid request with separators inserted at random places, optionally cut
    short, optionally followed by a second request (pipelined)."""
    data = bytearray(draw(requests()).encode())
    for _ in range(draw(st.integers(0, 4))):
        position = draw(st.integers(0, len(data)))
        data[position:position] = draw(st.sampled_from(SEPARATORS))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    if draw(st.booleans()):
        data += draw(requests()).encode()
    return bytes(data)


garbage = st.binary(max_size=2000) | http_like_garbage | mangled_requests()


@settings(max_examples=250, deadline=None)
@given(data=garbage, draw=st.data())
def test_any_bytes_get_valid_responses_and_a_close_and_the_server_survives(
    data: bytes, draw: st.DataObject
) -> None:
    """Whatever a client sends, it gets well-formed responses (a 4xx/5xx only last,
    with ``connection: close``) and a close, by a deadline at the latest; the app's
    200s are the only other answers. A server that lets a parser exception escape,
    mis-frames an error response or forgets a deadline fails here."""
    cuts = draw.draw(st.lists(st.integers(1, max(1, len(data) - 1)), max_size=8), label="cuts")
    app = RecordingApp()
    shutdown_took = 0.0

    async def main() -> None:
        nonlocal shutdown_took
        async with open_test_client(app, FUZZ_CONFIG) as client:
            with trio.fail_after(EXAMPLE_DEADLINE):
                received = await send_in_pieces(client, split_at(data, cuts))
            replies = parse_replies(received)
            event(f"answers: {[r.status for r in replies][-3:] or 'none'}")
            for reply in replies[:-1]:
                assert reply.status == 200, replies
            if replies and replies[-1].status != 200:
                assert 400 <= replies[-1].status < 600, replies
                assert (b"connection", b"close") in replies[-1].headers, replies
            assert len(app.seen) == sum(r.status == 200 for r in replies)
            # The server keeps serving.
            with trio.fail_after(EXAMPLE_DEADLINE):
                after = await client.get("/after")
            assert (after.status, after.body) == (200, b"ok")
            exit_started = trio.current_time()
        # No connection or task was left for the graceful shutdown to wait for.
        shutdown_took = trio.current_time() - exit_started

    with error_records() as errors:
        trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert not errors, [r.getMessage() for r in errors]
    assert shutdown_took < 1.0
