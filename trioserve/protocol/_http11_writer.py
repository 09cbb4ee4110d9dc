"""HTTP/1.1 response heads, written by trioserve by h11's rules: pure functions.

Going through h11's event and state machinery for a response costs more than
everything else a small request needs (``docs/performance.md``), while the rules
are short, so trioserve writes responses itself. :func:`write_head` does it in
three steps:

1. the app's header fields are checked as h11 checks them (a token as the name; a
   value of visible characters with inner spaces or tabs; no CR, LF or NUL), and
   the framing fields they carry are collected;
2. :func:`choose_framing` decides how the body is delimited (Content-Length;
   otherwise chunked for HTTP/1.1 and the close for HTTP/1.0; no body for 204,
   304 and a 2xx to CONNECT; for HEAD, what a GET would announce) and whether the
   connection stays open;
3. the head is written once, with the framing fields that decision keeps.

The body that follows is framed by :class:`~._http11.HTTP11Protocol`, which keeps
the count. ``tests/protocol/test_response_writer.py`` holds the output to h11's
own over every combination that matters and reads each response back with h11.
"""

from __future__ import annotations

import enum
import http
import re
from collections.abc import Sequence

from .._errors import LocalProtocolError
from ._http11_policy import comma_tokens

__all__ = [
    "CONTINUE",
    "Framing",
    "choose_framing",
    "error_body",
    "error_response",
    "write_head",
]

Headers = Sequence[tuple[bytes, bytes]]

#: The interim ``100 Continue`` response.
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

