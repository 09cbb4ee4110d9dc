"""websocket echo: accept, then send every text or bytes message back until disconnect.

A plain GET (the driver's readiness and sanity check) is answered 200 ``ok``.
"""

from __future__ import annotations

from typing import Any

from . import lifespan

OK_HEADERS = [(b"content-type", b"text/plain"), (b"content-length", b"2")]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "websocket":
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] == "websocket.receive":
                text = message.get("text")
                if text is not None:
                    await send({"type": "websocket.send", "text": text})
                else:
                    await send({"type": "websocket.send", "bytes": message.get("bytes") or b""})
            elif message["type"] == "websocket.disconnect":
                return
    elif scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": list(OK_HEADERS)})
        await send({"type": "http.response.body", "body": b"ok"})
    elif scope["type"] == "lifespan":
        await lifespan(receive, send)
