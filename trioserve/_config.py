"""``Config``: every setting trioserve has, validated once, then frozen.

Each key is a dataclass field whose metadata carries its documentation and its
validator, so the reference documentation and the error messages come from the
same table and cannot drift apart. Key names follow Hypercorn's wherever Hypercorn
has the same setting, so that a Hypercorn configuration keeps its meaning.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import importlib.util
import inspect
import math
import sys
import types
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

from ._binds import parse_bind
from ._errors import ConfigError, ConfigWarning

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - version-dependent import
    import tomli as tomllib

__all__ = ["Config", "load_config"]

LifespanMode = Literal["auto", "on", "off"]
DisconnectPolicy = Literal["safe", "always", "never"]
WebSocketMode = Literal["auto", "wsproto", "none"]


def _describe(value: object) -> str:
    return f"{value!r} ({type(value).__name__})"


def _seconds(key: str, value: object) -> float:
    """A positive duration; ``None`` and ``inf`` mean "no limit"."""
    if value is None:
        return math.inf
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(
            f"{key} must be a number of seconds > 0 (or None for no limit), got {_describe(value)}"
        )
    return float(value)


def _positive_int(key: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{key} must be an integer >= 1, got {_describe(value)}")
    return value


def _optional_positive_int(key: str, value: object) -> int | None:
    return None if value is None else _positive_int(key, value)


def _non_negative_int(key: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{key} must be an integer >= 0, got {_describe(value)}")
    return value


def _optional_str(key: str, value: object) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"{key} must be a string, got {_describe(value)}")
    return value


def _str(key: str, value: object) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{key} must be a string, got {_describe(value)}")
    return value


def _umask(key: str, value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = int(value, 8)
        except ValueError:
            raise ConfigError(f"{key} must be an octal mask like 0o022, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0o777:
        raise ConfigError(f"{key} must be a mask in 0..0o777, got {_describe(value)}")
    return value


def _headers(key: str, value: object) -> tuple[tuple[str, str], ...]:
    items: Iterable[object] = [value] if isinstance(value, str) else value  # type: ignore[assignment]
    pairs = []
    try:
        for item in items:
            if isinstance(item, str):
                name, sep, header_value = item.partition(":")
                if not sep:
                    raise ValueError
                item = (name, header_value)
            name, header_value = item  # type: ignore[misc]
            if not isinstance(name, str) or not isinstance(header_value, str):
                raise ValueError
            name = name.strip().lower()
            header_value = header_value.strip()
            if not name or any(c in name + header_value for c in "\r\n\0") or " " in name:
                raise ValueError
            pairs.append((name, header_value))
    except (TypeError, ValueError):
        raise ConfigError(f"{key} must be a list of 'name:value' strings, got {value!r}") from None
    return tuple(pairs)


def _bool(key: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false, got {_describe(value)}")
    return value


def _choice(*choices: str) -> Callable[[str, object], str]:
    def check(key: str, value: object) -> str:
        if value not in choices:
            allowed = ", ".join(repr(c) for c in choices)
            raise ConfigError(f"{key} must be one of {allowed}, got {_describe(value)}")
        return str(value)

    return check


def _root_path(key: str, value: object) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{key} must be a string, got {_describe(value)}")
    if value and (not value.startswith("/") or value.endswith("/")):
        raise ConfigError(
            f"{key} must be empty or start with '/' and not end with '/', got {value!r}"
        )
    return value


def _binds(key: str, value: object) -> tuple[str, ...]:
    items: Iterable[object] = [value] if isinstance(value, str) else value  # type: ignore[assignment]
    try:
        binds = tuple(items)
    except TypeError:
        raise ConfigError(
            f"{key} must be a string or a list of strings, got {_describe(value)}"
        ) from None
    if not binds or not all(isinstance(b, str) and b for b in binds):
        raise ConfigError(f"{key} must be a non-empty list of addresses, got {value!r}")
    for bind in binds:
        parse_bind(bind)  # type: ignore[arg-type]
    return binds  # type: ignore[return-value]


def _key(default: Any, doc: str, check: Callable[[str, Any], Any], *, hypercorn: bool) -> Any:
    return dataclasses.field(
        default=default, metadata={"doc": doc, "check": check, "hypercorn": hypercorn}
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """Every setting of a trioserve server, validated when the object is made.

    ``Config()`` gives the documented defaults; pass keys as keyword arguments to
    change them. A wrong type or value raises :class:`~trioserve.ConfigError` naming
    the key. The object is frozen: derive a changed copy with :meth:`replace`.

    Timeouts are seconds; ``None`` means "no limit" and is stored as ``math.inf``.
    """

    bind: tuple[str, ...] = _key(
        ("127.0.0.1:8000",),
        "Addresses to listen on: ``HOST:PORT``, ``[IPv6]:PORT``, ``unix:PATH`` or "
        "``fd://N`` (an inherited listening socket); port 0 picks a free port, reported "
        "to ``task_status`` and the log.",
        _binds,
        hypercorn=True,
    )
    insecure_bind: tuple[str, ...] = _key(
        (),
        "Addresses served as plain HTTP even when ``certfile`` and ``keyfile`` make "
        "the ``bind`` addresses HTTPS (same forms as ``bind``).",
        lambda key, value: () if value in ((), []) else _binds(key, value),
        hypercorn=True,
    )
    backlog: int = _key(
        2048, "Listen backlog of each listening socket.", _positive_int, hypercorn=True
    )
    keep_alive_timeout: float = _key(
        5.0,
        "Seconds an idle connection may wait for the first byte of its next request "
        "(and a new connection for its first). Only idle time counts.",
        _seconds,
        hypercorn=True,
    )
    header_timeout: float = _key(
        10.0,
        "Seconds from a request's first byte until its head is complete (slowloris "
        "defence); on expiry the client gets 408 and the connection closes.",
        _seconds,
        hypercorn=False,
    )
    read_timeout: float = _key(
        30.0,
        "Seconds the app may wait in ``receive()`` for the next piece of a request "
        "body; on expiry the connection closes and ``receive()`` returns "
        "``http.disconnect``.",
        _seconds,
        hypercorn=True,
    )
    write_timeout: float = _key(
        30.0,
        "Seconds one write may wait for a client that does not read; on expiry the "
        "connection is dropped and ``send()`` raises ``ClientDisconnected``.",
        _seconds,
        hypercorn=False,
    )
    graceful_timeout: float = _key(
        30.0,
        "Seconds in-flight requests get to finish after shutdown begins; then they are cancelled.",
        _seconds,
        hypercorn=True,
    )
    startup_timeout: float = _key(
        60.0, "Seconds lifespan startup may take.", _seconds, hypercorn=True
    )
    shutdown_timeout: float = _key(
        60.0, "Seconds lifespan shutdown may take.", _seconds, hypercorn=True
    )
    h11_max_incomplete_size: int = _key(
        16 * 1024,
        "Largest request head in bytes (request line and headers); a larger one is "
        "answered 431, however its bytes arrive.",
        _positive_int,
        hypercorn=True,
    )
    max_target_length: int = _key(
        8 * 1024,
        "Longest request target (path and query) in bytes; a longer one is answered 414.",
        _positive_int,
        hypercorn=False,
    )
    max_header_count: int = _key(
        100,
        "Most header fields in a request head; more are answered 431.",
        _positive_int,
        hypercorn=False,
    )
    max_body_size: int | None = _key(
        None,
        "Largest request body in bytes, or ``None`` for no limit. A larger declared "
        "``content-length`` is answered 413 before the app runs; a chunked body that "
        "grows past it ends with 413 and the app sees ``http.disconnect``.",
        _optional_positive_int,
        hypercorn=False,
    )
    max_chunk_extension: int = _key(
        4096,
        "Longest chunk extension (the ``;...`` after a chunk size) in a chunked request "
        "body; a longer one, or a chunk size of more than 16 hex digits, is answered "
        "400.",
        _positive_int,
        hypercorn=False,
    )
    allow_connect: bool = _key(
        False,
        "Pass ``CONNECT`` requests to the app; by default they are answered 501. "
        "trioserve does not tunnel: a 2xx answer ends the connection after its head.",
        _bool,
        hypercorn=False,
    )
    limit_concurrency: int | None = _key(
        None,
        "Most requests served at once; one more gets an immediate 503. Idle "
        "keep-alive connections do not count. ``None``: no limit.",
        _optional_positive_int,
        hypercorn=False,
    )
    max_requests: int | None = _key(
        None,
        "Serve this many requests, then shut down gracefully (a supervisor restarts "
        "the process). ``None``: no limit.",
        _optional_positive_int,
        hypercorn=True,
    )
    max_requests_jitter: int = _key(
        0,
        "Add a random 0..N to ``max_requests``, so that workers do not restart together.",
        _non_negative_int,
        hypercorn=True,
    )
    root_path: str = _key(
        "",
        "The ASGI ``root_path``: the prefix under which the app is mounted, "
        "prepended to ``path`` and ``raw_path``.",
        _root_path,
        hypercorn=True,
    )
    include_server_header: bool = _key(
        True,
        "Add ``server: trioserve`` to responses that do not set their own.",
        _bool,
        hypercorn=True,
    )
    include_date_header: bool = _key(
        True, "Add ``date`` to responses that do not set their own.", _bool, hypercorn=True
    )
    headers: tuple[tuple[str, str], ...] = _key(
        (),
        "Extra headers added to every response (``name:value`` strings), e.g. "
        "``['x-served-by:web-1']``.",
        _headers,
        hypercorn=False,
    )
    certfile: str | None = _key(
        None,
        "Path of the PEM certificate chain; with ``keyfile``, every bind serves HTTPS.",
        _optional_str,
        hypercorn=True,
    )
    keyfile: str | None = _key(None, "Path of the PEM private key.", _optional_str, hypercorn=True)
    keyfile_password: str | None = _key(
        None, "Password of an encrypted ``keyfile``.", _optional_str, hypercorn=True
    )
    ca_certs: str | None = _key(
        None,
        "PEM file of CA certificates used to verify client certificates.",
        _optional_str,
        hypercorn=True,
    )
    ciphers: str = _key(
        "ECDHE+AESGCM:ECDHE+CHACHA20",
        "OpenSSL cipher string for TLS 1.2 (TLS 1.3 suites are OpenSSL's defaults).",
        _str,
        hypercorn=True,
    )
    verify_mode: str | None = _key(
        None,
        "Client certificates: ``CERT_NONE``, ``CERT_OPTIONAL`` or ``CERT_REQUIRED`` "
        "(``None``: ``CERT_REQUIRED`` if ``ca_certs`` is set, else ``CERT_NONE``).",
        lambda key, value: (
            None
            if value is None
            # ssl.VerifyMode from a Python config: taken by name (no ssl import here).
            else _choice("CERT_NONE", "CERT_OPTIONAL", "CERT_REQUIRED")(
                key, getattr(value, "name", value)
            )
        ),
        hypercorn=True,
    )
    ssl_handshake_timeout: float = _key(
        10.0,
        "Seconds a client may take to complete the TLS handshake; then it is dropped.",
        _seconds,
        hypercorn=True,
    )
    umask: int | None = _key(
        None,
        "Permission mask applied to ``unix:`` sockets when they are created "
        "(e.g. ``0o007``). ``None``: the process umask.",
        _umask,
        hypercorn=True,
    )
    accesslog: str | None = _key(
        None,
        "Where the access log goes: a file path, ``-`` for stdout, ``None`` for off.",
        _optional_str,
        hypercorn=True,
    )
    errorlog: str | None = _key(
        "-",
        "Where the error log goes: a file path, ``-`` for stderr, ``None`` for off.",
        _optional_str,
        hypercorn=True,
    )
    access_log_format: str = _key(
        '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s',
        "Access log line format, with Hypercorn's atoms (the default is the common log format).",
        _str,
        hypercorn=True,
    )
    loglevel: str = _key(
        "INFO",
        "Level of the error log: DEBUG, INFO, WARNING, ERROR or CRITICAL.",
        lambda key, value: _choice("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")(
            key, value.upper() if isinstance(value, str) else value
        ),
        hypercorn=True,
    )
    logconfig: str | None = _key(
        None,
        "A logging configuration file: ``.json`` or ``.toml`` (dictConfig) or ``.ini`` "
        "(fileConfig). Applied after the settings above.",
        _optional_str,
        hypercorn=True,
    )
    lifespan: LifespanMode = _key(
        "auto",
        "``auto``: run lifespan if the app supports it; ``on``: the app must support "
        "it; ``off``: never send lifespan events.",
        _choice("auto", "on", "off"),
        hypercorn=False,
    )
    cancel_on_disconnect: DisconnectPolicy = _key(
        "safe",
        "What a client hang-up does to its running request: ``safe`` cancels GET, "
        "HEAD, OPTIONS and TRACE and lets other methods run on (they see "
        "``http.disconnect``); ``always`` cancels every method; ``never`` none.",
        _choice("safe", "always", "never"),
        hypercorn=False,
    )
    ws: WebSocketMode = _key(
        "auto",
        "WebSocket support. ``auto`` (or ``wsproto``, the library it uses) serves "
        "websocket upgrades; ``none`` answers them with 501 and the app never sees a "
        "websocket scope.",
        _choice("auto", "wsproto", "none"),
        hypercorn=False,
    )
    websocket_max_message_size: int = _key(
        16 * 1024 * 1024,
        "Largest websocket message in bytes, counted across its fragments (and after "
        "decompression); a larger one closes the connection with 1009.",
        _positive_int,
        hypercorn=True,
    )
    websocket_ping_interval: float = _key(
        20.0,
        "Seconds between the pings the server sends on an idle websocket to check "
        "that the peer is still there. ``None``: no pings.",
        _seconds,
        hypercorn=True,
    )
    websocket_ping_timeout: float = _key(
        20.0,
        "Seconds the peer has to answer a ping; one that does not is closed with "
        "1011 and the app gets ``websocket.disconnect``.",
        _seconds,
        hypercorn=False,
    )
    websocket_close_timeout: float = _key(
        10.0,
        "Seconds the peer has to answer the server's close frame (the close "
        "handshake) before the connection is dropped.",
        _seconds,
        hypercorn=False,
    )
    websocket_per_message_deflate: bool = _key(
        True,
        "Agree to permessage-deflate compression when a client offers it (see "
        "``docs/websockets.md`` for its memory cost).",
        _bool,
        hypercorn=False,
    )

    def __new__(cls, **keys: Any) -> Config:
        # Runs before the generated __init__, so that a misspelt key is a
        # ConfigError with a suggestion rather than a bare TypeError.
        for key in keys:
            if key not in _FIELD_NAMES:
                raise ConfigError(f"unknown configuration key {key!r}{_suggest(key)}")
        return super().__new__(cls)

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            check = field.metadata["check"]
            object.__setattr__(self, field.name, check(field.name, getattr(self, field.name)))

    def replace(self, **changes: Any) -> Config:
        """Return a copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)


