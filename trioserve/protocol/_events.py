"""Events passed from the HTTP/1.1 request parser to the I/O layer."""

from __future__ import annotations

import dataclasses
import enum
from typing import NamedTuple

__all__ = ["BodyChunk", "RequestEnd", "RequestHead", "Signal"]


class Signal(enum.Enum):
    """Sentinels returned by :meth:`RequestParser.next_event` that carry no data."""

    #: More bytes are needed before the next event can be produced.
    NEED_DATA = "NEED_DATA"
    #: The next request cannot be parsed until the current response is complete.
    PAUSED = "PAUSED"
    #: The client closed the connection cleanly between requests.
    PEER_CLOSED = "PEER_CLOSED"


class RequestHead(NamedTuple):
    """A complete request head.

    A named tuple rather than a frozen dataclass: as immutable, and one is made for
    every request, which a tuple does at a fraction of the cost.
    """

    method: bytes
    target: bytes
    http_version: bytes
    #: Header names lower-cased, values as received.
    headers: list[tuple[bytes, bytes]]
    #: The request has an ``Upgrade`` field: it offers to switch protocols.
    upgrade: bool = False
    #: The request has a forwarding header (``Forwarded``, ``X-Forwarded-*``): its
    #: scope may need rewriting when it comes from a trusted proxy.
    forwarded: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class BodyChunk:
    """A piece of the request body."""

    data: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class RequestEnd:
    """The request body is complete."""
