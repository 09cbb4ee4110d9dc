"""ASGI for WebSockets, the pure parts: the scope, and the checks of what the app
sends, one state per step of the ``websocket.*`` message sequence.

Every wrong step raises :class:`LocalProtocolError` (a ``RuntimeError``) naming
the message and the state, as the HTTP side does.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

from .._errors import LocalProtocolError
from ._asgi import ResponseState, build_http_scope, check_response_body, check_response_start
from ._events import RequestHead

__all__ = [
    "SessionState",
    "bad_ws_message",
    "build_websocket_scope",
    "check_accept",
    "check_close",
    "check_denial_body",
    "check_denial_start",
    "check_send",
]


class SessionState(enum.Enum):
    """Where the app is in the ``websocket.*`` sequence it sends."""

    #: Nothing sent: ``websocket.accept``, ``websocket.close`` or
    #: ``websocket.http.response.start`` is next.
    CONNECTING = "CONNECTING"
    #: A denial response was started; ``websocket.http.response.body`` is next.
    RESPONDING = "RESPONDING"
    #: Accepted: ``websocket.send`` and ``websocket.close``.
    CONNECTED = "CONNECTED"
    #: The app closed, denied, or the connection is over: nothing more to send.
    CLOSED = "CLOSED"


_EXPECTED = {
    SessionState.CONNECTING: "expected 'websocket.accept', 'websocket.close' or "
    "'websocket.http.response.start'",
    SessionState.RESPONDING: "expected 'websocket.http.response.body'",
    SessionState.CONNECTED: "expected 'websocket.send' or 'websocket.close'",
    SessionState.CLOSED: "the websocket is closed",
}

#: Close codes an endpoint may send (RFC 6455 7.4): the defined ones that are
#: not reserved for reporting, and the ranges for libraries and applications.
_SENDABLE_CODES = frozenset((1000, 1001, 1002, 1003, *range(1007, 1015)))


def build_websocket_scope(
    head: RequestHead,
    base: dict[str, Any],
    root_path: str,
    state: dict[str, Any] | None,
    subprotocols: list[str],
) -> dict[str, Any]:
    """Build the ASGI websocket scope of an upgrade request.

    Args:
      head: the parsed upgrade request.
      base: the per-connection part of an HTTP scope (``scheme`` is ``http`` or
          ``https``, and becomes ``ws`` or ``wss``).
      root_path: the configured ``root_path``.
      state: the lifespan state; each session gets its own shallow copy.
      subprotocols: the subprotocols the client offered.
    """
    scope = build_http_scope(head, base, root_path, state)
    del scope["method"]
    scope["type"] = "websocket"
    scope["scheme"] = "wss" if base["scheme"] == "https" else "ws"
    scope["subprotocols"] = subprotocols
    # Fresh per session: an app may write into what it is given.
    scope["extensions"] = {"websocket.http.response": {}}
    return scope


def bad_ws_message(message: Mapping[str, Any], state: SessionState) -> LocalProtocolError:
    """The error for a message that has no place in the session's current state."""
    return LocalProtocolError(
        f"Unexpected ASGI message {message.get('type')!r} in websocket state "
        f"{state.value}: {_EXPECTED[state]}"
    )


def check_accept(
    message: Mapping[str, Any], state: SessionState
) -> tuple[str | None, list[tuple[bytes, bytes]]]:
    """Validate ``websocket.accept``; return the subprotocol and extra headers.

    Raises:
      LocalProtocolError: wrong state, or a malformed subprotocol or headers.
    """
    if state is not SessionState.CONNECTING:
        raise bad_ws_message(message, state)
    subprotocol = message.get("subprotocol")
    if subprotocol is not None and not isinstance(subprotocol, str):
        raise LocalProtocolError(
            f"websocket.accept 'subprotocol' must be a str or None, got {subprotocol!r}"
        )
    # The same shape as a response start's headers, checked the same way.
    _, headers = check_response_start(
        {"status": 200, "headers": message.get("headers", ())}, ResponseState.START
    )
    return subprotocol, headers


def check_send(message: Mapping[str, Any], state: SessionState) -> str | bytes:
    """Validate ``websocket.send``; return the text or the bytes to send.

    Raises:
      LocalProtocolError: wrong state, or not exactly one of ``text`` and
          ``bytes`` given with the right type.
    """
    if state is not SessionState.CONNECTED:
        raise bad_ws_message(message, state)
    text = message.get("text")
    data = message.get("bytes")
    if (text is None) == (data is None):
        raise LocalProtocolError("websocket.send needs exactly one of 'text' and 'bytes'")
    if text is not None:
        if not isinstance(text, str):
            raise LocalProtocolError(
                f"websocket.send 'text' must be a str, got {type(text).__name__}"
            )
        return text
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    if not isinstance(data, bytes):
        raise LocalProtocolError(f"websocket.send 'bytes' must be bytes, got {type(data).__name__}")
    return data


def check_close(message: Mapping[str, Any], state: SessionState) -> tuple[int, str]:
    """Validate ``websocket.close``; return the code and the reason.

    Raises:
      LocalProtocolError: wrong state, a code an endpoint may not send (RFC 6455
          7.4), or a reason that is not a str.
    """
    if state is not SessionState.CONNECTING and state is not SessionState.CONNECTED:
        raise bad_ws_message(message, state)
    code = message.get("code", 1000)
    if code is None:
        code = 1000
    if (
        not isinstance(code, int)
        or isinstance(code, bool)
        or not (code in _SENDABLE_CODES or 3000 <= code <= 4999)
    ):
        raise LocalProtocolError(
            f"websocket.close 'code' must be 1000-1003, 1007-1014 or 3000-4999, got {code!r}"
        )
    reason = message.get("reason") or ""
    if not isinstance(reason, str):
        raise LocalProtocolError(f"websocket.close 'reason' must be a str, got {reason!r}")
    return code, reason


def check_denial_start(
    message: Mapping[str, Any], state: SessionState
) -> tuple[int, list[tuple[bytes, bytes]]]:
    """Validate ``websocket.http.response.start``; return status and headers.

    Raises:
      LocalProtocolError: wrong state, bad status, or malformed headers.
    """
    if state is not SessionState.CONNECTING:
        raise bad_ws_message(message, state)
    status, headers = check_response_start(message, ResponseState.START)
    return status, headers


def check_denial_body(message: Mapping[str, Any], state: SessionState) -> tuple[bytes, bool]:
    """Validate ``websocket.http.response.body``; return the body and ``more_body``.

    Raises:
      LocalProtocolError: wrong state or a body that is not bytes.
    """
    if state is not SessionState.RESPONDING:
        raise bad_ws_message(message, state)
    return check_response_body(message, ResponseState.BODY)
