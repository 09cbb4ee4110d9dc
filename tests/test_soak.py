"""Fault-injection soak: a real trioserve server on a loopback socket, for a bounded
time, under a mix of well-behaved and faulty clients running concurrently in one
nursery.

Well-behaved clients (one ``httpx.AsyncClient`` each, so every one keeps a single
keep-alive connection busy) make GETs, POSTs with bodies of up to 256 KiB (echoed
back) and streamed chunked GETs, and check the status and the exact body of every
response.

Faulty clients, each on raw sockets, over and over until the time is up:

- abort mid-head: half a request head, then close;
- abort mid-body: a head announcing 100,000 bytes, 30,000 of them, then close (or
  a chunked body cut inside a chunk, or an ``Expect: 100-continue`` request that
  sends 1,000 bytes after the ``100 Continue``);
- abort mid-response: ask for a 32 MiB streamed response (GET, which the server
  cancels on hang-up, and POST, which it does not), read 64 KiB, close;
- RST: ``SO_LINGER (1, 0)`` then close: right after connecting, after a whole
  request, and in the middle of a streamed response;
- half close: a whole request (or 10 pipelined ones), then ``shutdown(SHUT_WR)``;
  what comes back must be whole, correct responses to a prefix of the requests,
  possibly none (a half-close is a hang-up for trioserve, so the app may be
  cancelled before it answers), never part of a response;
- pipelined floods: 200 pipelined GETs (small responses, or 64 KiB ones that fill
  the socket buffers and block the server's writes), never read, closed a moment
  later;
- garbage bytes, alone or after a good request on the same connection: the answer
  must be a 4xx (or 501/505) and a close (after the good request's 200);
- slowloris: a head dribbled a byte every 50 ms against ``header_timeout=0.5``:
  the answer must be a 408 and a close.

Afterwards the test asserts that every well-behaved request got a correct answer
(and there were some), that every fault ran and saw what it should, that the
server neither crashed nor logged at ERROR (no fault here is expected to cause an
ERROR record: each is the client's business and trioserve logs those at DEBUG),
that ``serve`` shut down within its bound without hitting the graceful deadline and
stopped listening, and that file descriptors (``/proc/self/fd``) and trio tasks
(the whole tree under the root task) are back to their baselines. The long version
also bounds the growth of RSS after warm-up (see
:func:`test_soak_mixed_clients_and_faults`).

A naive server fails this in many ways at once: a reset read or a failed write
escaping a connection task crashes ``serve``; a connection that never notices its
client left leaks a descriptor and a task; an app left running after a hang-up
keeps streaming into nowhere; a missing header deadline lets slowloris hold a
connection forever.

The short version runs in the default suite (2 s of traffic); the long one (60 s of
traffic) is marked ``slow`` and runs in ``nox -s tests_slow``. ``pytest -s`` shows
the figures (counts, baselines, RSS).
"""

from __future__ import annotations

import gc
import logging
import random
import re
import socket
import struct
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import h11
import httpx
import pytest
import trio
from _helpers import ERROR_LOGGER, Receive, Scope, Send, open_fds

from trioserve import Config
from trioserve.testing import open_test_server

HELLO = b"hello, world"
#: header_timeout of the server under test: short, so that slowloris ends quickly.
HEADER_TIMEOUT = 0.5
#: Bound on how far the descriptor count may stay above its baseline.
FD_SLACK = 2
#: Bound on RSS growth after warm-up in the long version (see the test docstring).
RSS_GROWTH_LIMIT_KIB = 20 * 1024


# -- the app ------------------------------------------------------------------------


_BLOCK = bytes(range(251))


