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

from ._errors import ClientDisconnected

if sys.version_info < (3, 11):  # pragma: no cover - version-dependent import
    from exceptiongroup import BaseExceptionGroup

if TYPE_CHECKING:
    from ._types import ASGIApp, Receive, Scope, Send

__all__ = ["Outcome", "call_app", "only_disconnects"]

error_logger = logging.getLogger("trioserve.error")


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
            on_failure(exc)
            return Outcome.RAISED
        if not isinstance(exc, BaseExceptionGroup):
            raise
        failure, rest = exc.split(Exception)
        if failure is not None:
            on_failure(failure)
        if rest is None:
            return Outcome.RAISED
        raise rest from None
    if result is not None:
        error_logger.error("ASGI callable returned a value instead of None: %r", result)
        return Outcome.RETURNED_VALUE
    return Outcome.RETURNED


def only_disconnects(exc: BaseException) -> bool:
    """``exc`` is :class:`ClientDisconnected`, or a group of nothing else: what an
    app raises when it lets ``send()``'s error out after the client left."""
    if isinstance(exc, BaseExceptionGroup):
        return all(only_disconnects(e) for e in exc.exceptions)
    return isinstance(exc, ClientDisconnected)
