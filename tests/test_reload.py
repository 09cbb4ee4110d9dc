"""``--reload``: real reloader processes, real file edits in a temporary directory.

Each process test starts ``python -m trioserve APP --reload`` in a fresh directory
holding the app, reads the reloader's and the server's log lines from stderr, and
edits files there: an edit is served after the restart (on the same port, the
socket kept open by the reloader); an edit that breaks the import gives one
``Error:`` line, the reloader waits, and a client that connected meanwhile is
answered once a good edit is in; include and exclude patterns decide which edits
count; SIGTERM and SIGINT stop the server and the reloader with exit 0 and leave no
server process; a second signal kills the server at once. Without watchfiles
(a shim on ``PYTHONPATH`` makes its import fail) the command exits 2 with one line.

Every wait is on a log line or a response, bounded by ``trio.fail_after``; the
processes are killed in ``finally`` if still running. Bytecode is not written, so
that an edit within the same second as the last import is never masked by a
cached ``.pyc``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from _pipes import LogWatch
from click.testing import CliRunner

from trioserve import Config, ConfigError
from trioserve._cli import cli
from trioserve._config_sources import config_from_mapping
from trioserve._reload import ReloadFilter

pytest.importorskip("watchfiles")

APP = """\
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"%s"})
"""
SERVING = r"Serving on (http://127\.0\.0\.1:\d+)"
STARTED = r"Started server process (\d+)"
#: Every wait for the server to come (back) up. A restart is a new Python process
#: importing trioserve and the app.
DEADLINE = 15


class Reloader:
    """``python -m trioserve ... --reload`` running in a subprocess."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.log = LogWatch(process.stderr)

    async def wait_serving(self) -> str:
        with trio.fail_after(DEADLINE):
            return (await self.log.next(SERVING)).group(1)

    async def wait_started(self) -> int:
        with trio.fail_after(DEADLINE):
            return int((await self.log.next(STARTED)).group(1))

    async def finish(self) -> int:
        with trio.fail_after(DEADLINE):
            await self.process.wait()
            await self.log.read_rest()
        return self.process.returncode


@pytest.fixture
async def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "app.py").write_text(APP % "v1")
    return tmp_path


async def start(
    cwd: Path, *args: str, env: dict[str, str] | None = None, new_session: bool = False
) -> Reloader:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TRIOSERVE_")}
    environment["PYTHONDONTWRITEBYTECODE"] = "1"
    environment.update(env or {})
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "trioserve", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=str(cwd),
        env=environment,
        start_new_session=new_session,
    )
    return Reloader(process)


async def stop(command: Reloader) -> None:
    """End ``command`` and every server process it started: SIGTERM, then SIGKILL
    if it is not gone in time; then wait for the end of stderr, which each server
    process holds until it exits (it shuts down when the reloader is gone)."""
    with trio.CancelScope(shield=True):
        if command.process.returncode is None:
            command.process.send_signal(signal.SIGTERM)
            with trio.move_on_after(DEADLINE):
                await command.process.wait()
            if command.process.returncode is None:
                command.process.kill()
                await command.process.wait()
        with trio.move_on_after(DEADLINE):
            await command.log.read_rest()
        await command.log.stream.aclose()


@asynccontextmanager
async def started(cwd: Path, *args: str, **options: Any) -> AsyncIterator[Reloader]:
    command = await start(cwd, *args, **options)
    try:
        yield command
    finally:
        await stop(command)


@pytest.fixture
async def reloader(app_dir: Path) -> AsyncIterator[Reloader]:
    async with started(
        app_dir, "app:app", "--bind", "127.0.0.1:0", "--reload", "--reload-delay", "0.05"
    ) as command:
        yield command


async def get(url: str) -> str:
    async with httpx.AsyncClient(trust_env=False) as client:
        with trio.fail_after(DEADLINE):
            response = await client.get(url)
    return response.text


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("Error:")]


