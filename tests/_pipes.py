"""A reader for a subprocess's output pipe, shared by the tests that run trioserve
as a real process (``test_cli.py``, ``test_serve.py``)."""

from __future__ import annotations

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
