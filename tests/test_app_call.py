"""How a call of the app ends, as every connection kind and lifespan sees it:
the app's own failures are reported, what is not the app's to stop propagates."""

from __future__ import annotations

import logging
import sys
from typing import Any

import pytest
import trio

from trioserve import ClientDisconnected
from trioserve._app_call import Outcome, call_app, needs_asyncio, only_disconnects

if sys.version_info < (3, 11):  # pragma: no cover - version-dependent import
    from exceptiongroup import BaseExceptionGroup, ExceptionGroup

SCOPE: dict[str, Any] = {"type": "http"}


async def receive() -> dict[str, Any]:
    await trio.lowlevel.checkpoint()
    return {}


async def send(message: Any) -> None:
    await trio.lowlevel.checkpoint()


async def call(app: Any) -> tuple[Outcome, list[BaseException]]:
    failures: list[BaseException] = []
    outcome = await call_app(app, SCOPE, receive, send, failures.append)
    return outcome, failures


async def test_an_app_that_returns_none_returned() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await trio.lowlevel.checkpoint()

    assert await call(app) == (Outcome.RETURNED, [])


async def test_a_returned_value_is_logged_once_as_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> str:
        return "surprise"

    caplog.set_level(logging.ERROR, logger="trioserve.error")
    assert await call(app) == (Outcome.RETURNED_VALUE, [])
    (record,) = caplog.records
    assert "'surprise'" in record.getMessage()


async def test_an_exception_is_the_apps_failure() -> None:
    error = ValueError("boom")

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise error

    assert await call(app) == (Outcome.RAISED, [error])


async def test_a_group_of_exceptions_is_the_apps_failure() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise ExceptionGroup("two", [ValueError("a"), KeyError("b")])

    outcome, [failure] = await call(app)
    assert outcome is Outcome.RAISED
    assert isinstance(failure, ExceptionGroup)


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), SystemExit(3)])
async def test_what_is_not_an_exception_propagates_unreported(exc: BaseException) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise exc

    failures: list[BaseException] = []
    with pytest.raises(type(exc)):
        await call_app(app, SCOPE, receive, send, failures.append)
    assert failures == []


async def test_a_cancellation_propagates_and_the_apps_part_of_a_mixed_group_is_reported() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        async with trio.open_nursery() as nursery:

            async def fail() -> None:
                raise ValueError("app's own")

            nursery.start_soon(fail)
            nursery.start_soon(trio.sleep_forever)
            await trio.sleep_forever()

    failures: list[BaseException] = []
    with trio.move_on_after(0) as scope:
        # The outside cancellation reaches the app's nursery together with the
        # failing task's error: both must be honoured.
        await call_app(app, SCOPE, receive, send, failures.append)
    assert scope.cancelled_caught
    [failure] = failures
    assert isinstance(failure, BaseExceptionGroup)
    assert [type(e) for e in failure.exceptions] == [ValueError]


def test_only_disconnects_recognises_client_disconnected_alone_or_grouped() -> None:
    assert only_disconnects(ClientDisconnected())
    assert only_disconnects(ExceptionGroup("x", [ClientDisconnected(), ClientDisconnected()]))
    assert not only_disconnects(ExceptionGroup("x", [ClientDisconnected(), ValueError()]))
    assert not only_disconnects(OSError())


async def test_an_asyncio_yield_under_trio_counts_as_needing_asyncio() -> None:
    """``await asyncio.sleep(0)`` in trio: trio gets asyncio's bare yield and says
    it does not know it; that is asyncio-only code, as a missing loop is."""
    import asyncio

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await asyncio.sleep(0)

    outcome, failures = await call(app)
    assert outcome is Outcome.RAISED
    (failure,) = failures
    assert isinstance(failure, TypeError)
    assert "trio.run received unrecognized yield message" in str(failure)
    assert needs_asyncio(failure)
    assert not needs_asyncio(TypeError("unsupported operand type(s)"))
