"""The ASGI lifespan protocol: ``lifespan="auto" | "on" | "off"``, startup
before the first request, shutdown after the last connection, ``state`` shared into
request scopes as a shallow copy per request, startup failures (exception,
``lifespan.startup.failed``, timeout) raising ``LifespanFailure`` before any port is
bound, and shutdown failures logged but never raised. Also Starlette's ``lifespan=``
context manager yielding state.

Most tests run the real server over in-memory streams (``open_test_client``);
timeouts run in virtual time (``autojump_clock``). The "nothing is bound" checks
use :func:`trioserve.serve` on a real loopback port. The ``lifespan="off"`` tests
run in virtual time too, so that a server waiting out ``shutdown_timeout`` for a
lifespan that never ran is reported by the dedicated test
(``test_off_shuts_down_promptly_without_lifespan_errors``) without stalling them.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing
from _helpers import ERROR_LOGGER, Receive, Scope, Send, error_records, free_port, respond, text_app
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import trioserve
from trioserve import Config, LifespanFailure
from trioserve.testing import open_test_client


async def assert_nothing_listens_on(port: int) -> None:
    with trio.socket.socket() as sock, pytest.raises(ConnectionRefusedError):
        await sock.connect(("127.0.0.1", port))


class RecordingApp:
    """A lifespan-aware app that records what happens, in order."""

    def __init__(self, *, startup_delay: float = 0.0) -> None:
        self.log: list[str] = []
        self.startup_delay = startup_delay
        self.scope_types: list[str] = []

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        self.scope_types.append(scope["type"])
        if scope["type"] == "lifespan":
            message = await receive()
            assert message["type"] == "lifespan.startup"
            self.log.append("startup-begin")
            await trio.sleep(self.startup_delay)
            scope["state"]["ready"] = True
            self.log.append("startup-done")
            await send({"type": "lifespan.startup.complete"})
            message = await receive()
            assert message["type"] == "lifespan.shutdown"
            self.log.append("shutdown")
            await send({"type": "lifespan.shutdown.complete"})
            return
        self.log.append(f"request {scope['path']}")
        await respond(send, b"ready" if scope["state"].get("ready") else b"not ready")


# -- auto, with an app that speaks lifespan -------------------------------------------


async def test_startup_finishes_before_the_first_request_is_served(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Startup takes 10 virtual seconds. A naive server that reports itself started
    (or accepts) before ``lifespan.startup.complete`` would serve the request
    during startup, without the app's resources."""
    app = RecordingApp(startup_delay=10)
    async with open_test_client(app) as client:
        assert trio.current_time() >= 10
        response = await client.get("/first")
    assert response.status == 200
    assert response.body == b"ready"
    assert app.log == ["startup-begin", "startup-done", "request /first", "shutdown"]


async def test_shutdown_runs_after_the_last_in_flight_request_finished() -> None:
    """Leaving ``open_test_client`` while a request is in flight: the request is
    released only once everything else is blocked (the server is draining), and
    lifespan shutdown must come after its response. A naive server sends
    ``lifespan.shutdown`` as soon as shutdown is triggered, while the request still
    needs the app's resources."""
    log: list[str] = []
    request_started = trio.Event()
    release = trio.Event()

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await receive()
            log.append("startup")
            await send({"type": "lifespan.startup.complete"})
            await receive()
            log.append("shutdown")
            await send({"type": "lifespan.shutdown.complete"})
            return
        log.append("request-start")
        request_started.set()
        await release.wait()
        await respond(send, b"done")
        log.append("response-sent")

    responses = []

    async def make_request(conn: Any) -> None:
        responses.append(await conn.request("GET", "/slow"))
        await conn.aclose()

    async def release_once_all_blocked() -> None:
        await trio.testing.wait_all_tasks_blocked()
        log.append("release")
        release.set()

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            async with open_test_client(app) as client:
                conn = await client.connect()
                nursery.start_soon(make_request, conn)
                await request_started.wait()
                nursery.start_soon(release_once_all_blocked)
            # open_test_client has returned: the server, lifespan included, is done.
            assert log == ["startup", "request-start", "release", "response-sent", "shutdown"]
    [response] = responses
    assert response.status == 200
    assert response.body == b"done"
    # The server was shutting down when the head went out: it says it will close.
    assert response.header("connection") == "close"


