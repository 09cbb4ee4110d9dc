"""One HTTP/1.1 connection's protocol state, sans-IO: requests in, responses out.

:class:`HTTP11Protocol` is the :class:`~._http11_parser.RequestParser` with the
response side that answers it: the head written by :func:`~._http11_writer.write_head`,
the body framed and counted against what the head announced, and the few facts
that tie a request to its response:

- a server error answer (:meth:`~HTTP11Protocol.error_response`) is possible only
  while no response head is out;
- ``100 Continue`` is owed only until it or a final response head was sent;
- the next request is parsed only once both the request and its response are
  complete and both sides allow keep-alive (:meth:`~HTTP11Protocol.start_next_cycle`).

It extends the parser rather than holding one because every request passes
through a handful of its methods, and a forwarding call per use is measurably
slower (``docs/performance.md``). It does no I/O: the connection layer feeds it
bytes and writes what it returns.
"""

from __future__ import annotations

from collections.abc import Sequence

from .._errors import LocalProtocolError
from ._http11_parser import RequestParser
from ._http11_policy import RequestLimits
from ._http11_writer import CONTINUE, Framing, error_response, write_head

__all__ = ["HTTP11Protocol"]

Headers = Sequence[tuple[bytes, bytes]]

_LENGTH = Framing.LENGTH
_CHUNKED = Framing.CHUNKED
_NO_BODY = Framing.NO_BODY
_DROP_BODY = Framing.DROP_BODY


class HTTP11Protocol(RequestParser):
    """The server side of one HTTP/1.1 connection: feed bytes, pull events (see
    :class:`RequestParser`), and turn response parts into bytes.

    Args:
      limits: the request policy; a request that breaks it raises
          :class:`RemoteProtocolError` with the status to answer.
      fast_path: parse plain requests without h11 (see :class:`RequestParser`).

    Attributes:
      head_sent: a response head (the app's or an error answer) is out for the
          current request (read-only).
    """

    __slots__ = (
        "_continue_answered",
        "_continue_sent",
        "_framing",
        "_remaining",
        "_response_done",
        "_response_keep_alive",
        "head_sent",
    )

    def __init__(self, limits: RequestLimits = RequestLimits(), *, fast_path: bool = True) -> None:
        super().__init__(limits, fast_path=fast_path)
        self._framing = _LENGTH
        self._remaining = 0
        self._response_done = False
        self._response_keep_alive = False
        self.head_sent = False
        self._continue_answered = False
        self._continue_sent = False

    # -- between request and response ----------------------------------------------

    @property
    def expects_continue(self) -> bool:
        """The client sent ``Expect: 100-continue`` and waits for our answer."""
        return (
            self._asked_continue
            and not self._continue_answered
            and self._client_waits_for_continue()
        )

    @property
    def body_may_follow(self) -> bool:
        """The rest of the request body may still come: the client did not ask to
        wait for ``100 Continue``, or it was sent. (If not, the client may wait for
        it forever, and the connection cannot be reused.)"""
        return not self._asked_continue or self._continue_sent

    @property
    def keep_alive(self) -> bool:
        """The response is complete and the connection may carry another request."""
        return self._response_done and self._response_keep_alive

    def start_next_cycle(self) -> bool:
        """Get ready for the next request if both the request and the response are
        complete and the connection stays open; return whether it did."""
        if not (self._response_done and self._response_keep_alive and self._keep_alive):
            return False
        if not self.request_complete:
            return False
        self._next_request()
        self._response_done = self.head_sent = False
        self._continue_answered = self._continue_sent = False
        return True

    # -- the response --------------------------------------------------------------

    def informational_continue(self) -> bytes:
        """Bytes of a ``100 Continue`` response."""
        self._continue_answered = self._continue_sent = True
        return CONTINUE

    def response_head(
        self, status: int, headers: Headers, *, close: bool = False, own: Headers = ()
    ) -> bytes:
        """Bytes of a response head, with the framing fields the body needs.

        Args:
          status: the final status code (200..599).
          headers: lower-cased names and values from the app (and configuration).
          close: the connection ends after this response (``connection: close``).
          own: fields the server makes itself (``server``, ``date``), written after
              ``headers`` without being checked again; no framing fields.

        Raises:
          LocalProtocolError: a header field is not allowed, or the framing fields
              are invalid; the head does not count as sent then.
        """
        if self._asked_continue and not self._continue_sent and not self.request_complete:
            # The client waits for 100 Continue before it sends the body, so the
            # body cannot be read after this response: the connection ends, and
            # the head says so.
            close = True
        head, self._framing, self._remaining, self._response_keep_alive = write_head(
            status,
            headers,
            own,
            method=self._method,
            http10=self._http10,
            keep_alive=self._keep_alive and not close,
        )
        self.head_sent = self._continue_answered = True
        return head

    def retract_head(self) -> None:
        """The head from :meth:`response_head` was not written after all (what was
        to follow it failed), so :meth:`error_response` may still answer."""
        self.head_sent = False

    def response_body(self, data: bytes) -> bytes:
        """Bytes of a piece of response body (nothing for a response to HEAD).

        Raises:
          LocalProtocolError: more bytes than the declared ``content-length``.
        """
        prefix = self._frame(len(data))
        if prefix is None:
            return b""
        return b"%s%s\r\n" % (prefix, data) if prefix else data

    def response_file_framing(self, size: int) -> tuple[bytes, bytes] | None:
        """The framing around a piece of response body of ``size`` bytes that the
        caller writes itself (a file sent with ``sendfile``): ``(before, after)``,
        or ``None`` when the body is not to be written at all (HEAD).

        Raises:
          LocalProtocolError: more bytes than the declared ``content-length``.
        """
        prefix = self._frame(size)
        if prefix is None:
            return None
        return (prefix, b"\r\n") if prefix else (b"", b"")

    def _frame(self, size: int) -> bytes | None:
        """Count ``size`` bytes of body against the framing; return the chunk
        header to put before them (``b""`` if none), or ``None`` to drop them."""
        framing = self._framing
        if framing is _DROP_BODY:
            return None
        if not size:
            return b""
        if framing is _LENGTH or framing is _NO_BODY:
            if size > self._remaining:
                raise LocalProtocolError("Response body: Too much data for declared Content-Length")
            self._remaining -= size
            return b""
        return b"%x\r\n" % size if framing is _CHUNKED else b""

    def response_end(self) -> bytes:
        """Bytes that end the response body.

        Raises:
          LocalProtocolError: fewer bytes than the declared ``content-length``.
        """
        framing = self._framing
        if framing is _LENGTH and self._remaining:
            raise LocalProtocolError("Response body: Too little data for declared Content-Length")
        self._response_done = True
        return b"0\r\n\r\n" if framing is _CHUNKED else b""

    def error_response(self, status: int, headers: Headers) -> bytes:
        """A whole response made by the server itself, ending the connection; ``b""``
        when part of a response is already out and nothing more may be sent."""
        if self.head_sent:
            return b""
        self.head_sent = True
        return error_response(status, headers, head_request=self._head_request)
