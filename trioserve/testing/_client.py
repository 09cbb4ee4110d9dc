from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from functools import partial

import h11
import trio
import trio.testing

from .._config import Config
from .._errors import BindError, ConfigError, LifespanFailure
from .._serve import serve_listeners
from .._types import ASGIApp
from ._websocket import TestWebSocket, open_websocket

__all__ = [
    "MemoryListener",
    "RunningServer",
    "TestClient",
    "TestConnection",
    "TestResponse",
    "open_test_client",
    "open_test_server",
]

_DEFAULT_BIND = Config().bind


class MemoryListener(trio.abc.Listener[trio.abc.Stream]):
    """A :class:`trio.abc.Listener` whose connections are in-memory stream pairs.

    :meth:`connect` makes a pair, queues the server end for :meth:`accept` and
    returns the client end.
    """

    def __init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[trio.abc.Stream](100)
        self._closed = False

    async def connect(self, *, lockstep: bool = False) -> trio.abc.HalfCloseableStream:
        """Open a connection; ``lockstep=True`` gives unbuffered streams, where each
        ``send_all`` waits until the other side has read everything (for testing
        backpressure)."""
        pair = trio.testing.lockstep_stream_pair if lockstep else trio.testing.memory_stream_pair
        client, server = pair()
        await self._send.send(server)
        return client

    async def accept(self) -> trio.abc.Stream:
        if self._closed:
            raise trio.ClosedResourceError
        try:
            return await self._receive.receive()
        except trio.EndOfChannel:
            raise trio.ClosedResourceError from None

    async def aclose(self) -> None:
        self._closed = True
        self._receive.close()
        await trio.lowlevel.checkpoint()


@dataclasses.dataclass
class TestResponse:
    """A response read by the test client."""

    __test__ = False  # not a pytest test class

    status: int
    #: Header names lower-cased, in order.
    headers: list[tuple[bytes, bytes]]
    body: bytes
    http_version: str = "1.1"

    def header(self, name: str) -> str | None:
        """The value of the first header called ``name`` (any case), or ``None``."""
        wanted = name.lower().encode("ascii")
        for key, value in self.headers:
            if key == wanted:
                return value.decode("latin-1")
        return None

    @property
    def text(self) -> str:
        """The body decoded as UTF-8."""
        return self.body.decode("utf-8")


