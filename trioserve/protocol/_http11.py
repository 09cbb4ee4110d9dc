"""HTTP/1.1 for one connection: requests parsed by h11 (or, for plain ones, by an
exact subset of it), responses written by trioserve.

h11 does the request side: parsing, the request's framing (Content-Length and
chunked), and its strictness (no smuggling through CL+TE, obs-fold, bare CR...).
This module adds what a server needs on top of it and keeps every h11 detail away
from the I/O layer:

- h11's exceptions become :class:`RemoteProtocolError` (the client's fault, with a
  status to answer);
- the request head size limit holds however the bytes arrive (h11 only checks the
  size of an *incomplete* head), and the request policy of :func:`_check_request`;
- plain requests skip h11. A request line in origin-form with HTTP/1.0 or 1.1,
  header fields without Transfer-Encoding, Expect or Upgrade, no body or a
  Content-Length one, the head whole in the buffer: that is nearly every request,
  and for it a fresh ``h11.Connection`` and its parse cost about as much CPU as
  all the rest of a small request (see ``docs/performance.md``). The fast path
  matches h11's own grammar, normalises as h11 does and applies the same checks,
  and hands anything else, every error included, to h11 untouched. So it only
  ever accepts what h11 would accept, with the same result, which
  ``tests/protocol/test_fast_path.py`` checks against ``fast_path=False``;
- the response side is written here, not by h11. Going through h11's event and
  state machinery for a response costs more CPU than everything else a small
  request needs, while the rules are short: the same framing h11 chooses
  (Content-Length; otherwise chunked for HTTP/1.1 and close-delimited for
  HTTP/1.0; no body for HEAD, 204, 304 and a 2xx to CONNECT), the same validation
  of header names and values, the same keep-alive decision.
  ``tests/protocol/test_response_writer.py`` holds the output to h11's own over
  every combination that matters. A request h11 parses gets a fresh
  ``h11.Connection`` (given whatever followed the previous request), since h11
  would not parse the next request before it had been shown a response;
- response header names go out lower-case, and reason phrases are filled in.
"""

from __future__ import annotations

import dataclasses
import http
import re

import h11

from .._errors import LocalProtocolError, RemoteProtocolError
from ._events import BodyChunk, RequestEnd, RequestHead, Signal

__all__ = ["HTTP11Protocol", "RequestLimits", "error_body"]

_REASONS: dict[int, bytes] = {s.value: s.phrase.encode("ascii") for s in http.HTTPStatus}

_ERROR_BODIES: dict[int, bytes] = {
    400: b"Invalid HTTP request received.",
    500: b"Internal Server Error",
}


