"""Pure tests of ``trioserve.protocol._asgi``: ``split_target``, ``build_http_scope``,
``check_response_start``, ``check_response_body`` and ``bad_message``.

Covers every request-target form (origin, absolute, authority without path,
asterisk), scope building (percent-decoding, ``raw_path`` kept, ``root_path``
prefixing, ``state`` copied and not shared, the per-connection base scope never
mutated), and the response-side checks: each wrong message or state raises a
``LocalProtocolError`` (a ``RuntimeError``) whose message names the problem.
"""

from __future__ import annotations

import copy
import http
import re
from typing import Any

import pytest

from trioserve import LocalProtocolError
from trioserve.protocol._asgi import (
    ASGI_VERSION,
    ResponseState,
    bad_message,
    build_http_scope,
    check_response_body,
    check_response_start,
    split_target,
)
from trioserve.protocol._events import RequestHead

# ------------------------------------------------------------- split_target


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (b"/", (b"/", b"")),
        (b"/path", (b"/path", b"")),
        (b"/path?", (b"/path", b"")),
        (b"/path?q=1&r=2", (b"/path", b"q=1&r=2")),
        (b"/a?b?c", (b"/a", b"b?c")),
        (b"/caf%C3%A9?x=%20", (b"/caf%C3%A9", b"x=%20")),
        (b"//double/slash", (b"//double/slash", b"")),
        (b"http://host/p?q", (b"/p", b"q")),
        (b"http://host:8080/a/b", (b"/a/b", b"")),
        (b"https://host/", (b"/", b"")),
        (b"http://host", (b"/", b"")),
        (b"http://host?q=1", (b"/", b"q=1")),
        (b"*", (b"*", b"")),
    ],
    ids=[
        "root",
        "origin",
        "empty-query",
        "query",
        "question-mark-in-query",
        "escapes-kept",
        "double-slash",
        "absolute",
        "absolute-port",
        "absolute-https-root",
        "authority-no-path",
        "authority-no-path-query",
        "asterisk",
    ],
)
def test_split_target(target: bytes, expected: tuple[bytes, bytes]) -> None:
    assert split_target(target) == expected


# --------------------------------------------------------- build_http_scope


def make_base() -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": dict(ASGI_VERSION),
        "scheme": "http",
        "client": ("10.0.0.1", 5555),
        "server": ("10.0.0.2", 80),
        "root_path": "",
    }


def head(
    target: bytes = b"/",
    method: bytes = b"GET",
    version: bytes = b"1.1",
    headers: list[tuple[bytes, bytes]] | None = None,
) -> RequestHead:
    return RequestHead(method, target, version, headers or [(b"host", b"example")])


def test_asgi_version() -> None:
    assert ASGI_VERSION == {"version": "3.0", "spec_version": "2.5"}


def test_build_http_scope_contents() -> None:
    headers = [(b"host", b"example"), (b"x-thing", b"Value")]
    scope = build_http_scope(
        head(b"/caf%C3%A9/a%2Fb+c?x=1&y=%20", b"POST", headers=headers), make_base(), "", None
    )
    assert scope == {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.5"},
        "scheme": "http",
        "client": ("10.0.0.1", 5555),
        "server": ("10.0.0.2", 80),
        "root_path": "",
        "http_version": "1.1",
        "method": "POST",
        "path": "/café/a/b+c",
        "raw_path": b"/caf%C3%A9/a%2Fb+c",
        "query_string": b"x=1&y=%20",
        "headers": headers,
        "extensions": {"http.response.pathsend": {}, "http.response.zerocopysend": {}},
        "state": {},
    }
    assert type(scope["path"]) is str
    assert type(scope["raw_path"]) is bytes
    assert type(scope["query_string"]) is bytes


@pytest.mark.parametrize(("version", "expected"), [(b"1.1", "1.1"), (b"1.0", "1.0")])
def test_build_http_scope_http_version(version: bytes, expected: str) -> None:
    assert build_http_scope(head(version=version), make_base(), "", None)["http_version"] == (
        expected
    )


def test_build_http_scope_path_without_escapes_is_unchanged() -> None:
    scope = build_http_scope(head(b"/plain/path"), make_base(), "", None)
    assert scope["path"] == "/plain/path"
    assert scope["raw_path"] == b"/plain/path"


