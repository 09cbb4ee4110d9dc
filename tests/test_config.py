"""``trioserve.Config``: documented defaults, immutability, validation of every key
(``ConfigError`` naming the key and the bad value), normalisation (``None`` timeouts
become ``math.inf``, a single bind string becomes a tuple), and bind strings that
only ``serve()`` can reject (it parses them when it opens its listeners).
"""

from __future__ import annotations

import dataclasses
import math
import re
import socket
from functools import partial
from typing import Any

import pytest
import trio

import trioserve
from trioserve import Config, ConfigError

TIMEOUT_KEYS = [
    "keep_alive_timeout",
    "header_timeout",
    "read_timeout",
    "write_timeout",
    "graceful_timeout",
    "startup_timeout",
    "shutdown_timeout",
]


async def never_called_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    raise AssertionError(f"the app must not be called, got a {scope['type']} scope")


async def start_serving(nursery: trio.Nursery, bind: list[str]) -> list[str]:
    """Make the config and start ``serve`` with it (either step may reject ``bind``)."""
    config = Config(bind=bind, lifespan="off")
    urls: list[str] = await nursery.start(partial(trioserve.serve, never_called_app, config))
    return urls


def test_defaults_match_the_documentation() -> None:
    config = Config()
    assert config.bind == ("127.0.0.1:8000",)
    assert config.backlog == 2048
    assert config.keep_alive_timeout == 5.0
    assert config.header_timeout == 10.0
    assert config.read_timeout == 30.0
    assert config.write_timeout == 30.0
    assert config.graceful_timeout == 30.0
    assert config.startup_timeout == 60.0
    assert config.shutdown_timeout == 60.0
    assert config.h11_max_incomplete_size == 16384
    assert config.limit_concurrency is None
    assert config.max_requests is None
    assert config.max_requests_jitter == 0
    assert config.root_path == ""
    assert config.include_server_header is True
    assert config.include_date_header is True
    assert config.lifespan == "auto"
    assert config.cancel_on_disconnect == "safe"


def test_timeouts_are_stored_as_floats() -> None:
    config = Config(keep_alive_timeout=3, graceful_timeout=1)
    assert config.keep_alive_timeout == 3.0
    assert isinstance(config.keep_alive_timeout, float)
    assert isinstance(config.graceful_timeout, float)


def test_config_is_frozen() -> None:
    config = Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.keep_alive_timeout = 1.0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.bind = ("0.0.0.0:80",)  # type: ignore[misc]
    assert config.keep_alive_timeout == 5.0


def test_replace_returns_a_changed_copy_and_leaves_the_original_alone() -> None:
    config = Config(keep_alive_timeout=2)
    changed = config.replace(keep_alive_timeout=7, limit_concurrency=3)
    assert changed is not config
    assert changed.keep_alive_timeout == 7.0
    assert changed.limit_concurrency == 3
    assert config.keep_alive_timeout == 2.0
    assert config.limit_concurrency is None


def test_replace_validates_the_changes() -> None:
    """A naive ``replace`` (dataclasses.replace without __post_init__ checks, or
    object.__setattr__) would let a bad value through."""
    config = Config()
    with pytest.raises(ConfigError, match="keep_alive_timeout") as excinfo:
        config.replace(keep_alive_timeout=-1)
    assert "-1" in str(excinfo.value)
    with pytest.raises(ConfigError, match="lifespan"):
        config.replace(lifespan="sometimes")


def test_replace_normalises_like_the_constructor() -> None:
    changed = Config().replace(read_timeout=None, bind="127.0.0.1:0")
    assert changed.read_timeout == math.inf
    assert changed.bind == ("127.0.0.1:0",)


@pytest.mark.parametrize("key", TIMEOUT_KEYS)
def test_none_timeout_means_no_limit(key: str) -> None:
    config = Config(**{key: None})
    assert getattr(config, key) == math.inf


@pytest.mark.parametrize("key", TIMEOUT_KEYS)
def test_infinite_timeout_is_accepted(key: str) -> None:
    assert getattr(Config(**{key: math.inf}), key) == math.inf


def test_single_bind_string_becomes_a_tuple() -> None:
    """A naive config would keep the string, and iterating it would bind to each
    character."""
    assert Config(bind="127.0.0.1:9000").bind == ("127.0.0.1:9000",)


def test_bind_list_becomes_a_tuple() -> None:
    config = Config(bind=["127.0.0.1:1", "[::1]:2"])
    assert config.bind == ("127.0.0.1:1", "[::1]:2")
    assert isinstance(config.bind, tuple)


def test_optional_limits_accept_valid_values() -> None:
    config = Config(limit_concurrency=1, max_requests=10, max_requests_jitter=5, backlog=1)
    assert (config.limit_concurrency, config.max_requests, config.max_requests_jitter) == (1, 10, 5)
    assert config.backlog == 1


@pytest.mark.parametrize("root_path", ["", "/api", "/a/b"])
def test_valid_root_paths(root_path: str) -> None:
    assert Config(root_path=root_path).root_path == root_path


@pytest.mark.parametrize("lifespan", ["auto", "on", "off"])
def test_valid_lifespan_choices(lifespan: str) -> None:
    assert Config(lifespan=lifespan).lifespan == lifespan


@pytest.mark.parametrize("policy", ["safe", "always", "never"])
def test_valid_cancel_on_disconnect_choices(policy: str) -> None:
    assert Config(cancel_on_disconnect=policy).cancel_on_disconnect == policy