_SAFE_HEAD_END = re.compile(rb"\r?\n\r?\n")
# What h11 accepts in a header field (RFC 9110 5.1, 5.5): a token as the name, and
# a value of visible characters (or obs-text) with single spaces or tabs inside it
# but none at either end. Anything else (CR, LF, NUL above all) is refused.
_TOKEN = re.compile(rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+")
_FIELD_VALUE = re.compile(rb"(?:[^\x00\s]+(?:[ \t]+[^\x00\s]+)*)?")
_DIGITS = re.compile(rb"[0-9]{1,20}")
# The client's states in which its request is complete. (h11 documents and exports
# MIGHT_SWITCH_PROTOCOL but leaves it out of its __all__.)
_REQUEST_COMPLETE = (h11.DONE, h11.MUST_CLOSE, h11.MIGHT_SWITCH_PROTOCOL)  # type: ignore[attr-defined]
# How the body of the current response is framed.
_LENGTH = 0  # Content-Length: exactly that many bytes
_CHUNKED = 1  # Transfer-Encoding: chunked
_UNTIL_CLOSE = 2  # HTTP/1.0 without Content-Length: the close ends the body
_NO_BODY = 3  # 204, 304, 2xx to CONNECT: no body may be sent
_DROP_BODY = 4  # HEAD: the GET headers, and whatever body the app sends is dropped
_OBS_FOLD = re.compile(rb"\n[ \t]")
# How far the current request has come.
_HEAD = 0  # waiting for a head; the bytes collect in _buf
_BODY = 1  # a fast-path head was parsed; _body_left bytes of its body are to come
_DONE = 2  # the fast-path request is complete; _buf holds what followed it
_H11 = 3  # h11 parses this request
# The fast path's grammar is h11's (RFC 9112 3, 5), restricted to HTTP/1.0 and
# HTTP/1.1 and to targets in origin-form.
_REQUEST_LINE = re.compile(rb"([-!#$%&'*+.^_`|~0-9a-zA-Z]+) (/[\x21-\x7e]*) HTTP/(1\.[01])")
_HEADER_FIELD = re.compile(
    rb"([-!#$%&'*+.^_`|~0-9a-zA-Z]+):[ \t]*((?:[^\x00\s]+(?:[ \t]+[^\x00\s]+)*)?)[ \t]*"
)
# Fields that need h11's state machine (or its errors): such a request is h11's.
_NOT_PLAIN = frozenset((b"transfer-encoding", b"expect", b"upgrade"))
_ABSOLUTE_FORM = re.compile(rb"[A-Za-z][A-Za-z0-9+.-]*://[^/?#@]*@?[^/?#@]+")


def _head_bytes(raw: bytes | bytearray) -> bytes | bytearray:
    match = _SAFE_HEAD_END.search(raw)
    return raw[: match.start()] if match else raw


def _check_request(
    event: h11.Request,
    headers: list[tuple[bytes, bytes]],
    raw: bytearray | None,
    limits: RequestLimits,
) -> bool:
    """The request policy trioserve adds to h11's (RFC 9110/9112); return whether
    the body is chunked.

    Raises:
      RemoteProtocolError: with 400, 413, 414, 431, 501 or 505.
    """
    version = event.http_version
    if version[:1] != b"1":
        raise RemoteProtocolError(f"HTTP/{version.decode()} is not supported", 505)
    if len(headers) > limits.max_header_count:
        raise RemoteProtocolError("Too many header fields", 431)
    hosts = 0
    transfer_encoding = content_length = None
    for name, value in headers:
        if name == b"host":
            hosts += 1
        elif name == b"transfer-encoding":
            transfer_encoding = value
        elif name == b"content-length":
            content_length = value
    if hosts > 1:
        raise RemoteProtocolError("More than one Host header field")
    if transfer_encoding is not None:
        # Both framings at once is the shape of request smuggling; h11 would let
        # Transfer-Encoding win, RFC 9112 6.1 lets a server reject it instead.
        if content_length is not None:
            raise RemoteProtocolError("Both Content-Length and Transfer-Encoding")
        if version == b"1.0":
            raise RemoteProtocolError("Transfer-Encoding in an HTTP/1.0 request")
    method = event.method
    target = event.target
    if method == b"CONNECT":
        if not limits.allow_connect:
            raise RemoteProtocolError("CONNECT is not supported", 501)
    elif target[:1] != b"/":
        # RFC 9112 3.2: origin-form, absolute-form (with a host: RFC 9110 4.2.1), or
        # "*" for OPTIONS; authority-form belongs to CONNECT alone.
        if target == b"*":
            if method != b"OPTIONS":
                raise RemoteProtocolError("Asterisk-form target with a method other than OPTIONS")
        elif not _ABSOLUTE_FORM.match(target):
            raise RemoteProtocolError("Invalid request target")
    if raw is not None and _OBS_FOLD.search(_head_bytes(raw)):
        raise RemoteProtocolError("Obsolete line folding in a header field")
    if (
        limits.max_body_size is not None
        and content_length is not None
        and int(content_length) > limits.max_body_size
    ):
        raise RemoteProtocolError("Request body too large", 413)
    return transfer_encoding is not None


class _ChunkScanner:
    """Watches the bytes of a chunked request body for what h11 lets through: a
    chunk size of more than 16 hex digits (more than 64 bits, so no real chunk)
    and chunk extensions longer than a limit. It only skips over the chunk data,
    so its cost is per chunk, not per byte."""

    __slots__ = ("_ext_limit", "_line", "_skip", "done", "error")

    def __init__(self, ext_limit: int) -> None:
        self._ext_limit = ext_limit
        self._line = bytearray()  # the chunk-size line read so far
        self._skip = 0  # chunk data (and its CRLF) still to pass over
        self.done = False  # the last chunk was seen: trailers are h11's business
        self.error: RemoteProtocolError | None = None

    def feed(self, data: bytes | bytearray) -> None:
        view = memoryview(data)
        while view and not self.done and self.error is None:
            if self._skip:
                step = min(self._skip, len(view))
                self._skip -= step
                view = view[step:]
                continue
            end = bytes(view[: self._ext_limit + 64]).find(b"\n")
            if end < 0:
                self._line += view
                view = view[len(view) :]
                if len(self._line) > self._ext_limit + 64:
                    self._fail("Chunk extension too long")
                continue
            self._line += view[: end + 1]
            view = view[end + 1 :]
            self._chunk_line(bytes(self._line))
            self._line.clear()

    def _chunk_line(self, line: bytes) -> None:
        size_text, _, extension = line.rstrip(b"\r\n").partition(b";")
        size_text = size_text.strip(b" \t")
        if len(size_text) > 16:
            self._fail("Chunk size has more than 16 hex digits")
        elif len(extension) > self._ext_limit:
            self._fail("Chunk extension too long")
        else:
            try:
                size = int(size_text, 16)
            except ValueError:
                return  # h11 reports the malformed line itself
            if size == 0:
                self.done = True
            else:
                self._skip = size + 2  # the data and its CRLF

    def _fail(self, message: str) -> None:
        self.error = RemoteProtocolError(message, 400)


def _transfer_encoding_verdict(raw: bytes | bytearray) -> tuple[str, int]:
    """Why a Transfer-Encoding h11 refused is wrong: 400 for broken framing (the
    last coding is not chunked, chunked twice, HTTP/1.0), 501 for a coding that is
    simply not implemented (RFC 9112 6.1, 7)."""
    lines = _head_bytes(raw).split(b"\n")
    codings: list[bytes | bytearray] = []
    content_length = False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"transfer-encoding":
            codings.extend(c.strip().lower() for c in value.split(b",") if c.strip())
        elif name == b"content-length":
            content_length = True
    if content_length:
        return "Both Content-Length and Transfer-Encoding", 400
    if lines[0].rstrip().endswith(b"HTTP/1.0"):
        return "Transfer-Encoding in an HTTP/1.0 request", 400
    if not codings or codings[-1] != b"chunked":
        return "The last transfer coding is not chunked", 400
    if codings.count(b"chunked") > 1:
        return "chunked applied more than once", 400
    return "Only the chunked transfer coding is supported", 501


def error_body(status: int) -> bytes:
    """The plain-text body trioserve sends with a response it makes itself."""
    return _ERROR_BODIES.get(status) or _REASONS.get(status, b"Error")


def _comma_tokens(value: bytes) -> list[bytes]:
    return [token.strip().lower() for token in value.split(b",") if token.strip()]


@dataclasses.dataclass(frozen=True, slots=True)
class RequestLimits:
    """What trioserve accepts in a request, beyond what h11 checks itself."""

    #: Largest request head in bytes (431).
    max_head_size: int = 16 * 1024
    #: Longest request target in bytes (414).
    max_target_length: int = 8 * 1024
    #: Most header fields (431).
    max_header_count: int = 100
    #: Largest request body in bytes, or ``None`` (413).
    max_body_size: int | None = None
    #: Let ``CONNECT`` through (otherwise 501).
    allow_connect: bool = False
    #: Longest chunk extension in a chunked request body (400).
    max_chunk_extension: int = 4096


class HTTP11Protocol:
    """The server side of one HTTP/1.1 connection: feed bytes, pull events, and turn
    response parts into bytes.

    Args:
      limits: the request policy; a request that breaks it raises
          :class:`RemoteProtocolError` with the status to answer.
      fast_path: parse plain requests (see :func:`_parse_plain_head`) without h11.
          ``False`` sends every request through h11; the two give the same events,
          which ``tests/protocol/test_fast_path.py`` checks.
    """

    __slots__ = (
        "_body_left",
        "_body_seen",
        "_buf",
        "_chunks",
        "_closed",
        "_conn",
        "_continue_answered",
        "_fast_path",
        "_fed",
        "_framing",
        "_head_request",
        "_head_sent",
        "_http10",
        "_limits",
        "_method",
        "_mode",
        "_raw",
        "_remaining",
        "_request_keep_alive",
        "_response_done",
        "_response_keep_alive",
    )

    def __init__(self, limits: RequestLimits = RequestLimits(), *, fast_path: bool = True) -> None:
        self._limits = limits
        self._fast_path = fast_path
        self._mode = _HEAD
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
        self._chunks: _ChunkScanner | None = None
        # The current request, as far as the response depends on it.
        self._method = b""
        self._head_request = False
        self._http10 = False
        self._request_keep_alive = False
        self._continue_answered = False
        # The current response.
        self._head_sent = False
        self._framing = _LENGTH
        self._remaining = 0
        self._response_done = False
        self._response_keep_alive = False

    # -- receiving ---------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Add bytes from the client; ``b""`` means the client closed its side."""
        if self._closed and data:
            # h11's way of saying so is a RuntimeError ("misuse"); it is the same
            # whichever parser has the request.
            raise RemoteProtocolError("received close, then received more data?")
        if self._mode != _H11:
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
        mode = self._mode
        if mode == _HEAD:
            if not self._buf:
                return Signal.PEER_CLOSED if self._closed else Signal.NEED_DATA
            if self._fast_path:
                head = self._parse_plain_head()
                if head is not None:
                    return head
            self._use_h11()
        elif mode == _BODY:
            return self._plain_body_event()
        elif mode == _DONE:
            if self._buf:
                if not self._request_keep_alive:
                    raise RemoteProtocolError("Got data when expecting EOF")
                return Signal.PAUSED
            return Signal.PEER_CLOSED if self._closed else Signal.NEED_DATA
        return self._h11_event()

    # The fast path. Most requests are a request line in origin-form and a few
    # header fields, with no body or a Content-Length one, whole in one read. For
    # those, a fresh h11 connection and its parse cost about half of a small
    # request's CPU, so they are parsed here: the same regular expressions as
    # h11's, the same normalisation, and h11's and trioserve's checks (414k ->
    # 228k instructions per request). Anything else (a head not yet complete,
    # chunked bodies, Expect, Upgrade, CONNECT, other target forms, anything
    # malformed or over a limit) goes to h11, which gives the answer it always
    # gave. So the fast path only ever accepts; it never has to be right about an
    # error.

    def _parse_plain_head(self) -> RequestHead | None:
        """The head at the start of the buffer if it is a plain one (consumed), else
        ``None`` (nothing consumed)."""
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
        hosts = 0
        length: bytes | None = None
        close = False
        for line in lines[1:]:
            field = _HEADER_FIELD.fullmatch(line)
            if field is None:
                return None
            name = field[1].lower()
            value = field[2]
            headers.append((name, value))
            if name == b"host":
                hosts += 1
            elif name == b"content-length":
                if length is not None or not _DIGITS.fullmatch(value):
                    return None
                length = value
            elif name == b"connection":
                close = close or b"close" in _comma_tokens(value)
            elif name in _NOT_PLAIN:
                return None
        http10 = version == b"1.0"
        if hosts > 1 or not (hosts or http10):
            return None
        size = int(length) if length is not None else 0
        if limits.max_body_size is not None and size > limits.max_body_size:
            return None
        self._buf = buf[end + 4 :]
        self._mode = _BODY
        self._body_left = size
        self._method = method
        self._head_request = method == b"HEAD"
        self._http10 = http10
        self._request_keep_alive = not (http10 or close)
        return RequestHead(method, target, version, headers)

    def _plain_body_event(self) -> BodyChunk | RequestEnd | Signal:
        left = self._body_left
        if not left:
            self._mode = _DONE
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

    # The h11 path.

    def _use_h11(self) -> None:
        """Hand the current request, and every byte received of it, to h11."""
        limit = self._limits.max_head_size
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=limit)
        buf = self._buf
        self._conn = conn
        self._mode = _H11
        self._buf = b""
        self._fed = len(buf)
        self._raw = bytearray(buf[: limit + 1])
        if buf:
            conn.receive_data(buf)
        if self._closed:
            conn.receive_data(b"")

    def _h11_event(self) -> RequestHead | BodyChunk | RequestEnd | Signal:
        conn = self._conn
        assert conn is not None
        chunks = self._chunks
        if chunks is not None and chunks.error is not None:
            raise chunks.error
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            raise self._refine_error(exc) from exc
        if type(event) is h11.Request:
            return self._request_head(event)
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

    def _request_head(self, event: h11.Request) -> RequestHead:
        limits = self._limits
        # Known before any check can fail, so that an error answer to HEAD has no body.
        self._method = event.method
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
            end = _SAFE_HEAD_END.search(raw)
            if end is None or end.end() > limits.max_head_size:
                raise RemoteProtocolError("Request head too large", 431)
        self._raw = None
        headers = list(event.headers)
        chunked = _check_request(event, headers, raw, limits)
        # h11's keep-alive rule: HTTP/1.1 without "close" among the Connection tokens.
        self._http10 = event.http_version != b"1.1"
        self._request_keep_alive = not self._http10 and not any(
            name == b"connection" and b"close" in _comma_tokens(value) for name, value in headers
        )
        if chunked:
            self._chunks = _ChunkScanner(limits.max_chunk_extension)
            # Body bytes that came with the head are already in h11's buffer.
            assert self._conn is not None
            self._chunks.feed(self._conn.trailing_data[0])
        return RequestHead(event.method, event.target, event.http_version, headers)

    def _refine_error(self, exc: h11.RemoteProtocolError) -> RemoteProtocolError:
        """trioserve's error for one of h11's, with a status more precise where the
        raw head tells more than h11's message."""
        status = exc.error_status_hint
        raw = self._raw
        if raw is not None and status == 431:
            line_end = raw.find(b"\n")
            if line_end < 0 or line_end > self._limits.max_target_length:
                # Still in the request line: it is the target that is too long.
                return RemoteProtocolError("Request target too long", 414)
        if raw is not None and status == 501 and b"ransfer-" in str(exc).encode():
            return RemoteProtocolError(*_transfer_encoding_verdict(raw))
        return RemoteProtocolError(str(exc), status)

    @property
    def expects_continue(self) -> bool:
        """The client sent ``Expect: 100-continue`` and waits for our answer."""
        # The fast path leaves every request with an Expect field to h11.
        conn = self._conn
        return (
            conn is not None
            and conn.they_are_waiting_for_100_continue
            and not self._continue_answered
        )

    @property
    def request_complete(self) -> bool:
        """The whole current request, body included, has been received."""
        if self._mode == _DONE:
            return True
        # MIGHT_SWITCH_PROTOCOL: a complete request that offered an Upgrade (or a
        # CONNECT); h11 waits to see whether the response accepts it, and trioserve's
        # responses never do (no 101; a 2xx to CONNECT ends the connection).
        return self._mode == _H11 and self._h11().their_state in _REQUEST_COMPLETE

    @property
    def has_buffered_data(self) -> bool:
        """Bytes of a next request (a pipelined one, or part of one) wait unparsed."""
        if self._mode == _H11:
            return bool(self._h11().trailing_data[0])
        return bool(self._buf)

    @property
    def keep_alive(self) -> bool:
        """The response is complete and the connection may carry another request."""
        return self._response_done and self._response_keep_alive

    def start_next_cycle(self) -> bool:
        """Get ready for the next request if both the request and the response are
        complete and the connection stays open; return whether it did."""
        if not (self.keep_alive and self.request_complete):
            return False
        if self._mode == _H11:
            # h11 would not parse the next request before it had been shown a
            # response; what followed this one starts afresh.
            data, closed = self._h11().trailing_data
            self._buf = bytes(data)
            self._closed = closed
            self._conn = None
        self._mode = _HEAD
        self._body_seen = 0
        self._head_request = False
        self._continue_answered = False
        self._head_sent = False
        self._response_done = False
        return True

    def _h11(self) -> h11.Connection:
        conn = self._conn
        assert conn is not None
        return conn

    # -- sending -----------------------------------------------------------------

    def informational_continue(self) -> bytes:
        """Bytes of a ``100 Continue`` response."""
        self._continue_answered = True
        return b"HTTP/1.1 100 Continue\r\n\r\n"

    def response_head(
        self,
        status: int,
        headers: list[tuple[bytes, bytes]],
        *,
        close: bool = False,
        own: list[tuple[bytes, bytes]] | None = None,
    ) -> bytes:
        """Bytes of a response head, with the framing headers the body needs.

        Args:
          status: the final status code (200..599).
          headers: lower-cased names and values from the app (and configuration).
          close: the connection ends after this response (``connection: close``).
          own: fields the server makes itself (``server``, ``date``), written after
              ``headers`` without being checked again; no framing fields.

        Raises:
          LocalProtocolError: a header name or value is not allowed (CR, LF, NUL,
              whitespace at either end...), or the framing headers are invalid.
        """
        content_length: bytes | None = None
        chunked = False
        connection: list[bytes] = []
        lines = [b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b""))]
        for name, value in headers:
            if not _TOKEN.fullmatch(name) or not _FIELD_VALUE.fullmatch(value):
                raise LocalProtocolError(
                    f"Invalid response head: illegal header field {name!r}: {value!r}"
                )
            if name == b"content-length":
                # "5, 5" and repeated equal fields are one length (RFC 9110 8.6).
                lengths = {length.strip() for length in value.split(b",")}
                length = lengths.pop()
                if lengths or (content_length is not None and length != content_length):
                    raise LocalProtocolError(
                        "Invalid response head: conflicting Content-Length fields"
                    )
                if not _DIGITS.fullmatch(length):
                    raise LocalProtocolError(f"Invalid response head: bad Content-Length {value!r}")
                if content_length is not None:
                    continue
                content_length = length
                value = length
            elif name == b"transfer-encoding":
                if chunked or value.lower() != b"chunked":
                    raise LocalProtocolError(
                        "Invalid response head: only one Transfer-Encoding: chunked is supported"
                    )
                chunked = True
                value = b"chunked"
            elif name == b"connection":
                connection.extend(_comma_tokens(value))
                continue  # written below, once
            lines.append(b"%s: %s\r\n" % (name, value))
        if own:
            lines.extend(b"%s: %s\r\n" % field for field in own)
        # The framing the headers announce; for HEAD, the one a GET would get.
        framing = _LENGTH
        if status in (204, 304) or (self._method == b"CONNECT" and 200 <= status < 300):
            framing = _NO_BODY
        elif chunked or content_length is None:
            # A body of unknown length: chunked, or for HTTP/1.0 (no chunked coding)
            # delimited by the close. Transfer-Encoding wins over Content-Length.
            if content_length is not None:
                lines = [line for line in lines if not line.startswith(b"content-length: ")]
                content_length = None
            if self._http10:
                if chunked:
                    lines = [line for line in lines if not line.startswith(b"transfer-encoding: ")]
                framing = _UNTIL_CLOSE
            else:
                if not chunked:
                    lines.append(b"transfer-encoding: chunked\r\n")
                framing = _CHUNKED
        keep_alive = (
            self._request_keep_alive
            and not close
            and b"close" not in connection
            and (framing != _UNTIL_CLOSE or self._head_request)
        )
        if not keep_alive:
            connection = [token for token in connection if token != b"keep-alive"]
            connection.append(b"close")
        if connection:
            lines.append(b"connection: %s\r\n" % b", ".join(sorted(set(connection))))
        lines.append(b"\r\n")
        if self._head_request:
            framing = _DROP_BODY
        elif framing == _NO_BODY and self._method == b"CONNECT":
            # A 2xx to CONNECT turns the connection into a tunnel, which trioserve
            # does not offer: the head is the whole response, and the connection ends.
            framing = _DROP_BODY
            keep_alive = False
        self._framing = framing
        self._remaining = int(content_length) if framing == _LENGTH and content_length else 0
        self._response_keep_alive = keep_alive
        self._continue_answered = True
        self._head_sent = True
        return b"".join(lines)

    def retract_head(self) -> None:
        """The head from :meth:`response_head` was not written after all (what was
        to follow it failed), so :meth:`error_response` may still answer."""
        self._head_sent = False

    def response_body(self, data: bytes) -> bytes:
        """Bytes of a piece of response body (nothing for a response to HEAD).

        Raises:
          LocalProtocolError: more bytes than the declared ``content-length``.
        """
        framing = self._framing
        if not data or framing == _DROP_BODY:
            return b""
        if framing in (_LENGTH, _NO_BODY):
            if len(data) > self._remaining:
                raise LocalProtocolError("Response body: Too much data for declared Content-Length")
            self._remaining -= len(data)
            return data
        if framing == _CHUNKED:
            return b"%x\r\n%s\r\n" % (len(data), data)
        return data

    def response_file_framing(self, size: int) -> tuple[bytes, bytes] | None:
        """The framing around a piece of response body of ``size`` bytes that the
        caller writes itself (a file sent with ``sendfile``): ``(before, after)``,
        or ``None`` when the body is not to be written at all (HEAD).

        Raises:
          LocalProtocolError: more bytes than the declared ``content-length``.
        """
        framing = self._framing
        if framing == _DROP_BODY:
            return None
        if not size:
            return b"", b""
        if framing in (_LENGTH, _NO_BODY):
            if size > self._remaining:
                raise LocalProtocolError("Response body: Too much data for declared Content-Length")
            self._remaining -= size
            return b"", b""
        if framing == _CHUNKED:
            return b"%x\r\n" % size, b"\r\n"
        return b"", b""

    def response_end(self) -> bytes:
        """Bytes that end the response body.

        Raises:
          LocalProtocolError: fewer bytes than the declared ``content-length``.
        """
        framing = self._framing
        if framing == _LENGTH and self._remaining:
            raise LocalProtocolError("Response body: Too little data for declared Content-Length")
        self._response_done = True
        return b"0\r\n\r\n" if framing == _CHUNKED else b""

    def error_response(self, status: int, headers: list[tuple[bytes, bytes]]) -> bytes:
        """A whole response made by the server itself, ending the connection.

        Returns ``b""`` when part of a response is already on the wire and nothing
        more may be sent. The bytes are made here rather than by h11 because the
        answer must be possible in any state, including after h11 refused an app's
        response head (its state is then ``ERROR``).
        """
        if self._head_sent:
            return b""
        self._head_sent = True
        body = error_body(status)
        lines = [b"HTTP/1.1 %d %s" % (status, _REASONS.get(status, b""))]
        lines.extend(name + b": " + value for name, value in headers)
        lines.append(b"content-type: text/plain; charset=utf-8")
        lines.append(b"content-length: %d" % len(body))
        lines.append(b"connection: close")
        lines.append(b"")
        lines.append(b"" if self._head_request else body)
        return b"\r\n".join(lines)