def running(pid: int) -> bool:
    """Whether ``pid`` is a live process (not gone, not a zombie)."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return status.rsplit(")", 1)[1].split()[0] != "Z"


# -- serving and restarting -------------------------------------------------------------


async def test_an_edit_is_served_after_the_restart_on_the_same_address(
    reloader: Reloader, app_dir: Path
) -> None:
    first_pid = await reloader.wait_started()
    url = await reloader.wait_serving()
    assert await get(url) == "v1"
    (app_dir / "app.py").write_text(APP % "v2")
    with trio.fail_after(DEADLINE):
        await reloader.log.next(r"Detected changes in app\.py; restarting")
    second_pid = await reloader.wait_started()
    assert await reloader.wait_serving() == url
    assert await get(url) == "v2"
    assert second_pid != first_pid
    assert not running(first_pid)


async def test_reload_with_workers_runs_one_server_and_says_workers_is_ignored(
    app_dir: Path,
) -> None:
    async with started(
        app_dir, "app:app", "--bind", "127.0.0.1:0", "--reload", "-w", "2"
    ) as running:
        with trio.fail_after(DEADLINE):
            await running.log.next(r"--reload runs one server process: workers = 2 is ignored")
        await running.wait_started()
        url = await running.wait_serving()
        assert await get(url) == "v1"
        assert "Worker" not in running.log.text


@pytest.mark.slow
async def test_a_broken_edit_gives_one_error_line_and_the_next_good_edit_serves_again(
    reloader: Reloader, app_dir: Path
) -> None:
    url = await reloader.wait_serving()
    (app_dir / "app.py").write_text(APP % "v2" + "this is not python(\n")
    with trio.fail_after(DEADLINE):
        await reloader.log.next(
            r"The server process exited with code 3; waiting for a change to restart it"
        )
    assert reloader.process.returncode is None
    [line] = error_lines(reloader.log.text)
    assert line.startswith("Error: error importing module 'app': SyntaxError"), line
    assert "Traceback" not in reloader.log.text

    answers: list[str] = []
    async with trio.open_nursery() as nursery:
        # Connects while no server runs: the reloader's socket holds it in the
        # backlog until the next server accepts it.
        nursery.start_soon(lambda: _append(answers, get(url)))
        (app_dir / "app.py").write_text(APP % "v3")
        assert await reloader.wait_serving() == url
    assert answers == ["v3"]
    assert len(error_lines(reloader.log.text)) == 1


async def _append(answers: list[str], answer: object) -> None:
    answers.append(await answer)  # type: ignore[misc]


@pytest.mark.slow
async def test_include_and_exclude_patterns_decide_which_edits_restart(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(APP % "v1")
    (tmp_path / "generated").mkdir()
    async with started(
        tmp_path,
        "app:app",
        "--bind",
        "127.0.0.1:0",
        "--reload",
        "--reload-delay",
        "0.05",
        "--reload-include",
        "*.txt",
        "--reload-exclude",
        "generated",
    ) as command:
        await command.wait_serving()
        (tmp_path / "generated" / "table.py").write_text("x = 1\n")
        (tmp_path / "notes.md").write_text("not watched\n")
        (tmp_path / "settings.txt").write_text("watched\n")
        with trio.fail_after(DEADLINE):
            await command.log.next(r"Detected changes in settings\.txt; restarting\n")
        await command.wait_serving()
        command.process.send_signal(signal.SIGTERM)
        assert await command.finish() == 0
    assert command.log.text.count("Detected changes") == 1, command.log.text


@pytest.mark.parametrize(
    ("path", "counts"),
    [
        ("app.py", True),
        ("pkg/deep/module.py", True),
        ("notes.txt", False),
        ("templates/index.html", True),
        ("other/index.html", False),
        (".venv/lib/site.py", False),
        ("pkg/__pycache__/module.py", False),
        ("app.pyc", False),
        ("app.py~", False),
        ("generated/table.py", False),
        ("generated.py", True),
    ],
)
def test_reload_filter_counts_includes_minus_excludes(path: str, counts: bool) -> None:
    watch = ReloadFilter(["/src"], ["templates/*.html"], ["generated"])
    assert watch.matches(f"/src/{path}") is counts


def test_naming_a_default_pattern_on_the_other_side_turns_it_off() -> None:
    only_html = ReloadFilter(["/src"], ["*.html"], ["*.py"])
    assert not only_html.matches("/src/app.py")
    assert only_html.matches("/src/page.html")
    dotfiles = ReloadFilter(["/src"], [".env"], [])
    assert dotfiles.matches("/src/.env")
    assert not dotfiles.matches("/src/.git/config")
    assert not dotfiles.matches("/src/.venv/.env")


def test_a_directory_path_given_as_an_exclude_leaves_out_everything_below_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "src" / "vendor").mkdir(parents=True)
    (tmp_path / "other").mkdir()
    monkeypatch.chdir(tmp_path / "other")
    for exclude in (str(tmp_path / "src" / "vendor"), "../src/vendor"):
        config = Config(reload_dirs=[str(tmp_path / "src")], reload_excludes=[exclude])
        watch = ReloadFilter.from_config(config)
        assert not watch.matches(str(tmp_path / "src" / "vendor" / "lib.py"))
        assert watch.matches(str(tmp_path / "src" / "app.py"))


def test_an_exclude_path_that_is_no_directory_is_a_configuration_error(tmp_path: Path) -> None:
    """A glob is matched within the watched directories, where an absolute or ``..``
    path never is: rather than exclude nothing, the command stops (exit 2, as
    every ``ConfigError`` of the reloader)."""
    missing = str(tmp_path / "missing")
    config = Config(reload_dirs=[str(tmp_path)], reload_excludes=[missing])
    with pytest.raises(ConfigError) as caught:
        ReloadFilter.from_config(config)
    assert str(caught.value) == (
        f"reload_excludes: {missing!r} is a path but not a directory; give a glob "
        "(matched within the watched directories) or a directory"
    )


def test_paths_outside_the_watched_directories_never_count() -> None:
    assert not ReloadFilter(["/src"], [], []).matches("/elsewhere/app.py")


# -- stopping ---------------------------------------------------------------------------


async def test_sigterm_stops_the_server_and_the_reloader_with_exit_0(
    reloader: Reloader,
) -> None:
    pid = await reloader.wait_started()
    await reloader.wait_serving()
    reloader.process.send_signal(signal.SIGTERM)
    assert await reloader.finish() == 0, reloader.log.text
    assert "Received SIGTERM; stopping the server and the reloader" in reloader.log.text
    assert f"[{pid}] [INFO] Received SIGTERM; shutting down gracefully" in reloader.log.text
    assert not running(pid)
    assert "Traceback" not in reloader.log.text


async def test_sigint_without_a_terminal_is_passed_on_and_exits_0(app_dir: Path) -> None:
    # A new session has no controlling terminal: nobody else told the server.
    async with started(
        app_dir, "app:app", "--bind", "127.0.0.1:0", "--reload", new_session=True
    ) as command:
        pid = await command.wait_started()
        await command.wait_serving()
        command.process.send_signal(signal.SIGINT)
        assert await command.finish() == 0, command.log.text
    assert f"[{pid}] [INFO] Received SIGTERM; shutting down gracefully" in command.log.text
    assert not running(pid)


async def test_a_second_signal_stops_the_server_at_once_and_exits_130(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(
        textwrap.dedent(
            """\
            import sys

            import trio

            async def app(scope, receive, send):
                if scope["type"] != "http":
                    return
                print("request in flight", file=sys.stderr, flush=True)
                await trio.sleep_forever()
            """
        )
    )
    async with started(tmp_path, "app:app", "--bind", "127.0.0.1:0", "--reload") as command:
        pid = await command.wait_started()
        url = await command.wait_serving()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_expect_503, url)
            with trio.fail_after(DEADLINE):
                await command.log.next("request in flight")
            command.process.send_signal(signal.SIGTERM)
            with trio.fail_after(DEADLINE):
                await command.log.next(r"shutting down gracefully \(1 in flight, up to 30s\)")
            command.process.send_signal(signal.SIGTERM)
            assert await command.finish() == 130, command.log.text
    assert "Received SIGTERM again; stopping the server process now" in command.log.text
    assert "Cancelled 1 request in progress (forced stop): GET /" in command.log.text
    assert "Traceback" not in command.log.text
    assert not running(pid)


async def _expect_503(url: str) -> None:
    # The app had not started its response: the forced stop answers for it.
    async with httpx.AsyncClient(trust_env=False) as client:
        with trio.fail_after(DEADLINE):
            response = await client.get(url)
    assert response.status_code == 503
    assert response.headers["connection"] == "close"


#: Says when lifespan shutdown runs, and answers a request only once its whole body
#: has come, so that a test decides when a request in flight may finish.
WAITING_APP = """\
import sys