def pattern(size: int, offset: int = 0) -> bytes:
    """Bytes ``offset`` to ``offset + size`` of the body of every ``/stream``
    response: byte ``i`` is ``i % 251``. Made a chunk at a time, so that a 32 MiB
    stream costs no 32 MiB buffer."""
    start = offset % 251
    return (_BLOCK[start:] + _BLOCK * (size // 251 + 1))[:size]


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """``GET /hello``: a fixed body with content-length. ``POST /echo``: the request
    body back (or nothing, if the client hangs up first). ``/stream?size=N``: N
    pattern bytes, chunked, in 16 KiB sends."""
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/echo":
        received = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client left mid-body: nobody to answer
            received += message["body"]
            if not message.get("more_body", False):
                break
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", b"%d" % len(received))],
            }
        )
        await send({"type": "http.response.body", "body": bytes(received)})
    elif path == "/stream":
        size = int(scope["query_string"].decode().partition("=")[2])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        # Let a ClientDisconnected from send() out: trioserve logs that at DEBUG.
        for offset in range(0, size, 16384):
            chunk = pattern(min(16384, size - offset), offset)
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    else:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", b"%d" % len(HELLO))],
            }
        )
        await send({"type": "http.response.body", "body": HELLO})


# -- measurements -------------------------------------------------------------------


def task_count(task: trio.lowlevel.Task) -> int:
    """``task`` and every task below it."""
    return 1 + sum(
        task_count(child) for nursery in task.child_nurseries for child in nursery.child_tasks
    )


def all_tasks() -> int:
    return task_count(trio.lowlevel.current_root_task())


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/self/status")


async def settle(count: Callable[[], int], target: int) -> int:
    """Poll ``count()`` (bounded: 5 s) until it is at most ``target``; return it."""
    for _ in range(100):
        if count() <= target:
            break
        await trio.sleep(0.05)
    return count()


# -- raw-socket helpers ---------------------------------------------------------------


async def connect(port: int) -> trio.SocketStream:
    return await trio.open_tcp_stream("127.0.0.1", port)


async def reset(stream: trio.SocketStream) -> None:
    """Close with SO_LINGER (1, 0): the kernel sends a RST, not a FIN."""
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await stream.aclose()


async def read_until_eof(stream: trio.SocketStream, limit: int = 1 << 20) -> bytes:
    data = bytearray()
    while chunk := await stream.receive_some():
        data += chunk
        assert len(data) <= limit, "the server sent far more than expected"
    return bytes(data)


async def read_at_least(stream: trio.SocketStream, size: int) -> None:
    received = 0
    while received < size:
        chunk = await stream.receive_some()
        assert chunk, "EOF before the response was under way"
        received += len(chunk)


def parse_responses(data: bytes, methods: list[str]) -> list[tuple[int, bytes]]:
    """The (status, body) of each whole response in ``data``, the answers (parsed by
    h11) to pipelined requests made with ``methods``, up to the end of ``data``.

    Raises:
      AssertionError: a response is incomplete or malformed, or bytes follow the
          last one.
    """
    try:
        return _parse_responses(data, methods)
    except h11.RemoteProtocolError as exc:
        raise AssertionError(f"bad response ({exc}) in {data[:300]!r}") from None


def _parse_responses(data: bytes, methods: list[str]) -> list[tuple[int, bytes]]:
    client = h11.Connection(h11.CLIENT)
    responses: list[tuple[int, bytes]] = []
    for index, method in enumerate(methods):
        client.send(h11.Request(method=method, target="/", headers=[("host", "soak")]))
        client.send(h11.EndOfMessage())
        if index == 0:
            client.receive_data(data)
            client.receive_data(b"")
        if client.trailing_data == (b"", True):
            return responses  # closed with no (more) response
        status = 0
        body = bytearray()
        while True:
            event = client.next_event()
            if isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                responses.append((status, bytes(body)))
                break
            else:
                raise AssertionError(f"incomplete response: {event!r} in {data[:300]!r}")
        if client.their_state is not h11.DONE:
            break  # the server said close: nothing may follow
        client.start_next_cycle()
    assert isinstance(client.next_event(), h11.ConnectionClosed), data[:300]
    return responses


def request(method: str, target: str, headers: str = "", body: bytes = b"") -> bytes:
    return f"{method} {target} HTTP/1.1\r\nHost: soak\r\n{headers}\r\n".encode() + body


# -- the clients ----------------------------------------------------------------------


@dataclass
class Tally:
    """What the clients did and saw."""

    good: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)


