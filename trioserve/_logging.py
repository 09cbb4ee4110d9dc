"""The error log and the access log.

Both are stdlib loggers, ``trioserve.error`` and ``trioserve.access``, so any
logging configuration can route them. The access log writes one line per response
when the response completes, in a format made of Hypercorn's atoms (which extend
gunicorn's): ``%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s`` is the default, the
common log format.

Everything a client controls (the request line, headers, the user name) is escaped
before it reaches a log line: control characters, quotes and backslashes become
``\\xHH``, ``\\"`` and ``\\\\``, so no client can end a line early, forge a second
one, or send escape sequences to the terminal of whoever reads the log.
"""

from __future__ import annotations

import configparser
import json
import logging
import logging.config
import os
import sys
import time
from collections.abc import Iterable, Mapping
from typing import Any

from ._errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - version-dependent import
    import tomli as tomllib

__all__ = [
    "DEFAULT_ACCESS_LOG_FORMAT",
    "WEBSOCKET_SUFFIX",
    "AccessLogAtoms",
    "AccessLogger",
    "configure_logging",
    "escape",
    "reopen_log_files",
]

DEFAULT_ACCESS_LOG_FORMAT = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s'
#: Added to the access log format for a websocket session: the close codes the
#: server and the client sent (``-`` for none), messages/bytes received and sent,
#: and the session's duration in seconds.
WEBSOCKET_SUFFIX = " websocket close=%(ws_close)s in=%(ws_in)s out=%(ws_out)s time=%(L)s"

access_logger = logging.getLogger("trioserve.access")


def _escape_table() -> dict[int, str]:
    table = {code: f"\\x{code:02x}" for code in range(0x20)}
    table[0x7F] = "\\x7f"
    table.update({code: f"\\x{code:02x}" for code in range(0x80, 0xA0)})  # C1 controls
    table[0x2028] = "\\u2028"  # line and paragraph separators end lines in some viewers
    table[0x2029] = "\\u2029"
    table[ord('"')] = '\\"'
    table[ord("\\")] = "\\\\"
    return table


_ESCAPES = _escape_table()


def escape(value: str | bytes) -> str:
    """``value`` made safe for one log line (bytes are read as Latin-1)."""
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    return value.translate(_ESCAPES)


class AccessLogAtoms(dict[str, str]):
    """The values a format string can use, by atom name.

    ``%({name}i)s``, ``%({name}o)s`` and ``%({name}e)s`` (request header, response
    header, environment variable) are looked up on demand; an unknown atom or a
    missing header gives ``-``.
    """

    def __init__(
        self,
        scope: Mapping[str, Any],
        status: int | None,
        response_headers: Iterable[tuple[bytes, bytes]],
        bytes_sent: int,
        request_time: float,
    ) -> None:
        super().__init__()
        self._request_headers = {
            name.decode("latin-1").lower(): value for name, value in scope.get("headers", ())
        }
        self._response_headers = {
            name.decode("latin-1").lower(): value for name, value in response_headers
        }
        client = scope.get("client")
        method = scope.get("method", "-")
        # The scope's path already starts with root_path (ASGI: path is the full path).
        path = scope.get("path", "")
        query = scope.get("query_string", b"").decode("latin-1")
        path_query = f"{path}?{query}" if query else path
        protocol = f"HTTP/{scope.get('http_version', '1.1')}"
        status_text = "-" if status is None else str(status)
        self.update(
            {
                "h": escape(f"{client[0]}:{client[1]}") if client else "-",
                "l": "-",
                "u": "-",
                "t": time.strftime("[%d/%b/%Y:%H:%M:%S %z]"),
                "r": escape(f"{method} {path_query} {protocol}"),
                "R": escape(f"{method} {path_query} {protocol}"),
                "s": status_text,
                "st": status_text,
                "S": scope.get("scheme", "-"),
                "m": escape(method),
                "U": escape(path),
                "Uq": escape(path_query),
                "q": escape(query),
                "H": protocol,
                "b": str(bytes_sent) if bytes_sent else "-",
                "B": str(bytes_sent),
                "f": self._header(self._request_headers, "referer"),
                "a": self._header(self._request_headers, "user-agent"),
                "T": str(int(request_time)),
                "D": str(int(request_time * 1_000_000)),
                "L": f"{request_time:.6f}",
                "p": f"<{os.getpid()}>",
            }
        )

    @staticmethod
    def _header(headers: Mapping[str, bytes], name: str) -> str:
        value = headers.get(name)
        return "-" if value is None else escape(value)

    def __missing__(self, key: str) -> str:
        if key.startswith("{") and len(key) > 3 and key[-2] == "}":
            name = key[1:-2].lower()
            kind = key[-1]
            if kind == "i":
                return self._header(self._request_headers, name)
            if kind == "o":
                return self._header(self._response_headers, name)
            if kind == "e":
                value = os.environ.get(key[1:-2])
                return "-" if value is None else escape(value)
        return "-"


