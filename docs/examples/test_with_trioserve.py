"""Testing an app with trioserve.testing, in virtual time (run with pytest-trio)."""

from __future__ import annotations

from typing import Any

import trio

from trioserve import Config
from trioserve.testing import open_test_client


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await trio.sleep(3)  # slow work: virtual time makes the test instant
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"done"})


async def test_slow_endpoint(autojump_clock: trio.testing.MockClock) -> None:
    async with open_test_client(app, Config(keep_alive_timeout=1)) as client:
        response = await client.get("/")
    assert response.status == 200
    assert response.body == b"done"