class TestConnection:
    """The client end of one in-memory connection.

    Use :meth:`send_all` / :meth:`receive_some` for raw bytes, or :meth:`request`
    to speak HTTP/1.1 through an ``h11`` client.
    """

    __test__ = False

    def __init__(self, stream: trio.abc.HalfCloseableStream) -> None:
        self.stream = stream
        self._h11 = h11.Connection(h11.CLIENT)

    async def send_all(self, data: bytes) -> None:
        """Send raw bytes to the server."""
        await self.stream.send_all(data)

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Receive raw bytes; ``b""`` at EOF."""
        return bytes(await self.stream.receive_some(max_bytes))

    async def receive_until_closed(self) -> bytes:
        """Receive everything until the server closes the connection."""
        chunks = []
        while data := await self.stream.receive_some():
            chunks.append(data)
        return b"".join(chunks)

    async def send_eof(self) -> None:
        """Half-close: the server sees EOF, as when a client hangs up."""
        await self.stream.send_eof()

    async def aclose(self) -> None:
        """Close the connection (a client hang-up)."""
        await self.stream.aclose()

    async def websocket(
        self,
        path: str,
        *,
        subprotocols: Iterable[str] = (),
        headers: Iterable[tuple[str, str]] = (),
        deflate: bool = False,
    ) -> TestWebSocket:
        """Upgrade this connection to a websocket (after any earlier requests).

        Args:
          subprotocols: the subprotocols to offer.
          headers: extra request header fields.
          deflate: offer permessage-deflate.

        Raises:
          WebSocketDenied: the server answered with an HTTP response.
        """
        return await open_websocket(
            self.stream, path, subprotocols=subprotocols, headers=headers, deflate=deflate
        )

    async def request(
        self,
        method: str,
        path: str,
        *,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> TestResponse:
        """Send one request on this connection and read its response (keep-alive
        is reused; the ``host`` header and ``content-length`` are added)."""
        conn = self._h11
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
        all_headers = [("host", "testserver"), *headers]
        if body or method not in ("GET", "HEAD"):
            all_headers.append(("content-length", str(len(body))))
        data = conn.send(h11.Request(method=method, target=path, headers=all_headers))
        assert data is not None
        if body:
            data += conn.send(h11.Data(data=body)) or b""
        data += conn.send(h11.EndOfMessage()) or b""
        await self.stream.send_all(data)
        status = 0
        http_version = "1.1"
        response_headers: list[tuple[bytes, bytes]] = []
        chunks: list[bytes] = []
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(bytes(await self.stream.receive_some()))
            elif isinstance(event, h11.Response):
                status = event.status_code
                http_version = event.http_version.decode()
                response_headers = list(event.headers)
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                break
        return TestResponse(status, response_headers, b"".join(chunks), http_version)


class TestClient:
    """Opens in-memory connections to a server started by :func:`open_test_client`."""

    __test__ = False

    def __init__(self, listener: MemoryListener) -> None:
        self._listener = listener

    async def connect(self, *, lockstep: bool = False) -> TestConnection:
        """Open a new connection to the server."""
        return TestConnection(await self._listener.connect(lockstep=lockstep))

    async def request(
        self,
        method: str,
        path: str,
        *,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> TestResponse:
        """Make one request on a new connection, then close it."""
        connection = await self.connect()
        try:
            return await connection.request(method, path, headers=headers, body=body)
        finally:
            await connection.aclose()

    @asynccontextmanager
    async def websocket(
        self,
        path: str,
        *,
        subprotocols: Iterable[str] = (),
        headers: Iterable[tuple[str, str]] = (),
        deflate: bool = False,
    ) -> AsyncIterator[TestWebSocket]:
        """Open a websocket on a new connection, closed when the block ends.

        Example::

            async with client.websocket("/ws") as ws:
                await ws.send_text("hello")
                assert await ws.receive_text() == "hello"

        Raises:
          WebSocketDenied: the server answered with an HTTP response.
        """
        connection = await self.connect()
        try:
            yield await connection.websocket(
                path, subprotocols=subprotocols, headers=headers, deflate=deflate
            )
        finally:
            await connection.aclose()

    async def get(self, path: str, *, headers: Iterable[tuple[str, str]] = ()) -> TestResponse:
        """``request("GET", path)``."""
        return await self.request("GET", path, headers=headers)

    async def raw(self, data: bytes) -> bytes:
        """Send raw bytes on a new connection and return all the server sends back
        until it closes the connection."""
        connection = await self.connect()
        try:
            await connection.send_all(data)
            return await connection.receive_until_closed()
        finally:
            await connection.aclose()


@asynccontextmanager
async def _running(
    start: Callable[..., Awaitable[object]], done: trio.Event
) -> AsyncIterator[list[str]]:
    """Start a server task, yield its URLs, shut it down gracefully on exit.

    A startup failure (LifespanFailure, BindError, ConfigError) is raised as itself, not inside
    the exception group the nursery would wrap it in: no task is left in the
    nursery when ``start`` fails, so it can be re-raised after the nursery closed.
    An exception from the ``async with`` body, including an outside cancellation,
    likewise propagates as itself after the server has shut down.
    """
    error: BaseException | None = None
    async with trio.open_nursery() as nursery:
        try:
            urls: list[str] = await nursery.start(start)
        except (LifespanFailure, BindError, ConfigError) as exc:
            error = exc
        else:
            try:
                yield urls
            except BaseException as exc:
                # Likewise for what the `async with` body raises (a failing assert):
                # keep it out of the nursery and raise it after the server stopped.
                error = exc
            finally:
                done.set()
    if error is not None:
        raise error


@asynccontextmanager
async def open_test_client(app: ASGIApp, config: Config | None = None) -> AsyncIterator[TestClient]:
    """Run the real server for ``app`` over in-memory streams.

    Lifespan startup has finished when the block is entered; on leaving it the
    server shuts down gracefully (in-flight requests get ``graceful_timeout``).

    Example::

        async with open_test_client(app) as client:
            response = await client.get("/")
            assert response.status == 200
    """
    listener = MemoryListener()
    done = trio.Event()

    async def make_listeners(_: Config) -> list[MemoryListener]:
        return [listener]

    async with _running(
        partial(
            serve_listeners,
            app,
            config or Config(),
            make_listeners,
            scheme="http",
            shutdown_trigger=done.wait,
            install_signal_handlers=False,
        ),
        done,
    ):
        yield TestClient(listener)


@dataclasses.dataclass(frozen=True)
class RunningServer:
    """A server started by :func:`open_test_server`."""

    #: Every URL served, e.g. ``["http://127.0.0.1:39211"]``.
    urls: list[str]

    @property
    def url(self) -> str:
        """The first URL served."""
        return self.urls[0]

    @property
    def port(self) -> int:
        """The port of the first URL.

        Raises:
          ValueError: the first URL is not a TCP one (e.g. ``unix:PATH``).
        """
        if "://" not in self.url:
            raise ValueError(f"{self.url!r} has no port")
        return int(self.url.rsplit(":", 1)[1])


@asynccontextmanager
async def open_test_server(
    app: ASGIApp, config: Config | None = None
) -> AsyncIterator[RunningServer]:
    """Run :func:`trioserve.serve` for ``app`` on a real loopback socket.

    Unless ``config`` names its own ``bind``, the server binds ``127.0.0.1:0`` (a
    free port chosen by the OS). Signal handlers are not installed.
    """
    from .._listeners import open_listeners_with_tls
    from .._tls import create_server_tls

    config = config or Config()
    if config.bind == _DEFAULT_BIND:
        config = config.replace(bind=("127.0.0.1:0",))
    done = trio.Event()
    async with _running(
        partial(
            serve_listeners,
            app,
            config,
            # Certificates are loaded first, as serve() does: a bad path is an
            # error before the app's lifespan startup runs.
            partial(open_listeners_with_tls, tls=create_server_tls(config)),
            scheme="http",
            shutdown_trigger=done.wait,
            install_signal_handlers=False,
        ),
        done,
    ) as urls:
        yield RunningServer(urls)
