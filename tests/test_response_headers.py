"""The head of a response: trioserve's ``server`` and ``date`` headers (there by
default, each can be turned off, both at once too, replaced by the app's own, and
the same on the server's own error responses); header names go out lower-case; a
header value with CR, LF or NUL or an invalid header name is refused with a 500 and
never written; the app's headers may be any iterable.

The tests send raw bytes over in-memory streams and check the exact bytes that come
back (see ``_helpers.py``).
"""

from __future__ import annotations

import email.utils
import logging
import re
from collections.abc import Iterable
from typing import Any

import pytest
import trio
from _helpers import (
    ERROR_LOGGER,
    GET,
    GET_CLOSE,
    NODATE,
    Receive,
    Scope,
    Send,
    body,
    http_only,
    parse_single,
    raw_closed_at_once,
    send_text,
    start,
    text_app,
)

from trioserve import Config, LocalProtocolError
from trioserve.testing import open_test_client


def head_lines(data: bytes) -> list[bytes]:
    """The header lines (without the status line) of the first response in ``data``."""
    head, sep, _ = data.partition(b"\r\n\r\n")
    assert sep, data
    return head.split(b"\r\n")[1:]


DATE_RE = re.compile(rb"^[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT$")


# -- server and date -----------------------------------------------------------------------


async def test_server_and_date_headers_present_by_default() -> None:
    async with open_test_client(text_app()) as client:
        response = parse_single(await client.raw(GET_CLOSE))
    assert response.header(b"server") == b"trioserve"
    date = response.header(b"date")
    assert date is not None
    assert DATE_RE.match(date), date
    assert email.utils.parsedate_to_datetime(date.decode()).tzname() == "UTC"


@pytest.mark.parametrize(
    ("key", "absent", "present"),
    [
        ("include_server_header", b"server", b"date"),
        ("include_date_header", b"date", b"server"),
    ],
)
async def test_default_header_can_be_turned_off(key: str, absent: bytes, present: bytes) -> None:
    async with open_test_client(text_app(), Config(**{key: False})) as client:
        data = await client.raw(GET_CLOSE)
    response = parse_single(data)
    assert response.values(absent) == []
    assert len(response.values(present)) == 1


async def test_app_server_and_date_headers_replace_the_defaults() -> None:
    """A naive server appends its own ``server``/``date`` next to the app's (the app
    uses capitalised names, so a case-sensitive check would also duplicate them)."""
    extra = [(b"Server", b"my-app/1.0"), (b"Date", b"Tue, 01 Jan 2030 00:00:00 GMT")]
    async with open_test_client(text_app(extra=extra)) as client:
        data = await client.raw(GET_CLOSE)
    response = parse_single(data)
    assert response.values(b"server") == [b"my-app/1.0"]
    assert response.values(b"date") == [b"Tue, 01 Jan 2030 00:00:00 GMT"]
    assert b"trioserve" not in data


async def test_server_error_responses_carry_server_and_date() -> None:
    async with open_test_client(text_app()) as client:
        response = parse_single(await client.raw(b"garbage\r\n\r\n"))
    assert response.status == 400
    assert response.header(b"server") == b"trioserve"
    date = response.header(b"date")
    assert date is not None
    assert DATE_RE.match(date)


def header_names(data: bytes) -> list[bytes]:
    """The lower-cased header names of the first response head in ``data``."""
    head, sep, _ = data.partition(b"\r\n\r\n")
    assert sep, data
    return [line.split(b":", 1)[0].lower() for line in head.split(b"\r\n")[1:]]


