"""Embedding trioserve in a trio program: start it, use it, stop it."""

from __future__ import annotations

import functools
from typing import Any

import httpx
import trio

import trioserve


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"embedded"})


async def main() -> str:
    config = trioserve.Config(bind=["127.0.0.1:0"])  # port 0: the OS picks a free port
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        # start() returns once the port is bound and lifespan startup is done.
        urls = await nursery.start(
            functools.partial(trioserve.serve, app, config, shutdown_trigger=stop.wait)
        )
        async with httpx.AsyncClient() as client:
            response = await client.get(urls[0])
        stop.set()  # graceful shutdown; serve() returns and the nursery closes
    return response.text


if __name__ == "__main__":
    print(trio.run(main))
