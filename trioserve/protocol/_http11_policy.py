"""The request policy trioserve holds HTTP/1.1 requests to, on top of h11's.

h11 is strict about syntax (no obs-fold, no bare CR, no CL+CL disagreement) but
leaves some decisions to the server. This module takes them, the same way for
requests parsed by h11 and for those the fast path parses (RFC 9110, RFC 9112):

- one Host field at most; ``Transfer-Encoding`` never together with
  ``Content-Length`` and never in HTTP/1.0 (the shapes of request smuggling);
- only HTTP/1.x (505), a bounded target (414), a bounded number of header fields
  and head size (431), an optional body size limit (413);
- request targets in origin-form, absolute-form (with a host), or ``*`` for
  ``OPTIONS``; ``CONNECT`` only when allowed (501 otherwise);
- chunked bodies: chunk sizes of at most 16 hex digits and bounded chunk
  extensions, which h11 lets through.

It also turns h11's errors into trioserve's, with the status decided from what
h11 reports (its status hint) and the bytes of the head, never from h11's wording.
"""

from __future__ import annotations

import dataclasses
import re

import h11

from .._errors import RemoteProtocolError
from ._proxy import FORWARDING_HEADERS

__all__ = [
    "ChunkScanner",
    "FieldFacts",
    "RequestLimits",
    "check_body_size",
    "check_request",
    "comma_tokens",
    "head_bytes",
    "remote_error",
    "scan_fields",
]


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


_HEAD_END = re.compile(rb"\r?\n\r?\n")
_OBS_FOLD = re.compile(rb"\n[ \t]")
_ABSOLUTE_FORM = re.compile(rb"[A-Za-z][A-Za-z0-9+.-]*://[^/?#@]*@?[^/?#@]+")
# Fields whose presence takes a request off the fast path: their meaning needs
# h11's state machine (a chunked body, 100-continue, a protocol switch).
_SPECIAL = frozenset((b"transfer-encoding", b"expect", b"upgrade"))
_NOTABLE = _SPECIAL | FORWARDING_HEADERS


def head_bytes(raw: bytes | bytearray) -> bytes | bytearray:
    """The request head at the start of ``raw``: up to its empty line, or all."""
    match = _HEAD_END.search(raw)
    return raw[: match.start()] if match else raw


def comma_tokens(value: bytes) -> list[bytes]:
    """The lower-cased tokens of a comma-separated field value."""
    return [token.strip().lower() for token in value.split(b",") if token.strip()]


#: What :func:`scan_fields` finds in a request's header fields: the number of
#: Host fields, the Content-Length values, the Transfer-Encoding value (the last
#: one), whether a Connection field asks to close, and whether a field needs h11
#: (Transfer-Encoding, Expect, Upgrade), and whether there is a forwarding header
#: (``Forwarded``, ``X-Forwarded-*``).
FieldFacts = tuple[int, list[bytes], "bytes | None", bool, bool, bool]


def scan_fields(headers: list[tuple[bytes, bytes]]) -> FieldFacts:
    """The facts of :data:`FieldFacts`, in one pass over lower-cased fields."""
    hosts = 0
    lengths: list[bytes] = []
    transfer_encoding = None
    close = special = forwarded = False
    for name, value in headers:
        if name == b"host":
            hosts += 1
        elif name == b"content-length":
            lengths.append(value)
        elif name == b"connection":
            close = close or b"close" in comma_tokens(value)
        elif name in _NOTABLE:
            # One set lookup for both kinds, so that an ordinary field costs no
            # more than before forwarding headers were looked for.
            if name in FORWARDING_HEADERS:
                forwarded = True
            else:
                special = True
                if name == b"transfer-encoding":
                    transfer_encoding = value
    return hosts, lengths, transfer_encoding, close, special, forwarded


def check_body_size(limits: RequestLimits, content_length: bytes | None) -> bool:
    """Whether a declared body length is within ``max_body_size``."""
    limit = limits.max_body_size
    return limit is None or content_length is None or int(content_length) <= limit


