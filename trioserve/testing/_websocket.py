"""The websocket client end of :mod:`trioserve.testing`: wsproto's client side over
any stream, so that websocket routes can be tested against the real server
without sockets."""

from __future__ import annotations

from collections.abc import Iterable

import trio
from wsproto import WSConnection
from wsproto.connection import ConnectionState, ConnectionType
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.extensions import PerMessageDeflate

from .._errors import WebSocketClosed, WebSocketDenied

__all__ = ["TestWebSocket", "open_websocket"]


class TestWebSocket:
    """The client end of an accepted websocket.

    Messages are whole: fragments are joined, pings are answered. Once the server
    has closed, :meth:`receive` raises :class:`WebSocketClosed` with its code.

    Attributes:
      subprotocol: the subprotocol the server chose, or ``None``.
      headers: the header fields of the ``101`` response, names lower-cased.
      extensions: the extensions agreed (``["permessage-deflate"]`` or ``[]``).
    """

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        stream: trio.abc.Stream,
        connection: WSConnection,
        accepted: AcceptConnection,
        headers: list[tuple[bytes, bytes]],
    ) -> None:
        self._stream = stream
        self._ws = connection
        self.subprotocol = accepted.subprotocol
        self.headers = headers
        self.extensions = [extension.name for extension in accepted.extensions]
        self._closed: WebSocketClosed | None = None

    async def send_text(self, text: str) -> None:
        """Send a text message."""
        await self._stream.send_all(self._ws.send(TextMessage(data=text)))

    async def send_bytes(self, data: bytes) -> None:
        """Send a binary message."""
        await self._stream.send_all(self._ws.send(BytesMessage(data=data)))

    async def send_raw(self, data: bytes) -> None:
        """Send bytes as they are: hand-made frames, to test what the server does
        with malformed ones."""
        await self._stream.send_all(data)

    async def ping(self, payload: bytes = b"") -> None:
        """Send a ping (its pong is consumed by :meth:`receive`)."""
        await self._stream.send_all(self._ws.send(Ping(payload=payload)))

    async def receive(self) -> str | bytes:
        """The next whole message from the server.

        Raises:
          WebSocketClosed: the server closed the websocket (or the connection).
        """
        parts: list[str | bytes] = []
        while True:
            event = await self._next_event()
            if isinstance(event, (TextMessage, BytesMessage)):
                parts.append(event.data if isinstance(event.data, str) else bytes(event.data))
                if event.message_finished:
                    if isinstance(parts[0], str):
                        return "".join(parts)  # type: ignore[arg-type]
                    return b"".join(parts)  # type: ignore[arg-type]
            elif isinstance(event, Ping):
                await self._stream.send_all(self._ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                if self._ws.state is ConnectionState.REMOTE_CLOSING:
                    await self._stream.send_all(self._ws.send(event.response()))
                self._closed = WebSocketClosed(int(event.code), event.reason or "")
                raise self._closed

    async def receive_text(self) -> str:
        """The next message, which must be text."""
        message = await self.receive()
        assert isinstance(message, str), f"expected a text message, got {message!r}"
        return message

    async def receive_bytes(self) -> bytes:
        """The next message, which must be binary."""
        message = await self.receive()
        assert isinstance(message, bytes), f"expected a binary message, got {message!r}"
        return message

    async def close(self, code: int = 1000, reason: str = "") -> int:
        """Close the websocket and wait for the server's close frame; return its
        code. Messages still arriving in between are dropped."""
        if self._ws.state is ConnectionState.OPEN:
            await self._stream.send_all(self._ws.send(CloseConnection(code=code, reason=reason)))
        while self._closed is None:
            event = await self._next_event()
            if isinstance(event, CloseConnection):
                self._closed = WebSocketClosed(int(event.code), event.reason or "")
        return self._closed.code

    async def _next_event(self) -> Event:
        if self._closed is not None:
            raise self._closed
        while True:
            for event in self._ws.events():
                return event
            data = await self._stream.receive_some()
            self._ws.receive_data(bytes(data) if data else None)


async def open_websocket(
    stream: trio.abc.Stream,
    path: str,
    *,
    subprotocols: Iterable[str] = (),
    headers: Iterable[tuple[str, str]] = (),
    deflate: bool = False,
) -> TestWebSocket:
    """Open a websocket on ``stream`` (an HTTP/1.1 connection to the server).

    Raises:
      WebSocketDenied: the server answered with an HTTP response; its
          ``response`` is a :class:`~trioserve.testing.TestResponse`.
    """
    from ._client import TestResponse

    connection = WSConnection(ConnectionType.CLIENT)
    request = Request(
        host="testserver",
        target=path,
        subprotocols=list(subprotocols),
        extra_headers=[(name.encode(), value.encode()) for name, value in headers],
        extensions=[PerMessageDeflate()] if deflate else [],
    )
    await stream.send_all(connection.send(request))
    rejection: RejectConnection | None = None
    body: list[bytes] = []
    while True:
        for event in connection.events():
            if isinstance(event, AcceptConnection):
                response_headers = [(bytes(n).lower(), bytes(v)) for n, v in event.extra_headers]
                return TestWebSocket(stream, connection, event, response_headers)
            if isinstance(event, RejectConnection):
                rejection = event
            elif isinstance(event, RejectData):
                body.append(bytes(event.data))
                if event.body_finished and rejection is not None:
                    headers_out = [(bytes(n).lower(), bytes(v)) for n, v in rejection.headers]
                    raise WebSocketDenied(
                        TestResponse(rejection.status_code, headers_out, b"".join(body))
                    )
        data = await stream.receive_some()
        if not data:
            raise WebSocketClosed(1006, "the server closed the connection during the handshake")
        connection.receive_data(bytes(data))
