"""Calling the ASGI app: its own failures are reported, everything else propagates.

Every call of the app (lifespan, an HTTP request, a websocket session) goes through
:func:`call_app`, so that the line between "the app failed" and "something the app
must not stop" is drawn once. An app fails when it raises an :class:`Exception`
(or an exception group holding only those) or returns something other than
``None``; the server logs that and answers for it (a 500, a closed connection, a
failed startup) and carries on (house rule: app failures never crash the server).
What is not an ``Exception`` — a cancellation from outside (a client hang-up, the
shutdown deadline), ``KeyboardInterrupt``, ``SystemExit`` — is not the app's to
stop and propagates; when a group mixes the two, the app's part is reported first.
"""

from __future__ import annotations

import enum
import logging
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from ._errors import ClientDisconnected

if sys.version_info < (3, 11):  # pragma: no cover - version-dependent import
    from exceptiongroup import BaseExceptionGroup

if TYPE_CHECKING:
    from ._types import ASGIApp, Receive, Scope, Send

__all__ = ["Outcome", "call_app", "is_cancellation", "needs_asyncio", "only_disconnects"]

error_logger = logging.getLogger("trioserve.error")

#: What asyncio says when asyncio-only code runs without its event loop.
_NO_ASYNCIO_LOOP = ("no running event loop", "There is no current event loop")
#: What trio says when a coroutine yields to an event loop that is not trio's
#: (``await asyncio.sleep(0)``, an asyncio future).
_FOREIGN_YIELD = "trio.run received unrecognized yield message"
#: The hint for an app that failed like that, logged once per process.
ASYNCIO_HINT = (
    "The app failed the way asyncio-only code fails outside asyncio: trioserve runs "
    "apps on trio, and this library needs asyncio; see docs/asyncio-libraries.md"
)
_hinted = False


class Outcome(enum.Enum):
    """How a call of the app ended, when it did not propagate an exception."""

    #: The app returned ``None``, as ASGI asks.
    RETURNED = "returned"
    #: The app returned something else; logged as an error by :func:`call_app`.
    RETURNED_VALUE = "returned-value"
    #: The app raised an exception of its own; given to ``on_failure``.
    RAISED = "raised"


async def call_app(
    app: ASGIApp,
    scope: Scope,
    receive: Receive,
    send: Send,
    on_failure: Callable[[BaseException], None],
) -> Outcome:
    """Call ``app(scope, receive, send)``.

    Args:
      on_failure: called with what the app raised of its own (an ``Exception`` or
          a group of them) before this returns or anything propagates.

    Raises:
      BaseException: whatever the app let through that is not an ``Exception``
          (cancellation, ``KeyboardInterrupt``...), re-raised as it came.
    """
    try:
        result = await app(scope, receive, send)
    except BaseException as exc:
        if isinstance(exc, Exception):
            _failed(exc, on_failure)
            return Outcome.RAISED
        if not isinstance(exc, BaseExceptionGroup):
            raise
        failure, rest = exc.split(Exception)
        if failure is not None:
            _failed(failure, on_failure)
        if rest is None:
            return Outcome.RAISED
        raise rest from None
    if result is not None:
        error_logger.error("ASGI callable returned a value instead of None: %r", result)
        return Outcome.RETURNED_VALUE
    return Outcome.RETURNED


def _failed(exc: BaseException, on_failure: Callable[[BaseException], None]) -> None:
    global _hinted
    on_failure(exc)
    if not _hinted and needs_asyncio(exc):
        _hinted = True
        error_logger.error(ASYNCIO_HINT)


def needs_asyncio(exc: BaseException) -> bool:
    """``exc`` (or an exception in its group, cause or context) is how code that
    needs asyncio fails under trio: asyncio finds no event loop, trio gets a
    yield meant for asyncio's loop, or ``sniffio`` finds no async library (as in
    a worker thread)."""
    seen: set[int] = set()
    pending = [exc]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if type(current).__name__ == "AsyncLibraryNotFoundError":
            return True
        if isinstance(current, RuntimeError) and any(
            text in str(current) for text in _NO_ASYNCIO_LOOP
        ):
            return True
        if isinstance(current, TypeError) and _FOREIGN_YIELD in str(current):
            return True
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)
    return False


def is_cancellation(exc: BaseException) -> bool:
    """``exc`` is a trio cancellation, or a group holding one: the call was
    cancelled from outside."""
    if isinstance(exc, BaseExceptionGroup):
        return exc.split(trio.Cancelled)[0] is not None
    return isinstance(exc, trio.Cancelled)


def only_disconnects(exc: BaseException) -> bool:
    """``exc`` is :class:`ClientDisconnected`, or a group of nothing else: what an
    app raises when it lets ``send()``'s error out after the client left."""
    if isinstance(exc, BaseExceptionGroup):
        return all(only_disconnects(e) for e in exc.exceptions)
    return isinstance(exc, ClientDisconnected)
