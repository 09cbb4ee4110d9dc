"""Fixtures shared by several test files."""

from __future__ import annotations

import socket
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

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


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    """A short directory for socket files: a Unix socket path is limited to about
    100 bytes, which pytest's ``tmp_path`` can exceed."""
    with tempfile.TemporaryDirectory(prefix="ts-") as name:
        yield Path(name)
