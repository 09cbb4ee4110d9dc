"""HTTP/1.1 requests, parsed by h11 or, for plain ones, by an exact subset of it.

h11 is the parser of record: parsing, the request's framing (Content-Length and
chunked) and its strictness (no smuggling through CL+TE, obs-fold, bare CR...).
:class:`RequestParser` adds what a server needs on top of it and keeps every h11
detail away from the I/O layer:

- h11's exceptions become :class:`RemoteProtocolError` (the client's fault, with a
  status to answer), and the request policy of :mod:`._http11_policy` applies;
- the request head size limit holds however the bytes arrive (h11 only checks the
  size of an *incomplete* head);
- plain requests skip h11. A request line in origin-form with HTTP/1.0 or 1.1,
  header fields without Transfer-Encoding, Expect or Upgrade, no body or a
  Content-Length one, the head whole in the buffer: that is nearly every request,
  and for it a fresh ``h11.Connection`` and its parse cost about as much as all
  the rest of a small request (``docs/performance.md``). The fast path matches
  h11's own grammar, normalises as h11 does and applies the same policy, and
  hands anything else, every error included, to h11 untouched. So it only ever
  accepts what h11 would accept, with the same result, which
  ``tests/protocol/test_fast_path.py`` checks against ``fast_path=False``;
- a request h11 parses gets a fresh ``h11.Connection`` (given whatever followed
  the previous request), since h11 would not parse the next request before it
  had been shown a response, and trioserve writes its responses itself
  (:mod:`._http11_writer`).
"""

from __future__ import annotations

import enum
import re

import h11

from .._errors import RemoteProtocolError
from ._events import BodyChunk, RequestEnd, RequestHead, Signal
from ._http11_policy import (
    ChunkScanner,
    RequestLimits,
    check_body_size,
    check_request,
    remote_error,
    scan_fields,
)

__all__ = ["RequestParser"]


class _Stage(enum.Enum):
    """How far the current request has come."""

    #: Waiting for a head; the bytes collect in ``_buf``.
    HEAD = "head"
    #: A fast-path head was parsed; ``_body_left`` bytes of its body are to come.
    BODY = "body"
    #: The fast-path request is complete; ``_buf`` holds what followed it.
    DONE = "done"
    #: h11 parses this request.
    H11 = "h11"


_HEAD = _Stage.HEAD
_BODY = _Stage.BODY
_DONE = _Stage.DONE
_H11 = _Stage.H11

_HEAD_END = re.compile(rb"\r?\n\r?\n")
_DIGITS = re.compile(rb"[0-9]{1,20}")
# The fast path's grammar is h11's (RFC 9112 3, 5), restricted to HTTP/1.0 and
# HTTP/1.1 and to targets in origin-form.
_REQUEST_LINE = re.compile(rb"([-!#$%&'*+.^_`|~0-9a-zA-Z]+) (/[\x21-\x7e]*) HTTP/(1\.[01])")
_HEADER_FIELD = re.compile(
    rb"([-!#$%&'*+.^_`|~0-9a-zA-Z]+):[ \t]*((?:[^\x00\s]+(?:[ \t]+[^\x00\s]+)*)?)[ \t]*"
)
# The client's states in which its request is complete. (h11 documents and exports
# MIGHT_SWITCH_PROTOCOL but leaves it out of its __all__.)
_REQUEST_COMPLETE = (h11.DONE, h11.MUST_CLOSE, h11.MIGHT_SWITCH_PROTOCOL)  # type: ignore[attr-defined]


