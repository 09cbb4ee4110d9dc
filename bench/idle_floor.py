"""The memory floor of an idle connection in the shape trioserve is built on.

Two minimal trio servers, measured like ``run.py``'s ``idle_rss`` scenario (RSS
growth of the server process over 1,000 idle keep-alive connections, each after
one request):

- ``one-task``: one task per connection, reading and answering (the canned-trio
  ceiling's shape);
- ``brief-shape``: a nursery per connection, a reader task waiting on the socket
  inside a cancel scope with a deadline (the keep-alive scope), and the connection
  task parked on a lot (the idle request cycle), and nothing else.

The second is what any server built to the brief's shape holds per idle connection
before it keeps a single byte of HTTP state; ``docs/performance.md`` compares it
with trioserve and uvicorn.

    python bench/idle_floor.py
"""

from __future__ import annotations

import functools
import os
import socket
import subprocess
import sys
import time

import trio

RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
CONNECTIONS = 1000


async def one_task(stream: trio.SocketStream) -> None:
    while await stream.receive_some(65536):
        await stream.send_all(RESPONSE)


async def brief_shape(stream: trio.SocketStream) -> None:
    lot = trio.lowlevel.ParkingLot()
    fd = stream.socket.fileno()

    async def reader() -> None:
        with trio.CancelScope(deadline=trio.current_time() + 600):
            while True:
                await trio.lowlevel.wait_readable(fd)
                if not os.read(fd, 65536):
                    return
                os.write(fd, RESPONSE)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader, name="reader")
        await lot.park()


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1])


def request(sock: socket.socket) -> None:
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    received = b""
    while not received.endswith(b"ok"):
        received += sock.recv(4096)


def measure(mode: str) -> float:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, __file__, "--serve", mode, str(port)])
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port)).close()
                break
            except OSError:
                time.sleep(0.05)
        for _ in range(20):
            with socket.create_connection(("127.0.0.1", port)) as sock:
                request(sock)
        time.sleep(1)
        before = rss_kib(server.pid)
        idle = []
        for _ in range(CONNECTIONS):
            sock = socket.create_connection(("127.0.0.1", port))
            request(sock)
            idle.append(sock)
        time.sleep(1)
        after = rss_kib(server.pid)
        for sock in idle:
            sock.close()
        return (after - before) / CONNECTIONS
    finally:
        server.terminate()
        server.wait()


def main() -> None:
    if sys.argv[1:2] == ["--serve"]:
        handler = one_task if sys.argv[2] == "one-task" else brief_shape
        serve = functools.partial(trio.serve_tcp, handler, int(sys.argv[3]), host="127.0.0.1")
        trio.run(serve)
        return
    for mode in ("one-task", "brief-shape"):
        print(f"{mode:12s} {measure(mode):5.1f} KiB per idle connection")


if __name__ == "__main__":
    main()