def check_request(
    method: bytes,
    target: bytes,
    http_version: bytes,
    facts: FieldFacts,
    header_count: int,
    raw: bytearray | None,
    limits: RequestLimits,
) -> None:
    """Apply the request policy to a head h11 has parsed.

    Args:
      facts: :func:`scan_fields` of its header fields.
      header_count: how many header fields it has.
      raw: the bytes of the head as received, if captured (for obs-fold, which
          h11 unfolds before anyone sees the fields).

    Raises:
      RemoteProtocolError: with 400, 413, 431, 501 or 505.
    """
    if http_version[:1] != b"1":
        raise RemoteProtocolError(f"HTTP/{http_version.decode()} is not supported", 505)
    if header_count > limits.max_header_count:
        raise RemoteProtocolError("Too many header fields", 431)
    hosts, lengths, transfer_encoding, _, _, _ = facts
    if hosts > 1:
        raise RemoteProtocolError("More than one Host header field")
    if transfer_encoding is not None:
        # Both framings at once is the shape of request smuggling; h11 would let
        # Transfer-Encoding win, RFC 9112 6.1 lets a server reject it instead.
        if lengths:
            raise RemoteProtocolError("Both Content-Length and Transfer-Encoding")
        if http_version == b"1.0":
            raise RemoteProtocolError("Transfer-Encoding in an HTTP/1.0 request")
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
    if raw is not None and _OBS_FOLD.search(head_bytes(raw)):
        raise RemoteProtocolError("Obsolete line folding in a header field")
    # h11 has merged equal Content-Length fields into one and refused unequal ones.
    if not check_body_size(limits, lengths[0] if lengths else None):
        raise RemoteProtocolError("Request body too large", 413)


def remote_error(
    exc: h11.RemoteProtocolError, raw: bytearray | None, limits: RequestLimits
) -> RemoteProtocolError:
    """trioserve's error for one of h11's, given the bytes of the head as received.

    The status comes from h11's status hint, made more precise by the head itself:
    h11 answers 431 whenever an incomplete head grows too large, which is a 414
    while the request line is still incomplete; and its 501 is always about
    Transfer-Encoding, which RFC 9112 makes a 400 when the framing is broken
    rather than merely unsupported.
    """
    status = exc.error_status_hint
    if raw is not None and status == 431:
        line_end = raw.find(b"\n")
        if line_end < 0 or line_end > limits.max_target_length:
            return RemoteProtocolError("Request target too long", 414)
    if raw is not None and status == 501:
        return RemoteProtocolError(*_transfer_encoding_verdict(raw))
    return RemoteProtocolError(str(exc), status)


def _transfer_encoding_verdict(raw: bytes | bytearray) -> tuple[str, int]:
    """Why a Transfer-Encoding h11 refused is wrong: 400 for broken framing (the
    last coding is not chunked, chunked twice, HTTP/1.0, with Content-Length), 501
    for a coding that is merely not implemented (RFC 9112 6.1, 7)."""
    lines = head_bytes(raw).split(b"\n")
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


class ChunkScanner:
    """Watches the bytes of a chunked request body for what h11 lets through: a
    chunk size of more than 16 hex digits (more than 64 bits, so no real chunk)
    and chunk extensions longer than a limit. It only skips over the chunk data,
    so its cost is per chunk, not per byte.

    Attributes:
      done: the last chunk was seen (trailers are h11's business).
      error: what was wrong, once something was.
    """

    __slots__ = ("_ext_limit", "_line", "_skip", "done", "error")

    def __init__(self, ext_limit: int) -> None:
        self._ext_limit = ext_limit
        self._line = bytearray()  # the chunk-size line read so far
        self._skip = 0  # chunk data (and its CRLF) still to pass over
        self.done = False
        self.error: RemoteProtocolError | None = None

    def feed(self, data: bytes | bytearray) -> None:
        """Look at the next bytes of the body."""
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
