"""The ASGI apps the benchmark serves. Each is plain ASGI 3 with no dependencies, so
every server under test (trio or asyncio based) runs exactly the same code.

Every app answers ``lifespan`` properly (startup/shutdown complete), so no server
logs a warning or takes a slower path because lifespan is unsupported.
"""

from __future__ import annotations

from typing import Any


async def lifespan(receive: Any, send: Any) -> None:
    """Acknowledge lifespan startup and shutdown."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