def say(text):
    print(text, file=sys.stderr, flush=True)


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                say("lifespan shutdown ran")
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        say("request in flight")
        if not message.get("more_body"):
            break
    answer = b"got " + body
    headers = [(b"content-length", str(len(answer)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": answer})
"""


async def open_request(url: str) -> trio.SocketStream:
    """A POST whose body is half sent."""
    host, port = url.removeprefix("http://").split(":")
    stream = await trio.open_tcp_stream(host, int(port))
    await stream.send_all(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\n\r\nab")
    return stream


async def finish_request(stream: trio.SocketStream) -> bytes:
    """Send the rest of the body; the whole answer, up to the server's close."""
    await stream.send_all(b"cd")
    answer = b""
    with trio.fail_after(DEADLINE):
        while data := await stream.receive_some():
            answer += data
    await stream.aclose()
    return answer


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_a_signal_to_the_whole_process_group_stops_the_server_gracefully(
    tmp_path: Path, signum: signal.Signals
) -> None:
    """What ``timeout``, process managers and systemd's control-group kill do: the
    server gets the signal and then the reloader's SIGTERM, and still finishes the
    request in flight and runs lifespan shutdown."""
    (tmp_path / "app.py").write_text(WAITING_APP)
    async with started(
        tmp_path, "app:app", "--bind", "127.0.0.1:0", "--reload", new_session=True
    ) as command:
        pid = await command.wait_started()
        url = await command.wait_serving()
        request = await open_request(url)
        with trio.fail_after(DEADLINE):
            await command.log.next("request in flight")
            os.killpg(command.process.pid, signum)
            # The server's shutdown has begun, and the reloader has passed its
            # SIGTERM on (the line comes just before it is sent).
            await command.log.next_all(
                rf"\[{pid}\] \[INFO\] Received SIG\w+; shutting down gracefully",
                r"stopping the server and the reloader",
            )
        answer = await finish_request(request)
        assert await command.finish() == 0, command.log.text
    assert answer.startswith(b"HTTP/1.1 200 "), (answer, command.log.text)
    assert answer.endswith(b"got abcd")
    assert "lifespan shutdown ran" in command.log.text
    assert not running(pid)


@pytest.mark.skipif(shutil.which("script") is None, reason="needs script(1) for a terminal")
async def test_sigint_to_the_reloader_alone_in_a_terminal_stops_the_server_at_once(
    app_dir: Path,
) -> None:
    """In a terminal's foreground, ``kill -INT`` to the reloader's PID only: the
    server is told too, rather than left running until it is killed."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TRIOSERVE_")}
    environment["PYTHONDONTWRITEBYTECODE"] = "1"
    command = f"{sys.executable} -m trioserve app:app --bind 127.0.0.1:0 --reload"
    process = await trio.lowlevel.open_process(
        ["script", "-qefc", command, "/dev/null"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=str(app_dir),
        env=environment,
    )
    terminal = LogWatch(process.stdout)
    try:
        with trio.fail_after(DEADLINE):
            match = await terminal.next(r"\[(\d+)\] \[INFO\] Reloading on changes in")
            await terminal.next(SERVING)
        os.kill(int(match.group(1)), signal.SIGINT)
        with trio.fail_after(DEADLINE):
            await terminal.next(r"Received SIGTERM; shutting down gracefully")
            await process.wait()
            await terminal.read_rest()
        assert process.returncode == 0, terminal.text
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                process.kill()
            await process.wait()
            assert process.stdin is not None
            await process.stdin.aclose()
            await terminal.stream.aclose()


async def test_the_server_shuts_down_when_the_reloader_is_killed(app_dir: Path) -> None:
    async with started(app_dir, "app:app", "--bind", "127.0.0.1:0", "--reload") as command:
        pid = await command.wait_started()
        await command.wait_serving()
        command.process.kill()
        with trio.fail_after(DEADLINE):
            await command.log.next(rf"\[{pid}\] \[WARNING\] The reloader is gone; shutting down")
            # Every server process holds the stderr pipe until it exits.
            await command.log.read_rest()
            await wait_gone(pid)


async def test_sighup_stops_the_server_and_the_reloader_with_exit_0(reloader: Reloader) -> None:
    pid = await reloader.wait_started()
    await reloader.wait_serving()
    reloader.process.send_signal(signal.SIGHUP)
    assert await reloader.finish() == 0, reloader.log.text
    assert "Received SIGHUP; stopping the server and the reloader" in reloader.log.text
    assert f"[{pid}] [INFO] Received SIGTERM; shutting down gracefully" in reloader.log.text
    assert not running(pid)


async def wait_gone(pid: int) -> None:
    """Until ``pid`` has exited (its parent, init, reaps it)."""
    while running(pid):  # noqa: ASYNC110 - a PID gives no event to wait on
        await trio.sleep(0.01)


# -- errors and configuration -----------------------------------------------------------


async def test_without_watchfiles_reload_exits_2_with_one_line(
    app_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    shim = tmp_path_factory.mktemp("shim")
    (shim / "watchfiles").mkdir()
    (shim / "watchfiles" / "__init__.py").write_text("raise ImportError('no watchfiles here')\n")
    path = os.pathsep.join([str(shim), os.environ.get("PYTHONPATH", "")])
    async with started(app_dir, "app:app", "--reload", env={"PYTHONPATH": path}) as command:
        assert await command.finish() == 2
    assert command.log.text.splitlines() == [
        "Error: reload needs the watchfiles package: pip install watchfiles"
    ]


def test_a_missing_reload_dir_exits_2_with_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli,
        ["nothing:app", "--reload", "--reload-dir", str(tmp_path / "missing")],
        prog_name="trioserve",
    )
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [
        f"Error: reload_dirs: {str(tmp_path / 'missing')!r} is not a directory"
    ]


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"reload_delay": -1}, "reload_delay must be a number of seconds >= 0"),
        ({"reload_delay": float("inf")}, "reload_delay must be a number of seconds >= 0"),
        ({"reload_dirs": [""]}, "reload_dirs must be a list of non-empty strings"),
        ({"reload_includes": 3}, "reload_includes must be a list of strings"),
        ({"reload": "yes"}, "reload must be true or false"),
    ],
)
def test_bad_reload_settings_are_configuration_errors(
    keys: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        Config(**keys)  # type: ignore[arg-type]


def test_reload_settings_have_uvicorns_defaults_and_take_a_single_string() -> None:
    config = Config()
    assert (config.reload, config.reload_dirs, config.reload_delay) == (False, (), 0.25)
    assert Config(reload_dirs="src").reload_dirs == ("src",)


def test_help_lists_the_reload_flags_under_development() -> None:
    result = CliRunner().invoke(cli, ["--help"], prog_name="trioserve")
    assert result.exit_code == 0, result.output
    development = result.stdout.split("Development options:")[1].split("Other options:")[0]
    for flag in ("--reload / --no-reload", "--reload-dir", "--reload-include GLOB"):
        assert flag in development
    for flag in ("--reload-exclude GLOB", "--reload-delay"):
        assert flag in development


def test_hypercorns_use_reloader_is_read_as_reload() -> None:
    assert config_from_mapping({"use_reloader": True}).reload is True
    with pytest.raises(ConfigError, match="sets both 'reload' and Hypercorn's name for it"):
        config_from_mapping({"use_reloader": True, "reload": False})
