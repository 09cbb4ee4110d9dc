"""ASGI for HTTP, the pure parts: building the scope and checking what the app sends.

The response side is a small state machine, one state per step of the ASGI
message sequence; every wrong step raises :class:`LocalProtocolError` (a
``RuntimeError``) whose message names the message and the state, so an app author
sees at once what went wrong.
"""

from __future__ import annotations

import contextlib
import enum
import os
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import unquote

from .._errors import LocalProtocolError
from ._events import RequestHead

__all__ = [
    "ASGI_VERSION",
    "ResponseState",
    "bad_message",
    "build_http_scope",
    "check_response_body",
    "check_response_pathsend",
    "check_response_start",
    "check_response_zerocopysend",
    "split_target",
]

#: What trioserve advertises in ``scope["asgi"]``.
ASGI_VERSION = {"version": "3.0", "spec_version": "2.5"}

_HTTP_VERSIONS = {b"1.1": "1.1", b"1.0": "1.0"}


class ResponseState(enum.Enum):
    """Where the app is in the ``http.response.*`` sequence."""

    #: Nothing sent yet; ``http.response.start`` is next.
    START = "START"
    #: Start sent; ``http.response.body`` messages until ``more_body`` is false.
    BODY = "BODY"
    #: The response is complete; nothing more may be sent.
    DONE = "DONE"


def split_target(target: bytes) -> tuple[bytes, bytes]:
    """Split a request target into ``(raw_path, query_string)``.

    Absolute-form targets (``http://host/path``) give their path; the asterisk
    form gives ``*``.
    """
    raw_path, _, query = target.partition(b"?")
    if raw_path[:1] != b"/" and raw_path != b"*":
        # absolute-form: scheme "://" authority [path]
        _, sep, rest = raw_path.partition(b"://")
        if sep:
            slash = rest.find(b"/")
            raw_path = rest[slash:] if slash >= 0 else b"/"
    return raw_path, query


def _with_target_authority(
    target: bytes, headers: list[tuple[bytes, bytes]]
) -> list[tuple[bytes, bytes]]:
    """For an absolute-form target, the ``host`` header the app sees is the target's
    authority: RFC 9112 3.2.2 has the server ignore the Host field in that case, so
    the app's idea of the host agrees with the path it is given."""
    _, sep, rest = target.partition(b"://")
    if not sep:
        return headers
    authority = rest.split(b"/", 1)[0].split(b"?", 1)[0]
    authority = authority.rpartition(b"@")[2]  # userinfo is never part of the host
    if not authority:
        return headers
    return [(b"host", authority)] + [(n, v) for n, v in headers if n != b"host"]


def build_http_scope(
    head: RequestHead,
    base: dict[str, Any],
    root_path: str,
    state: dict[str, Any] | None,
) -> dict[str, Any]:
    """Build the ASGI HTTP scope for one request.

    Args:
      head: the parsed request head.
      base: the per-connection part of the scope (``type``, ``asgi``, ``scheme``,
          ``client``, ``server``, ``root_path``), built once per connection.
      root_path: the configured ``root_path``; it prefixes ``path`` and ``raw_path``.
      state: the lifespan state; each request gets its own shallow copy.
    """
    raw_path, query = split_target(head.target)
    headers = head.headers
    if raw_path is not head.target and head.target[:1] not in (b"/", b"*"):
        headers = _with_target_authority(head.target, headers)
    path = raw_path.decode("ascii")
    if "%" in path:
        path = unquote(path)
    if root_path:
        path = root_path + path
        raw_path = root_path.encode("utf-8") + raw_path
    scope = base.copy()
    scope["http_version"] = _HTTP_VERSIONS.get(head.http_version) or head.http_version.decode()
    scope["method"] = head.method.decode("ascii")
    scope["path"] = path
    scope["raw_path"] = raw_path
    scope["query_string"] = query
    scope["headers"] = headers
    # Fresh dicts per request: an app may write into what it is given.
    scope["extensions"] = {"http.response.pathsend": {}, "http.response.zerocopysend": {}}
    scope["state"] = {} if state is None else state.copy()
    return scope