def test_build_http_scope_absolute_form() -> None:
    scope = build_http_scope(head(b"http://example.com/p%41?q"), make_base(), "", None)
    assert scope["path"] == "/pA"
    assert scope["raw_path"] == b"/p%41"
    assert scope["query_string"] == b"q"


def test_build_http_scope_root_path_prefixes_path_and_raw_path() -> None:
    base = make_base()
    base["root_path"] = "/api"
    scope = build_http_scope(head(b"/items/%41?x"), base, "/api", None)
    assert scope["root_path"] == "/api"
    assert scope["path"] == "/api/items/A"
    assert scope["raw_path"] == b"/api/items/%41"
    assert scope["query_string"] == b"x"


def test_build_http_scope_state_is_copied_not_shared() -> None:
    state = {"db": "pool", "nested": ["shared-object"]}
    first = build_http_scope(head(), make_base(), "", state)
    second = build_http_scope(head(), make_base(), "", state)
    assert first["state"] == state
    assert first["state"] is not state
    assert first["state"] is not second["state"]
    first["state"]["leak"] = True
    assert "leak" not in state
    assert "leak" not in second["state"]
    # A shallow copy: the objects inside are the app's own.
    assert first["state"]["nested"] is state["nested"]


def test_build_http_scope_without_state_gives_fresh_dicts() -> None:
    first = build_http_scope(head(), make_base(), "", None)
    second = build_http_scope(head(), make_base(), "", None)
    assert first["state"] == {}
    assert first["state"] is not second["state"]
    assert first["extensions"] is not second["extensions"]


def test_build_http_scope_does_not_mutate_base() -> None:
    base = make_base()
    snapshot = copy.deepcopy(base)
    scope = build_http_scope(head(b"/x?y"), base, "/root", {"a": 1})
    assert base == snapshot
    assert scope is not base
    scope["path"] = "/changed"
    scope["extensions"]["x"] = 1
    assert base == snapshot


# ------------------------------------------------------ check_response_start


def start(**fields: Any) -> dict[str, Any]:
    return {"type": "http.response.start", "status": 200, **fields}


def test_check_response_start_lowercases_names_and_keeps_values() -> None:
    status, headers = check_response_start(
        start(status=201, headers=[(b"Content-Type", b"Text/Plain"), (b"X-A", b"B")]),
        ResponseState.START,
    )
    assert status == 201
    assert headers == [(b"content-type", b"Text/Plain"), (b"x-a", b"B")]


def test_check_response_start_headers_default_to_empty() -> None:
    assert check_response_start(start(), ResponseState.START) == (200, [])


@pytest.mark.parametrize("kind", ["list-of-lists", "tuple", "iterator", "generator"])
def test_check_response_start_accepts_any_iterable_of_pairs(kind: str) -> None:
    pairs = [[b"a", b"1"], [b"B", b"2"]]
    headers: Any = {
        "list-of-lists": pairs,
        "tuple": tuple(tuple(p) for p in pairs),
        "iterator": iter(pairs),
        "generator": (p for p in pairs),
    }[kind]
    _, out = check_response_start(start(headers=headers), ResponseState.START)
    assert out == [(b"a", b"1"), (b"b", b"2")]


@pytest.mark.parametrize("status", [200, 204, 299, 301, 404, 500, 599])
def test_check_response_start_accepts_final_statuses(status: int) -> None:
    assert check_response_start(start(status=status), ResponseState.START)[0] == status


def test_check_response_start_accepts_int_enum_status() -> None:
    """``http.HTTPStatus`` members are ints (ASGI: "status (int)"), and uvicorn and
    Hypercorn accept them; ``bool`` is the only int subclass worth refusing."""
    status, _ = check_response_start(start(status=http.HTTPStatus.NOT_FOUND), ResponseState.START)
    assert status == 404


@pytest.mark.parametrize(
    "status",
    [99, 600, 0, -200, "200", 200.0, None, True],
    ids=["99", "600", "0", "negative", "str", "float", "none", "bool"],
)
def test_check_response_start_rejects_bad_status(status: Any) -> None:
    with pytest.raises(
        LocalProtocolError, match=re.escape("'status' must be an int in 100..599")
    ) as info:
        check_response_start(start(status=status), ResponseState.START)
    assert repr(status) in str(info.value)


