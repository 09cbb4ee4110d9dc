"""The framing decision of a response, as a pure function (RFC 9112 6, 9.3).

``choose_framing`` decides, from the response's status and framing fields and the
request's method and version, how the body is delimited and whether the
connection carries another request. ``test_response_writer.py`` holds the whole
writer to h11; this table states the rules themselves.
"""

from __future__ import annotations

import pytest

from trioserve.protocol._http11_writer import Framing, choose_framing

LENGTH, CHUNKED, UNTIL_CLOSE, NO_BODY = (
    Framing.LENGTH,
    Framing.CHUNKED,
    Framing.UNTIL_CLOSE,
    Framing.NO_BODY,
)

# (status, method, http10, content_length, chunked, keep_alive) -> (framing, keep_alive)
CASES = {
    "content-length": ((200, b"GET", False, b"5", False, True), (LENGTH, True)),
    "no length on 1.1 is chunked": ((200, b"GET", False, None, False, True), (CHUNKED, True)),
    "chunked wins over content-length": ((200, b"GET", False, b"5", True, True), (CHUNKED, True)),
    "no length on 1.0 ends with the close": (
        (200, b"GET", True, None, False, True),
        (UNTIL_CLOSE, False),
    ),
    "chunked on 1.0 ends with the close": (
        (200, b"GET", True, None, True, True),
        (UNTIL_CLOSE, False),
    ),
    "HEAD on 1.0 without length keeps the connection": (
        (200, b"HEAD", True, None, False, True),
        (UNTIL_CLOSE, True),
    ),
    "content-length on 1.0": ((200, b"GET", True, b"5", False, True), (LENGTH, True)),
    "204 has no body": ((204, b"GET", False, None, False, True), (NO_BODY, True)),
    "304 has no body even with a length": (
        (304, b"GET", False, b"5", False, True),
        (NO_BODY, True),
    ),
    "2xx to CONNECT has no body": ((200, b"CONNECT", False, None, False, True), (NO_BODY, True)),
    "4xx to CONNECT has a body": ((407, b"CONNECT", False, b"5", False, True), (LENGTH, True)),
    "a close asked for is kept": ((200, b"GET", False, b"5", False, False), (LENGTH, False)),
}


@pytest.mark.parametrize(("given", "expected"), CASES.values(), ids=CASES)
def test_choose_framing(
    given: tuple[int, bytes, bool, bytes | None, bool, bool], expected: tuple[Framing, bool]
) -> None:
    assert choose_framing(*given) == expected
