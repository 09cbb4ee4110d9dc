"""Test ASGI apps against the real trioserve, with or without sockets.

- :func:`open_test_client` runs the real server code over trio in-memory streams:
  no socket, no port, and it works with trio's ``MockClock`` so that timeouts can be
  tested in virtual time. Send raw bytes on a :class:`TestConnection`, or make
  requests with :meth:`TestClient.request`, or open websockets with
  :meth:`TestClient.websocket`.
- :func:`open_test_server` runs the real :func:`trioserve.serve` on a loopback port
  chosen by the OS, for end-to-end tests with any HTTP client.
"""

from .._errors import WebSocketClosed, WebSocketDenied
from ._client import (
    MemoryListener,
    RunningServer,
    TestClient,
    TestConnection,
    TestResponse,
    open_test_client,
    open_test_server,
)
from ._websocket import TestWebSocket

__all__ = [
    "MemoryListener",
    "RunningServer",
    "TestClient",
    "TestConnection",
    "TestResponse",
    "TestWebSocket",
    "WebSocketClosed",
    "WebSocketDenied",
    "open_test_client",
    "open_test_server",
]