async def test_server_and_date_headers_both_off_on_app_and_error_responses() -> None:
    """With both default headers turned off, neither appears on an app's response,
    on the server's 400 for garbage, nor on its 503 from ``limit_concurrency``.
    A naive server applies the switches only to app responses, or handles each
    switch only when the other one is on."""
    started = trio.Event()
    release = trio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        started.set()
        await release.wait()
        await send_text(send, "fine")

    config = Config(include_server_header=False, include_date_header=False, limit_concurrency=1)
    async with open_test_client(http_only(app), config) as client:
        with trio.fail_after(5):
            busy = await client.connect()
            await busy.send_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            await started.wait()
            overloaded = await client.raw(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            release.set()
            served = await busy.receive_until_closed()
            await busy.aclose()
            garbage = await client.raw(b"garbage\r\n\r\n")
    assert served.startswith(b"HTTP/1.1 200 ")
    assert overloaded.startswith(b"HTTP/1.1 503 ")
    assert garbage.startswith(b"HTTP/1.1 400 ")
    for data in (served, overloaded, garbage):
        names = header_names(data)
        assert b"server" not in names, data
        assert b"date" not in names, data
    assert header_names(served) == [b"content-type", b"content-length", b"connection"]


# -- the names and values the app sends ----------------------------------------------------


async def test_response_header_names_are_lowercase_on_the_wire() -> None:
    """h11 writes the framing headers it adds itself in title case; the app's own
    names are capitalised here. Every name on the wire must be lower-case."""

    @http_only
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"Content-Type", b"Text/Plain"), (b"X-Custom-Header", b"MixedValue")]
        await send(start(200, headers))
        await send(body(b"x", more=True))
        await send(body(b""))

    async with open_test_client(app) as client:
        data = await client.raw(GET_CLOSE)
    lines = head_lines(data)
    names = [line.split(b":", 1)[0] for line in lines]
    assert names == [name.lower() for name in names]
    assert b"content-type: Text/Plain" in lines
    assert b"x-custom-header: MixedValue" in lines
    assert b"transfer-encoding: chunked" in lines
    assert b"connection: close" in lines


async def test_header_value_may_contain_htab_and_visible_characters() -> None:
    value = b"tab\there !\"#$%&'()*+,-./09:;<=>?@AZ[\\]^_`az{|}~"
    async with open_test_client(text_app(extra=[(b"x-value", value)])) as client:
        data = await client.raw(GET_CLOSE)
    assert b"\r\nx-value: " + value + b"\r\n" in data
    assert parse_single(data).header(b"x-value") == value


@pytest.mark.parametrize(
    "value",
    [b"a\r\nx-injected: yes", b"a\rx-injected", b"a\nx-injected", b"a\x00x-injected"],
    ids=["crlf", "cr", "lf", "nul"],
)
async def test_header_value_with_cr_lf_or_nul_gives_500(
    value: bytes, autojump_clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Response splitting: a naive server writes the value and the client sees an
    extra header (or a broken head)."""
    caplog.set_level(logging.DEBUG, logger=ERROR_LOGGER)
    raised: list[BaseException] = []

    @http_only
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send(start(200, [(b"x-bad", value), (b"content-length", b"2")]))
            await send(body(b"ok"))
        except Exception as exc:
            raised.append(exc)
            raise

    async with open_test_client(app, NODATE) as client:
        data = await raw_closed_at_once(client, GET)
    assert data.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    assert b"x-bad" not in data
    assert b"injected" not in data
    assert parse_single(data).body == b"Internal Server Error"
    assert len(raised) == 1
    assert isinstance(raised[0], LocalProtocolError)
    assert isinstance(raised[0], RuntimeError)


@pytest.mark.parametrize(
    "name",
    [b"bad name", b"bad:name", b"bad\rname", b"bad\nname", b"bad\x00name", b"", b"bad(name)"],
    ids=["space", "colon", "cr", "lf", "nul", "empty", "paren"],
)
async def test_invalid_header_name_gives_500(name: bytes, autojump_clock: Any) -> None:
    raised: list[BaseException] = []

    @http_only
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send(start(200, [(name, b"value-of-bad"), (b"content-length", b"2")]))
            await send(body(b"ok"))
        except LocalProtocolError as exc:
            raised.append(exc)

    async with open_test_client(app, NODATE) as client:
        data = await raw_closed_at_once(client, GET)
    response = parse_single(data)
    assert response.status == 500
    assert b"value-of-bad" not in data
    assert len(raised) == 1


@pytest.mark.parametrize("kind", ["iterator", "generator", "tuple"])
async def test_response_headers_may_be_any_iterable(kind: str) -> None:
    pairs = [(b"content-length", b"2"), (b"x-from", kind.encode())]

    def gen() -> Iterable[tuple[bytes, bytes]]:
        yield from pairs

    headers: Iterable[tuple[bytes, bytes]] = {
        "iterator": iter(pairs),
        "generator": gen(),
        "tuple": tuple(pairs),
    }[kind]

    @http_only
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(start(200, headers))
        await send(body(b"ok"))

    async with open_test_client(app) as client:
        response = parse_single(await client.raw(GET_CLOSE))
    assert response.status == 200
    assert response.body == b"ok"
    assert response.header(b"x-from") == kind.encode()