_REASONS: dict[int, bytes] = {s.value: s.phrase.encode("ascii") for s in http.HTTPStatus}
_ERROR_BODIES: dict[int, bytes] = {
    400: b"Invalid HTTP request received.",
    500: b"Internal Server Error",
}
# What h11 accepts in a header field (RFC 9110 5.1, 5.5): a token as the name, and
# a value of visible characters (or obs-text) with single spaces or tabs inside it
# but none at either end. Anything else (CR, LF, NUL above all) is refused.
_TOKEN = re.compile(rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+")
_FIELD_VALUE = re.compile(rb"(?:[^\x00\s]+(?:[ \t]+[^\x00\s]+)*)?")
_DIGITS = re.compile(rb"[0-9]{1,20}")


class Framing(enum.Enum):
    """How the body of a response is delimited on the wire."""

    #: ``Content-Length``: exactly that many bytes.
    LENGTH = "length"
    #: ``Transfer-Encoding: chunked``.
    CHUNKED = "chunked"
    #: HTTP/1.0 without ``Content-Length``: the close ends the body.
    UNTIL_CLOSE = "until-close"
    #: 204, 304: no body may be sent.
    NO_BODY = "no-body"
    #: The head is the whole response and any body is dropped: a response to HEAD
    #: (whose head announces what a GET would get), a 2xx to CONNECT.
    DROP_BODY = "drop-body"


_LENGTH = Framing.LENGTH
_CHUNKED = Framing.CHUNKED
_UNTIL_CLOSE = Framing.UNTIL_CLOSE
_NO_BODY = Framing.NO_BODY
_DROP_BODY = Framing.DROP_BODY


def choose_framing(
    status: int,
    method: bytes,
    http10: bool,
    content_length: bytes | None,
    chunked: bool,
    keep_alive: bool,
) -> tuple[Framing, bool]:
    """How a response head announces its body, and whether the connection carries
    another request after it.

    Transfer-Encoding wins over Content-Length; a body of unknown length is
    chunked, or for HTTP/1.0, which has no chunked coding, delimited by the close,
    which then ends the connection (unless no body follows: HEAD). A response to
    HEAD announces what a GET would get.

    Args:
      status: the response status.
      method: the request's method.
      http10: the request was not HTTP/1.1.
      content_length: the response's Content-Length, if it has one.
      chunked: the response has ``Transfer-Encoding: chunked``.
      keep_alive: the request, the app and the server all allow keep-alive.
    """
    if status in (204, 304) or (method == b"CONNECT" and 200 <= status < 300):
        framing = _NO_BODY
    elif content_length is not None and not chunked:
        framing = _LENGTH
    elif http10:
        return _UNTIL_CLOSE, keep_alive and method == b"HEAD"
    else:
        framing = _CHUNKED
    return framing, keep_alive


def write_head(
    status: int,
    headers: Headers,
    own: Headers,
    *,
    method: bytes,
    http10: bool,
    keep_alive: bool,
) -> tuple[bytes, Framing, int, bool]:
    """Write a response head once, with the framing fields its body needs.

    Args:
      headers: lower-cased names and values from the app (and configuration).
      own: fields the server adds (``server``, ``date``), written after
          ``headers`` unchecked; no framing fields.
      method, http10: the request's method, and whether it was not HTTP/1.1.
      keep_alive: the request allows keep-alive and the server does not close.

    Returns:
      The head; how the body is framed (:attr:`Framing.DROP_BODY` for HEAD and a
      2xx to CONNECT); the bytes a Content-Length announces; whether the
      connection stays open after the response.

    Raises:
      LocalProtocolError: a header field is not allowed, or the framing fields
          are invalid.
    """
    head = [_STATUS_LINES.get(status) or _status_line(status)]
    content_length, chunked, connection, length_slot, chunked_slot = _write_fields(headers, head)
    framing, keep_alive = choose_framing(
        status,
        method,
        http10,
        content_length,
        chunked,
        keep_alive and b"close" not in connection,
    )
    tunnel = framing is _NO_BODY and method == b"CONNECT"
    if tunnel:
        # A 2xx to CONNECT turns the connection into a tunnel, which trioserve
        # does not offer: the head is the whole response, and the connection
        # ends, which the head says.
        keep_alive = False
    if length_slot and (framing is _LENGTH or framing is _NO_BODY):
        head[length_slot] = b"content-length: %s\r\n" % content_length
    if chunked_slot and framing is not _UNTIL_CLOSE:
        head[chunked_slot] = b"transfer-encoding: chunked\r\n"
    for field in own:
        head.append(b"%s: %s\r\n" % field)
    if framing is _CHUNKED and not chunked:
        head.append(b"transfer-encoding: chunked\r\n")
    if connection or not keep_alive:
        head.append(_connection_field(connection, keep_alive))
    head.append(b"\r\n")
    remaining = int(content_length) if framing is _LENGTH and content_length else 0
    if method == b"HEAD" or tunnel:
        framing = _DROP_BODY
    return b"".join(head), framing, remaining, keep_alive


def _write_fields(
    headers: Headers, head: list[bytes]
) -> tuple[bytes | None, bool, list[bytes], int, int]:
    """Check the app's fields as h11 checks them and write each once, in the app's
    order, after what ``head`` holds; leave an empty slot for each framing field,
    to be filled in once the framing is decided, and the Connection field out.

    Returns:
      The Content-Length, whether ``Transfer-Encoding: chunked`` was given, the
      Connection tokens, and the slots of the two framing fields (0 if absent).

    Raises:
      LocalProtocolError: a field is not allowed, or the framing fields are invalid.
    """
    content_length: bytes | None = None
    chunked = False
    connection: list[bytes] = []
    length_slot = chunked_slot = 0
    for name, value in headers:
        if name == b"content-length" and content_length is None and _DIGITS.fullmatch(value):
            content_length = value  # the usual form, plainly valid
            length_slot = len(head)
            head.append(b"")
            continue
        if not _TOKEN.fullmatch(name) or not _FIELD_VALUE.fullmatch(value):
            raise LocalProtocolError(
                f"Invalid response head: illegal header field {name!r}: {value!r}"
            )
        if name == b"content-length":
            content_length = _content_length(value, content_length)
            if not length_slot:
                length_slot = len(head)
                head.append(b"")
        elif name == b"transfer-encoding":
            if chunked or value.lower() != b"chunked":
                raise LocalProtocolError(
                    "Invalid response head: only one Transfer-Encoding: chunked is supported"
                )
            chunked = True
            chunked_slot = len(head)
            head.append(b"")
        elif name == b"connection":
            connection.extend(comma_tokens(value))
        else:
            head.append(b"%s: %s\r\n" % (name, value))
    return content_length, chunked, connection, length_slot, chunked_slot


def _connection_field(tokens: list[bytes], keep_alive: bool) -> bytes:
    """The Connection field: the app's tokens, and ``close`` (instead of any
    ``keep-alive``) when the connection ends after the response."""
    if not keep_alive:
        tokens = [token for token in tokens if token != b"keep-alive"]
        tokens.append(b"close")
    return b"connection: %s\r\n" % b", ".join(sorted(set(tokens)))


def _status_line(status: int) -> bytes:
    return b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b""))


_STATUS_LINES = {status: _status_line(status) for status in _REASONS}


def error_body(status: int) -> bytes:
    """The plain-text body trioserve sends with a response it makes itself."""
    return _ERROR_BODIES.get(status) or _REASONS.get(status, b"Error")


def error_response(status: int, headers: Headers, *, head_request: bool) -> bytes:
    """A whole response made by the server itself, ending the connection.

    Made here, not by h11, because the answer must be possible in any state,
    including after an app's response head was refused.
    """
    body = error_body(status)
    parts = [_STATUS_LINES.get(status) or _status_line(status)]
    parts.extend(b"%s: %s\r\n" % field for field in headers)
    parts.append(b"content-type: text/plain; charset=utf-8\r\n")
    parts.append(b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body))
    if not head_request:
        parts.append(body)
    return b"".join(parts)


def _content_length(value: bytes, seen: bytes | None) -> bytes:
    """The length a Content-Length field declares, checked against ``seen`` (an
    earlier field's): ``5, 5`` and repeated equal fields are one length (RFC 9110
    8.6); anything else conflicting or malformed is refused."""
    lengths = {length.strip() for length in value.split(b",")}
    length = lengths.pop()
    if lengths or (seen is not None and length != seen):
        raise LocalProtocolError("Invalid response head: conflicting Content-Length fields")
    if not _DIGITS.fullmatch(length):
        raise LocalProtocolError(f"Invalid response head: bad Content-Length {value!r}")
    return length
