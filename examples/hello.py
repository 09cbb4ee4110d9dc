"""The smallest trioserve program: a raw ASGI app, served with ``trio.run``.

Run it with ``python examples/hello.py`` and open http://127.0.0.1:8000.
"""

from __future__ import annotations

from typing import Any

import trio

import trioserve


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answer every HTTP request with a short greeting."""
    if scope["type"] != "http":
        return  # lifespan: nothing to set up (trioserve notes it and carries on)
    body = b"Hello from trioserve!\n"
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    trio.run(trioserve.serve, app)