async def well_behaved(url: str, seed: int, deadline: float, tally: Tally) -> None:
    """Keep-alive requests on one connection until ``deadline``; check each answer."""
    rng = random.Random(seed)
    async with httpx.AsyncClient(
        base_url=url, trust_env=False, limits=httpx.Limits(max_connections=1)
    ) as client:
        while trio.current_time() < deadline:
            kind = rng.choice(["get", "post", "stream"])
            try:
                with trio.fail_after(10):
                    if kind == "get":
                        expected = HELLO
                        response = await client.get("/hello")
                    elif kind == "post":
                        expected = rng.randbytes(rng.choice([0, 10, 5000, 70000, 262144]))
                        response = await client.post("/echo", content=expected)
                    else:
                        expected = pattern(rng.choice([1, 16384, 300000]))
                        response = await client.get(f"/stream?size={len(expected)}")
            except (httpx.HTTPError, trio.TooSlowError) as exc:
                tally.failures.append(f"{kind}: {exc!r}")
                continue
            if response.status_code != 200 or response.content != expected:
                tally.failures.append(
                    f"{kind}: status {response.status_code}, {len(response.content)} bytes "
                    f"instead of {len(expected)}"
                )
            else:
                tally.good[kind] += 1


async def abort_mid_head(port: int, rng: random.Random, turn: int) -> str:
    stream = await connect(port)
    head = request("GET", "/hello", "X-Padding: " + "p" * rng.randrange(100) + "\r\n")
    await stream.send_all(head[: rng.randrange(1, len(head) - 2)])
    await stream.aclose()
    return "abort mid-head"


async def abort_mid_body(port: int, rng: random.Random, turn: int) -> str:
    framing = ["content-length", "chunked", "100-continue"][turn % 3]
    stream = await connect(port)
    if framing == "content-length":
        head = request("POST", "/echo", "Content-Length: 100000\r\n")
        await stream.send_all(head + rng.randbytes(30000))
    elif framing == "chunked":
        head = request("POST", "/echo", "Transfer-Encoding: chunked\r\n")
        # A whole chunk, then a chunk cut short.
        await stream.send_all(
            head + b"400\r\n" + rng.randbytes(1024) + b"\r\n8000\r\n" + b"x" * 999
        )
    else:
        head = request("POST", "/echo", "Content-Length: 100000\r\nExpect: 100-continue\r\n")
        await stream.send_all(head)
        interim = b""
        while not interim.endswith(b"\r\n\r\n"):
            chunk = await stream.receive_some()
            assert chunk, f"EOF instead of 100 Continue: {interim!r}"
            interim += chunk
        assert interim.startswith(b"HTTP/1.1 100 "), interim
        await stream.send_all(rng.randbytes(1000))
    await stream.aclose()
    return f"abort mid-body ({framing})"


async def abort_mid_response(port: int, rng: random.Random, turn: int) -> str:
    method = ["GET", "POST"][turn % 2]
    stream = await connect(port)
    length = "Content-Length: 0\r\n" if method == "POST" else ""
    await stream.send_all(request(method, "/stream?size=33554432", length))
    await read_at_least(stream, 65536)
    await stream.aclose()  # unread bytes in the buffer: the kernel sends a RST
    return f"abort mid-response ({method})"


async def rst(port: int, rng: random.Random, turn: int) -> str:
    when = ["after connect", "after request", "mid-response"][turn % 3]
    stream = await connect(port)
    if when == "after request":
        await stream.send_all(request("GET", "/hello"))
    elif when == "mid-response":
        await stream.send_all(request("GET", "/stream?size=33554432"))
        await read_at_least(stream, 16384)
    await reset(stream)
    return f"rst {when}"


async def half_close(port: int, rng: random.Random, turn: int) -> str:
    """A hang-up for trioserve: each request gets a whole and correct response or
    none (and then neither do later ones), never part of one."""
    variant = ["GET", "POST", "10 pipelined GETs"][turn % 3]
    payload = rng.randbytes(1000)
    stream = await connect(port)
    try:
        if variant == "GET":
            await stream.send_all(request("GET", "/hello"))
        elif variant == "POST":
            await stream.send_all(request("POST", "/echo", "Content-Length: 1000\r\n", payload))
        else:
            await stream.send_all(request("GET", "/hello") * 10)
        await stream.send_eof()
        data = await read_until_eof(stream)
    finally:
        await stream.aclose()
    if variant == "POST":
        assert parse_responses(data, ["POST"]) in ([], [(200, payload)]), data[:200]
    else:
        responses = parse_responses(data, ["GET"] * (10 if variant != "GET" else 1))
        assert responses == [(200, HELLO)] * len(responses), data[:200]
    return f"half close ({variant}, {'answered' if data else 'dropped'})"


