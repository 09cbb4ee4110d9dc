"""``Config``: every setting trioserve has, validated once, then frozen.

Each key is a dataclass field whose metadata carries its documentation and its
validator, so the reference documentation and the error messages come from the
same table and cannot drift apart. Key names follow Hypercorn's wherever Hypercorn
has the same setting, so that a Hypercorn configuration keeps its meaning.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
from collections.abc import Callable, Iterable
from typing import Any, Literal

from ._binds import FdBind, parse_bind
from ._errors import ConfigError
from ._logging import DEFAULT_ACCESS_LOG_FORMAT, check_access_log_format
from .protocol._proxy import TrustedProxies

__all__ = ["Config", "suggest_key"]

LifespanMode = Literal["auto", "on", "off"]
DisconnectPolicy = Literal["safe", "always", "never"]
WebSocketMode = Literal["auto", "wsproto", "none"]
ProxyHeadersMode = Literal["x-forwarded", "forwarded"]
ProxyProtocolMode = Literal["off", "v1", "v2", "auto"]


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
    item: object = value
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
        raise ConfigError(f"{key} must be a list of 'name:value' strings, got {item!r}") from None
    for name, _ in pairs:
        if name in _SERVER_OWNED_HEADERS:
            raise ConfigError(f"{key}: {name!r} is set by the server for each response; drop it")
    return tuple(pairs)


#: Framing and connection fields: the server decides them for each response.
_SERVER_OWNED_HEADERS = frozenset(
    {"connection", "content-length", "transfer-encoding", "keep-alive", "upgrade", "te", "trailer"}
)


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


def _forwarded_allow_ips(key: str, value: object) -> tuple[str, ...]:
    source = key
    if value is None:
        value = os.environ.get("FORWARDED_ALLOW_IPS")
        if value is None:
            value = "127.0.0.1"
        else:
            source = "FORWARDED_ALLOW_IPS"
    items: Iterable[object] = value.split(",") if isinstance(value, str) else value  # type: ignore[assignment]
    try:
        entries = tuple(items)
    except TypeError:
        raise ConfigError(
            f"{source} must be a list or a comma-separated string, got {_describe(value)}"
        ) from None
    strings = [entry for entry in entries if isinstance(entry, str)]
    if len(strings) != len(entries):
        raise ConfigError(f"{source} must be a list of strings, got {value!r}")
    stripped = tuple(entry.strip() for entry in strings if entry.strip())
    try:
        TrustedProxies(stripped)
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return stripped


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


def _strings(key: str, value: object) -> tuple[str, ...]:
    """A list of non-empty strings; a single string is a list of one."""
    items: Iterable[object] = [value] if isinstance(value, str) else value  # type: ignore[assignment]
    try:
        strings = tuple(items)
    except TypeError:
        raise ConfigError(f"{key} must be a list of strings, got {_describe(value)}") from None
    if not all(isinstance(s, str) and s for s in strings):
        raise ConfigError(f"{key} must be a list of non-empty strings, got {value!r}")
    return strings  # type: ignore[return-value]


def _non_negative_seconds(key: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
        raise ConfigError(f"{key} must be a number of seconds >= 0, got {_describe(value)}")
    return float(value)


def _key(default: Any, doc: str, check: Callable[[str, Any], Any], *, hypercorn: bool) -> Any:
    return dataclasses.field(
        default=default, metadata={"doc": doc, "check": check, "hypercorn": hypercorn}
    )


# The keys are declared in sections, each a dataclass extending the one before, so
# that the order of the fields (and of the reference page) is the order written
# here. Config, at the end, adds the checks and the constructor.


@dataclasses.dataclass(frozen=True, kw_only=True)
class _ServingKeys:
    """Keys of listening and serving connections: binds, timeouts and limits."""

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
        "defence); on expiry the client gets 408 and the connection closes. With "
        "``proxy_protocol`` on, also the time a new connection has for its PROXY "
        "header, or its first bytes (instead of ``keep_alive_timeout``).",
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


@dataclasses.dataclass(frozen=True, kw_only=True)
class _DeploymentKeys(_ServingKeys):
    """Keys of how the server is deployed: worker processes, the mount point, proxies and added headers."""

    workers: int = _key(
        1,
        "Number of worker processes. With more than 1, a supervisor binds every address "
        "once and runs this many workers that share the sockets; it replaces a worker "
        "that dies and restarts them all on SIGHUP (``docs/workers.md``). The command "
        "line takes ``WEB_CONCURRENCY`` as the default.",
        _positive_int,
        hypercorn=True,
    )
    worker_healthcheck_timeout: float = _key(
        30.0,
        "Seconds a worker may go without a heartbeat (its event loop blocked, e.g. by "
        "a blocking call in an async handler) before the supervisor kills and replaces "
        "it. ``None``: no health check.",
        _seconds,
        hypercorn=False,
    )
    worker_max_rss: int | None = _key(
        None,
        "Resident memory in MiB above which a worker is replaced gracefully (a new "
        "worker starts first, then the old one finishes its requests). Linux only. "
        "``None``: no limit.",
        _optional_positive_int,
        hypercorn=False,
    )
    root_path: str = _key(
        "",
        "The ASGI ``root_path``: the prefix under which the app is mounted, "
        "prepended to ``path`` and ``raw_path``.",
        _root_path,
        hypercorn=True,
    )
    proxy_headers: bool = _key(
        True,
        "Believe the forwarding headers of ``proxy_headers_mode`` from peers in "
        "``forwarded_allow_ips``: they set the scope's ``client`` and ``scheme`` and "
        "the ``host`` header the app sees (``docs/proxies.md``).",
        _bool,
        hypercorn=False,
    )
    forwarded_allow_ips: tuple[str, ...] = _key(
        None,
        "The trusted proxies: IP addresses, networks (``10.0.0.0/8``), ``unix`` (peers "
        "on a Unix socket) and ``*`` (everyone), as a list or a comma-separated "
        "string. ``None``: the ``FORWARDED_ALLOW_IPS`` environment variable if it is "
        "set, else ``127.0.0.1``; the value is resolved when the configuration is made.",
        _forwarded_allow_ips,
        hypercorn=False,
    )
    proxy_headers_mode: ProxyHeadersMode = _key(
        "x-forwarded",
        "Which family of forwarding headers is read: ``x-forwarded`` "
        "(``X-Forwarded-For``, ``-Proto``, and with ``forwarded_host`` ``-Host`` and "
        "``-Port``) or ``forwarded`` "
        "(RFC 7239 ``Forwarded``). Never both: the other family could come from the "
        "client, passed on untouched by a proxy that only rewrites this one.",
        _choice("x-forwarded", "forwarded"),
        hypercorn=False,
    )
    forwarded_host: bool = _key(
        False,
        "In ``x-forwarded`` mode, also believe ``X-Forwarded-Host`` and "
        "``X-Forwarded-Port`` from trusted peers: they replace the ``host`` header. "
        "Turn it on only when the proxy sets or clears both, since one that sets "
        "just ``X-Forwarded-For`` and ``-Proto`` passes a client's copies on. "
        "(``Forwarded``'s ``host=`` is applied in ``forwarded`` mode regardless: it "
        "is part of the element the proxy appends.)",
        _bool,
        hypercorn=False,
    )
    proxy_protocol: ProxyProtocolMode = _key(
        "off",
        "The PROXY protocol (HAProxy, cloud load balancers): ``v1`` or ``v2``: a "
        "trusted peer must begin every connection with that header; ``auto``: either "
        "version, or none; ``off``: not read. A PROXY header from a peer not in "
        "``forwarded_allow_ips`` closes the connection (unless ``off``).",
        _choice("off", "v1", "v2", "auto"),
        hypercorn=False,
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
        "``['x-served-by:web-1']``. Fields of framing and the connection "
        "(``connection``, ``content-length``, ``transfer-encoding``...) are refused.",
        _headers,
        hypercorn=False,
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class _TLSAndLoggingKeys(_DeploymentKeys):
    """Keys of TLS, socket files and logging."""

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
        "(e.g. ``0o007``: owner and group only). ``None``: the socket file is made "
        "0o666, so a proxy running as another local user can connect; restrict "
        "access with the directory's permissions or set this.",
        _umask,
        hypercorn=True,
    )
    accesslog: str | None = _key(
        None,
        "Where the access log goes: a file path, ``-`` for stdout, ``None`` or ``''`` "
        "for off. Off by default under ``serve()``; the ``trioserve`` command's default "
        "is ``-`` (see its ``--access-log/--no-access-log``).",
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
        DEFAULT_ACCESS_LOG_FORMAT,
        "Access log line format over Hypercorn's atoms, all text: %(s)s (docs/logging.md).",
        check_access_log_format,
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


@dataclasses.dataclass(frozen=True, kw_only=True)
class _ProtocolKeys(_TLSAndLoggingKeys):
    """Keys of the app protocol: lifespan, hang-ups and websockets."""

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


@dataclasses.dataclass(frozen=True, kw_only=True)
class _DevelopmentKeys(_ProtocolKeys):
    """Keys of development use: reloading on changes."""

    reload: bool = _key(
        False,
        "Development: restart the server when a watched file changes (the command line "
        "only; needs watchfiles: the ``reload`` extra). See ``docs/reload.md``.",
        _bool,
        hypercorn=False,
    )
    reload_dirs: tuple[str, ...] = _key(
        (),
        "Directories watched for ``reload`` (and their subdirectories). Empty: the "
        "current directory.",
        _strings,
        hypercorn=False,
    )
    reload_includes: tuple[str, ...] = _key(
        (),
        "Glob patterns of files whose change restarts the server, besides the built-in "
        "``*.py``; a pattern is matched against the end of the file's path.",
        _strings,
        hypercorn=False,
    )
    reload_excludes: tuple[str, ...] = _key(
        (),
        "Glob patterns of files and directories whose changes never restart the server, "
        "besides the built-in ``.*``, ``*.py[cod]``, ``*~``, ``~*`` and ``__pycache__``. "
        "Naming a built-in pattern in ``reload_includes`` (or ``*.py`` here) turns it off.",
        _strings,
        hypercorn=False,
    )
    reload_delay: float = _key(
        0.25,
        "Seconds without further changes before ``reload`` restarts the server, so "
        "that saving several files restarts it once.",
        _non_negative_seconds,
        hypercorn=False,
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config(_DevelopmentKeys):
    """Every setting of a trioserve server, validated when the object is made.

    ``Config()`` gives the documented defaults; pass keys as keyword arguments to
    change them. A wrong type or value raises :class:`~trioserve.ConfigError` naming
    the key. The object is frozen: derive a changed copy with :meth:`replace`.

    Timeouts are seconds; ``None`` means "no limit" and is stored as ``math.inf``.
    """

    def __new__(cls, **keys: Any) -> Config:
        # Runs before the generated __init__, so that a misspelt key is a
        # ConfigError with a suggestion rather than a bare TypeError.
        for key in keys:
            if key not in _FIELD_NAMES:
                raise ConfigError(f"unknown configuration key {key!r}{suggest_key(key)}")
        return super().__new__(cls)

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            check = field.metadata["check"]
            object.__setattr__(self, field.name, check(field.name, getattr(self, field.name)))
        _check_fds_bound_once(self.bind, self.insecure_bind)

    def replace(self, **changes: Any) -> Config:
        """Return a copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)


def _check_fds_bound_once(bind: tuple[str, ...], insecure_bind: tuple[str, ...]) -> None:
    # One descriptor is one socket: served twice, two accept loops would wait on it
    # at once (trio refuses that) and the first to close it would pull it from
    # under the other.
    seen: set[int] = set()
    for address in (*bind, *insecure_bind):
        spec = parse_bind(address)
        if isinstance(spec, FdBind):
            if spec.fd in seen:
                raise ConfigError(
                    f"fd://{spec.fd} is given more than once in bind and insecure_bind; "
                    "a socket can be served only once"
                )
            seen.add(spec.fd)


_FIELD_NAMES = frozenset(field.name for field in dataclasses.fields(Config))


def suggest_key(key: str) -> str:
    """`` (did you mean 'x'?)`` for the configuration key nearest to ``key``, or ``""``."""
    close = difflib.get_close_matches(key, _FIELD_NAMES, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