_FIELD_NAMES = frozenset(field.name for field in dataclasses.fields(Config))


#: Hypercorn settings trioserve does not implement: a config file that sets them
#: gets a ConfigWarning naming each, and they are ignored.
HYPERCORN_ONLY_KEYS = frozenset(
    {
        "alpn_protocols",
        "alt_svc_headers",
        "application_path",
        "debug",
        "dogstatsd_tags",
        "group",
        "h11_pass_raw_headers",
        "h2_max_concurrent_streams",
        "h2_max_header_list_size",
        "h2_max_inbound_frame_size",
        "keep_alive_max_requests",
        "logconfig_dict",
        "logger_class",
        "max_app_queue_size",
        "pid_path",
        "quic_bind",
        "server_names",
        "statsd_host",
        "statsd_prefix",
        "use_reloader",
        "user",
        "verify_flags",
        "worker_class",
        "workers",
        "wsgi_max_body_size",
    }
)


def _suggest(key: str) -> str:
    close = difflib.get_close_matches(key, _FIELD_NAMES, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def reference_markdown() -> str:
    """The configuration reference (``docs/config.md``), made from the field table.

    ``tests/test_docs.py`` checks that the committed file equals this output; run
    ``python docs/gen_config.py`` after changing a key.
    """
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated from trioserve.Config by `python docs/gen_config.py`; do not edit. -->",
        "",
        "Every key of `trioserve.Config`, its default and meaning. Timeouts are seconds;",
        "`None` means no limit. Keys marked *Hypercorn* have Hypercorn's name and meaning,",
        "so a Hypercorn setting carries over unchanged.",
        "",
        "| key | default | origin | meaning |",
        "| --- | --- | --- | --- |",
    ]
    for field in dataclasses.fields(Config):
        default = field.default
        if isinstance(default, tuple):
            default = list(default)
        origin = "Hypercorn" if field.metadata["hypercorn"] else "trioserve"
        doc = " ".join(field.metadata["doc"].split()).replace("``", "`")
        lines.append(f"| `{field.name}` | `{default!r}` | {origin} | {doc} |")
    lines += [
        "",
        "## Hypercorn settings trioserve ignores",
        "",
        "A configuration file that sets one of these gets a `ConfigWarning` naming it,",
        "and the setting is ignored:",
        "",
        ", ".join(f"`{key}`" for key in sorted(HYPERCORN_ONLY_KEYS)) + ".",
    ]
    return "\n".join(lines) + "\n"


