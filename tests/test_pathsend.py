"""The ASGI extensions ``http.response.pathsend`` and ``http.response.zerocopysend``.

Both are advertised in every HTTP scope. On a plain socket the file's bytes go from
the page cache to the socket with ``sendfile``; on TLS (and in-memory streams) the
server reads the file in chunks and writes them through the stream. Either way the
response has the framing the app's headers ask for (Content-Length, or chunked
without one, or close-delimited for HTTP/1.0), a HEAD response has no body, a
Content-Length that does not match the file is refused before anything is written
(500), and a client that stops reading hits the write deadline.

Clients are real: raw sockets read by h11, and trio's SSLStream with a trustme CA.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
import struct
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
import trustme
from _helpers import Receive, Scope, Send, error_records

import trioserve
from trioserve import Config
from trioserve.testing import TestConnection, open_test_client, open_test_server

SIZE = 1024 * 1024 + 3  # not a multiple of any chunk size
CONTENT = bytes(range(251)) * (SIZE // 251) + bytes(range(SIZE % 251))
assert len(CONTENT) == SIZE


@pytest.fixture
def big_file(tmp_path: Path) -> Path:
    path = tmp_path / "big.bin"
    path.write_bytes(CONTENT)
    return path


@pytest.fixture
def pki(tmp_path: Path) -> tuple[Config, ssl.SSLContext]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return Config(certfile=str(certfile), keyfile=str(keyfile), lifespan="off"), context


def pathsend_app(
    path: Path, *, length: int | None = SIZE, record: list[Scope] | None = None
) -> Any:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if record is not None:
            record.append(scope)
        headers = [(b"content-type", b"application/octet-stream")]
        if length is not None:
            headers.append((b"content-length", b"%d" % length))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.pathsend", "path": str(path)})

    return app


async def get(
    conn: TestConnection, method: str = "GET"
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    response = await conn.request(method, "/")
    return response.status, response.headers, response.body


async def test_pathsend_is_advertised_and_sends_the_file_on_a_keep_alive_socket(
    big_file: Path,
) -> None:
    scopes: list[Scope] = []
    app = pathsend_app(big_file, record=scopes)
    async with open_test_server(app, Config(lifespan="off")) as server:
        with trio.fail_after(20):
            conn = TestConnection(await trio.open_tcp_stream("127.0.0.1", server.port))
            for _ in range(3):  # the connection stays usable after each file
                status, headers, body = await get(conn)
                assert status == 200
                assert dict(headers)[b"content-length"] == b"%d" % SIZE
                assert body == CONTENT
            await conn.aclose()
    assert len(scopes) == 3
    for scope in scopes:
        assert scope["extensions"]["http.response.pathsend"] == {}
        assert scope["extensions"]["http.response.zerocopysend"] == {}


async def test_pathsend_without_content_length_is_chunked(big_file: Path) -> None:
    async with open_test_server(
        pathsend_app(big_file, length=None), Config(lifespan="off")
    ) as server:
        with trio.fail_after(20):
            conn = TestConnection(await trio.open_tcp_stream("127.0.0.1", server.port))
            status, headers, body = await get(conn)
            assert dict(headers)[b"transfer-encoding"] == b"chunked"
            assert (status, body) == (200, CONTENT)
            status, _, body = await get(conn)
            assert (status, body) == (200, CONTENT)
            await conn.aclose()


async def test_pathsend_to_http10_client_is_close_delimited(big_file: Path) -> None:
    async with open_test_server(
        pathsend_app(big_file, length=None), Config(lifespan="off")
    ) as server:
        with trio.fail_after(20):
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            await stream.send_all(b"GET / HTTP/1.0\r\n\r\n")
            data = bytearray()
            while chunk := await stream.receive_some(1 << 20):
                data += chunk
            await stream.aclose()
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"transfer-encoding" not in head
    assert b"connection: close" in head
    assert body == CONTENT


async def test_pathsend_head_request_gets_headers_only(big_file: Path) -> None:
    async with open_test_server(pathsend_app(big_file), Config(lifespan="off")) as server:
        with trio.fail_after(20):
            conn = TestConnection(await trio.open_tcp_stream("127.0.0.1", server.port))
            status, headers, body = await get(conn, "HEAD")
            assert (status, body) == (200, b"")
            assert dict(headers)[b"content-length"] == b"%d" % SIZE
            # Nothing of the file followed the head: the next response parses.
            status, _, body = await get(conn)
            assert (status, body) == (200, CONTENT)
            await conn.aclose()


async def test_pathsend_over_tls_reads_the_file_through_the_stream(
    big_file: Path, pki: tuple[Config, ssl.SSLContext]
) -> None:
    config, context = pki
    async with open_test_server(
        pathsend_app(big_file), config.replace(bind=("127.0.0.1:0",))
    ) as server:
        assert server.url.startswith("https://")
        with trio.fail_after(20):
            stream = trio.SSLStream(
                await trio.open_tcp_stream("127.0.0.1", server.port),
                context,
                server_hostname="localhost",
            )
            conn = TestConnection(stream)  # type: ignore[arg-type]
            for _ in range(2):
                status, _, body = await get(conn)
                assert (status, body) == (200, CONTENT)
            await trio.aclose_forcefully(stream)


async def test_pathsend_in_memory(big_file: Path) -> None:
    async with open_test_client(pathsend_app(big_file), Config(lifespan="off")) as client:
        response = await client.get("/")
    assert (response.status, response.body) == (200, CONTENT)


@pytest.mark.parametrize("length", [SIZE - 1, SIZE + 1])
async def test_pathsend_content_length_mismatch_is_a_500_before_any_byte(
    big_file: Path, length: int, caplog: pytest.LogCaptureFixture
) -> None:
    """The app's Content-Length is enforced for files too: the size is known before
    the head goes out, so a Content-Length that disagrees with it is the app's
    error, answered with a whole 500."""
    async with open_test_server(
        pathsend_app(big_file, length=length), Config(lifespan="off")
    ) as server:
        with trio.fail_after(20):
            conn = TestConnection(await trio.open_tcp_stream("127.0.0.1", server.port))
            status, _, body = await get(conn)
            await conn.aclose()
    assert status == 500
    assert CONTENT[:64] not in body
    errors = error_records(caplog)
    assert errors
    assert "Content-Length" in errors[0].getMessage() + str(errors[0].exc_info)


@pytest.mark.parametrize(
    ("message", "words"),
    [
        (
            {"type": "http.response.pathsend", "path": "/nonexistent/trioserve-test-file"},
            "cannot open",
        ),
        ({"type": "http.response.pathsend", "path": "relative/path"}, "absolute"),
        ({"type": "http.response.zerocopysend", "file": "not a file"}, "file descriptor"),
    ],
    ids=["missing-file", "relative-path", "no-file-descriptor"],
)
async def test_unsendable_file_raises_in_send_and_is_a_500(
    message: dict[str, Any], words: str, caplog: pytest.LogCaptureFixture
) -> None:
    raised: list[BaseException] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        try:
            await send(message)
        except BaseException as exc:
            raised.append(exc)
            raise

    async with open_test_client(app, Config(lifespan="off")) as client:
        response = await client.get("/")
    assert response.status == 500
    assert isinstance(raised[0], trioserve.LocalProtocolError)
    assert words in str(raised[0])
    assert error_records(caplog)


def zerocopy_app(path: Path, pieces: list[tuple[int | None, int | None]], length: int) -> Any:
    """Sends the file with one zerocopysend message per (offset, count) piece."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", b"%d" % length)],
            }
        )
        with open(path, "rb") as file:  # noqa: ASYNC230 - a test app, local file
            for i, (offset, count) in enumerate(pieces):
                message: dict[str, Any] = {
                    "type": "http.response.zerocopysend",
                    "file": file,
                    "more_body": i < len(pieces) - 1,
                }
                if offset is not None:
                    message["offset"] = offset
                if count is not None:
                    message["count"] = count
                await send(message)

    return app


