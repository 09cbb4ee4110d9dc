"""The one exception hierarchy of trioserve.

Nothing else in the package defines exceptions; foreign exceptions (h11's, trio's,
the OS's) are translated at the boundary where they enter, with ``raise ... from``.
Blame is in the type: the peer's fault, the application's fault and the operator's
fault are different classes, so that no handler has to read a message to decide
what happened::

    TrioserveError
    ├── ConfigError          (also ValueError)  a bad configuration value; the operator's fault
    ├── BindError            (also OSError)     a listener could not be opened
    ├── AppLoadError                            the app could not be imported or is not ASGI
    ├── LifespanFailure                         the app's lifespan startup failed or timed out
    ├── RemoteProtocolError                     the client broke HTTP; carries the status to answer
    ├── LocalProtocolError   (also RuntimeError) the app broke ASGI (bad message, bad sequence)
    ├── ClientDisconnected   (also OSError)     send() after the client went away (ASGI 2.5)
    ├── WebSocketDenied                         trioserve.testing: the server refused a websocket
    └── WebSocketClosed                         trioserve.testing: the server closed the websocket

    ConfigWarning (a UserWarning)               a Hypercorn key trioserve does not implement

``ClientDisconnected`` is an :class:`OSError` because ASGI spec 2.5 asks servers to
raise an ``OSError`` subclass from ``send()`` on a closed connection; applications
that already handle ``OSError`` need nothing new.
"""

from __future__ import annotations

__all__ = [
    "AppLoadError",
    "BindError",
    "ClientDisconnected",
    "ConfigError",
    "ConfigWarning",
    "LifespanFailure",
    "LocalProtocolError",
    "RemoteProtocolError",
    "TrioserveError",
    "WebSocketClosed",
    "WebSocketDenied",
]


class TrioserveError(Exception):
    """Base class of every exception trioserve raises on purpose."""


class ConfigError(TrioserveError, ValueError):
    """A configuration key has a wrong type or value, or is unknown.

    The message names the key, the value given and what was expected.
    """


class ConfigWarning(UserWarning):
    """A configuration source sets a key that Hypercorn knows but trioserve does not
    implement; the key is ignored."""


class BindError(TrioserveError, OSError):
    """A listening socket could not be opened (address in use, permission denied...)."""


class AppLoadError(TrioserveError):
    """The application could not be loaded: module or attribute not found, import
    failed, not callable, or not an ASGI application (e.g. WSGI)."""


class LifespanFailure(TrioserveError):
    """The application's lifespan startup failed, timed out, or (``lifespan="on"``) is
    not supported. Raised by :func:`trioserve.serve` before any listener is bound."""


class RemoteProtocolError(TrioserveError):
    """The client sent something that is not valid HTTP, or that trioserve refuses.

    Attributes:
      status_hint: the HTTP status code to answer with before closing (400, 408, 413,
          414, 426, 431, 501, 505, ...).
      headers: header fields the answer must carry (``Sec-WebSocket-Version`` with
          a 426), lower-case names.
    """

    def __init__(
        self,
        message: str,
        status_hint: int = 400,
        headers: tuple[tuple[bytes, bytes], ...] = (),
    ) -> None:
        super().__init__(message)
        self.status_hint = status_hint
        self.headers = headers


class LocalProtocolError(TrioserveError, RuntimeError):
    """The application sent an invalid ASGI message or an invalid message sequence.

    Raised from the ``send()`` callable; the response is aborted (a 500 if nothing
    reached the wire yet, otherwise the connection is closed).
    """


class ClientDisconnected(TrioserveError, OSError):
    """The client has gone away; raised by ``send()`` (ASGI spec 2.5).

    trioserve never logs this exception as an error, even when the application lets
    it propagate.
    """


class WebSocketDenied(TrioserveError):
    """Raised by :mod:`trioserve.testing` when the server answers a websocket
    handshake with an HTTP response instead of accepting it (the app closed
    before accepting, sent a denial response, or failed).

    Attributes:
      response: the HTTP response (a :class:`trioserve.testing.TestResponse`).
    """

    def __init__(self, response: object) -> None:
        super().__init__(f"The websocket handshake was refused: {response!r}")
        self.response = response


class WebSocketClosed(TrioserveError):
    """Raised by :mod:`trioserve.testing` when the server has closed the websocket.

    Attributes:
      code: the close code the server sent (1005 if it sent none, 1006 if the
          connection ended without a close frame).
      reason: the reason it gave.
    """

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(
            f"The websocket was closed with code {code}" + (f": {reason}" if reason else "")
        )
        self.code = code
        self.reason = reason
