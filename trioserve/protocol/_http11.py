"""HTTP/1.1 for one connection, as a policy layer over ``h11.Connection``.

h11 does the parsing and the framing (Content-Length and chunked, keep-alive
rules, the state machine); this module adds what a server needs on top of it and
keeps every h11 detail away from the I/O layer:

- h11's exceptions become :class:`RemoteProtocolError` (the client's fault, with a
  status to answer) or :class:`LocalProtocolError` (the app's fault);
- the request head size limit holds however the bytes arrive (h11 only checks the
  size of an *incomplete* head);
- responses to HEAD carry the GET headers and no body;
- response header names go out lower-case. h11 writes the framing headers it adds
  itself (``Transfer-Encoding``, ``Connection``) in title case; they are the only
  names that are not the app's lower-cased ones, so the head is fixed up by a
  replace anchored on CRLF (a header value can never contain CRLF);
- reason phrases are filled in (h11 would send an empty one).
"""

from __future__ import annotations

import http

import h11

from .._errors import LocalProtocolError, RemoteProtocolError
from ._events import BodyChunk, RequestEnd, RequestHead, Signal

__all__ = ["HTTP11Protocol", "error_body"]

_REASONS: dict[int, bytes] = {s.value: s.phrase.encode("ascii") for s in http.HTTPStatus}

_ERROR_BODIES: dict[int, bytes] = {
    400: b"Invalid HTTP request received.",
    500: b"Internal Server Error",
}


def error_body(status: int) -> bytes:
    """The plain-text body trioserve sends with a response it makes itself."""
    return _ERROR_BODIES.get(status) or _REASONS.get(status, b"Error")


def _lowercase_framing_headers(head: bytes) -> bytes:
    return head.replace(b"\r\nTransfer-Encoding: ", b"\r\ntransfer-encoding: ").replace(
        b"\r\nConnection: ", b"\r\nconnection: "
    )