async def pipelined_flood(port: int, rng: random.Random, turn: int) -> str:
    big = turn % 2 == 1
    target = "/stream?size=65536" if big else "/hello"
    stream = await connect(port)
    await stream.send_all(request("GET", target) * 200)
    # The fault's shape, not a wait for anything: the client lingers without reading
    # (the server keeps writing into the socket buffers meanwhile), then hangs up.
    await trio.sleep(0.05)
    await stream.aclose()
    return f"pipelined flood ({'64 KiB' if big else 'small'} responses)"


async def garbage(port: int, rng: random.Random, turn: int) -> str:
    """Garbage (after a good request, every other time): an error status and a close."""
    after_request = turn % 2 == 1
    stream = await connect(port)
    try:
        first = request("GET", "/hello") if after_request else b""
        await stream.send_all(first + rng.randbytes(rng.randrange(1, 4000)) + b"\r\n\r\n")
        data = await read_until_eof(stream)
    finally:
        await stream.aclose()
    responses = parse_responses(data, ["GET", "GET"] if after_request else ["GET"])
    if after_request:
        assert responses[0] == (200, HELLO), data[:300]
    assert len(responses) == (2 if after_request else 1), data[:300]
    status = responses[-1][0]
    assert 400 <= status < 500 or status in (501, 505), data[:300]
    return f"garbage{' after a request' if after_request else ''}"


async def slowloris(port: int, rng: random.Random, turn: int) -> str:
    stream = await connect(port)
    try:
        await stream.send_all(b"GET /hello HTTP/1.1\r\nHost: soak\r\n")

        async def dribble() -> None:
            try:
                while True:
                    await stream.send_all(b"x")
                    await trio.sleep(0.05)
            except trio.BrokenResourceError:
                pass  # the server dropped us: that is the point

        with trio.fail_after(HEADER_TIMEOUT + 3):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(dribble)
                data = await read_until_eof(stream)
                nursery.cancel_scope.cancel()
    finally:
        await stream.aclose()
    assert data.startswith(b"HTTP/1.1 408 "), data[:100]
    return "slowloris"


#: A fault: ``(port, rng, turn)`` -> what it did; ``turn`` cycles through its variants.
Fault = Callable[[int, random.Random, int], Awaitable[str]]
FAULTS: list[Fault] = [
    abort_mid_head,
    abort_mid_body,
    abort_mid_response,
    rst,
    half_close,
    pipelined_flood,
    garbage,
    slowloris,
    slowloris,
]


async def faulty(fault: Fault, port: int, seed: int, deadline: float, tally: Tally) -> None:
    rng = random.Random(seed)
    turn = 0
    while trio.current_time() < deadline:
        try:
            with trio.fail_after(5):
                tally.faults[await fault(port, rng, turn)] += 1
        except (AssertionError, trio.TooSlowError) as exc:
            tally.failures.append(f"{fault.__name__}: {exc!r}")
        turn += 1


async def sample_rss(samples: list[tuple[float, int]], start: float) -> None:
    while True:
        gc.collect()
        samples.append((trio.current_time() - start, rss_kib()))
        await trio.sleep(1)