# Offsets given, then "from the current position" (which each send advances), then
# "to the end of the file".
PIECES: list[tuple[int | None, int | None]] = [
    (10, 1000),
    (0, 10),
    (None, 5),
    (None, 100_000),
    (None, None),
]
EXPECTED = CONTENT[10:1010] + CONTENT[0:10] + CONTENT[0:5] + CONTENT[5:100_005] + CONTENT[100_005:]


async def test_zerocopysend_pieces_on_a_socket(big_file: Path) -> None:
    app = zerocopy_app(big_file, PIECES, len(EXPECTED))
    async with open_test_server(app, Config(lifespan="off")) as server:
        with trio.fail_after(20):
            conn = TestConnection(await trio.open_tcp_stream("127.0.0.1", server.port))
            status, _, body = await get(conn)
            assert (status, len(body)) == (200, len(EXPECTED))
            assert body == EXPECTED
            status, _, body = await get(conn)
            assert body == EXPECTED
            await conn.aclose()


async def test_zerocopysend_pieces_in_memory(big_file: Path) -> None:
    async with open_test_client(
        zerocopy_app(big_file, PIECES, len(EXPECTED)), Config(lifespan="off")
    ) as client:
        response = await client.get("/")
    assert (response.status, response.body) == (200, EXPECTED)


