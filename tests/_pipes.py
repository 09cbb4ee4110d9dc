"""Running trioserve (or gunicorn) as a real process in tests: :func:`running` and
:func:`wait_for_exit` start and end the command; :class:`PipeReader` searches
everything read so far from an output pipe; :class:`LogWatch` looks only past its
last match, for logs where the same line comes again."""

from __future__ import annotations

import contextlib
import math
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import trio


class PipeReader:
    """One pipe of a subprocess, read on demand."""

    def __init__(self, stream: trio.abc.ReceiveStream | None) -> None:
        assert stream is not None
        self.stream = stream
        self.text = ""

    async def wait_for(self, pattern: str) -> re.Match[str]:
        """Read until ``pattern`` matches what was read so far."""
        while True:
            match = re.search(pattern, self.text)
            if match is not None:
                return match
            data = await self.stream.receive_some()
            if not data:
                raise AssertionError(f"output ended before {pattern!r}:\n{self.text}")
            self.text += data.decode()

    async def read_rest(self) -> str:
        """Read until EOF; return everything read."""
        while data := await self.stream.receive_some():
            self.text += data.decode()
        return self.text


class LogWatch:
    """One pipe of a subprocess, read on demand; each wait looks only past the last
    match, so that it sees only what happened since.

    Args:
      stream: the pipe.
      seconds: how long a wait may take by default (``None``: the caller bounds it).
    """

    def __init__(self, stream: trio.abc.ReceiveStream | None, seconds: float | None = None) -> None:
        assert stream is not None
        self.stream = stream
        self.seconds = seconds
        self.text = ""
        self.position = 0

    async def next(self, pattern: str, seconds: float | None = None) -> re.Match[str]:
        """Read until ``pattern`` matches past the last match; fail with what was
        read when the output ends or the wait runs out."""
        matches = await self._wait([pattern], seconds)
        return matches[0]

    async def next_all(self, *patterns: str, seconds: float | None = None) -> None:
        """Read until each of ``patterns`` has come past the last match, in any order."""
        await self._wait(list(patterns), seconds)

    async def _wait(self, patterns: list[str], seconds: float | None) -> list[re.Match[str]]:
        limit = seconds if seconds is not None else self.seconds
        with trio.move_on_after(math.inf if limit is None else limit):
            while True:
                found = [re.compile(p).search(self.text, self.position) for p in patterns]
                matches = [m for m in found if m is not None]
                if len(matches) == len(patterns):
                    self.position = max(m.end() for m in matches)
                    return matches
                data = await self.stream.receive_some()
                if not data:
                    raise AssertionError(f"output ended before {patterns!r}:\n{self.text}")
                self.text += data.decode()
        raise AssertionError(f"no {patterns!r} within {limit}s:\n{self.text}")

    async def read_rest(self) -> str:
        """Read until EOF; return everything read."""
        while data := await self.stream.receive_some():
            self.text += data.decode()
        return self.text


def clean_environment(extra: dict[str, str], *paths: Path) -> dict[str, str]:
    """This process's environment without ``TRIOSERVE_*`` variables (the command
    reports unknown ones), with ``paths`` first on ``PYTHONPATH`` and ``extra``
    set."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TRIOSERVE_")}
    path = [*map(str, paths), *filter(None, environment.get("PYTHONPATH", "").split(os.pathsep))]
    environment["PYTHONPATH"] = os.pathsep.join(path)
    environment.update(extra)
    return environment


async def wait_for_exit(process: trio.Process, *pipes: PipeReader, seconds: float = 15) -> None:
    """Wait until ``process`` exits and read the rest of ``pipes``; past ``seconds``
    fail, and kill the process if it still runs."""
    try:
        with trio.fail_after(seconds):
            await process.wait()
            for pipe in pipes:
                await pipe.read_rest()
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()


class Running:
    """``python -m trioserve ARGS`` in a subprocess, and its two output pipes."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.stdout = PipeReader(process.stdout)
        self.stderr = PipeReader(process.stderr)

    async def serving(self, scheme: str = "https?") -> str:
        """The URL with ``scheme`` on the startup line (``Serving on`` and every
        address served)."""
        with trio.fail_after(10):
            line = (await self.stderr.wait_for(r"Serving on ([^\n]*)\n")).group(1)
        match = re.search(rf"\b{scheme}://127\.0\.0\.1:\d+", line)
        assert match is not None, line
        return match.group(0)


@contextlib.asynccontextmanager
async def running(
    args: list[str], cwd: Path, env: dict[str, str], *, stdin: int | None = None
) -> AsyncIterator[Running]:
    """Run ``python -m trioserve ARGS`` in ``cwd`` with the environment ``env``;
    when the block ends, SIGTERM it and check that it exits 0 without a
    traceback."""
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "trioserve", *args],
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=str(cwd),
        env=env,
    )
    command = Running(process)
    try:
        yield command
        process.send_signal(signal.SIGTERM)
    finally:
        await wait_for_exit(process, command.stdout, command.stderr, seconds=10)
    assert process.returncode == 0, command.stderr.text
    assert "Traceback" not in command.stdout.text + command.stderr.text
