"""Regression guard for the per-request cost, counted rather than timed.

A trio Instrument counts the scheduling steps of the server's connection tasks
(the request cycle and the reader) while one client makes keep-alive requests,
over in-memory streams and over a real loopback socket. The counts are
deterministic, and every extra checkpoint, task hand-off, spawned task or write
per request shows in them, so a change that makes a request cost more scheduling
work fails here, in the default run, without a single timing. The benchmark
(``nox -s bench``) measures the time itself.

If a change lowers the count, lower the expected number with it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import trio
import trio.lowlevel
import trio.testing
from _h11count import counting_h11

from trioserve import Config
from trioserve._listeners import CONNECTION_TASK_NAME
from trioserve._logging import configure_logging
from trioserve.connection._http11 import READER_TASK_NAME
from trioserve.connection._websocket import KEEPER_TASK_NAME
from trioserve.testing import TestConnection, open_test_client, open_test_server

REQUESTS = 50


class StepCounter(trio.abc.Instrument):
    """Counts task steps of the server's per-connection tasks."""

    def __init__(self) -> None:
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        # The connection task (running HTTP11Connection.run via serve_stream)
        # and its reader task.
        if task.name in (CONNECTION_TASK_NAME, READER_TASK_NAME):
            self.steps += 1


async def hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"12")],
        }
    )
    await send({"type": "http.response.body", "body": b"Hello world!"})


async def count_steps(conn: TestConnection, method: str, body: bytes) -> float:
    counter = StepCounter()
    await conn.request(method, "/", body=body)  # warm-up: connection set up
    trio.lowlevel.add_instrument(counter)
    try:
        for _ in range(REQUESTS):
            response = await conn.request(method, "/", body=body)
            assert response.status == 200
            assert response.body == b"Hello world!"
    finally:
        trio.lowlevel.remove_instrument(counter)
    await conn.aclose()
    return counter.steps / REQUESTS


async def steps_per_request(method: str, body: bytes) -> float:
    async with open_test_client(hello, Config(lifespan="off")) as client:
        return await count_steps(await client.connect(), method, body)


async def socket_steps_per_request(method: str, body: bytes, **changes: Any) -> float:
    async with open_test_server(hello, Config(lifespan="off", **changes)) as server:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        return await count_steps(TestConnection(stream), method, body)


# Per request, measured by tracing each step's innermost frame:
# - the reader wakes from its lot with the bytes (1) and goes through the two
#   checkpoints of the in-memory stream's receive_some (2) before it parks again;
# - the request cycle wakes with the request (1), runs the app inline (no task),
#   and writes head and body in ONE send_all, whose in-memory implementation has
#   two checkpoints (2), then parks for the next request.
# A second write per response, a task per request or an extra checkpoint in the
# request path each add at least one step.
STEPS_PER_REQUEST = 6


async def test_keep_alive_get_costs_a_fixed_number_of_server_task_steps() -> None:
    assert await steps_per_request("GET", b"") == STEPS_PER_REQUEST


async def test_keep_alive_post_costs_the_same_steps_as_a_get() -> None:
    # The body comes in the same write as the head: receive() finds it buffered
    # and returns it whole with more_body=False, without a wait or a checkpoint.
    assert await steps_per_request("POST", b"x" * 1000) == STEPS_PER_REQUEST


# On a plain socket the server reads and writes the file descriptor itself, with no
# checkpoint around the calls (trio's SocketStream adds one to each):
# - the reader wakes when the socket is readable (1), reads the request with one
#   read() and parks again;
# - the request cycle wakes with the request (1), runs the app inline and writes
#   head and body with one write() that the kernel takes at once, then parks.
# Each request fits one segment on loopback, so the count is exact.
SOCKET_STEPS_PER_REQUEST = 2


async def test_keep_alive_get_on_a_socket_costs_two_server_task_steps() -> None:
    assert await socket_steps_per_request("GET", b"") == SOCKET_STEPS_PER_REQUEST


async def test_keep_alive_post_on_a_socket_costs_the_same_steps_as_a_get() -> None:
    assert await socket_steps_per_request("POST", b"x" * 1000) == SOCKET_STEPS_PER_REQUEST


async def test_the_access_log_costs_no_server_task_step(tmp_path: Path) -> None:
    """The access line is written inline, with no checkpoint, task or wait."""
    with own_access_log(tmp_path / "access.log"):
        steps = await socket_steps_per_request("GET", b"", accesslog="-")
    assert steps == SOCKET_STEPS_PER_REQUEST


