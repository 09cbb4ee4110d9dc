"""Bind forms beyond ``HOST:PORT``: ``unix:PATH``, ``fd://N`` and ``[IPv6]:PORT``.

Real sockets and real clients (httpx, over TCP or a Unix socket): a Unix socket
is served with ``scope["server"] == (path, None)`` and no client address; a stale
socket file is replaced while a live one, or a file that is not a socket, is a
``BindError``; the socket file is 0o666 unless ``umask`` decides its mode; the file is removed on
shutdown; an inherited listening socket is served through ``fd://N``; several
binds of different kinds serve at once; bind strings are validated when the
``Config`` is made.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import stat
from pathlib import Path

import httpx
import pytest
import trio
from _helpers import Recorder

from trioserve import BindError, Config, ConfigError
from trioserve.testing import open_test_server


def _loopbacks() -> list[tuple[str, str]]:
    """``(bind, host)`` for each loopback address family this machine can bind.

    Computed at import time, so that the IPv6 case exists only where IPv6 works
    (no skips) while IPv4 always runs.
    """
    found = [("127.0.0.1:0", "127.0.0.1")]
    if socket.has_ipv6:
        try:
            with socket.socket(socket.AF_INET6) as probe:
                probe.bind(("::1", 0))
        except OSError:
            pass
        else:
            found.append(("[::1]:0", "::1"))
    return found


LOOPBACKS = _loopbacks()


def uds_client(path: Path) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.AsyncHTTPTransport(uds=str(path)), base_url="http://localhost"
    )


def config(*binds: str, **keys: object) -> Config:
    return Config(bind=list(binds), lifespan="off", **keys)


async def test_unix_socket_serves_with_path_as_server_and_no_client(sock_dir: Path) -> None:
    """ASGI: ``server`` is ``[path, None]`` for a Unix socket and the peer has no
    address. A naive server that reads TCP addresses off every socket would fail
    (the peer name of a Unix socket is ``''``) or report a bogus port."""
    path = sock_dir / "app.sock"
    app = Recorder()
    with trio.fail_after(5):
        async with open_test_server(app, config(f"unix:{path}")) as server:
            assert server.urls == [f"unix:{path}"]
            async with uds_client(path) as client:
                response = await client.get("/hello")
    assert response.status_code == 200
    assert response.text == "ok"
    [scope] = app.scopes
    assert scope["server"] == (str(path), None)
    assert scope["client"] is None
    assert scope["scheme"] == "http"
    assert scope["path"] == "/hello"


async def test_unix_socket_file_is_removed_after_shutdown(sock_dir: Path) -> None:
    path = sock_dir / "gone.sock"
    with trio.fail_after(5):
        async with open_test_server(Recorder(), config(f"unix:{path}")):
            assert stat.S_ISSOCK(path.lstat().st_mode)
    assert not path.exists()


async def test_socket_file_replaced_by_another_server_is_not_removed_on_shutdown(
    sock_dir: Path,
) -> None:
    """Someone removed our socket file and another server bound the path while we
    ran. A naive shutdown unlinks whatever is at the path, cutting the other
    server off from new clients."""
    path = sock_dir / "shared.sock"
    with trio.fail_after(5):
        async with open_test_server(Recorder(), config(f"unix:{path}")):
            path.unlink()
            successor = socket.socket(socket.AF_UNIX)
            successor.bind(str(path))
            successor.listen()
    with successor:
        assert stat.S_ISSOCK(path.lstat().st_mode)
        with socket.socket(socket.AF_UNIX) as probe:
            probe.connect(str(path))


async def test_socket_file_deleted_while_serving_is_no_problem_at_shutdown(
    sock_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="trioserve.error")
    path = sock_dir / "deleted.sock"
    with trio.fail_after(5):
        async with open_test_server(Recorder(), config(f"unix:{path}")):
            path.unlink()
    assert not path.exists()
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_socket_file_that_cannot_be_removed_is_a_warning_not_a_crash(
    sock_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The socket's directory was replaced by a file while serving, so the socket
    file can no longer be reached (ENOTDIR). Shutdown still completes, with a
    WARNING, instead of failing ``serve`` over a leftover file."""
    caplog.set_level(logging.WARNING, logger="trioserve.error")
    directory = sock_dir / "run"
    directory.mkdir()
    path = directory / "app.sock"
    with trio.fail_after(5):
        async with open_test_server(Recorder(), config(f"unix:{path}")):
            directory.rename(sock_dir / "moved")
            directory.write_text("not a directory any more")
    [record] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert record.levelno == logging.WARNING
    assert str(path) in record.getMessage()


