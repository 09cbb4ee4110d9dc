"""The ASGI lifespan protocol: startup before any listener, shutdown after the last
connection.

The app's lifespan coroutine runs as a task in the server nursery for the whole
life of :func:`trioserve.serve`. ``startup()`` returns once the app answered
``lifespan.startup.complete`` (or raises :class:`LifespanFailure`); ``shutdown()``
sends ``lifespan.shutdown`` and waits for the answer, each under its own deadline.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Any

import trio

from ._app_call import Outcome, call_app
from ._errors import LifespanFailure, LocalProtocolError

if sys.version_info < (3, 11):  # pragma: no cover - version-dependent import
    from exceptiongroup import BaseExceptionGroup

if TYPE_CHECKING:
    from ._config import Config
    from ._types import ASGIApp, Message

__all__ = ["Lifespan"]

error_logger = logging.getLogger("trioserve.error")

#: Seconds an app that answered ``lifespan.startup.failed`` gets to raise or return.
_FAILED_APP_GRACE = 1.0


def _one_line(exc: BaseException) -> str:
    """``Type: message`` of an exception (the first of a group), on one line."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _last_line(message: object) -> str:
    """The last non-blank line of a ``failed`` message: the exception line of a
    traceback, which some frameworks send whole."""
    lines = [line.strip() for line in str(message or "").splitlines() if line.strip()]
    return lines[-1] if lines else "(no message)"


class Lifespan:
    """Runs one app's lifespan protocol.

    Args:
      app: the ASGI application.
      config: supplies ``lifespan``, ``startup_timeout`` and ``shutdown_timeout``.

    Attributes:
      state: the lifespan ``scope["state"]``; each request scope gets a shallow copy.
    """

    def __init__(self, app: ASGIApp, config: Config) -> None:
        self._app = app
        self._config = config
        self.state: dict[str, Any] = {}
        self._phase = "startup"  # startup -> serving -> shutdown -> done
        self._answered = trio.Event()
        self._shutdown_requested = trio.Event()
        self._finished = trio.Event()
        self._failure: str | None = None
        #: What the app raised during startup, as one line, if it did.
        self._raised: str | None = None
        self._unsupported = False
        self._scope: trio.CancelScope | None = None
        self._startup_delivered = False
        self._started = False

    async def startup(self, nursery: trio.Nursery) -> None:
        """Start the lifespan task in ``nursery`` and wait for startup to finish.

        Raises:
          LifespanFailure: startup failed, timed out, or (``lifespan="on"``) the
              app does not support lifespan.
        """
        self._started = True
        nursery.start_soon(self._run)
        with trio.move_on_after(self._config.startup_timeout) as timeout:
            await self._answered.wait()
        if timeout.cancelled_caught:
            self._cancel()
            raise LifespanFailure(
                f"lifespan startup did not finish within {self._config.startup_timeout:g}s"
            )
        if self._failure is not None:
            # An app that answers lifespan.startup.failed may raise right after
            # (Starlette does): its exception says best what went wrong.
            with trio.move_on_after(_FAILED_APP_GRACE):
                await self._finished.wait()
            self._cancel()
            raise LifespanFailure(self._raised or self._failure)

    async def shutdown(self) -> None:
        """Send ``lifespan.shutdown`` and wait for the app's answer (never raises)."""
        if not self._started or self._unsupported or self._finished.is_set():
            self._cancel()
            return
        self._phase = "shutdown"
        self._answered = trio.Event()
        self._shutdown_requested.set()
        try:
            # One deadline for the whole phase: the answer, then the app's return.
            with trio.move_on_after(self._config.shutdown_timeout) as timeout:
                await self._answered.wait()
                if self._failure is not None:
                    error_logger.error("%s", self._failure[:1].upper() + self._failure[1:])
                await self._finished.wait()
            if timeout.cancelled_caught and not self._answered.is_set():
                error_logger.error(
                    "Lifespan shutdown did not finish within %gs", self._config.shutdown_timeout
                )
        finally:
            # Also when a forced stop cancels the wait: the app's task ends with it.
            self._cancel()

    def _cancel(self) -> None:
        if self._scope is not None:
            self._scope.cancel()

    async def _run(self) -> None:
        scope = {
            "type": "lifespan",
            "asgi": {"version": "3.0", "spec_version": "2.0"},
            "state": self.state,
        }
        outcome = None  # stays so when the server cancels the lifespan task
        try:
            with trio.CancelScope() as self._scope:
                outcome = await call_app(
                    self._app, scope, self._receive, self._send, self._app_raised
                )
            returned = outcome is Outcome.RETURNED or outcome is Outcome.RETURNED_VALUE
            if returned and self._phase == "startup" and not self._answered.is_set():
                # Returned without a word: it does not speak lifespan.
                self._not_supported("the app returned before answering lifespan.startup")
        finally:
            self._finished.set()
            self._answered.set()

    def _app_raised(self, exc: BaseException) -> None:
        if self._phase == "startup":
            speaks_lifespan = self._startup_delivered or self._failure is not None
            if self._config.lifespan == "auto" and not speaks_lifespan:
                # Raised before it asked for lifespan.startup: an app that serves
                # HTTP only and rejects other scope types.
                self._not_supported(f"the app raised {_one_line(exc)}")
                error_logger.debug("Lifespan error", exc_info=exc)
            else:
                self._raised = f"lifespan startup failed: {_one_line(exc)}"
                self._failure = self._failure or self._raised
                error_logger.error("Exception in lifespan startup", exc_info=exc)
        else:
            self._failure = f"lifespan shutdown failed: {_one_line(exc)}"
            error_logger.error("Exception in lifespan", exc_info=exc)

    def _not_supported(self, why: str) -> None:
        if self._config.lifespan == "on":
            self._failure = f"lifespan is required (lifespan='on') but {why}"
        else:
            self._unsupported = True
            error_logger.info("ASGI 'lifespan' protocol appears unsupported (%s)", why)

    async def _receive(self) -> Message:
        if not self._startup_delivered:
            self._startup_delivered = True
            await trio.lowlevel.checkpoint()
            return {"type": "lifespan.startup"}
        await self._shutdown_requested.wait()
        return {"type": "lifespan.shutdown"}

    async def _send(self, message: Message) -> None:
        await trio.lowlevel.checkpoint()
        kind = message.get("type")
        expected = "lifespan.startup." if self._phase == "startup" else "lifespan.shutdown."
        if kind == expected + "complete":
            if self._phase == "startup":
                self._phase = "serving"
            self._answered.set()
        elif kind == expected + "failed":
            self._failure = f"lifespan {self._phase} failed: {_last_line(message.get('message'))}"
            self._answered.set()
        else:
            raise LocalProtocolError(
                f"Unexpected ASGI lifespan message {kind!r} during {self._phase}"
            )