@contextlib.contextmanager
def own_access_log(path: Path) -> Iterator[None]:
    """The access log set up as the command line sets it up, to a file; the
    logger's previous state is put back afterwards."""
    logger = logging.getLogger("trioserve.access")
    error = logging.getLogger("trioserve.error")
    saved = [(log, list(log.handlers), log.level, log.propagate) for log in (logger, error)]
    configure_logging(loglevel="WARNING", accesslog=str(path))
    try:
        yield
    finally:
        for log, handlers, level, propagate in saved:
            for handler in log.handlers:
                if handler not in handlers:
                    handler.close()
            log.handlers[:] = handlers
            log.setLevel(level)
            log.propagate = propagate


async def test_the_command_lines_access_log_makes_no_log_record(tmp_path: Path) -> None:
    """With the handler the command line sets up as its only handler, an access
    line is written without a LogRecord (the record, its filters and formatter
    are most of what logging a request costs)."""
    made = 0
    factory = logging.getLogRecordFactory()

    def counting(*args: Any, **kwargs: Any) -> logging.LogRecord:
        nonlocal made
        made += 1
        return factory(*args, **kwargs)

    with own_access_log(tmp_path / "access.log"):
        async with open_test_server(hello, Config(lifespan="off", accesslog="-")) as server:
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            conn = TestConnection(stream)
            logging.setLogRecordFactory(counting)
            try:
                for _ in range(REQUESTS):
                    assert (await conn.request("GET", "/")).status == 200
            finally:
                logging.setLogRecordFactory(factory)
            await conn.aclose()
    assert made == 0
    assert len((tmp_path / "access.log").read_text().splitlines()) == REQUESTS


# Plain requests are parsed by the protocol's fast path; h11 is for the rest. Going
# back through h11 for every request would about double the CPU of a small request
# (docs/performance.md), so the number of h11 connections is guarded too.


async def test_plain_keep_alive_requests_make_no_h11_connection() -> None:
    with counting_h11() as made:
        await socket_steps_per_request("GET", b"")
        await socket_steps_per_request("POST", b"x" * 1000)
    assert made[0] == 0


async def test_a_request_the_fast_path_declines_is_parsed_by_h11() -> None:
    # An absolute-form target: valid, served, but not the fast path's plain shape.
    async with open_test_server(hello, Config(lifespan="off")) as server:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        connection = TestConnection(stream)
        with counting_h11() as made:
            for _ in range(3):
                response = await connection.request("GET", "http://testserver/")
                assert response.status == 200
        await connection.aclose()
    assert made[0] == 3


# A websocket echo: a batch of 16 messages arrives in one read; the app receives
# and echoes each. On a plain socket:
# - the reader wakes with the batch (1);
# - the connection task, where the app waits in receive(), wakes (1), takes all 16
#   messages from the buffer without waiting, queues the 16 echoes, writes them in
#   one write when the batch is done, and parks again;
# - the keeper wakes when the first echo is queued, finds the queue written, and
#   parks again (1).
# A task switch per message (a keeper that processes, a write per echo that
# yields) adds at least 16 steps.
WEBSOCKET_STEPS_PER_BATCH = 3
BATCHES = 20


async def websocket_echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "websocket":
        return
    await receive()
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        await send({"type": "websocket.send", "text": message["text"]})


class WebSocketStepCounter(StepCounter):
    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task.name in (CONNECTION_TASK_NAME, READER_TASK_NAME, KEEPER_TASK_NAME):
            self.steps += 1


def masked_text(text: bytes) -> bytes:
    key = b"\x01\x02\x03\x04"
    return bytes((0x81, 0x80 | len(text))) + key + bytes(b ^ key[i % 4] for i, b in enumerate(text))


async def test_a_batch_of_websocket_echoes_costs_a_fixed_number_of_server_task_steps() -> None:
    config = Config(lifespan="off", websocket_ping_interval=None)
    async with open_test_server(websocket_echo, config) as server:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        connection = TestConnection(stream)
        ws = await connection.websocket("/")
        batch = b"".join(masked_text(b"message %02d" % n) for n in range(16))
        expected = b"".join(b"\x81\x0a" + b"message %02d" % n for n in range(16))

        async def echo_batch() -> None:
            await ws.send_raw(batch)
            received = b""
            while len(received) < len(expected):
                received += await stream.receive_some()
            assert received == expected
            # The keeper's step may come after the echoes are out: count it
            # with the batch it belongs to.
            await trio.testing.wait_all_tasks_blocked()

        await echo_batch()  # warm-up
        counter = WebSocketStepCounter()
        trio.lowlevel.add_instrument(counter)
        try:
            for _ in range(BATCHES):
                await echo_batch()
        finally:
            trio.lowlevel.remove_instrument(counter)
        await connection.aclose()
    assert counter.steps / BATCHES == WEBSOCKET_STEPS_PER_BATCH
