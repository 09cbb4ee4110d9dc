"""What the connections of one :func:`trioserve.serve` call share.

One :class:`ServerState` per server: the app and its configuration, the headers
trioserve adds to responses, the request counters behind ``limit_concurrency`` and
``max_requests``, and the set of open connections that a graceful shutdown walks.
Every connection kind (HTTP/1.1 today) reads it; only :meth:`begin_shutdown` and
the counting methods change it.
"""

from __future__ import annotations

import email.utils
import math
import random
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import trio

from ._logging import AccessLogger
from .protocol._http11_policy import RequestLimits
from .protocol._proxy import ForwardedHeaders, TrustedProxies

if TYPE_CHECKING:
    from ._config import Config
    from ._types import ASGIApp

__all__ = ["DateCache", "ServerState", "Shutdownable"]

Headers = list[tuple[bytes, bytes]]

_SERVER_HEADER = (b"server", b"trioserve")


class Shutdownable(Protocol):
    """A connection as a graceful shutdown sees it."""

    def shutdown_nowait(self) -> None:
        """Close at once if idle, otherwise once the work in progress is done."""

    async def abort(self) -> None:
        """Close the stream at once, under whatever still uses it."""


class DateCache:
    """The ``date`` header value, formatted at most once per second."""

    __slots__ = ("_second", "_value")

    def __init__(self) -> None:
        self._second = -1
        self._value = b""

    def get(self) -> bytes:
        """The current date in the IMF-fixdate form of RFC 9110."""
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._value = email.utils.formatdate(now, usegmt=True).encode("ascii")
        return self._value


class ServerState:
    """What the connections of one :func:`trioserve.serve` call share.

    Args:
      app: the ASGI 3 application.
      config: the server configuration.
      lifespan_state: the lifespan ``state`` dict, or ``None`` without lifespan.
      shutdown_requested: set when ``max_requests`` is reached.
    """

    def __init__(
        self,
        app: ASGIApp,
        config: Config,
        lifespan_state: dict[str, Any] | None,
        shutdown_requested: trio.Event,
    ) -> None:
        self.app = app
        self.config = config
        self.lifespan_state = lifespan_state
        self.shutdown_requested = shutdown_requested
        #: Connections open now; only :meth:`begin_shutdown` walks it.
        self.connections: set[Shutdownable] = set()
        #: Scopes of TLS handshakes and PROXY headers in progress; shutdown drops
        #: them, since a connection that only now begins would be idle anyway.
        self.handshakes: set[trio.CancelScope] = set()
        #: Requests being served now (``limit_concurrency`` counts these).
        self.active_requests = 0
        self.shutting_down = False
        self._requests_started = 0
        self._max_requests: float = math.inf
        if config.max_requests is not None:
            self._max_requests = config.max_requests + random.randint(0, config.max_requests_jitter)
        self._dates = DateCache()
        self.limits = RequestLimits(
            max_head_size=config.h11_max_incomplete_size,
            max_target_length=config.max_target_length,
            max_header_count=config.max_header_count,
            max_body_size=config.max_body_size,
            allow_connect=config.allow_connect,
            max_chunk_extension=config.max_chunk_extension,
        )
        #: The configured ``headers``, added to every response after the app's own;
        #: they are checked with the app's headers when a response head is written.
        self.extra_headers: Headers = [
            (name.encode("latin-1"), value.encode("latin-1")) for name, value in config.headers
        ]
        self.access_log = AccessLogger(config.access_log_format) if config.accesslog else None
        #: The peers in ``forwarded_allow_ips``.
        self.proxies = TrustedProxies(config.forwarded_allow_ips)
        #: How the forwarding headers of trusted peers are applied (``None``: not at all).
        self.forwarded_headers = (
            ForwardedHeaders(
                config.proxy_headers_mode, self.proxies, forwarded_host=config.forwarded_host
            )
            if config.proxy_headers
            else None
        )

    def own_headers(self, headers: Sequence[tuple[bytes, bytes]] = ()) -> Headers:
        """The ``server`` and ``date`` fields trioserve adds to a response whose
        own header fields are ``headers``: each one unless turned off in the
        configuration or already set by the app."""
        config = self.config
        include_server = config.include_server_header
        include_date = config.include_date_header
        own: Headers = []
        if include_server or include_date:
            for name, _ in headers:
                if name == b"server":
                    include_server = False
                elif name == b"date":
                    include_date = False
            if include_server:
                own.append(_SERVER_HEADER)
            if include_date:
                own.append((b"date", self._dates.get()))
        return own

    def default_headers(self) -> Headers:
        """Every header field trioserve adds to a response it makes itself (an
        error answer): ``server``, ``date`` and the configured ``headers``."""
        return self.own_headers() + self.extra_headers

    def admit_request(self) -> bool:
        """Count a request in, unless ``limit_concurrency`` requests are being
        served already (the caller answers 503 then). Reaching ``max_requests``
        requests the graceful shutdown."""
        limit = self.config.limit_concurrency
        if limit is not None and self.active_requests >= limit:
            return False
        self.active_requests += 1
        self._requests_started += 1
        if self._requests_started >= self._max_requests:
            self.shutdown_requested.set()
        return True

    @property
    def reached_max_requests(self) -> bool:
        """``max_requests`` (with its jitter) requests have been admitted."""
        return self._requests_started >= self._max_requests

    def request_done(self) -> None:
        """Count out a request that :meth:`admit_request` admitted."""
        self.active_requests -= 1

    def begin_shutdown(self) -> None:
        """Close idle connections now; busy ones close when their work is done."""
        self.shutting_down = True
        for connection in list(self.connections):
            connection.shutdown_nowait()
        for handshake in self.handshakes:
            handshake.cancel()

    async def abort_connections(self) -> None:
        """Close every open connection's stream at once. The server does this
        once it has cancelled the connections (a forced stop, the graceful
        deadline) and given their requests time to answer: what still runs then
        is a write shielded from the cancellation, to a client that does not
        read, which would otherwise hold the shutdown for ``write_timeout``."""
        for connection in list(self.connections):
            await connection.abort()

    # -- what a shutdown reports ---------------------------------------------------

    #: Requests the server cancelled (a forced stop, the graceful deadline), and
    #: the first few of them as request lines; see :meth:`note_cancelled`.
    _cancelled_count = 0
    _cancelled_shown: tuple[str, ...] = ()

    def in_flight(self) -> int:
        """Requests and websocket sessions being served now."""
        return self.active_requests

    def note_cancelled(self, description: str) -> None:
        """Count a request (or websocket) that the server cancelled while the app
        served it; ``description`` (``"GET /slow"``) is kept for the first few."""
        self._cancelled_count += 1
        if len(self._cancelled_shown) < _CANCELLED_KEPT:
            self._cancelled_shown = (*self._cancelled_shown, description)

    def cancelled_requests(self) -> tuple[int, tuple[str, ...]]:
        """How many requests the server cancelled, and the first few of them."""
        return self._cancelled_count, self._cancelled_shown


#: Request lines of cancelled requests kept for the log line.
_CANCELLED_KEPT = 5
