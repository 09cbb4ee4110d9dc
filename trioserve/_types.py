"""ASGI 3 type aliases used across trioserve.

ASGI messages are plain dicts whose keys depend on their ``type``; they are typed as
``MutableMapping[str, Any]`` at the boundary and checked field by field in
:mod:`trioserve.protocol._asgi`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
#: An ASGI 3 app. It must return ``None``; ``object`` lets the server check that.
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[object]]
