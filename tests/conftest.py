"""Fixtures shared by several test files."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import pytest
import trio

StalledClient = Callable[[int], AbstractAsyncContextManager[trio.SocketStream]]


@pytest.fixture
def stalled_client() -> StalledClient:
    """``async with stalled_client(port) as stream``: a real loopback connection with
    a 4 KiB receive buffer that has sent one GET and reads nothing, so the server's
    writes soon have to wait for it (the write deadline's case)."""

    @asynccontextmanager
    async def connect(port: int) -> AsyncIterator[trio.SocketStream]:
        sock = trio.socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        await sock.connect(("127.0.0.1", port))
        async with trio.SocketStream(sock) as stream:
            await stream.send_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            yield stream

    return connect
