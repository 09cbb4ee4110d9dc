"""The keep-alive deadline as an object: it ends the guarded task only when the
connection was idle for the whole timeout, in virtual time.

``tests/test_timeouts.py`` and ``tests/test_regressions.py`` check the same rule
end to end over HTTP; these tests pin down the object's own contract (arm, disarm,
expiry, moving the deadline, restarting the guarded task).
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from trioserve.connection._keep_alive import KeepAlive

TIMEOUT = 5.0


class Reader:
    """Stands in for the reader task: counts its starts, waits until told to end."""

    def __init__(self) -> None:
        self.starts = 0
        self.done = trio.Event()

    async def run(self) -> None:
        self.starts += 1
        await self.done.wait()


async def start_guard(nursery: trio.Nursery, reader: Reader) -> tuple[KeepAlive, list[float]]:
    expiries: list[float] = []
    keep_alive = KeepAlive(TIMEOUT, lambda: expiries.append(trio.current_time()))
    nursery.start_soon(keep_alive.guard, reader.run)
    await trio.testing.wait_all_tasks_blocked()
    return keep_alive, expiries


async def test_an_idle_connection_expires_after_the_timeout(autojump_clock: Any) -> None:
    reader = Reader()
    async with trio.open_nursery() as nursery:
        keep_alive, expiries = await start_guard(nursery, reader)
        start = trio.current_time()
        keep_alive.arm()
        await trio.sleep(TIMEOUT - 0.1)
        assert not keep_alive.expired
        await trio.sleep(0.2)
        assert keep_alive.expired
        assert expiries == [pytest.approx(start + TIMEOUT)]
    assert reader.starts == 1  # ended, not restarted


async def test_a_disarmed_deadline_never_expires(autojump_clock: Any) -> None:
    reader = Reader()
    async with trio.open_nursery() as nursery:
        keep_alive, expiries = await start_guard(nursery, reader)
        keep_alive.arm()
        await trio.sleep(TIMEOUT / 2)
        keep_alive.disarm()  # a request arrived
        await trio.sleep(TIMEOUT * 10)
        assert not keep_alive.expired
        assert expiries == []
        reader.done.set()
    # When the stale deadline passed, the reader was restarted once with no
    # deadline, and it ran on.
    assert reader.starts == 2


async def test_each_idle_period_gets_the_whole_timeout(autojump_clock: Any) -> None:
    reader = Reader()
    async with trio.open_nursery() as nursery:
        keep_alive, expiries = await start_guard(nursery, reader)
        keep_alive.arm()
        await trio.sleep(TIMEOUT - 1)
        keep_alive.disarm()
        await trio.sleep(0.5)  # a short request
        second_idle = trio.current_time()
        keep_alive.arm()
        # The first period's deadline passes here; it is moved, not obeyed.
        await trio.sleep(TIMEOUT - 0.1)
        assert not keep_alive.expired
        await trio.sleep(0.2)
        assert keep_alive.expired
        assert expiries == [pytest.approx(second_idle + TIMEOUT)]


async def test_guard_returns_when_the_guarded_task_ends(autojump_clock: Any) -> None:
    reader = Reader()
    async with trio.open_nursery() as nursery:
        keep_alive, expiries = await start_guard(nursery, reader)
        keep_alive.arm()
        reader.done.set()
    assert not keep_alive.expired
    assert expiries == []


async def test_arming_before_the_guard_starts_still_sets_the_deadline(
    autojump_clock: Any,
) -> None:
    reader = Reader()
    expiries: list[float] = []
    keep_alive = KeepAlive(TIMEOUT, lambda: expiries.append(trio.current_time()))
    keep_alive.arm()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(keep_alive.guard, reader.run)
    assert keep_alive.expired
    assert expiries == [pytest.approx(TIMEOUT)]


async def test_input_received_but_not_yet_taken_keeps_the_connection(autojump_clock: Any) -> None:
    """The deadline passes with a next request already received (the event loop was
    held up, so the reader read it but the connection has not looked yet): that is
    not an idle connection, and closing it would drop the request."""
    reader = Reader()
    received: list[bytes] = []
    expiries: list[float] = []
    keep_alive = KeepAlive(TIMEOUT, lambda: expiries.append(0.0), lambda: bool(received))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(keep_alive.guard, reader.run)
        await trio.testing.wait_all_tasks_blocked()
        keep_alive.arm()
        await trio.sleep(TIMEOUT - 0.1)
        received.append(b"GET / HTTP/1.1\r\n")
        await trio.sleep(TIMEOUT)
        assert not keep_alive.expired
        assert expiries == []
        # The connection takes the request, serves it, and goes idle again: the
        # deadline applies from then on.
        keep_alive.disarm()
        received.clear()
        keep_alive.arm()
        await trio.sleep(TIMEOUT + 0.1)
        assert keep_alive.expired
        assert len(expiries) == 1
        reader.done.set()