class AccessLogger:
    """Writes access log lines to the ``trioserve.access`` logger.

    Args:
      log_format: a ``%``-style format over :class:`AccessLogAtoms`.
    """

    def __init__(self, log_format: str = DEFAULT_ACCESS_LOG_FORMAT) -> None:
        self.format = log_format

    def log(
        self,
        scope: Mapping[str, Any],
        status: int | None,
        response_headers: Iterable[tuple[bytes, bytes]],
        bytes_sent: int,
        request_time: float,
    ) -> None:
        """Write the line for one finished request."""
        if not access_logger.isEnabledFor(logging.INFO):
            return
        atoms = AccessLogAtoms(scope, status, response_headers, bytes_sent, request_time)
        access_logger.info(self.format, atoms)

    def log_websocket(
        self,
        scope: Mapping[str, Any],
        status: int | None,
        close_codes: tuple[int | None, int | None],
        received: tuple[int, int],
        sent: tuple[int, int],
        duration: float,
    ) -> None:
        """Write the line for one finished websocket session: the access log
        format, for the upgrade request (``%(s)s`` is 101 once accepted, or the
        status of the refusal; ``%(b)s`` the message bytes sent; the times the
        session's), followed by :data:`WEBSOCKET_SUFFIX`.

        Args:
          close_codes: the close code the server sent and the one the client sent
              (``None`` where no close frame went that way).
          received: messages and bytes from the client.
          sent: messages and bytes to the client.
        """
        if not access_logger.isEnabledFor(logging.INFO):
            return
        atoms = AccessLogAtoms({**scope, "method": "GET"}, status, (), sent[1], duration)
        ours, theirs = close_codes
        atoms["ws_close"] = f"{'-' if ours is None else ours}/{'-' if theirs is None else theirs}"
        atoms["ws_in"] = f"{received[0]}/{received[1]}"
        atoms["ws_out"] = f"{sent[0]}/{sent[1]}"
        access_logger.info(self.format + WEBSOCKET_SUFFIX, atoms)


def configure_logging(
    *,
    loglevel: str = "INFO",
    errorlog: str | None = "-",
    accesslog: str | None = None,
    logconfig: str | None = None,
) -> None:
    """Set up the ``trioserve.error`` and ``trioserve.access`` loggers for the CLI.

    ``-`` means stderr (error log) or stdout (access log); another string is a file
    path, appended to; ``None`` turns that log off. ``logconfig`` then applies a
    logging configuration file: ``.json``/``json:`` or ``.toml``/``toml:`` as a
    :func:`logging.config.dictConfig` dict, anything else (``.ini``) with
    :func:`logging.config.fileConfig`.

    Embedding code that calls :func:`trioserve.serve` configures logging itself;
    trioserve does not touch the root logger.

    Raises:
      ConfigError: the log config file cannot be read or is invalid.
    """
    formatter = logging.Formatter("[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s")
    error = logging.getLogger("trioserve.error")
    error.setLevel(loglevel)
    error.propagate = False
    error.handlers.clear()
    if errorlog is not None:
        handler: logging.Handler = (
            logging.StreamHandler(sys.stderr) if errorlog == "-" else _LogFileHandler(errorlog)
        )
        handler.setFormatter(formatter)
        error.addHandler(handler)
    else:
        error.addHandler(logging.NullHandler())
    access = logging.getLogger("trioserve.access")
    access.setLevel(logging.INFO)
    access.propagate = False
    access.handlers.clear()
    if accesslog is not None:
        access.addHandler(
            logging.StreamHandler(sys.stdout) if accesslog == "-" else _LogFileHandler(accesslog)
        )
    else:
        access.addHandler(logging.NullHandler())
    if logconfig is not None:
        _apply_logconfig(logconfig)


class _LogFileHandler(logging.FileHandler):
    """A log file that can be reopened at its path, for log rotation."""

    def reopen(self) -> None:
        """Close the file and open the path again (a rotated file was renamed away)."""
        self.acquire()
        try:
            old = self.stream
            self.stream = self._open()
            if old is not None:
                old.close()
        finally:
            self.release()


def reopen_log_files() -> None:
    """Reopen the error and access log files that :func:`configure_logging` opened
    (what SIGUSR1 does): after a log rotation renamed them, new lines go to new
    files at the configured paths. Handlers a ``logconfig`` file set up are left
    alone (``logging.handlers.WatchedFileHandler`` follows renames by itself).
    """
    for name in ("trioserve.error", "trioserve.access"):
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, _LogFileHandler):
                handler.reopen()


def _apply_logconfig(spec: str) -> None:
    kind, _, path = spec.partition(":")
    if kind not in ("json", "toml", "ini") or not path:
        path = spec
        kind = os.path.splitext(spec)[1].lstrip(".").lower()
    try:
        if kind in ("json", "toml"):
            with open(path, "rb") as file:
                data = json.load(file) if kind == "json" else tomllib.load(file)
            # As for .ini files: a config that does not say so must not silence the
            # loggers set up above (dictConfig's default would disable them).
            data.setdefault("disable_existing_loggers", False)
            logging.config.dictConfig(data)
        else:
            if not os.path.exists(path):
                raise FileNotFoundError(path)
            logging.config.fileConfig(path, disable_existing_loggers=False)
    except FileNotFoundError:
        raise ConfigError(f"logconfig {spec!r}: file not found") from None
    except (
        ValueError,
        TypeError,
        KeyError,
        AttributeError,
        ImportError,
        OSError,
        RuntimeError,
        configparser.Error,
    ) as exc:
        # json/toml decode errors are ValueErrors; dictConfig and fileConfig raise
        # the rest for bad contents (fileConfig: RuntimeError, configparser errors).
        message = " ".join(str(exc).split())
        raise ConfigError(f"logconfig {spec!r}: {type(exc).__name__}: {message}") from None