async def test_idle_connection_does_not_delay_lifespan_shutdown() -> None:
    """An idle keep-alive connection is closed at shutdown (then lifespan shutdown
    runs) rather than holding the server open until keep-alive expiry."""
    app = RecordingApp()
    with trio.fail_after(5):
        async with open_test_client(app, Config(keep_alive_timeout=60)) as client:
            conn = await client.connect()
            response = await conn.request("GET", "/idle")
            assert response.status == 200
        assert app.log[-1] == "shutdown"
        assert await conn.receive_until_closed() == b""


async def test_lifespan_state_is_a_shallow_copy_per_request() -> None:
    """Each request gets its own copy of the state set in startup: adding or
    replacing keys in one request is not seen by the next (a naive server hands
    every request the same dict), while the objects in it are shared (shallow)."""
    seen: list[dict[str, Any]] = []
    lifespan_state: dict[str, Any] = {}

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await receive()
            scope["state"]["db"] = "connection-1"
            scope["state"]["shared"] = []
            lifespan_state.update(scope["state"])
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await send({"type": "lifespan.shutdown.complete"})
            return
        state = scope["state"]
        seen.append(dict(state))
        state["db"] = "replaced by " + scope["path"]
        state["added"] = scope["path"]
        state["shared"].append(scope["path"])
        await respond(send)

    async with open_test_client(app) as client:
        assert (await client.get("/one")).status == 200
        assert (await client.get("/two")).status == 200

    assert seen[0]["db"] == "connection-1"
    assert seen[1]["db"] == "connection-1"
    assert "added" not in seen[0]
    assert "added" not in seen[1]
    # Shallow: the list object itself is the startup's one.
    assert seen[1]["shared"] == ["/one", "/two"]
    assert seen[1]["shared"] is lifespan_state["shared"]


