"""Counting the ``h11.Connection`` objects trioserve's protocol makes.

Plain requests take the protocol's fast path and need none; a change that sends
them back through h11 roughly doubles their CPU cost, and shows here as a count.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import h11

from trioserve.protocol import _http11_parser


@contextmanager
def counting_h11() -> Iterator[list[int]]:
    """``with counting_h11() as made``: ``made[0]`` is the number of server-side
    h11 connections made inside the block (the test client's own are not counted)."""
    made = [0]
    real = h11.Connection

    class Counted(real):  # type: ignore[misc,valid-type]
        def __init__(self, our_role: type[h11.SERVER], **kwargs: object) -> None:
            if our_role is h11.SERVER:
                made[0] += 1
            super().__init__(our_role, **kwargs)

    _http11_parser.h11.Connection = Counted  # type: ignore[misc]
    try:
        yield made
    finally:
        _http11_parser.h11.Connection = real  # type: ignore[misc]
