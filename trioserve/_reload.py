"""``--reload``: restart the server when a watched file changes (development).

Theory of operation
-------------------

The process the user started becomes the *reloader*, a trio program that never
imports the app. It binds every configured address itself and then runs the
server as a child process: ``python -c "...run_child()"`` with the listening
sockets passed down as ``fd://N`` binds and the resolved configuration sent over a
pipe (so the child serves exactly what the command line, the environment and the
config file said, without reading them again). The reloader keeps its end of that
pipe open for the child's whole life: when the reloader ends, however it ends
(``SIGKILL`` too), the child reads EOF and shuts down gracefully, so no server
outlives the reloader and holds on to the port with old code. Because the sockets stay open in
the reloader, a client that connects while the server restarts waits in the
listen backlog and is answered by the next child instead of being refused, and a
port 0 keeps its port across restarts.

``watchfiles.awatch`` (under trio, through anyio) reports changed files;
:class:`ReloadFilter` decides which of them count. A change stops the child
gracefully (SIGTERM: the server's own graceful shutdown) and starts a new one. A
child that exits on its own (an edit that breaks the import exits 3 with one
``Error:`` line) is not restarted until the next change.

Signals: SIGTERM, SIGINT and SIGHUP stop the child (SIGTERM, always) and then the
reloader, exit 0; SIGUSR1 reopens the log files, in the reloader and the child. The
child shares the reloader's process group (so that ``breakpoint()`` in the app can
read the terminal), so a Ctrl+C typed in the terminal, or a signal sent to the
whole group (``timeout``, a process manager), reaches it as well as the
reloader's SIGTERM: the child acts on the first SIGINT or SIGTERM it gets and
ignores the ones after it (and SIGHUP), leaving the decision to cut the graceful
shutdown short to the reloader. A second signal to the reloader forces the
child's stop: a line on the pipe, after which the child cancels its requests
(answering 503 where it can) and exits, or is killed 2 seconds later; the
reloader exits 130. A child that outlives ``graceful_timeout +
shutdown_timeout`` plus a margin is killed too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from functools import partial
from pathlib import Path, PurePath

import trio

from ._config import Config
from ._errors import BindError, ConfigError, LifespanFailure
from ._listeners import UnixSocketListener, open_listeners_with_tls
from ._serve import ServerControl
from ._types import ASGIApp

__all__ = ["ReloadFilter", "ServerCommand", "run_child", "run_reloader"]

logger = logging.getLogger("trioserve.error")

#: What a change must match to count, unless the user excludes the pattern.
DEFAULT_INCLUDES = ("*.py",)
#: What never counts, unless the user includes the pattern: hidden files and
#: directories (``.git``, ``.venv``, editors' swap files), bytecode, backups.
DEFAULT_EXCLUDES = (".*", "*.py[cod]", "*~", "~*", "__pycache__")
#: Beyond the server's own shutdown deadlines, before a child that will not stop is
#: killed.
_KILL_MARGIN = 5.0
#: Seconds a child forced to stop (a second signal) gets to cancel its requests,
#: answer their clients and exit, before it is killed.
_FORCE_MARGIN = 2.0
_CHILD_CODE = "from trioserve._reload import run_child; run_child()"
#: What stops the reloader (and its child, gracefully).
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

_Listener = trio.abc.Listener[trio.abc.Stream]


@dataclasses.dataclass(frozen=True)
class ServerCommand:
    """What the server process is to serve: the ``APP`` argument, ``--factory``,
    the absolute ``--app-dir`` and the resolved configuration."""

    app: str
    factory: bool
    app_dir: str
    config: Config


class ReloadFilter:
    """Which changed files restart the server.

    A path counts when, relative to the watched directory it is in, it matches an
    include pattern and neither it nor any directory on the way to it matches an
    exclude pattern. Patterns are globs matched against the end of the path
    (``*.py`` matches a ``.py`` file at any depth, ``templates/*.html`` an HTML
    file directly in any ``templates`` directory). A file that one of the user's
    include patterns names is held only to the user's exclude patterns (so
    ``.env`` can be watched although ``.*`` is excluded by default); its
    directories still are to all of them.

    Args:
      dirs: the watched directories, absolute.
      includes: the user's include patterns, added to :data:`DEFAULT_INCLUDES`.
      excludes: the user's exclude patterns, added to :data:`DEFAULT_EXCLUDES`.
          Naming a default pattern on the other side turns the default off.
      excluded_dirs: directories (absolute) whose files never count.
    """

    def __init__(
        self,
        dirs: Sequence[str],
        includes: Sequence[str],
        excludes: Sequence[str],
        excluded_dirs: Sequence[str] = (),
    ):
        self.dirs = [Path(d) for d in dirs]
        self.excluded_dirs = [Path(d) for d in excluded_dirs]
        self.user_includes = list(includes)
        self.user_excludes = list(excludes)
        self.default_includes = [p for p in DEFAULT_INCLUDES if p not in excludes]
        self.excludes = [p for p in (*DEFAULT_EXCLUDES, *excludes) if p not in includes]

    @classmethod
    def from_config(cls, config: Config) -> ReloadFilter:
        """The filter for ``config``'s ``reload_*`` keys.

        A ``reload_excludes`` entry that is a path rather than a glob (absolute, or
        with a ``..``) names a directory: everything below it is left out.

        Raises:
          ConfigError: a ``reload_dirs`` entry is not a directory, or a path in
              ``reload_excludes`` is not one.
        """
        dirs = []
        for name in config.reload_dirs or (".",):
            path = os.path.realpath(name)
            if not os.path.isdir(path):
                raise ConfigError(f"reload_dirs: {name!r} is not a directory")
            dirs.append(path)
        excludes, excluded_dirs = [], []
        for pattern in config.reload_excludes:
            if not (os.path.isabs(pattern) or ".." in PurePath(pattern).parts):
                excludes.append(pattern)
            elif os.path.isdir(pattern):
                excluded_dirs.append(os.path.realpath(pattern))
            else:
                # A glob is matched within a watched directory, where such a
                # path never is: it would silently exclude nothing.
                raise ConfigError(
                    f"reload_excludes: {pattern!r} is a path but not a directory; "
                    "give a glob (matched within the watched directories) or a directory"
                )
        return cls(dirs, config.reload_includes, excludes, excluded_dirs)

    def __call__(self, change: object, path: str) -> bool:
        """``watchfiles``' filter signature: whether ``path`` counts."""
        return self.matches(path)

    def matches(self, path: str) -> bool:
        """Whether a change of ``path`` (absolute) restarts the server."""
        relative = self._relative(Path(path))
        if relative is None or any(Path(path).is_relative_to(d) for d in self.excluded_dirs):
            return False
        named = any(relative.match(pattern) for pattern in self.user_includes)
        if not named and not any(relative.match(pattern) for pattern in self.default_includes):
            return False
        parts = relative.parts
        for depth in range(1, len(parts) + 1):
            patterns = self.user_excludes if named and depth == len(parts) else self.excludes
            if any(PurePath(*parts[:depth]).match(pattern) for pattern in patterns):
                return False
        return True

    def _relative(self, path: Path) -> PurePath | None:
        for directory in self.dirs:
            if path.is_relative_to(directory) and path != directory:
                return path.relative_to(directory)
        return None


def run_reloader(command: ServerCommand) -> int:
    """Run ``command``'s server as a child process, restarting it on changes, until
    SIGINT or SIGTERM. Returns the exit code: 0, or 130 after a second signal.

    Raises:
      ConfigError: ``watchfiles`` is not installed, or a watched directory does not
          exist (nothing is bound then).
      BindError: an address could not be bound.
    """
    try:
        import watchfiles  # noqa: F401 - only checked for here; _Reloader imports it
    except ImportError:
        raise ConfigError("reload needs the watchfiles package: pip install watchfiles") from None
    watch = ReloadFilter.from_config(command.config)
    return trio.run(_Reloader(command, watch).run)


def run_child() -> None:
    """The server process a reloader runs; not for direct use.

    Reads the :class:`ServerCommand` from the pipe whose descriptor is
    ``sys.argv[1]`` and serves it like the ``trioserve`` command does, with its exit
    codes and one-line errors, until a signal or the end of the pipe (the reloader
    is gone) shuts it down gracefully.
    """
    from ._cli import run_app
    from ._logging import configure_logging

    control_fd = int(sys.argv[1])
    try:
        line, forced = _read_line(control_fd)
    except EOFError:
        # The reloader went away before saying what to serve.
        sys.exit(1)
    if forced:
        # A second Ctrl+C to the reloader before this process began serving.
        sys.exit(130)
    try:
        spec = json.loads(line)
        config = Config(**spec["config"])
        if spec["app_dir"] not in sys.path:
            sys.path.insert(0, spec["app_dir"])
        configure_logging(
            loglevel=config.loglevel,
            errorlog=config.errorlog,
            accesslog=config.accesslog,
            logconfig=config.logconfig,
            announce=False,
        )
        run_app(
            spec["app"],
            factory=spec["factory"],
            app_dir=spec["app_dir"],
            config=config,
            runner=partial(_serve_child, control_fd),
        )
    except ConfigError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        # Ctrl+C while the app was still being imported: the reloader stops too.
        sys.exit(130)


def _read_line(fd: int) -> tuple[bytes, bool]:
    """The spec line, and whether more came behind it (a forced stop)."""
    data = b""
    while b"\n" not in data:
        chunk = os.read(fd, 65536)
        if not chunk:
            raise EOFError("the reloader closed the pipe")
        data += chunk
    line, _, rest = data.partition(b"\n")
    return line, bool(rest)


async def _serve_child(
    control_fd: int, app: ASGIApp, config: Config, notifier: object = None
) -> int:
    """Serve in the reloader's child until a signal or the reloader's end; 130
    when the reloader forced the stop."""
    from ._worker import serve_until, watch_control_pipe

    stop = trio.Event()
    # The reloader is the process the user started and signals.
    control = ServerControl(pid=os.getppid(), interactive=True)
    error: ConfigError | LifespanFailure | BindError | None = None

    async def serve_then_cancel(*, task_status: trio.TaskStatus[list[str]]) -> None:
        await serve_until(app, config, stop, control=control, task_status=task_status)
        nursery.cancel_scope.cancel()

    async with trio.open_nursery() as nursery:
        await nursery.start(_child_signals, stop, control)
        pipe = trio.lowlevel.FdStream(control_fd)
        nursery.start_soon(
            watch_control_pipe, pipe, stop, control, nursery.cancel_scope, "reloader"
        )
        try:
            await nursery.start(serve_then_cancel)
        except (ConfigError, LifespanFailure, BindError) as exc:
            # Raised outside the nursery, so that run_app sees the error itself.
            error = exc
            nursery.cancel_scope.cancel()
    if error is not None:
        raise error
    return 130 if control.forced else 0


async def _child_signals(
    stop: trio.Event,
    control: ServerControl,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    from ._logging import reopen_log_files

    with trio.open_signal_receiver(*_STOP_SIGNALS, signal.SIGUSR1) as signals:
        task_status.started()
        async for signum in signals:
            name = signal.Signals(signum).name
            if signum == signal.SIGUSR1:
                reopen_log_files()
                logger.info("Reopened the log files")
            elif signum == signal.SIGHUP:
                # A terminal's hang-up reaches the whole group: the reloader,
                # which got it too, stops this process.
                continue
            elif not stop.is_set():
                # The server logs the line, with what is in flight.
                control.stop_requested(f"Received {name}")
                stop.set()
            else:
                # The same stop reaching us twice (a group signal, then the
                # reloader's SIGTERM); cutting it short is the reloader's call.
                logger.debug("Received %s again; still shutting down gracefully", name)


class _Reloader:
    """The supervising loop; one instance per :func:`run_reloader` call."""

    def __init__(self, command: ServerCommand, watch: ReloadFilter) -> None:
        self.command = command
        self.watch = watch
        config = command.config
        self.kill_after = config.graceful_timeout + config.shutdown_timeout + _KILL_MARGIN
        self.fds: tuple[int, ...] = ()
        self.payload = b""
        self.child: trio.Process | None = None
        #: The reloader's end of the running child's pipe.
        self.pipe: trio.lowlevel.FdStream | None = None
        self.stopping = trio.Event()
        self.stop_watching = trio.Event()
        self.hurried = False
        self.send_event, self.events = trio.open_memory_channel[tuple[str, object]](math.inf)

    async def run(self) -> int:
        with trio.open_signal_receiver(*_STOP_SIGNALS, signal.SIGUSR1) as signals:
            listeners = await _open_listeners(self.command.config)
            try:
                self._prepare([_fd_of(lst) for lst in listeners[0]], listeners[1])
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._watch)
                    nursery.start_soon(self._handle_signals, signals)
                    await self._supervise(nursery)
                    self.stop_watching.set()
                    nursery.cancel_scope.cancel()
            finally:
                for listener in (*listeners[0], *listeners[1]):
                    await trio.aclose_forcefully(listener)
        return 130 if self.hurried else 0

    def _prepare(self, bind_fds: list[int], insecure: Sequence[_Listener]) -> None:
        insecure_fds = [_fd_of(lst) for lst in insecure]
        self.fds = (*bind_fds, *insecure_fds)
        child_config = self.command.config.replace(
            bind=[f"fd://{fd}" for fd in bind_fds],
            insecure_bind=[f"fd://{fd}" for fd in insecure_fds],
            reload=False,
        )
        keys = {f.name: getattr(child_config, f.name) for f in dataclasses.fields(Config)}
        spec = {
            "app": self.command.app,
            "factory": self.command.factory,
            "app_dir": self.command.app_dir,
            "config": keys,
        }
        # One line: the pipe stays open after it, and its end means "stop".
        self.payload = json.dumps(spec).encode() + b"\n"
        logger.info("Reloading on changes in: %s", ", ".join(str(d) for d in self.watch.dirs))

    async def _supervise(self, nursery: trio.Nursery) -> None:
        child: trio.Process | None = await self._start_child(nursery)
        while True:
            kind, value = await self.events.receive()
            if kind == "exit":
                if child is not None and value is child:
                    logger.warning(
                        "The server process exited with code %s; waiting for a change "
                        "to restart it",
                        child.returncode,
                    )
                    child = self.child = None
                continue
            if kind == "change":
                logger.info("Detected changes in %s; restarting", _describe(value))
            if child is not None:
                await self._stop_child(child)
            if kind == "stop" or self.stopping.is_set():
                return
            self._drop_pending_changes()
            child = await self._start_child(nursery)

    def _drop_pending_changes(self) -> None:
        # Changes made while the old server was stopping are in the new one already.
        while True:
            try:
                kind, value = self.events.receive_nowait()
            except trio.WouldBlock:
                return
            if kind == "stop":
                self.send_event.send_nowait((kind, value))
                return

    async def _start_child(self, nursery: trio.Nursery) -> trio.Process:
        read_fd, write_fd = os.pipe()
        try:
            process = await trio.lowlevel.open_process(
                [sys.executable, "-c", _CHILD_CODE, str(read_fd)],
                pass_fds=(read_fd, *self.fds),
            )
        except BaseException:
            os.close(write_fd)
            raise
        finally:
            os.close(read_fd)
        pipe = trio.lowlevel.FdStream(write_fd)
        # If it died at once, its exit is reported like any other.
        with contextlib.suppress(trio.BrokenResourceError):
            await pipe.send_all(self.payload)
        logger.info("Started server process %d", process.pid)
        self.child = process
        self.pipe = pipe
        nursery.start_soon(self._report_exit, process, pipe)
        return process

    async def _report_exit(self, process: trio.Process, pipe: trio.lowlevel.FdStream) -> None:
        # The pipe stays open while the child runs; closing it earlier would tell
        # the child that the reloader is gone.
        async with pipe:
            await process.wait()
        self.send_event.send_nowait(("exit", process))

    async def _stop_child(self, process: trio.Process) -> None:
        # Always: a child that a group signal or a Ctrl+C reached already ignores
        # it, and one that nothing reached (a signal to the reloader's PID only)
        # needs it.
        process.send_signal(signal.SIGTERM)
        with trio.move_on_after(self.kill_after):
            await process.wait()
        if process.returncode is None:
            logger.warning(
                "The server process did not stop within %gs; killing it", self.kill_after
            )
            process.kill()
            await process.wait()
        self.child = None

    async def _handle_signals(self, signals: AsyncIterator[int]) -> None:
        from ._logging import reopen_log_files

        async for signum in signals:
            name = signal.Signals(signum).name
            if signum == signal.SIGUSR1:
                reopen_log_files()
                if self.child is not None and self.child.returncode is None:
                    self.child.send_signal(signal.SIGUSR1)
                continue
            if not self.stopping.is_set():
                logger.info("Received %s; stopping the server and the reloader", name)
                self.stopping.set()
                self.send_event.send_nowait(("stop", None))
                continue
            logger.warning("Received %s again; stopping the server process now", name)
            self.hurried = True
            child, pipe = self.child, self.pipe
            if child is not None and child.returncode is None and pipe is not None:
                await self._force_child(child, pipe)

    async def _force_child(self, child: trio.Process, pipe: trio.lowlevel.FdStream) -> None:
        """Ask the child to stop at once (its requests get a 503); kill it if it
        has not exited within :data:`_FORCE_MARGIN`."""
        with contextlib.suppress(
            trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError
        ):
            await pipe.send_all(b"force\n")
        with trio.move_on_after(_FORCE_MARGIN):
            await child.wait()
        if child.returncode is None:
            child.kill()

    async def _watch(self) -> None:
        import watchfiles

        step = max(1, round(self.command.config.reload_delay * 1000))
        async for changes in watchfiles.awatch(
            *self.watch.dirs,
            watch_filter=self.watch,
            step=step,
            debounce=max(1600, step),
            stop_event=self.stop_watching,
        ):
            self.send_event.send_nowait(("change", sorted({path for _, path in changes})))


async def _open_listeners(config: Config) -> tuple[list[_Listener], list[_Listener]]:
    """The listeners of ``bind`` and of ``insecure_bind``, plain: the server
    process adds TLS to the first."""
    secure = await open_listeners_with_tls(config.replace(insecure_bind=()), None)
    if not config.insecure_bind:
        return secure, []
    try:
        insecure = await open_listeners_with_tls(
            config.replace(bind=config.insecure_bind, insecure_bind=()), None
        )
    except BaseException:
        for listener in secure:
            await trio.aclose_forcefully(listener)
        raise
    return secure, insecure


def _fd_of(listener: _Listener) -> int:
    if isinstance(listener, UnixSocketListener):
        return listener.socket_listener.socket.fileno()
    assert isinstance(listener, trio.SocketListener)
    return listener.socket.fileno()


def _describe(paths: object) -> str:
    assert isinstance(paths, list)
    cwd = Path.cwd()
    names = [str(Path(p).relative_to(cwd)) if Path(p).is_relative_to(cwd) else p for p in paths]
    shown = ", ".join(names[:5])
    return shown if len(names) <= 5 else f"{shown} and {len(names) - 5} more"