async def test_lifespan_state_copied_into_each_request_and_not_shared_back() -> None:
    seen: list[dict[str, Any]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            assert (await receive())["type"] == "lifespan.startup"
            scope["state"]["db"] = "pool"
            await send({"type": "lifespan.startup.complete"})
            assert (await receive())["type"] == "lifespan.shutdown"
            await send({"type": "lifespan.shutdown.complete"})
            return
        seen.append(dict(scope["state"]))
        scope["state"]["leak"] = scope["path"]
        await text_app()(scope, receive, send)

    async with open_test_client(app, Config(lifespan="on")) as client:
        await client.get("/one")
        await client.get("/two")
    assert seen == [{"db": "pool"}, {"db": "pool"}]


async def test_state_key_is_present_and_empty_without_lifespan(
    autojump_clock: trio.testing.MockClock,
) -> None:
    scopes: list[Scope] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        scopes.append(scope)
        await respond(send)

    async with open_test_client(app, Config(lifespan="off")) as client:
        assert (await client.get("/")).status == 200
    assert scopes[0]["state"] == {}


# -- auto, with an app that does not speak lifespan ---------------------------------


async def test_auto_serves_app_that_raises_on_lifespan_and_logs_unsupported_at_info(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Plain ASGI apps often raise on unknown scope types. Under ``auto`` that means
    "unsupported": an INFO line, no ERROR (a naive server logs the traceback as an
    error or refuses to start)."""
    caplog.set_level(logging.DEBUG, logger=ERROR_LOGGER)
    scope_types: list[str] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        scope_types.append(scope["type"])
        if scope["type"] != "http":
            raise ValueError(f"unsupported scope type {scope['type']}")
        await respond(send, b"served")

    async with open_test_client(app) as client:
        response = await client.get("/")
    assert response.status == 200
    assert response.body == b"served"
    assert scope_types == ["lifespan", "http"]
    info = [
        r
        for r in caplog.records
        if r.levelno == logging.INFO and "unsupported" in r.getMessage().lower()
    ]
    assert len(info) == 1
    assert error_records(caplog) == []


async def test_auto_serves_app_that_returns_on_lifespan(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger=ERROR_LOGGER)

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await respond(send)

    async with open_test_client(app) as client:
        assert (await client.get("/")).status == 200
    assert any("unsupported" in r.getMessage().lower() for r in caplog.records)
    assert error_records(caplog) == []


async def test_auto_with_unsupported_lifespan_sends_no_shutdown() -> None:
    """Once the app said it does not do lifespan, it is not called again for it."""
    scope_types: list[str] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        scope_types.append(scope["type"])
        if scope["type"] == "lifespan":
            return
        await respond(send)

    async with open_test_client(app) as client:
        await client.get("/")
    assert scope_types == ["lifespan", "http"]


# -- on: lifespan required -------------------------------------------------------------


async def raising_lifespan_app(scope: Scope, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        raise RuntimeError("no lifespan here")
    await respond(send)


async def test_on_with_unsupported_app_fails_entering_open_test_client() -> None:
    """The exception comes out as itself, not wrapped in an ExceptionGroup, so
    ``except LifespanFailure`` works for callers."""
    with pytest.raises(LifespanFailure, match="no lifespan here"):
        async with open_test_client(raising_lifespan_app, Config(lifespan="on")):
            raise AssertionError("the block must not run")


async def test_on_with_unsupported_app_fails_serve_before_binding(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """During startup nothing may listen on the configured port yet (the app
    checks it itself), and after the failure nothing does either. A naive server
    binds first and runs lifespan afterwards."""
    caplog.set_level(logging.DEBUG, logger=ERROR_LOGGER)
    port = free_port()
    checked_during_startup = trio.Event()

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await assert_nothing_listens_on(port)
            checked_during_startup.set()
            raise RuntimeError("no lifespan here")
        raise AssertionError("no request can arrive")

    config = Config(bind=[f"127.0.0.1:{port}"], lifespan="on")
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            with pytest.raises(LifespanFailure, match="no lifespan here"):
                await nursery.start(partial(trioserve.serve, app, config))
    assert checked_during_startup.is_set()
    await assert_nothing_listens_on(port)
    assert not any("Serving on" in r.getMessage() for r in caplog.records)


async def test_on_with_app_that_returns_without_answering_fails_before_serving(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger=ERROR_LOGGER)

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await respond(send)

    config = Config(bind=["127.0.0.1:0"], lifespan="on")
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            with pytest.raises(LifespanFailure, match="lifespan"):
                await nursery.start(partial(trioserve.serve, app, config))
    # No listener was ever reported.
    assert not any("Serving on" in r.getMessage() for r in caplog.records)


async def test_on_with_lifespan_app_serves_normally() -> None:
    app = RecordingApp()
    async with open_test_client(app, Config(lifespan="on")) as client:
        response = await client.get("/")
    assert response.body == b"ready"
    assert app.log == ["startup-begin", "startup-done", "request /", "shutdown"]


# -- startup failures ------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["auto", "on"])
async def test_startup_failed_message_raises_lifespan_failure_with_it(mode: str) -> None:
    """``lifespan.startup.failed`` is an answer, so even ``auto`` must not shrug it
    off as "unsupported" and serve an app that said it cannot run."""

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await receive()
            await send({"type": "lifespan.startup.failed", "message": "database is down"})
            await trio.sleep_forever()
        raise AssertionError("no request can arrive")

    config = Config(bind=["127.0.0.1:0"], lifespan=mode)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            with pytest.raises(LifespanFailure, match="database is down"):
                await nursery.start(partial(trioserve.serve, app, config))


async def test_startup_failed_message_fails_entering_open_test_client() -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await receive()
            await send({"type": "lifespan.startup.failed", "message": "cache is down"})
            await trio.sleep_forever()

    with pytest.raises(LifespanFailure, match="cache is down"):
        async with open_test_client(app):
            raise AssertionError("the block must not run")


async def test_startup_timeout_raises_lifespan_failure_and_cancels_the_app(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The app never answers ``lifespan.startup``: after ``startup_timeout`` the
    server gives up with ``LifespanFailure`` (a naive server waits forever) and the
    lifespan task is cancelled, not leaked (its ``finally`` runs)."""
    app_finally = trio.Event()

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await receive()
            try:
                await trio.sleep_forever()
            finally:
                app_finally.set()

    start = trio.current_time()
    with trio.fail_after(30), pytest.raises(LifespanFailure, match="1s"):
        async with open_test_client(app, Config(startup_timeout=1)):
            raise AssertionError("the block must not run")
    assert 1 <= trio.current_time() - start < 5
    assert app_finally.is_set()


# -- off -------------------------------------------------------------------------------


async def test_off_never_calls_the_app_with_a_lifespan_scope(
    autojump_clock: trio.testing.MockClock,
) -> None:
    app = RecordingApp()
    async with open_test_client(app, Config(lifespan="off")) as client:
        response = await client.get("/")
    assert response.status == 200
    # Startup never ran, so the state it would have set is absent.
    assert response.body == b"not ready"
    assert app.scope_types == ["http"]
    assert app.log == ["request /"]


async def test_off_shuts_down_promptly_without_lifespan_errors(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """With lifespan off there is no lifespan shutdown to wait for: leaving the
    server must not wait for an answer to a ``lifespan.shutdown`` that was never
    sent (a server that does waits ``shutdown_timeout`` and then logs an ERROR
    about a lifespan the user switched off)."""
    caplog.set_level(logging.DEBUG, logger=ERROR_LOGGER)

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        await respond(send)

    async with open_test_client(app, Config(lifespan="off")) as client:
        assert (await client.get("/")).status == 200
        leaving = trio.current_time()
    # In virtual time a prompt shutdown takes (almost) no time at all.
    assert trio.current_time() - leaving < 1
    assert error_records(caplog) == []


async def test_server_with_lifespan_off_shuts_down_at_once(autojump_clock: Any) -> None:
    """lifespan="off" never starts the lifespan task, so there is nothing to wait
    for on shutdown (a server that waits for a lifespan.shutdown answer that
    cannot come stalls for shutdown_timeout)."""
    async with open_test_client(text_app(), Config(lifespan="off")) as client:
        assert (await client.get("/")).status == 200
        leaving = trio.current_time()
    assert trio.current_time() - leaving < 1


# -- shutdown failures: logged, never raised --------------------------------------------


async def test_shutdown_failed_message_is_logged_at_error_and_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger=ERROR_LOGGER)

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await receive()
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await send({"type": "lifespan.shutdown.failed", "message": "flush failed"})
            return
        await respond(send)

    with trio.fail_after(5):
        async with open_test_client(app) as client:
            assert (await client.get("/")).status == 200
    errors = error_records(caplog)
    assert len(errors) == 1
    assert "flush failed" in errors[0].getMessage()


async def test_exception_in_shutdown_is_logged_at_error_and_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger=ERROR_LOGGER)

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await receive()
            await send({"type": "lifespan.startup.complete"})
            await receive()
            raise OSError("disk gone")
        await respond(send)

    with trio.fail_after(5):
        async with open_test_client(app) as client:
            assert (await client.get("/")).status == 200
    errors = error_records(caplog)
    assert errors
    # The traceback is in the log, and nothing was raised.
    assert any(r.exc_info is not None and isinstance(r.exc_info[1], OSError) for r in errors)
    assert any("disk gone" in r.getMessage() or r.exc_info for r in errors)


async def test_shutdown_timeout_is_logged_at_error_and_the_app_cancelled(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """The app never answers ``lifespan.shutdown``: after ``shutdown_timeout`` the
    server logs an ERROR, cancels the lifespan task (its ``finally`` runs) and
    returns normally. A naive server hangs forever or raises."""
    caplog.set_level(logging.DEBUG, logger=ERROR_LOGGER)
    app_finally = trio.Event()

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await receive()
            await send({"type": "lifespan.startup.complete"})
            await receive()
            try:
                await trio.sleep_forever()
            finally:
                app_finally.set()
        await respond(send)

    with trio.fail_after(100):
        async with open_test_client(app, Config(shutdown_timeout=2)) as client:
            assert (await client.get("/")).status == 200
            leaving = trio.current_time()
    waited = trio.current_time() - leaving
    assert 2 <= waited < 10
    assert app_finally.is_set()
    errors = error_records(caplog)
    assert len(errors) == 1
    assert "2s" in errors[0].getMessage()


# -- Starlette -------------------------------------------------------------------------


async def test_starlette_lifespan_context_state_reaches_request_state() -> None:
    """Starlette's ``lifespan=`` context manager yields a state mapping; Starlette
    relies on the server to put it into ``scope["state"]`` of every request."""
    events: list[str] = []

    class Database:
        name = "primary"

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        events.append("open")
        yield {"db": Database()}
        events.append("close")

    async def homepage(request: Request) -> JSONResponse:
        return JSONResponse({"db": request.state.db.name})

    app = Starlette(routes=[Route("/", homepage)], lifespan=lifespan)

    with trio.fail_after(5):
        async with open_test_client(app) as client:
            assert events == ["open"]
            response = await client.get("/")
            assert events == ["open"]
    assert response.status == 200
    assert response.body == b'{"db":"primary"}'
    assert events == ["open", "close"]