def config_from_mapping(data: Mapping[str, Any], *, source: str = "config") -> Config:
    """Make a :class:`Config` from ``{key: value}``, Hypercorn-style.

    A key Hypercorn knows but trioserve does not implement gives a
    :class:`~trioserve.ConfigWarning` and is ignored; any other unknown key is a
    :class:`~trioserve.ConfigError` with a did-you-mean hint.
    """
    keys: dict[str, Any] = {}
    for key, value in data.items():
        if key in _FIELD_NAMES:
            keys[key] = value
        elif key in HYPERCORN_ONLY_KEYS:
            warnings.warn(
                f"{source}: Hypercorn setting {key!r} is not supported by trioserve; ignored",
                ConfigWarning,
                stacklevel=2,
            )
        else:
            raise ConfigError(f"{source}: unknown configuration key {key!r}{_suggest(key)}")
    try:
        return Config(**keys)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def _settings_of(obj: object) -> dict[str, Any]:
    # A Python config is the object's lower-case public attributes; imported
    # modules, functions and classes are the file's tools, not settings.
    return {
        name: value
        for name, value in vars(obj).items()
        if not name.startswith("_")
        and name.islower()
        and not isinstance(value, types.ModuleType)
        and not inspect.isroutine(value)
        and not inspect.isclass(value)
        and type(value).__module__ != "__future__"
    }