@pytest.mark.parametrize(
    ("make_parent", "expected_errno"),
    [
        (lambda parent: None, errno.ENOENT),  # the directory does not exist
        (lambda parent: parent.write_text("a file"), errno.ENOTDIR),  # a file, not a directory
    ],
    ids=["missing-directory", "file-as-directory"],
)
async def test_unix_socket_in_an_unusable_directory_is_bind_error(
    sock_dir: Path, make_parent, expected_errno: int
) -> None:
    parent = sock_dir / "parent"
    make_parent(parent)
    with trio.fail_after(5), pytest.raises(BindError) as excinfo:
        async with open_test_server(Recorder(), config(f"unix:{parent}/app.sock")):
            pass  # pragma: no cover - must not be reached
    assert excinfo.value.errno == expected_errno
    assert str(parent) in str(excinfo.value)


async def test_datagram_socket_at_the_path_is_bind_error_and_left_alone(sock_dir: Path) -> None:
    """A live socket of another type answers the probe with EPROTOTYPE, not a
    refusal: it is in use, not stale, so it must not be deleted."""
    path = sock_dir / "dgram.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as other:
        other.bind(str(path))
        with trio.fail_after(5), pytest.raises(BindError) as excinfo:
            async with open_test_server(Recorder(), config(f"unix:{path}")):
                pass  # pragma: no cover - must not be reached
        assert excinfo.value.errno == errno.EPROTOTYPE
        assert stat.S_ISSOCK(path.lstat().st_mode)


async def test_stale_socket_file_is_replaced(sock_dir: Path) -> None:
    """A server that died leaves its socket file behind; nobody listens on it, so a
    connect is refused. A naive server fails to bind with EADDRINUSE forever."""
    path = sock_dir / "stale.sock"
    with socket.socket(socket.AF_UNIX) as dead:
        dead.bind(str(path))  # never listens: connecting to it is refused
    assert path.exists()
    with trio.fail_after(5):
        async with (
            open_test_server(Recorder(), config(f"unix:{path}")),
            uds_client(path) as client,
        ):
            response = await client.get("/")
    assert response.status_code == 200


async def test_live_socket_at_the_path_is_bind_error_and_stays_usable(sock_dir: Path) -> None:
    """Another server listens on the path. A naive server that simply unlinks the
    file and binds would silently steal the address from it."""
    path = sock_dir / "live.sock"
    with socket.socket(socket.AF_UNIX) as other:
        other.bind(str(path))
        other.listen()
        with trio.fail_after(5), pytest.raises(BindError) as excinfo:
            async with open_test_server(Recorder(), config(f"unix:{path}")):
                pass  # pragma: no cover - must not be reached
        assert excinfo.value.errno == errno.EADDRINUSE
        assert str(path) in str(excinfo.value)
        # The other server's socket file is untouched and still accepts.
        with socket.socket(socket.AF_UNIX) as probe:
            probe.connect(str(path))


async def test_non_socket_file_at_the_path_is_bind_error_and_left_alone(sock_dir: Path) -> None:
    path = sock_dir / "notes.txt"
    path.write_text("precious")
    with trio.fail_after(5), pytest.raises(BindError, match="not a socket"):
        async with open_test_server(Recorder(), config(f"unix:{path}")):
            pass  # pragma: no cover - must not be reached
    assert path.read_text() == "precious"


