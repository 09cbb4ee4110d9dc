"""The ceiling: a plain trio server that answers a canned response without parsing.

Accept loop, read, write a fixed response, keep the connection open. It does not
parse HTTP; it only counts request terminators (``\\r\\n\\r\\n``) in what it reads,
so that pipelined GETs get one response each. That is correct for body-less
requests only, which is all it is used for (hello, pipelined, idle connections,
startup). The response matches the hello app's: 12-byte body, Content-Length.

    python bench/canned_trio.py --bind 127.0.0.1:8000

trio's SocketStream sets TCP_NODELAY on every connection.
"""

from __future__ import annotations

import argparse
import functools
import signal

import trio

RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 12\r\n\r\nHello world!"
TERMINATOR = b"\r\n\r\n"


async def handle(stream: trio.SocketStream) -> None:
    carry = b""  # the tail of the last read, in case a terminator straddles two reads
    try:
        while True:
            data = await stream.receive_some(65536)
            if not data:
                return
            if carry:
                data = carry + data
            count = data.count(TERMINATOR)
            end = data.rfind(TERMINATOR)
            carry = data[end + 4 :] if end >= 0 else data
            carry = carry[-3:]
            if count:
                await stream.send_all(RESPONSE if count == 1 else RESPONSE * count)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        await trio.aclose_forcefully(stream)


async def serve(host: str, port: int) -> None:
    """Serve until SIGINT or SIGTERM, then stop at once and exit 0, as the servers
    it is compared with do when they have no requests in flight."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                functools.partial(trio.serve_tcp, handle, port, host=host, backlog=2048)
            )
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bind", default="127.0.0.1:8000", help="HOST:PORT")
    args = parser.parse_args()
    host, _, port = args.bind.rpartition(":")
    trio.run(serve, host, int(port))


if __name__ == "__main__":
    main()