class _NotFound(Exception):
    pass


def _import(name: str, source: str) -> types.ModuleType:
    """Import ``name``; raise _NotFound only if ``name`` itself does not exist."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (name == exc.name or name.startswith(exc.name + ".")):
            raise _NotFound from None
        raise ConfigError(f"{source}: importing {name!r} failed: {exc}") from None
    except Exception as exc:
        raise ConfigError(f"{source}: {type(exc).__name__}: {exc}") from None


def load_config(source: str) -> Config:
    """Load a configuration the way Hypercorn's ``--config`` does.

    Args:
      source: a TOML file path; ``python:module.attr`` (or ``python:module``), an
          object or module whose attributes are keys; or ``file:path/to/cfg.py``,
          a Python file whose module-level names are keys.

    Raises:
      ConfigError: the source cannot be read, or a key or value is wrong. The
          message is one line naming the source.
    """
    if source.startswith("python:"):
        target = source[len("python:") :]
        module_name, _, attr = target.rpartition(".")
        obj: object
        try:
            obj = _import(target, source)
        except _NotFound:
            if not module_name:
                raise ConfigError(f"{source}: module {target!r} not found") from None
            try:
                module = _import(module_name, source)
            except _NotFound:
                raise ConfigError(f"{source}: module {module_name!r} not found") from None
            try:
                obj = getattr(module, attr)
            except AttributeError:
                raise ConfigError(f"{source}: {module_name!r} has no attribute {attr!r}") from None
        settings = obj if isinstance(obj, Mapping) else _settings_of(obj)
        return config_from_mapping(settings, source=source)
    if source.startswith("file:"):
        path = source[len("file:") :]
        spec = importlib.util.spec_from_file_location("_trioserve_config", path)
        if spec is None or spec.loader is None:
            raise ConfigError(f"{source}: not a Python file")
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except FileNotFoundError:
            raise ConfigError(f"{source}: file not found") from None
        except Exception as exc:
            raise ConfigError(f"{source}: {type(exc).__name__}: {exc}") from None
        return config_from_mapping(_settings_of(module), source=source)
    try:
        with open(source, "rb") as file:
            data = tomllib.load(file)
    except FileNotFoundError:
        raise ConfigError(f"{source}: file not found") from None
    except OSError as exc:
        raise ConfigError(f"{source}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: invalid TOML: {exc}") from None
    return config_from_mapping(data, source=source)