async def test_umask_decides_the_socket_file_mode_and_is_restored(sock_dir: Path) -> None:
    """With ``umask=0o077`` only the owner may connect. A server ignoring the key
    creates the file under the process umask (typically 0o755 or 0o775); one that
    forgets to restore the umask changes the mode of every file the process
    creates afterwards."""
    path = sock_dir / "private.sock"
    process_umask = os.umask(0o022)
    try:
        with trio.fail_after(5):
            async with open_test_server(Recorder(), config(f"unix:{path}", umask=0o077)):
                mode = stat.S_IMODE(path.lstat().st_mode)
                assert os.umask(0o022) == 0o022  # restored right after the bind
                async with uds_client(path) as client:
                    assert (await client.get("/")).status_code == 200
    finally:
        os.umask(process_umask)
    assert mode == 0o700


@pytest.mark.parametrize(("umask", "expected"), [(None, 0o666), (0o007, 0o770)])
async def test_socket_file_is_connectable_by_other_users_unless_umask_is_set(
    sock_dir: Path, umask: int | None, expected: int
) -> None:
    """Unset, the file is made 0o666 whatever the process umask, so a proxy
    running as another local user (nginx's worker user) can connect; a configured
    ``umask`` decides instead (0o007: owner and group only). The process umask is
    a restrictive 0o077 here, so a server that used it would make the file 0o700."""
    path = sock_dir / "proxied.sock"
    process_umask = os.umask(0o077)
    try:
        with trio.fail_after(5):
            async with open_test_server(Recorder(), config(f"unix:{path}", umask=umask)):
                mode = stat.S_IMODE(path.lstat().st_mode)
                assert os.umask(0o077) == 0o077  # the process umask is untouched
                async with uds_client(path) as client:
                    assert (await client.get("/")).status_code == 200
    finally:
        os.umask(process_umask)
    assert mode == expected


