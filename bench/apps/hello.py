"""hello: GET answered with a 12-byte body and a Content-Length (no chunking)."""

from __future__ import annotations

from typing import Any

from . import lifespan

BODY = b"Hello world!"
assert len(BODY) == 12

HEADERS = [(b"content-type", b"text/plain"), (b"content-length", b"12")]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "http":
        # Fresh messages per request: a server may mutate what it is given.
        await send({"type": "http.response.start", "status": 200, "headers": list(HEADERS)})
        await send({"type": "http.response.body", "body": BODY})
    elif scope["type"] == "lifespan":
        await lifespan(receive, send)