class HugeFileApp:
    """Sends a sparse 64 MiB file with pathsend (``/next`` answers ``ok`` instead),
    and records how its send() ended."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "huge.bin"
        self.path.touch()
        os.truncate(self.path, 64 * 1024 * 1024)  # sparse: no disk used
        self.outcome: list[BaseException] = []
        self.sending = trio.Event()
        self.done = trio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/next":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})
            return
        try:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            self.sending.set()
            await send({"type": "http.response.pathsend", "path": str(self.path)})
        except BaseException as exc:
            self.outcome.append(exc)
            raise
        finally:
            self.done.set()


async def test_pathsend_to_a_client_that_stops_reading_hits_the_write_deadline(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, stalled_client: Any
) -> None:
    """sendfile() on a socket whose buffers are full: the wait for it to drain has the
    write deadline, so the app's send() fails with ClientDisconnected instead of
    blocking until the client reads."""
    caplog.set_level(logging.DEBUG, logger="trioserve.error")
    app = HugeFileApp(tmp_path)
    async with open_test_server(app, Config(lifespan="off", write_timeout=0.5)) as server:
        with trio.fail_after(20):
            async with stalled_client(server.port):
                await app.done.wait()
    outcome = app.outcome
    assert len(outcome) == 1
    assert isinstance(outcome[0], trioserve.ClientDisconnected)
    assert "in time" in str(outcome[0])
    assert error_records(caplog) == []


def test_sendfile_is_available_here() -> None:
    """The socket path of these tests is the sendfile path (Linux)."""
    assert hasattr(os, "sendfile")


async def test_client_reset_during_pathsend_ends_quietly_and_the_server_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, stalled_client: Any
) -> None:
    """The client resets (RST) while sendfile() waits for it to drain: the app's
    send() ends with ClientDisconnected, or with Cancelled when the reader saw the
    reset first (a GET is cancelled on hang-up); nothing is logged at ERROR and the
    next client is served."""
    caplog.set_level(logging.DEBUG, logger="trioserve.error")
    app = HugeFileApp(tmp_path)
    async with open_test_server(app, Config(lifespan="off", write_timeout=30)) as server:
        with trio.fail_after(20):
            async with stalled_client(server.port) as stream:
                await app.sending.wait()
                await trio.testing.wait_all_tasks_blocked()
                stream.socket.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
            await app.done.wait()
            conn = TestConnection(await trio.open_tcp_stream("127.0.0.1", server.port))
            response = await conn.request("GET", "/next")
            await conn.aclose()
    assert (response.status, response.body) == (200, b"ok")
    assert len(app.outcome) == 1
    assert isinstance(app.outcome[0], (trioserve.ClientDisconnected, trio.Cancelled))
    assert error_records(caplog) == []


async def test_file_truncated_during_pathsend_closes_the_connection(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, stalled_client: Any
) -> None:
    """The file shrinks while sendfile() waits for the client to drain: the framing
    promised bytes that will never come, so send() raises, the error is logged and
    the connection is closed (the client sees a chunked body without its last
    chunk, then EOF), rather than a response that silently looks complete."""
    caplog.set_level(logging.DEBUG, logger="trioserve.error")
    app = HugeFileApp(tmp_path)
    received = bytearray()
    async with open_test_server(app, Config(lifespan="off", write_timeout=30)) as server:
        with trio.fail_after(20):
            async with stalled_client(server.port) as stream:
                # Bytes of the file itself have arrived: the file is open and its
                # size taken, and sendfile() has filled the socket buffers.
                while len(received.partition(b"\r\n\r\n")[2]) < 64 * 1024:
                    received += await stream.receive_some(4096)
                await trio.testing.wait_all_tasks_blocked()  # sendfile() is waiting
                os.truncate(app.path, 0)
                while data := await stream.receive_some(1024 * 1024):
                    received += data
            await app.done.wait()
    head, _, body = bytes(received).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"transfer-encoding: chunked" in head
    assert 0 < len(body) < 64 * 1024 * 1024
    assert not body.endswith(b"0\r\n\r\n")
    assert len(app.outcome) == 1
    assert isinstance(app.outcome[0], trioserve.LocalProtocolError)
    assert "The file ended after" in str(app.outcome[0])
    assert any("Exception in ASGI application" in r.getMessage() for r in error_records(caplog))


async def test_a_file_send_the_app_cancels_ends_the_connection(big_file: Path) -> None:
    """The head and the file's chunk size went out; a file send the app cancels,
    even before any of the file, leaves a promise that cannot be kept, so the
    connection ends instead of carrying on with the next response."""
    outcome: list[Any] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/next":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"NEXT"})
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})  # chunked
        await send({"type": "http.response.body", "body": b"", "more_body": True})
        fd = os.open(big_file, os.O_RDONLY)
        try:
            with trio.CancelScope() as cancelled:
                cancelled.cancel()
                message = {"type": "http.response.zerocopysend", "file": fd, "more_body": True}
                await send(message)
        finally:
            os.close(fd)
        outcome.append(cancelled.cancelled_caught)
        try:
            await send({"type": "http.response.body", "body": b""})
        except OSError as exc:
            outcome.append(type(exc).__name__)

    requests = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /next HTTP/1.1\r\nHost: a\r\n\r\n"
    async with open_test_server(app, Config(lifespan="off")) as server:
        with trio.fail_after(20):
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            await stream.send_all(requests)
            received = b""
            while data := await stream.receive_some():
                received += data
            await stream.aclose()
    assert outcome == [True, "ClientDisconnected"]
    assert received.startswith(b"HTTP/1.1 200 ")
    assert b"NEXT" not in received
