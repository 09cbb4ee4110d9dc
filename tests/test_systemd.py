"""systemd integration: socket activation and ``Type=notify``.

The parsing is checked as pure functions. The behaviour runs the real command
the way systemd starts it: a listening socket the test bound is moved to file
descriptor 3 of the child with ``LISTEN_FDS``/``LISTEN_PID`` naming the child
itself (a small exec wrapper sets ``LISTEN_PID`` to its own PID and execs), and
``NOTIFY_SOCKET`` is a real ``AF_UNIX`` datagram socket in a temporary
directory (or in the abstract namespace) that the test reads.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import trio
from click.testing import CliRunner

from trioserve import Config, ConfigError
from trioserve._cli import cli
from trioserve._systemd import Notifier, parse_listen_fds, take_listen_fds

APPS_DIR = Path(__file__).parent / "fixtures" / "apps"

#: Puts the socket on descriptor 3, sets LISTEN_PID to this very process and
#: execs the command: what systemd does between fork and exec.
EXEC_AS_ACTIVATED = (
    "import os, sys\n"
    "fd = int(sys.argv[1])\n"
    "if fd != 3:\n"
    "    os.dup2(fd, 3)\n"
    "    os.close(fd)\n"
    "os.environ['LISTEN_PID'] = str(os.getpid())\n"
    "os.execv(sys.executable, [sys.executable, *sys.argv[2:]])\n"
)


# -- parsing ------------------------------------------------------------------------


def test_no_listen_fds_means_no_sockets() -> None:
    assert parse_listen_fds({}, 100) == []


def test_listen_fds_start_at_3_with_their_names() -> None:
    environ = {"LISTEN_FDS": "3", "LISTEN_PID": "100", "LISTEN_FDNAMES": "web:admin"}
    assert parse_listen_fds(environ, 100) == [(3, "web"), (4, "admin"), (5, "unknown")]


def test_listen_fds_for_another_process_are_not_ours() -> None:
    assert parse_listen_fds({"LISTEN_FDS": "1", "LISTEN_PID": "99"}, 100) == []


@pytest.mark.parametrize(
    ("environ", "name"),
    [
        ({"LISTEN_FDS": "two"}, "LISTEN_FDS"),
        ({"LISTEN_FDS": "1", "LISTEN_PID": "-4"}, "LISTEN_PID"),
    ],
)
def test_malformed_listen_variables_are_a_config_error(environ: dict[str, str], name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        parse_listen_fds(environ, 100)


def test_taking_the_fds_removes_the_variables_and_a_closed_fd_is_an_error() -> None:
    read, write = os.pipe()
    os.close(read)
    os.close(write)
    environ = {"LISTEN_FDS": "1", "LISTEN_PID": str(os.getpid()), "LISTEN_FDNAMES": "x"}
    if read == 3:
        with pytest.raises(ConfigError, match="file descriptor 3 is not open"):
            take_listen_fds(environ)
    else:  # descriptor 3 is the test runner's: only the removal can be checked here
        environ["LISTEN_PID"] = "1"
        assert take_listen_fds(environ) == []
    assert environ == {}


@pytest.mark.parametrize(
    ("name", "address"), [("/run/notify", "/run/notify"), ("@abstract", "\0abstract")]
)
def test_notify_socket_path_and_abstract_name(name: str, address: str) -> None:
    environ = {"NOTIFY_SOCKET": name, "OTHER": "kept"}
    notifier = Notifier.from_environ(environ, 100)
    assert notifier is not None
    assert notifier.address == address
    assert notifier.watchdog_interval is None
    assert environ == {"OTHER": "kept"}


def test_watchdog_interval_is_half_of_watchdog_usec_for_the_named_pid() -> None:
    environ = {"NOTIFY_SOCKET": "/n", "WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "100"}
    notifier = Notifier.from_environ(dict(environ), 100)
    assert notifier is not None
    assert notifier.watchdog_interval == 1.5
    other = Notifier.from_environ(dict(environ), 101)
    assert other is not None
    assert other.watchdog_interval is None


def test_no_notify_socket_means_no_notifier() -> None:
    assert Notifier.from_environ({"WATCHDOG_USEC": "1000"}, 100) is None


def test_a_notification_nobody_receives_is_a_warning_not_an_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = Notifier(str(tmp_path / "nobody"), None)
    notifier.notify("READY=1")
    notifier.notify("STOPPING=1")
    warnings = [r for r in caplog.records if "Cannot notify the service manager" in r.message]
    assert len(warnings) == 1


# -- the real command -----------------------------------------------------------------


class Listener:
    """The NOTIFY_SOCKET end: a datagram socket that the test reads."""

    def __init__(self, sock: trio.socket.SocketType) -> None:
        self.sock = sock

    async def next(self) -> str:
        with trio.fail_after(15):
            return (await self.sock.recv(4096)).decode()

    async def wait_for(self, state: str) -> list[str]:
        """Every datagram up to and including the one that holds ``state``."""
        seen = []
        while True:
            seen.append(await self.next())
            if state in seen[-1].split("\n"):
                return seen


@asynccontextmanager
async def notify_socket(address: str) -> AsyncIterator[Listener]:
    with trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        await sock.bind(address)
        yield Listener(sock)


@asynccontextmanager
async def activated_command(
    listening: socket.socket, *args: str, env: dict[str, str]
) -> AsyncIterator[trio.Process]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TRIOSERVE_")}
    environment.update(env)
    process = await trio.lowlevel.open_process(
        [
            sys.executable,
            "-c",
            EXEC_AS_ACTIVATED,
            str(listening.fileno()),
            "-m",
            "trioserve",
            *args,
        ],
        pass_fds=[listening.fileno()],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=str(APPS_DIR),
        env=environment,
    )
    try:
        yield process
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                process.kill()
            assert process.stderr is not None
            await process.stderr.aclose()
            await process.wait()


async def read_all(process: trio.Process) -> str:
    assert process.stderr is not None
    text = b""
    with trio.fail_after(20):
        while data := await process.stderr.receive_some():
            text += data
        await process.wait()
    return text.decode()


def listening_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


async def get_pid(port: int) -> int:
    async with httpx.AsyncClient(trust_env=False, headers={"connection": "close"}) as client:
        with trio.fail_after(10):
            response = await client.get(f"http://127.0.0.1:{port}/")
    return int(response.json()["pid"])


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_socket_activation_and_notify_readiness_watchdog_and_stopping(
    sock_dir: Path, workers: str
) -> None:
    """No bind flag: the activated socket replaces the default bind. READY=1
    comes once the server (every worker) is serving, WATCHDOG=1 at half the
    watchdog interval, STOPPING=1 when SIGTERM begins the shutdown."""
    with listening_socket() as listening:
        port = listening.getsockname()[1]
        async with notify_socket(str(sock_dir / "notify")) as manager:
            env = {
                "LISTEN_FDS": "1",
                "LISTEN_FDNAMES": "web",
                "NOTIFY_SOCKET": str(sock_dir / "notify"),
                "WATCHDOG_USEC": "400000",
            }
            async with activated_command(
                listening, "fx_workers:app", "-w", workers, env=env
            ) as process:
                listening.close()  # the child holds it now
                before_ready = await manager.wait_for("READY=1")
                assert before_ready == ["READY=1"]
                pids = {await get_pid(port) for _ in range(4)}
                assert os.getpid() not in pids
                assert await manager.next() == "WATCHDOG=1"
                process.send_signal(signal.SIGTERM)
                assert "STOPPING=1" in await manager.wait_for("STOPPING=1")
                stderr = await read_all(process)
    assert process.returncode == 0, stderr
    assert "Socket activation: fd://3 (web)" in stderr
    assert "127.0.0.1:8000" not in stderr
    if workers == "1":
        assert pids == {process.pid}


async def test_abstract_notify_socket_gets_ready(sock_dir: Path) -> None:
    name = f"trioserve-test-{secrets.token_hex(8)}"
    with listening_socket() as listening:
        async with notify_socket("\0" + name) as manager:
            env = {"LISTEN_FDS": "1", "NOTIFY_SOCKET": "@" + name}
            async with activated_command(listening, "fx_workers:app", env=env) as process:
                assert await manager.next() == "READY=1"
                process.send_signal(signal.SIGTERM)
                assert await manager.next() == "STOPPING=1"
                await read_all(process)
    assert process.returncode == 0


async def test_an_explicit_bind_is_served_next_to_the_activated_socket() -> None:
    with listening_socket() as listening:
        port = listening.getsockname()[1]
        env = {"LISTEN_FDS": "1"}
        async with activated_command(
            listening, "fx_workers:app", "-b", "127.0.0.1:0", env=env
        ) as process:
            assert process.stderr is not None
            text = ""
            with trio.fail_after(15):
                while "Serving on" not in text or "\n" not in text.split("Serving on")[1]:
                    text += (await process.stderr.receive_some()).decode()
            # One startup line names both addresses.
            line = text.split("Serving on ")[1].split(" (trioserve")[0]
            urls = line.split(", ")
            assert f"http://127.0.0.1:{port}" in urls
            assert len(urls) == 2
            assert await get_pid(port) == process.pid
            process.send_signal(signal.SIGTERM)
            await read_all(process)
    assert process.returncode == 0


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_an_activated_socket_also_named_as_a_bind_is_served_once(workers: str) -> None:
    """``--bind fd://3`` next to socket activation of descriptor 3: one listener,
    not two accept loops on one descriptor."""
    with listening_socket() as listening:
        port = listening.getsockname()[1]
        env = {"LISTEN_FDS": "1", "LISTEN_FDNAMES": "web"}
        async with activated_command(
            listening, "fx_workers:app", "--bind", "fd://3", "-w", workers, env=env
        ) as process:
            listening.close()
            assert process.stderr is not None
            text = ""
            with trio.fail_after(15):
                while "Serving on" not in text:
                    text += (await process.stderr.receive_some()).decode()
            pids = {await get_pid(port) for _ in range(4)}
            assert (process.pid in pids) is (workers == "1")
            process.send_signal(signal.SIGTERM)
            text += await read_all(process)
    assert process.returncode == 0, text
    assert "Socket activation: fd://3 (web)" in text
    serving = re.findall(r"\[(\d+)\] \[INFO\] Serving on (\S+)", text)
    # Each process (with workers, the supervisor too) names the address once.
    pids = [pid for pid, _ in serving]
    assert len(pids) == len(set(pids)), text
    assert {url for _, url in serving} == {f"http://127.0.0.1:{port}"}
    assert "Traceback" not in text


@pytest.mark.parametrize(
    "binds",
    [("--bind", "fd://5", "--bind", "fd://5"), ("--bind", "fd://5", "--insecure-bind", "fd://05")],
)
def test_a_descriptor_bound_twice_exits_2_with_one_line(binds: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli, ["nothing:app", *binds], prog_name="trioserve")
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [
        "Error: fd://5 is given more than once in bind and insecure_bind; "
        "a socket can be served only once"
    ]


def test_a_descriptor_bound_twice_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="fd://7 is given more than once"):
        Config(bind=["127.0.0.1:0", "fd://7"], insecure_bind=["fd://7"])


async def test_malformed_listen_fds_exits_2_with_one_line() -> None:
    with listening_socket() as listening:
        async with activated_command(
            listening, "fx_workers:app", env={"LISTEN_FDS": "many"}
        ) as process:
            stderr = await read_all(process)
    assert process.returncode == 2
    assert stderr.strip().splitlines() == [
        "Error: LISTEN_FDS must be a non-negative integer, got 'many'"
    ]


async def test_a_second_sigterm_to_a_notify_single_process_exits_130(sock_dir: Path) -> None:
    """As with workers: the first SIGTERM begins the graceful shutdown, a second
    one during it ends the process at once with exit 130."""
    with listening_socket() as listening:
        port = listening.getsockname()[1]
        async with notify_socket(str(sock_dir / "notify")) as manager:
            env = {"LISTEN_FDS": "1", "NOTIFY_SOCKET": str(sock_dir / "notify")}
            async with (
                activated_command(
                    listening, "fx_workers:app", "--graceful-timeout", "60", env=env
                ) as process,
                trio.open_nursery() as nursery,
            ):
                await manager.wait_for("READY=1")

                async def slow_request() -> None:
                    async with httpx.AsyncClient(trust_env=False) as client:
                        with trio.fail_after(20):
                            response = await client.get(f"http://127.0.0.1:{port}/sleep?60")
                    # Cut short before it answered: the forced stop answers for it.
                    assert response.status_code == 503

                nursery.start_soon(slow_request)
                assert process.stderr is not None
                text = ""
                with trio.fail_after(15):
                    while "sleeping" not in text:
                        text += (await process.stderr.receive_some()).decode()
                process.send_signal(signal.SIGTERM)
                await manager.wait_for("STOPPING=1")
                process.send_signal(signal.SIGTERM)
                text += await read_all(process)
    assert process.returncode == 130, text
    assert "Received SIGTERM again; exiting now" in text
    assert "Traceback" not in text