class RequestParser:
    """The request side of one HTTP/1.1 connection: feed bytes, pull events.

    Args:
      limits: the request policy; a request that breaks it raises
          :class:`RemoteProtocolError` with the status to answer.
      fast_path: parse plain requests without h11. ``False`` sends every request
          through h11; the two give the same events, which
          ``tests/protocol/test_fast_path.py`` checks.
    """

    __slots__ = (
        "_asked_continue",
        "_body_left",
        "_body_seen",
        "_buf",
        "_chunks",
        "_closed",
        "_conn",
        "_fast_path",
        "_fed",
        "_head_request",
        "_http10",
        "_keep_alive",
        "_limits",
        "_method",
        "_raw",
        "_stage",
    )

    def __init__(self, limits: RequestLimits = RequestLimits(), *, fast_path: bool = True) -> None:
        self._limits = limits
        self._fast_path = fast_path
        self._stage = _HEAD
        # Bytes received and not yet parsed, while h11 is not parsing this request.
        self._buf = b""
        # The client closed its side (b"" was received).
        self._closed = False
        # h11 for the current request, when the fast path did not take it.
        self._conn: h11.Connection | None = None
        # What the current h11 connection was fed in all.
        self._fed = 0
        # The bytes of the head h11 is receiving. h11 consumes a head before it
        # raises about it or unfolds it, so the policy checks that need the bytes as
        # sent (obs-fold, Transfer-Encoding lists) read them here. Bounded by the
        # head size limit; None once the head is parsed.
        self._raw: bytearray | None = None
        self._body_seen = 0
        self._body_left = 0  # of a fast-path request's body
        self._chunks: ChunkScanner | None = None
        # The current request, as far as the response depends on it.
        self._method = b""
        self._http10 = False
        self._head_request = False
        self._keep_alive = False
        self._asked_continue = False

    # -- receiving ---------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Add bytes from the client; ``b""`` means the client closed its side."""
        if self._closed and data:
            # h11's way of saying so is a RuntimeError ("misuse"); it is the same
            # whichever parser has the request.
            raise RemoteProtocolError("received close, then received more data?")
        if self._stage is not _H11:
            if data:
                self._buf = self._buf + data if self._buf else bytes(data)
            else:
                self._closed = True
            return
        if not data:
            self._closed = True
        self._fed += len(data)
        raw = self._raw
        if raw is not None and len(raw) <= self._limits.max_head_size:
            # One byte past the limit is enough to know a head is too large.
            raw += data[: self._limits.max_head_size + 1 - len(raw)]
        chunks = self._chunks
        if chunks is not None and not chunks.done:
            chunks.feed(data)
        assert self._conn is not None
        self._conn.receive_data(data)

    def next_event(self) -> RequestHead | BodyChunk | RequestEnd | Signal:
        """Return the next event, or a :class:`Signal` when there is none yet.

        Raises:
          RemoteProtocolError: the client's bytes are not acceptable HTTP/1.1.
        """
        stage = self._stage
        if stage is _HEAD:
            if not self._buf:
                return Signal.PEER_CLOSED if self._closed else Signal.NEED_DATA
            if self._fast_path:
                head = self._parse_plain_head()
                if head is not None:
                    return head
            self._use_h11()
        elif stage is _BODY:
            return self._plain_body_event()
        elif stage is _DONE:
            if self._buf:
                if not self._keep_alive:
                    raise RemoteProtocolError("Got data when expecting EOF")
                return Signal.PAUSED
            return Signal.PEER_CLOSED if self._closed else Signal.NEED_DATA
        return self._h11_event()

    # -- the state of the current request ------------------------------------------

    @property
    def head_request(self) -> bool:
        """The current request is a ``HEAD`` (as far as its head was read)."""
        return self._head_request

    def _client_waits_for_continue(self) -> bool:
        """The client sent ``Expect: 100-continue`` and has not begun the body."""
        # The fast path leaves every request with an Expect field to h11.
        conn = self._conn
        return conn is not None and conn.they_are_waiting_for_100_continue

    @property
    def request_complete(self) -> bool:
        """The whole current request, body included, has been received."""
        stage = self._stage
        if stage is _DONE:
            return True
        # MIGHT_SWITCH_PROTOCOL: a complete request that offered an Upgrade (or a
        # CONNECT); h11 waits to see whether the response accepts it.
        return stage is _H11 and self._h11().their_state in _REQUEST_COMPLETE

    @property
    def has_buffered_data(self) -> bool:
        """Bytes of a next request (a pipelined one, or part of one) wait unparsed."""
        if self._stage is _H11:
            return bool(self._h11().trailing_data[0])
        return bool(self._buf)

    def take_trailing_data(self) -> bytes:
        """The bytes received after the current request, for the protocol the
        connection switches to (a websocket after an upgrade). Nothing more is
        parsed."""
        if self._stage is _H11:
            data = bytes(self._h11().trailing_data[0])
            self._conn = None
        else:
            data = self._buf
        self._buf = b""
        self._stage = _DONE
        self._keep_alive = False
        return data

    def _next_request(self) -> None:
        """Parse the next request from here on. The caller checks that the current
        one is complete, asked for keep-alive, and was answered."""
        if self._stage is _H11:
            # h11 would not parse the next request before it had been shown a
            # response; what followed this one starts afresh.
            data, closed = self._h11().trailing_data
            self._buf = bytes(data)
            self._closed = closed
            self._conn = None
        self._stage = _HEAD
        self._body_seen = 0
        self._head_request = self._asked_continue = False

    # -- the fast path -------------------------------------------------------------

    def _parse_plain_head(self) -> RequestHead | None:
        """The head at the start of the buffer if it is a plain one (consumed), else
        ``None`` (nothing consumed): anything else is h11's to parse, and to refuse."""
        buf = self._buf
        end = buf.find(b"\r\n\r\n")
        limits = self._limits
        if end < 0 or end + 4 > limits.max_head_size:
            return None
        lines = buf[:end].split(b"\r\n")
        match = _REQUEST_LINE.fullmatch(lines[0])
        if match is None or len(lines) - 1 > limits.max_header_count:
            return None
        method, target, version = match.groups()
        if len(target) > limits.max_target_length or method == b"CONNECT":
            return None
        headers: list[tuple[bytes, bytes]] = []
        for line in lines[1:]:
            field = _HEADER_FIELD.fullmatch(line)
            if field is None:
                return None
            headers.append((field[1].lower(), field[2]))
        hosts, lengths, _, close, special, forwarded = scan_fields(headers)
        http10 = version == b"1.0"
        if special or hosts > 1 or not (hosts or http10):
            return None
        length = lengths[0] if lengths else None
        if length is not None and (len(lengths) > 1 or not _DIGITS.fullmatch(length)):
            return None
        if limits.max_body_size is not None and not check_body_size(limits, length):
            return None
        self._buf = buf[end + 4 :]
        self._stage = _BODY
        self._body_left = int(length) if length is not None else 0
        return self._begin(method, target, version, headers, close, forwarded=forwarded)

    def _begin(
        self,
        method: bytes,
        target: bytes,
        version: bytes,
        headers: list[tuple[bytes, bytes]],
        close: bool,
        upgrade: bool = False,
        *,
        forwarded: bool,
    ) -> RequestHead:
        # h11's keep-alive rule: HTTP/1.1 without "close" among the Connection tokens.
        http10 = version != b"1.1"
        keep_alive = not (http10 or close)
        self._method = method
        self._http10 = http10
        self._keep_alive = keep_alive
        self._head_request = method == b"HEAD"
        return RequestHead(method, target, version, headers, upgrade, forwarded)

    def _plain_body_event(self) -> BodyChunk | RequestEnd | Signal:
        left = self._body_left
        if not left:
            self._stage = _DONE
            return RequestEnd()
        buf = self._buf
        if buf:
            if len(buf) <= left:
                self._buf = b""
            else:
                self._buf = buf[left:]
                buf = buf[:left]
            self._body_left = left - len(buf)
            self._body_seen += len(buf)
            return BodyChunk(buf)
        if self._closed:
            raise RemoteProtocolError(
                "peer closed connection without sending complete message body "
                f"(received {self._body_seen} bytes, expected {self._body_seen + left})"
            )
        return Signal.NEED_DATA

    # -- the h11 path --------------------------------------------------------------

    def _use_h11(self) -> None:
        """Hand the current request, and every byte received of it, to h11."""
        limit = self._limits.max_head_size
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=limit)
        buf = self._buf
        self._conn = conn
        self._stage = _H11
        self._buf = b""
        self._fed = len(buf)
        self._raw = bytearray(buf[: limit + 1])
        if buf:
            conn.receive_data(buf)
        if self._closed:
            conn.receive_data(b"")

    def _h11_event(self) -> RequestHead | BodyChunk | RequestEnd | Signal:
        conn = self._h11()
        chunks = self._chunks
        if chunks is not None and chunks.error is not None:
            raise chunks.error
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            raise remote_error(exc, self._raw, self._limits) from exc
        if type(event) is h11.Request:
            return self._h11_head(event)
        if type(event) is h11.EndOfMessage:
            # Trailers (event.headers) are dropped: ASGI has no request trailers, so
            # no framing field can leak from them into what the app sees.
            self._chunks = None
            return RequestEnd()
        if type(event) is h11.Data:
            limit = self._limits.max_body_size
            if limit is not None:
                self._body_seen += len(event.data)
                if self._body_seen > limit:
                    raise RemoteProtocolError("Request body too large", 413)
            return BodyChunk(bytes(event.data))
        if event is h11.NEED_DATA:
            return Signal.NEED_DATA
        if event is h11.PAUSED:
            return Signal.PAUSED
        # ConnectionClosed is the only event left for a server.
        return Signal.PEER_CLOSED

    def _h11_head(self, event: h11.Request) -> RequestHead:
        limits = self._limits
        # Known before any check can fail, so that an error answer to HEAD has no body.
        self._head_request = event.method == b"HEAD"
        if len(event.target) > limits.max_target_length:
            # Before the head size: the status must not depend on how bytes arrive.
            raise RemoteProtocolError("Request target too long", 414)
        # h11 limits only heads still incomplete; a whole head that arrived in one
        # read is measured here, exactly (padding and all). Everything fed bounds it
        # from above, so the captured bytes are looked at only when that is over.
        raw = self._raw
        if self._fed > limits.max_head_size and raw is not None:
            # The captured bytes start where this head starts; the head ends at the
            # first empty line. Not found within limit + 1 bytes: too large.
            end = _HEAD_END.search(raw)
            if end is None or end.end() > limits.max_head_size:
                raise RemoteProtocolError("Request head too large", 431)
        self._raw = None
        headers = list(event.headers)
        facts = scan_fields(headers)
        check_request(
            event.method, event.target, event.http_version, facts, len(headers), raw, limits
        )
        if facts[2] is not None:  # Transfer-Encoding: chunked (h11 allows no other)
            self._chunks = ChunkScanner(limits.max_chunk_extension)
            # Body bytes that came with the head are already in h11's buffer.
            self._chunks.feed(self._h11().trailing_data[0])
        self._asked_continue = self._h11().they_are_waiting_for_100_continue
        # Only h11 parses requests with an Upgrade field.
        upgrade = any(name == b"upgrade" for name, _ in headers)
        return self._begin(
            event.method,
            event.target,
            event.http_version,
            headers,
            facts[3],
            upgrade,
            forwarded=facts[5],
        )

    def _h11(self) -> h11.Connection:
        conn = self._conn
        assert conn is not None
        return conn