class HTTP11Protocol:
    """The server side of one HTTP/1.1 connection: feed bytes, pull events, and turn
    response parts into bytes.

    Args:
      max_head_size: the largest request head accepted, in bytes; larger heads raise
          :class:`RemoteProtocolError` with status 431.
    """

    __slots__ = ("_conn", "_fed", "_head_request", "_head_sent", "_head_start", "_max_head_size")

    def __init__(self, max_head_size: int) -> None:
        self._conn = h11.Connection(h11.SERVER, max_incomplete_event_size=max_head_size)
        self._max_head_size = max_head_size
        # Byte positions in the stream fed to h11: how much was fed in all, and where
        # the current request's head began (the end of the previous request).
        self._fed = 0
        self._head_start = 0
        self._head_request = False
        self._head_sent = False

    # -- receiving ---------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Add bytes from the client; ``b""`` means the client closed its side."""
        self._fed += len(data)
        try:
            self._conn.receive_data(data)
        except RuntimeError as exc:  # data after EOF: h11's way of saying "misuse"
            raise RemoteProtocolError(str(exc)) from exc

    def next_event(self) -> RequestHead | BodyChunk | RequestEnd | Signal:
        """Return the next event, or a :class:`Signal` when there is none yet.

        Raises:
          RemoteProtocolError: the client's bytes are not acceptable HTTP/1.1.
        """
        try:
            event = self._conn.next_event()
        except h11.RemoteProtocolError as exc:
            raise RemoteProtocolError(str(exc), exc.error_status_hint) from exc
        # Ordered by frequency: a request is usually a head and an end.
        if type(event) is h11.Request:
            return self._request_head(event)
        if type(event) is h11.EndOfMessage:
            self._head_start = self._fed - len(self._conn.trailing_data[0])
            return RequestEnd()
        if type(event) is h11.Data:
            return BodyChunk(bytes(event.data))
        if event is h11.NEED_DATA:
            return Signal.NEED_DATA
        if event is h11.PAUSED:
            return Signal.PAUSED
        # ConnectionClosed is the only event left for a server.
        return Signal.PEER_CLOSED

    def _request_head(self, event: h11.Request) -> RequestHead:
        # h11 limits only heads still incomplete; a whole head that arrived in one
        # read is measured here, exactly (padding and all), as the bytes h11 consumed
        # since the previous request ended. Everything fed since then bounds that
        # from above, so the buffer is looked at only when the bound is over.
        if self._fed - self._head_start > self._max_head_size:
            size = self._fed - len(self._conn.trailing_data[0]) - self._head_start
            if size > self._max_head_size:
                raise RemoteProtocolError("Request head too large", 431)
        headers = list(event.headers)
        self._head_request = event.method == b"HEAD"
        return RequestHead(event.method, event.target, event.http_version, headers)

    @property
    def expects_continue(self) -> bool:
        """The client sent ``Expect: 100-continue`` and waits for our answer."""
        return self._conn.they_are_waiting_for_100_continue

    @property
    def request_complete(self) -> bool:
        """The whole current request, body included, has been received."""
        return self._conn.their_state in (h11.DONE, h11.MUST_CLOSE)

    @property
    def has_buffered_data(self) -> bool:
        """Bytes of a next request (a pipelined one, or part of one) wait unparsed."""
        return bool(self._conn.trailing_data[0])

    @property
    def keep_alive(self) -> bool:
        """The connection may carry another request after this one."""
        return self._conn.our_state is h11.DONE

    def start_next_cycle(self) -> bool:
        """Reset for the next request if both sides are done; return whether it did."""
        if self._conn.our_state is h11.DONE and self._conn.their_state is h11.DONE:
            self._conn.start_next_cycle()
            self._head_request = False
            self._head_sent = False
            return True
        return False

    # -- sending -----------------------------------------------------------------

    def informational_continue(self) -> bytes:
        """Bytes of a ``100 Continue`` response."""
        data = self._conn.send(
            h11.InformationalResponse(status_code=100, headers=[], reason=b"Continue")
        )
        assert data is not None
        return data

    def response_head(
        self,
        status: int,
        headers: list[tuple[bytes, bytes]],
        *,
        close: bool = False,
    ) -> bytes:
        """Bytes of a response head.

        Args:
          status: the status code (200..599).
          headers: lower-cased names and values, default headers already included.
          close: add ``connection: close`` (the connection ends after this response).

        Raises:
          LocalProtocolError: a header name or value is not allowed (CR, LF, NUL...).
        """
        if close:
            headers = [*headers, (b"connection", b"close")]
        try:
            data = self._conn.send(
                h11.Response(status_code=status, headers=headers, reason=_REASONS.get(status, b""))
            )
        except h11.LocalProtocolError as exc:
            raise LocalProtocolError(f"Invalid response head: {exc}") from exc
        assert data is not None
        self._head_sent = True
        return _lowercase_framing_headers(data)

    def retract_head(self) -> None:
        """The head from :meth:`response_head` was not written after all (what was
        to follow it failed), so :meth:`error_response` may still answer."""
        self._head_sent = False

    def response_body(self, data: bytes) -> bytes:
        """Bytes of a piece of response body (nothing for a response to HEAD).

        Raises:
          LocalProtocolError: more bytes than the declared ``content-length``.
        """
        if self._head_request or not data:
            return b""
        try:
            out = self._conn.send(h11.Data(data=data))
        except h11.LocalProtocolError as exc:
            raise LocalProtocolError(f"Response body: {exc}") from exc
        assert out is not None
        return out

    def response_end(self) -> bytes:
        """Bytes that end the response body.

        Raises:
          LocalProtocolError: fewer bytes than the declared ``content-length``.
        """
        try:
            out = self._conn.send(h11.EndOfMessage())
        except h11.LocalProtocolError as exc:
            raise LocalProtocolError(f"Response body: {exc}") from exc
        assert out is not None
        return out

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