def bad_message(message: Mapping[str, Any], state: ResponseState) -> LocalProtocolError:
    """The error for a message that has no place in the response's current state."""
    kind = message.get("type")
    return LocalProtocolError(
        f"Unexpected ASGI message {kind!r} in response state {state.value}: "
        + {
            ResponseState.START: "expected 'http.response.start'",
            ResponseState.BODY: "expected 'http.response.body'",
            ResponseState.DONE: "the response is already complete",
        }[state]
    )


def check_response_start(
    message: Mapping[str, Any], state: ResponseState
) -> tuple[int, list[tuple[bytes, bytes]]]:
    """Validate ``http.response.start``; return the status and lower-cased headers.

    Raises:
      LocalProtocolError: wrong state, bad status, or malformed headers.
    """
    if state is not ResponseState.START:
        raise bad_message(message, state)
    status = message.get("status")
    if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
        raise LocalProtocolError(
            f"http.response.start 'status' must be an int in 100..599, got {status!r}"
        )
    if 100 <= status < 200:
        # Informational responses are the server's business (100 Continue) or an
        # extension trioserve does not offer.
        raise LocalProtocolError(
            f"http.response.start 'status' must be a final status, got {status}"
        )
    raw_headers: Iterable[Any] = message.get("headers", ())
    headers: list[tuple[bytes, bytes]] = []
    try:
        for name, value in raw_headers:
            if not isinstance(name, bytes) or not isinstance(value, bytes):
                raise TypeError
            headers.append((name.lower(), value))
    except (TypeError, ValueError):
        raise LocalProtocolError(
            "http.response.start 'headers' must be an iterable of [name, value] byte-string pairs"
        ) from None
    return int(status), headers


def check_response_body(message: Mapping[str, Any], state: ResponseState) -> tuple[bytes, bool]:
    """Validate ``http.response.body``; return the body and ``more_body``.

    Raises:
      LocalProtocolError: wrong state or a body that is not bytes.
    """
    if state is not ResponseState.BODY:
        raise bad_message(message, state)
    body = message.get("body", b"")
    if not isinstance(body, bytes):
        if isinstance(body, (bytearray, memoryview)):
            body = bytes(body)
        else:
            raise LocalProtocolError(
                f"http.response.body 'body' must be bytes, got {type(body).__name__}"
            )
    return body, bool(message.get("more_body", False))


def check_response_pathsend(message: Mapping[str, Any], state: ResponseState) -> str:
    """Validate ``http.response.pathsend``; return the path.

    Raises:
      LocalProtocolError: wrong state, or a path that is not an absolute ``str``.
    """
    if state is not ResponseState.BODY:
        raise bad_message(message, state)
    path = message.get("path")
    if not isinstance(path, str) or not os.path.isabs(path):
        raise LocalProtocolError(
            f"http.response.pathsend 'path' must be an absolute path (str), got {path!r}"
        )
    return path


def check_response_zerocopysend(
    message: Mapping[str, Any], state: ResponseState
) -> tuple[int, int | None, int | None, bool]:
    """Validate ``http.response.zerocopysend``; return the file descriptor, the
    offset and the count (``None`` where not given) and ``more_body``.

    Raises:
      LocalProtocolError: wrong state, no file descriptor, or a bad offset or count.
    """
    if state is not ResponseState.BODY:
        raise bad_message(message, state)
    file: Any = message.get("file")
    fd: object = -1
    if isinstance(file, int) and not isinstance(file, bool):
        fd = file
    else:
        with contextlib.suppress(AttributeError, OSError, ValueError):
            fd = file.fileno()
    if not isinstance(fd, int) or fd < 0:
        raise LocalProtocolError(
            f"http.response.zerocopysend 'file' must have a file descriptor, got {file!r}"
        )
    numbers = []
    for key in ("offset", "count"):
        value = message.get(key)
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or value < 0
        ):
            raise LocalProtocolError(
                f"http.response.zerocopysend {key!r} must be an int >= 0, got {value!r}"
            )
        numbers.append(value)
    return fd, numbers[0], numbers[1], bool(message.get("more_body", False))