def test_check_response_start_missing_status() -> None:
    with pytest.raises(LocalProtocolError, match="'status'"):
        check_response_start({"type": "http.response.start"}, ResponseState.START)


@pytest.mark.parametrize("status", [100, 101, 103, 199])
def test_check_response_start_rejects_informational_status(status: int) -> None:
    with pytest.raises(LocalProtocolError, match="must be a final status") as info:
        check_response_start(start(status=status), ResponseState.START)
    assert str(status) in str(info.value)


@pytest.mark.parametrize(
    "headers",
    [
        [("content-type", "text/plain")],
        [(b"content-type", "text/plain")],
        [("content-type", b"text/plain")],
        [(b"x", 1)],
        [(b"x", None)],
        [(bytearray(b"x"), b"y")],
        [(b"x", b"y", b"z")],
        [(b"x",)],
        [b"xy"],
        [None],
        None,
        5,
    ],
    ids=[
        "str-pair",
        "str-value",
        "str-name",
        "int-value",
        "none-value",
        "bytearray-name",
        "triple",
        "single",
        "bytes-not-pair",
        "none-item",
        "none",
        "int",
    ],
)
def test_check_response_start_rejects_malformed_headers(headers: Any) -> None:
    with pytest.raises(LocalProtocolError, match="'headers' must be an iterable") as info:
        check_response_start(start(headers=headers), ResponseState.START)
    assert "byte-string pairs" in str(info.value)
    assert isinstance(info.value, RuntimeError)


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (ResponseState.BODY, "expected 'http.response.body'"),
        (ResponseState.DONE, "the response is already complete"),
    ],
)
def test_check_response_start_in_wrong_state(state: ResponseState, expected: str) -> None:
    with pytest.raises(LocalProtocolError) as info:
        check_response_start(start(), state)
    message = str(info.value)
    assert "'http.response.start'" in message
    assert state.value in message
    assert expected in message


# ------------------------------------------------------- check_response_body


def test_check_response_body_defaults() -> None:
    assert check_response_body({"type": "http.response.body"}, ResponseState.BODY) == (
        b"",
        False,
    )


def test_check_response_body_more_body() -> None:
    message = {"type": "http.response.body", "body": b"abc", "more_body": True}
    assert check_response_body(message, ResponseState.BODY) == (b"abc", True)


@pytest.mark.parametrize(
    "data",
    [bytearray(b"abc"), memoryview(b"abc"), memoryview(b"xabcx")[1:4]],
    ids=["bytearray", "memoryview", "memoryview-slice"],
)
def test_check_response_body_accepts_bytes_like(data: Any) -> None:
    body, more = check_response_body(
        {"type": "http.response.body", "body": data}, ResponseState.BODY
    )
    assert body == b"abc"
    assert type(body) is bytes
    assert more is False


@pytest.mark.parametrize(
    ("data", "type_name"),
    [("text", "str"), (None, "NoneType"), (123, "int"), ([b"a"], "list")],
)
def test_check_response_body_rejects_non_bytes(data: Any, type_name: str) -> None:
    with pytest.raises(LocalProtocolError) as info:
        check_response_body({"type": "http.response.body", "body": data}, ResponseState.BODY)
    assert str(info.value) == f"http.response.body 'body' must be bytes, got {type_name}"


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (ResponseState.START, "expected 'http.response.start'"),
        (ResponseState.DONE, "the response is already complete"),
    ],
)
def test_check_response_body_in_wrong_state(state: ResponseState, expected: str) -> None:
    with pytest.raises(LocalProtocolError) as info:
        check_response_body({"type": "http.response.body", "body": b"x"}, state)
    message = str(info.value)
    assert "'http.response.body'" in message
    assert state.value in message
    assert expected in message


# -------------------------------------------------------------- bad_message


@pytest.mark.parametrize("state", list(ResponseState))
def test_bad_message_names_the_type_and_state(state: ResponseState) -> None:
    error = bad_message({"type": "http.response.bogus"}, state)
    assert isinstance(error, LocalProtocolError)
    assert isinstance(error, RuntimeError)
    assert "'http.response.bogus'" in str(error)
    assert state.value in str(error)
