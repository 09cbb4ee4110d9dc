"""streaming: 100 body messages of 1 KiB each, no Content-Length (chunked on the wire)."""

from __future__ import annotations

from typing import Any

from . import lifespan

CHUNK = b"x" * 1024
CHUNKS = 100


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/octet-stream")],
        }
    )
    for _ in range(CHUNKS - 1):
        await send({"type": "http.response.body", "body": CHUNK, "more_body": True})
    await send({"type": "http.response.body", "body": CHUNK, "more_body": False})
