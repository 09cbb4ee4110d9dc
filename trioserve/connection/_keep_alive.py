"""The keep-alive deadline: how long a connection may sit idle between requests.

It can end a connection only while the connection is idle, never while a request
is being read or served (a uvicorn bug had the timer fire during a pipelined
request). A cancel scope around the idle wait alone would say that
directly, but entering and leaving a timed scope for every request is measurably
slower than the rest of a small request's scheduling (``docs/performance.md``).
So the deadline lives on one cancel scope that wraps the connection's reader task
for the connection's whole life (:meth:`KeepAlive.guard`), and the connection
only marks when it goes idle (:meth:`~KeepAlive.arm`) and when it stops being
idle (:meth:`~KeepAlive.disarm`). When the scope's deadline passes, the guard
looks at the idle mark: idle for the whole timeout means expired, and the reader
ends; otherwise the deadline moves to where the current idle period would end,
or away while a request is being served, and the reader goes on. It costs one
wake-up per ``keep_alive_timeout`` on a busy connection, and nothing per request.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable

import trio

__all__ = ["KeepAlive"]


class KeepAlive:
    """The keep-alive deadline of one connection.

    Args:
      timeout: seconds a connection may be idle (``keep_alive_timeout``).
      on_expiry: called when the deadline expires, to wake the idle wait.
      has_input: whether bytes of a next request were received and not taken yet.
          Such bytes end the idle period even if the connection's task has not
          seen them: a deadline and a request that arrive together (after the
          event loop was held up) must not close the connection under the
          request.

    Attributes:
      armed: the connection is idle now (read-only: see :meth:`arm`).
      idle_since: when the connection last went idle, on trio's clock (read-only).
      expired: the connection was idle for the whole timeout, and the guarded
          task ended (read-only).
    """

    __slots__ = (
        "_has_input",
        "_on_expiry",
        "_scope",
        "_timeout",
        "armed",
        "expired",
        "idle_since",
    )

    def __init__(
        self,
        timeout: float,
        on_expiry: Callable[[], None],
        has_input: Callable[[], bool] = lambda: False,
    ) -> None:
        self._timeout = timeout
        self._on_expiry = on_expiry
        self._has_input = has_input
        self.idle_since = 0.0
        self._scope: trio.CancelScope | None = None
        self.armed = False
        self.expired = False

    def arm(self) -> None:
        """The connection is idle from now on."""
        self.armed = True
        self.idle_since = trio.current_time()
        scope = self._scope
        if scope is not None and scope.deadline == math.inf:
            scope.deadline = self.idle_since + self._timeout

    def disarm(self) -> None:
        """The connection is no longer idle. (The scope's deadline stays where it
        is; when it passes, the guard moves it, which is cheaper than moving it
        for every request.)"""
        self.armed = False

    async def guard(self, fn: Callable[..., Awaitable[None]], *args: object) -> None:
        """Run ``fn(*args)`` (the reader) so that the deadline can end it; return
        when it returns, or when the connection was idle for the whole timeout
        (then :attr:`expired` is true and ``on_expiry()`` was called). ``fn`` is
        cancelled and called again when the deadline moves, so it must be safe to
        restart."""
        timeout = self._timeout
        while True:
            idle = self.armed and not self._has_input()
            deadline = self.idle_since + timeout if idle else math.inf
            with trio.CancelScope(deadline=deadline) as self._scope:
                await fn(*args)
                return
            if (
                self.armed
                and trio.current_time() >= self.idle_since + timeout
                and not self._has_input()
            ):
                self.expired = True
                self._on_expiry()
                return