async def test_fd_bind_serves_an_inherited_listening_socket() -> None:
    """The socket is bound and listening before the server starts (as systemd or a
    supervisor would hand it over); the server takes ownership and closes it on
    shutdown."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    port = sock.getsockname()[1]
    fd = sock.detach()  # the server owns the descriptor from here on
    app = Recorder()
    with trio.fail_after(5):
        async with open_test_server(app, config(f"fd://{fd}")) as server:
            assert server.urls == [f"http://127.0.0.1:{port}"]
            async with httpx.AsyncClient() as client:
                response = await client.get(f"http://127.0.0.1:{port}/inherited")
        assert response.status_code == 200
        assert app.scopes[0]["server"] == ("127.0.0.1", port)
        # The listening socket went away with the server.
        with trio.socket.socket() as probe, pytest.raises(ConnectionRefusedError):
            await probe.connect(("127.0.0.1", port))


async def test_fd_bind_of_a_non_socket_is_bind_error_and_the_fd_stays_open(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "file", os.O_RDWR | os.O_CREAT)
    try:
        with trio.fail_after(5), pytest.raises(BindError) as excinfo:
            async with open_test_server(Recorder(), config(f"fd://{fd}")):
                pass  # pragma: no cover - must not be reached
        assert excinfo.value.errno == errno.ENOTSOCK
        os.fstat(fd)  # still ours: the server did not close what it refused
    finally:
        os.close(fd)


async def test_fd_bind_of_a_socket_that_is_not_listening_is_bind_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        with trio.fail_after(5), pytest.raises(BindError, match="not a listening socket"):
            async with open_test_server(Recorder(), config(f"fd://{sock.fileno()}")):
                pass  # pragma: no cover - must not be reached
        # The refused socket is left as it was: still open and usable by its owner.
        sock.listen()
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)


async def test_fd_bind_of_a_datagram_socket_is_bind_error() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        with trio.fail_after(5), pytest.raises(BindError, match="not a stream socket"):
            async with open_test_server(Recorder(), config(f"fd://{sock.fileno()}")):
                pass  # pragma: no cover - must not be reached
        sock.getsockname()  # still open: a refused descriptor is not closed


async def test_fd_bind_of_a_descriptor_that_is_not_open_is_bind_error() -> None:
    # Far above any descriptor this process has open (and above usual limits).
    with trio.fail_after(5), pytest.raises(BindError) as excinfo:
        async with open_test_server(Recorder(), config("fd://1000000")):
            pass  # pragma: no cover - must not be reached
    assert excinfo.value.errno == errno.EBADF


@pytest.mark.parametrize(("bind", "host"), LOOPBACKS)
async def test_port_zero_reports_the_real_port_for_each_address_family(
    bind: str, host: str
) -> None:
    """IPv6 hosts are bracketed in the URL; ``scope["server"]`` carries the bare
    host and the real port, never 0."""
    app = Recorder()
    with trio.fail_after(5):
        async with open_test_server(app, config(bind)) as server:
            [url] = server.urls
            url_host, _, port_text = url.removeprefix("http://").rpartition(":")
            assert url_host == (f"[{host}]" if ":" in host else host)
            port = int(port_text)
            assert port != 0
            async with httpx.AsyncClient() as client:
                response = await client.get(f"{url}/")
    assert response.status_code == 200
    assert app.scopes[0]["server"] == (host, port)
    client_host, client_port = app.scopes[0]["client"]
    assert client_host == host
    assert client_port > 0


async def test_tcp_and_unix_binds_in_one_server_both_answer(sock_dir: Path) -> None:
    path = sock_dir / "both.sock"
    app = Recorder()
    with trio.fail_after(5):
        async with open_test_server(app, config("127.0.0.1:0", f"unix:{path}")) as server:
            tcp_url, unix_url = server.urls
            assert unix_url == f"unix:{path}"
            async with httpx.AsyncClient() as client:
                assert (await client.get(f"{tcp_url}/tcp")).status_code == 200
            async with uds_client(path) as client:
                assert (await client.get("/unix")).status_code == 200
    assert [(s["path"], s["server"]) for s in app.scopes] == [
        ("/tcp", ("127.0.0.1", int(tcp_url.rsplit(":", 1)[1]))),
        ("/unix", (str(path), None)),
    ]


async def test_tcp_address_in_use_is_bind_error_and_removes_the_unix_socket_already_made(
    sock_dir: Path,
) -> None:
    """The Unix bind comes first and succeeds; the TCP bind then fails. The error is
    a plain ``BindError`` with errno EADDRINUSE, and the socket file made for the
    first bind is removed again (a naive rollback that only closes sockets leaves
    it behind)."""
    path = sock_dir / "rollback.sock"
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        with trio.fail_after(5), pytest.raises(BindError) as excinfo:
            async with open_test_server(Recorder(), config(f"unix:{path}", f"127.0.0.1:{port}")):
                pass  # pragma: no cover - must not be reached
    assert excinfo.value.errno == errno.EADDRINUSE
    assert f"127.0.0.1:{port}" in str(excinfo.value)
    assert not path.exists()


def test_config_accepts_every_bind_form() -> None:
    binds = ("127.0.0.1:8000", "[::1]:8000", ":8000", "unix:/run/app.sock", "fd://3")
    assert Config(bind=list(binds)).bind == binds


@pytest.mark.parametrize(
    "bind",
    [
        "unix:",  # no path
        "fd://",  # no number
        "fd://three",  # not a number
        "fd://-1",  # negative
        "fd://3:80",  # trailing junk
    ],
)
def test_config_rejects_malformed_unix_and_fd_binds(bind: str) -> None:
    """Rejected when the Config is made, before anything is bound."""
    with pytest.raises(ConfigError) as excinfo:
        Config(bind=[bind])
    assert repr(bind) in str(excinfo.value)