BAD_VALUES: list[tuple[str, object, str]] = [
    # (key, bad value, text the message must contain to show the value)
    *[(key, -1, "-1") for key in TIMEOUT_KEYS],
    *[(key, 0, "0") for key in TIMEOUT_KEYS],
    *[(key, "5", "'5'") for key in TIMEOUT_KEYS],
    *[(key, True, "True") for key in TIMEOUT_KEYS],
    ("keep_alive_timeout", math.nan, "nan"),
    ("keep_alive_timeout", -math.inf, "-inf"),
    ("keep_alive_timeout", [5], "[5]"),
    ("backlog", 0, "0"),
    ("backlog", -5, "-5"),
    ("backlog", True, "True"),
    ("backlog", 1.5, "1.5"),
    ("backlog", "128", "'128'"),
    ("backlog", None, "None"),
    ("h11_max_incomplete_size", 0, "0"),
    ("h11_max_incomplete_size", False, "False"),
    ("h11_max_incomplete_size", "16k", "'16k'"),
    ("h11_max_incomplete_size", 1024.0, "1024.0"),
    ("limit_concurrency", 0, "0"),
    ("limit_concurrency", -1, "-1"),
    ("limit_concurrency", True, "True"),
    ("limit_concurrency", "10", "'10'"),
    ("max_requests", 0, "0"),
    ("max_requests", True, "True"),
    ("max_requests", 2.0, "2.0"),
    ("max_requests_jitter", -1, "-1"),
    ("max_requests_jitter", True, "True"),
    ("max_requests_jitter", None, "None"),
    ("max_requests_jitter", "3", "'3'"),
    ("root_path", "api", "'api'"),
    ("root_path", "/api/", "'/api/'"),
    ("root_path", "/", "'/'"),
    ("root_path", 5, "5"),
    ("root_path", None, "None"),
    ("include_server_header", "yes", "'yes'"),
    ("include_server_header", 1, "1"),
    ("include_date_header", 0, "0"),
    ("include_date_header", None, "None"),
    ("lifespan", "maybe", "'maybe'"),
    ("lifespan", "ON", "'ON'"),
    ("lifespan", True, "True"),
    ("lifespan", None, "None"),
    ("cancel_on_disconnect", "sometimes", "'sometimes'"),
    ("cancel_on_disconnect", False, "False"),
    ("bind", [], "[]"),
    ("bind", (), "()"),
    ("bind", "", "''"),
    ("bind", [""], "['']"),
    ("bind", [8000], "[8000]"),
    ("bind", 8000, "8000"),
    ("bind", None, "None"),
    ("bind", [b"127.0.0.1:80"], "b'127.0.0.1:80'"),
    # Fields the server writes from each response's framing: a fixed value added to
    # every answer would contradict it (a 400 saying both keep-alive and close).
    ("headers", ["connection: keep-alive"], "'connection'"),
    ("headers", [("Content-Length", "5")], "'content-length'"),
    ("headers", ["transfer-encoding: chunked"], "'transfer-encoding'"),
    ("headers", ["keep-alive: timeout=5"], "'keep-alive'"),
]


@pytest.mark.parametrize(
    ("key", "value", "shown"),
    BAD_VALUES,
    ids=[f"{key}={value!r}" for key, value, _ in BAD_VALUES],
)
def test_bad_value_raises_config_error_naming_key_and_value(
    key: str, value: object, shown: str
) -> None:
    with pytest.raises(ConfigError) as excinfo:
        Config(**{key: value})
    message = str(excinfo.value)
    assert key in message
    assert shown in message
    # ConfigError is also a ValueError, for callers that know nothing of trioserve.
    assert isinstance(excinfo.value, ValueError)


@pytest.mark.parametrize(
    ("key", "value", "shown"),
    BAD_VALUES[::5],
    ids=[f"{key}={value!r}" for key, value, _ in BAD_VALUES[::5]],
)
def test_bad_value_through_replace_raises_config_error(key: str, value: object, shown: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        Config().replace(**{key: value})
    assert key in str(excinfo.value)
    assert shown in str(excinfo.value)


def test_unknown_key_raises_config_error_naming_it() -> None:
    """``ConfigError``'s own contract: "A configuration key has a wrong type or value,
    or is unknown." A misspelt key must never be silently dropped, and it should be
    reported with the same exception as every other configuration mistake."""
    with pytest.raises(ConfigError, match="keepalive_timeout"):
        Config(keepalive_timeout=5)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    "bind",
    [
        "localhost",  # no port at all
        "::1:80",  # IPv6 without brackets
        "host:99999",  # port out of range
        "127.0.0.1:http",  # port not a number
        "127.0.0.1:",  # empty port
        "127.0.0.1:-1",  # negative port
    ],
)
async def test_bad_bind_string_raises_config_error_by_the_time_serve_starts(bind: str) -> None:
    """These are non-empty strings but cannot be bound. trioserve may reject them
    when the ``Config`` is made or when ``serve`` parses them; either way the caller
    gets a plain ``ConfigError`` (not an ExceptionGroup) naming the bind, before
    any URL is reported."""
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            with pytest.raises(ConfigError) as excinfo:
                await start_serving(nursery, [bind])
    assert bind in str(excinfo.value)


async def test_bad_bind_among_good_ones_leaves_nothing_bound() -> None:
    """The bad bind comes second: if the first listener was already open by then,
    it must be closed again (nothing answers on its port), and the error must
    still come out."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free_port = probe.getsockname()[1]
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            with pytest.raises(ConfigError, match=re.escape("[::1:80")):
                await start_serving(nursery, [f"127.0.0.1:{free_port}", "[::1:80"])
        with trio.socket.socket() as sock, pytest.raises(ConnectionRefusedError):
            await sock.connect(("127.0.0.1", free_port))
