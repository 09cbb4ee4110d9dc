"""Readers for a subprocess's output pipe, shared by the tests that run trioserve
(or gunicorn) as a real process: :class:`PipeReader` searches everything read so
far; :class:`LogWatch` looks only past its last match, for logs where the same
line comes again."""

from __future__ import annotations

import math
import re

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
