"""A 1 MiB file, two ways.

``chunks_app``
    Reads the file in 64 KiB blocks and sends each as an ``http.response.body``
    message (Content-Length set). Blocking reads: the file is in the page cache
    after the first request, and every server runs the same code.

``pathsend_app``
    Uses ``http.response.pathsend`` when ``scope["extensions"]`` advertises it,
    else falls back to exactly what ``chunks_app`` does. Every response carries
    ``x-bench-pathsend: 1`` or ``0`` so the driver can record which path was taken.

The file is made on first import: ``$TRIOSERVE_BENCH_FILE`` if set, else
``<tempdir>/trioserve-bench-1MiB.bin``.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from . import lifespan

SIZE = 1024 * 1024
BLOCK = 64 * 1024


def _ensure_file() -> str:
    path = os.environ.get("TRIOSERVE_BENCH_FILE") or os.path.join(
        tempfile.gettempdir(), "trioserve-bench-1MiB.bin"
    )
    try:
        if os.path.getsize(path) == SIZE:
            return os.path.abspath(path)
    except OSError:
        pass
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        f.write(bytes(range(256)) * (SIZE // 256))
    os.replace(tmp, path)  # atomic: concurrent server processes never see half a file
    return os.path.abspath(path)


PATH = _ensure_file()


def _start(pathsend: bool | None) -> dict[str, Any]:
    headers = [
        (b"content-type", b"application/octet-stream"),
        (b"content-length", str(SIZE).encode("ascii")),
    ]
    if pathsend is not None:
        headers.append((b"x-bench-pathsend", b"1" if pathsend else b"0"))
    return {"type": "http.response.start", "status": 200, "headers": headers}


async def _send_chunks(send: Any) -> None:
    with open(PATH, "rb") as f:  # noqa: ASYNC230 - the same blocking reads on every server
        block = f.read(BLOCK)
        while block:
            following = f.read(BLOCK)
            await send({"type": "http.response.body", "body": block, "more_body": bool(following)})
            block = following


async def chunks_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    await send(_start(None))
    await _send_chunks(send)


async def pathsend_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    supported = "http.response.pathsend" in (scope.get("extensions") or {})
    await send(_start(supported))
    if supported:
        await send({"type": "http.response.pathsend", "path": PATH})
    else:
        await _send_chunks(send)