# -- the test ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "duration",
    [
        pytest.param(2.0, id="short"),
        pytest.param(60.0, id="long", marks=pytest.mark.slow),
    ],
)
async def test_soak_mixed_clients_and_faults(
    duration: float, caplog: pytest.LogCaptureFixture
) -> None:
    """Well-behaved and faulty clients together for ``duration`` seconds of traffic;
    every good request answered exactly, no crash, no ERROR record, descriptors and
    tasks back to baseline.

    RSS (long version only): sampled once a second (after ``gc.collect()``) while
    the traffic runs; warm-up is the first third of the run. The growth from the end
    of warm-up to the last sample must stay below 20 MiB. Why 20 MiB: the process
    holds both the server and all the clients (httpx, h11, trio), and its RSS swings
    by a few MiB with allocator fragmentation and with how many streams are
    mid-flight at a sample, so the bound must sit well above that swing. The 40 s
    after warm-up make tens of thousands of faulty connections, so a leak of one
    kilobyte per faulty connection still fails it; smaller leaks of sockets or
    tasks are caught exactly by the descriptor and task counts.
    """
    # INFO, not DEBUG: every fault is logged at DEBUG by design, and tens of
    # thousands of captured records would both hide nothing we assert on and grow
    # the RSS we measure.
    caplog.set_level(logging.INFO, logger=ERROR_LOGGER)
    config = Config(
        lifespan="off", header_timeout=HEADER_TIMEOUT, keep_alive_timeout=5, graceful_timeout=5
    )
    tally = Tally()
    samples: list[tuple[float, int]] = []
    fds_before = open_fds()
    tasks_before = all_tasks()

    with trio.fail_after(duration + 30):
        async with open_test_server(app, config) as server:
            start = trio.current_time()
            deadline = start + duration
            async with trio.open_nursery() as sampler:
                sampler.start_soon(sample_rss, samples, start)
                async with trio.open_nursery() as clients:
                    for seed in range(4):
                        clients.start_soon(well_behaved, server.url, seed, deadline, tally)
                    for seed, fault in enumerate(FAULTS, start=100):
                        clients.start_soon(faulty, fault, server.port, seed, deadline, tally)
                sampler.cancel_scope.cancel()
            # Still serving after all of that.
            async with httpx.AsyncClient(trust_env=False) as client:
                with trio.fail_after(5):
                    final = await client.get(server.url + "/hello")
            assert (final.status_code, final.content) == (200, HELLO)
            port = server.port
        shut_down_after = trio.current_time() - deadline

    fds_after = await settle(open_fds, fds_before + FD_SLACK)
    tasks_after = await settle(all_tasks, tasks_before)
    warm = [rss for t, rss in samples if t >= duration / 3]
    print(
        f"\nsoak {duration:g}s: good requests {sum(tally.good.values())} {dict(tally.good)}; "
        f"faults {sum(tally.faults.values())} {dict(sorted(tally.faults.items()))}; "
        f"failures {len(tally.failures)}; shut down {shut_down_after:.2f}s after the traffic"
    )
    print(f"fds {fds_before} -> {fds_after}; tasks {tasks_before} -> {tasks_after}")
    if warm:
        print(
            f"RSS after warm-up {warm[0]} KiB, at the end {warm[-1]} KiB "
            f"(growth {warm[-1] - warm[0]} KiB, peak {max(warm)} KiB, {len(samples)} samples)"
        )

    assert tally.failures == []
    assert sum(tally.good.values()) > 0
    assert set(tally.good) == {"get", "post", "stream"}
    # Every variant of every fault ran (whether a half-close was answered varies).
    variants = {re.sub(r", (answered|dropped)\)", ")", name) for name in tally.faults}
    assert variants == {
        "abort mid-head",
        "abort mid-body (content-length)",
        "abort mid-body (chunked)",
        "abort mid-body (100-continue)",
        "abort mid-response (GET)",
        "abort mid-response (POST)",
        "rst after connect",
        "rst after request",
        "rst mid-response",
        "half close (GET)",
        "half close (POST)",
        "half close (10 pipelined GETs)",
        "pipelined flood (small responses)",
        "pipelined flood (64 KiB responses)",
        "garbage",
        "garbage after a request",
        "slowloris",
    }, sorted(variants)
    problems = [
        f"{r.levelname} {r.getMessage()}"
        for r in caplog.records
        if r.name.startswith("trioserve") and r.levelno >= logging.WARNING
    ]
    assert problems == []  # no ERROR, and no "Graceful shutdown timed out" either
    with pytest.raises(OSError, match="connect"):  # the listener is closed
        await trio.open_tcp_stream("127.0.0.1", port)
    assert fds_after <= fds_before + FD_SLACK
    assert tasks_after == tasks_before
    if duration >= 10:
        assert len(warm) >= 10
        assert warm[-1] - warm[0] < RSS_GROWTH_LIMIT_KIB
