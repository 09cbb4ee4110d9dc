"""Real frameworks on the real server over real loopback sockets
(``open_test_server``), driven by ``httpx.AsyncClient``:

- Starlette: routing with path parameters, JSON, a ``StreamingResponse`` that is
  streamed chunk by chunk (the generator waits for the client to see each chunk),
  a ``BackgroundTask`` that runs after the response reached the client, a 200 KiB
  request body echo, lifespan state from a ``lifespan=`` context manager, HEAD on a
  GET route, and an exception in a route.
- FastAPI: path and query parameters with validation (422), a pydantic model body,
  a header dependency, HEAD on a route that declares it, 404.
- A raw ASGI app receiving an httpx streaming (chunked) upload while it is still
  being produced.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import httpx
import pytest
import trio
from _helpers import Scope
from fastapi import Depends, FastAPI, Header, HTTPException, Query
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from trioserve.testing import open_test_server

CHUNKS = [b"chunk-0;", b"chunk-1;", b"chunk-2;", b"chunk-3;"]
BIG_BODY = bytes(range(256)) * 800  # 200 KiB


@asynccontextmanager
async def serve_with_client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """Serve ``app`` on a loopback port; yield an httpx client for its URL."""
    async with (
        open_test_server(app) as server,
        httpx.AsyncClient(base_url=server.url, trust_env=False) as client,
    ):
        yield client


# -- Starlette -------------------------------------------------------------------------


class Database:
    def __init__(self, name: str) -> None:
        self.name = name
        self.closed = False


class StarletteContext:
    """Events shared between one test and its Starlette app."""

    def __init__(self) -> None:
        self.chunk_seen = [trio.Event() for _ in CHUNKS]
        self.response_received = trio.Event()
        self.background_done = trio.Event()
        self.database: Database | None = None


def make_starlette_app(ctx: StarletteContext) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        ctx.database = Database("primary")
        yield {"db": ctx.database}
        ctx.database.closed = True

    async def item(request: Request) -> JSONResponse:
        return JSONResponse(
            {
                "item_id": request.path_params["item_id"],
                "owner": request.path_params["owner"],
                "q": request.query_params.get("q"),
                "db": request.state.db.name,
            }
        )

    async def stream(request: Request) -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for index, chunk in enumerate(CHUNKS):
                yield chunk
                # Only go on once the client has this chunk: a server that buffers
                # the response until the app returns never gets that far.
                await ctx.chunk_seen[index].wait()

        return StreamingResponse(chunks(), media_type="text/plain")

    async def with_background(request: Request) -> PlainTextResponse:
        async def after_response() -> None:
            await ctx.response_received.wait()
            ctx.background_done.set()

        return PlainTextResponse("queued", background=BackgroundTask(after_response))

    async def echo(request: Request) -> Response:
        body = await request.body()
        return Response(body, media_type="application/octet-stream")

    async def boom(request: Request) -> Response:
        raise RuntimeError("route failed")

    routes = [
        Route("/users/{owner}/items/{item_id:int}", item),
        Route("/stream", stream),
        Route("/background", with_background),
        Route("/echo", echo, methods=["POST"]),
        Route("/boom", boom),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


async def test_starlette_routing_path_params_json_and_lifespan_state() -> None:
    ctx = StarletteContext()
    async with serve_with_client(make_starlette_app(ctx)) as client:
        with trio.fail_after(5):
            response = await client.get("/users/ann/items/42", params={"q": "blue"})
            missing = await client.get("/users/ann/items/not-a-number")
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        assert response.json() == {"item_id": 42, "owner": "ann", "q": "blue", "db": "primary"}
        assert missing.status_code == 404
        assert ctx.database is not None
        assert not ctx.database.closed
    # The lifespan context manager's exit ran when the server shut down.
    assert ctx.database.closed


async def test_starlette_streaming_response_is_sent_chunk_by_chunk() -> None:
    """Each chunk must reach the client while the generator is still running;
    the response is chunked (no content-length)."""
    ctx = StarletteContext()
    received = b""
    async with serve_with_client(make_starlette_app(ctx)) as client:
        with trio.fail_after(5):
            async with client.stream("GET", "/stream") as response:
                assert response.status_code == 200
                assert response.headers["transfer-encoding"] == "chunked"
                assert "content-length" not in response.headers
                seen = 0
                async for data in response.aiter_raw():
                    received += data
                    while seen < len(CHUNKS) and b"".join(CHUNKS[: seen + 1]) in received:
                        ctx.chunk_seen[seen].set()
                        seen += 1
    assert received == b"".join(CHUNKS)
    assert all(event.is_set() for event in ctx.chunk_seen)


async def test_starlette_background_task_runs_after_the_response_was_received() -> None:
    """The background task waits until the test has the response: a server that
    holds the response back until the app returns would deadlock here."""
    ctx = StarletteContext()
    async with serve_with_client(make_starlette_app(ctx)) as client:
        with trio.fail_after(5):
            response = await client.get("/background")
        assert response.status_code == 200
        assert response.text == "queued"
        assert not ctx.background_done.is_set()
        ctx.response_received.set()
        with trio.fail_after(5):
            await ctx.background_done.wait()
        # The connection is still good for another request.
        with trio.fail_after(5):
            again = await client.get("/users/bob/items/1")
        assert again.status_code == 200


async def test_starlette_echoes_a_200_kib_request_body() -> None:
    ctx = StarletteContext()
    async with serve_with_client(make_starlette_app(ctx)) as client:
        with trio.fail_after(5):
            response = await client.post("/echo", content=BIG_BODY)
    assert response.status_code == 200
    assert response.headers["content-length"] == str(len(BIG_BODY))
    assert response.content == BIG_BODY


async def test_starlette_head_on_get_route_has_headers_and_no_body() -> None:
    """Starlette answers HEAD on GET routes; the server must send the GET headers
    (content-length included) and no body. A body left on the wire would corrupt
    the next response on the same keep-alive connection."""
    ctx = StarletteContext()
    async with serve_with_client(make_starlette_app(ctx)) as client:
        with trio.fail_after(5):
            get = await client.get("/users/ann/items/7")
            head = await client.head("/users/ann/items/7")
            after = await client.get("/users/ann/items/8")
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == get.headers["content-length"]
    assert head.headers["content-type"] == "application/json"
    assert after.json()["item_id"] == 8


async def test_starlette_route_exception_gives_500_and_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="trioserve.error")
    ctx = StarletteContext()
    async with serve_with_client(make_starlette_app(ctx)) as client:
        with trio.fail_after(5):
            response = await client.get("/boom")
    assert response.status_code == 500
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert errors[0].exc_info is not None
    assert "route failed" in str(errors[0].exc_info[1])


# -- FastAPI ---------------------------------------------------------------------------


class Item(BaseModel):
    name: str
    price: float
    tags: list[str] = []


def current_user(x_token: Annotated[str, Header()]) -> str:
    if x_token != "secret":
        raise HTTPException(status_code=401, detail="bad token")
    return "alice"


def make_fastapi_app() -> FastAPI:
    app = FastAPI()

    @app.get("/items/{item_id}")
    async def read_item(item_id: int, q: Annotated[int, Query(ge=0, le=10)] = 0) -> dict[str, int]:
        return {"item_id": item_id, "q": q}

    @app.post("/items")
    async def create_item(
        item: Item, user: Annotated[str, Depends(current_user)]
    ) -> dict[str, Any]:
        return {"name": item.name, "total": item.price * 2, "tags": item.tags, "owner": user}

    @app.api_route("/health", methods=["GET", "HEAD"])
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


async def test_fastapi_path_and_query_parameters_with_validation() -> None:
    async with serve_with_client(make_fastapi_app()) as client:
        with trio.fail_after(5):
            ok = await client.get("/items/5", params={"q": 3})
            bad_path = await client.get("/items/five")
            bad_query = await client.get("/items/5", params={"q": -1})
    assert ok.status_code == 200
    assert ok.json() == {"item_id": 5, "q": 3}
    assert bad_path.status_code == 422
    assert bad_path.json()["detail"][0]["loc"] == ["path", "item_id"]
    assert bad_query.status_code == 422
    assert bad_query.json()["detail"][0]["loc"] == ["query", "q"]


async def test_fastapi_model_body_and_header_dependency() -> None:
    async with serve_with_client(make_fastapi_app()) as client:
        with trio.fail_after(5):
            created = await client.post(
                "/items",
                json={"name": "lamp", "price": 2.5, "tags": ["home"]},
                headers={"x-token": "secret"},
            )
            wrong_token = await client.post(
                "/items", json={"name": "lamp", "price": 2.5}, headers={"x-token": "nope"}
            )
            invalid = await client.post(
                "/items", json={"name": "lamp", "price": "cheap"}, headers={"x-token": "secret"}
            )
    assert created.status_code == 200
    assert created.json() == {"name": "lamp", "total": 5.0, "tags": ["home"], "owner": "alice"}
    assert wrong_token.status_code == 401
    assert wrong_token.json() == {"detail": "bad token"}
    assert invalid.status_code == 422
    assert invalid.json()["detail"][0]["loc"] == ["body", "price"]


async def test_fastapi_head_on_declared_route_and_404() -> None:
    async with serve_with_client(make_fastapi_app()) as client:
        with trio.fail_after(5):
            get = await client.get("/health")
            head = await client.head("/health")
            missing = await client.get("/nowhere")
    assert get.json() == {"status": "ok"}
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == get.headers["content-length"]
    assert missing.status_code == 404
    assert missing.json() == {"detail": "Not Found"}


# -- raw ASGI: streaming upload -----------------------------------------------------------


async def test_raw_asgi_app_receives_streaming_upload_while_it_is_produced() -> None:
    """httpx sends an async-generator body chunked. The generator waits until the
    app has received the first part before producing the rest: a server that
    buffers the whole body before calling the app (or before handing it over)
    never lets the upload finish."""
    first_part = b"a" * 70_000
    rest = [b"b" * 50_000, b"c" * 1_000]
    first_received = trio.Event()
    seen: dict[str, Any] = {}

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        headers = dict(scope["headers"])
        seen["transfer-encoding"] = headers.get(b"transfer-encoding")
        seen["content-length"] = headers.get(b"content-length")
        digest = hashlib.sha256()
        total = 0
        messages = 0
        while True:
            message = await receive()
            assert message["type"] == "http.request"
            messages += 1
            digest.update(message["body"])
            total += len(message["body"])
            if total >= len(first_part):
                first_received.set()
            if not message.get("more_body", False):
                break
        body = json.dumps(
            {"total": total, "sha256": digest.hexdigest(), "messages": messages}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def upload() -> AsyncIterator[bytes]:
        yield first_part
        with trio.fail_after(5):
            await first_received.wait()
        for part in rest:
            yield part

    async with serve_with_client(app) as client:
        with trio.fail_after(10):
            response = await client.post("/upload", content=upload())
    expected = first_part + b"".join(rest)
    assert response.status_code == 200
    result = response.json()
    assert result["total"] == len(expected)
    assert result["sha256"] == hashlib.sha256(expected).hexdigest()
    # The body came in pieces, not as one buffered message.
    assert result["messages"] >= 2
    assert seen == {"transfer-encoding": b"chunked", "content-length": None}
