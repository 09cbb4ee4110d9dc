"""The error log and the access log.

Both are stdlib loggers, ``trioserve.error`` and ``trioserve.access``, so any
logging configuration can route them. The access log writes one line per response
when the response completes (and one per request the server refused), in a format
made of Hypercorn's atoms (which extend gunicorn's); the default is shaped like
uvicorn's line. ``docs/logging.md`` lists the atoms.

Everything a client controls (the request line, headers, the user name) is escaped
before it reaches a log line: control characters, quotes and backslashes become
``\\xHH``, ``\\"`` and ``\\\\``, so no client can end a line early, forge a second
one, or send escape sequences to the terminal of whoever reads the log.
"""

from __future__ import annotations

import configparser
import http
import io
import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar

from ._errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - version-dependent import
    import tomli as tomllib

__all__ = [
    "COMMON_LOG_FORMAT",
    "DEFAULT_ACCESS_LOG_FORMAT",
    "WEBSOCKET_SUFFIX",
    "AccessLogAtoms",
    "AccessLogger",
    "access_log_format_problem",
    "check_access_log_format",
    "configure_logging",
    "escape",
    "reopen_log_files",
]

#: The default access log line, shaped like uvicorn's: client address, request
#: line, status and its phrase (``127.0.0.1:50312 - "GET / HTTP/1.1" 200 OK``).
DEFAULT_ACCESS_LOG_FORMAT = '%(h)s - "%(r)s" %(s)s %(st)s'
#: The common log format (Apache's, gunicorn's default), for log analysers.
COMMON_LOG_FORMAT = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s'
#: Added to the access log format for a websocket session: the close codes the
#: server and the client sent (``-`` for none), messages/bytes received and sent,
#: and the session's duration in seconds.
WEBSOCKET_SUFFIX = " websocket close=%(ws_close)s in=%(ws_in)s out=%(ws_out)s time=%(L)s"

access_logger = logging.getLogger("trioserve.access")
error_logger = logging.getLogger("trioserve.error")


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
    # Most values are plain printable ASCII: four checks in C instead of a
    # translation character by character.
    if value.isascii() and value.isprintable() and '"' not in value and "\\" not in value:
        return value
    return value.translate(_ESCAPES)


_REASONS = {status.value: status.phrase for status in http.HTTPStatus}
_CLF_TIME = "[%d/%b/%Y:%H:%M:%S %z]"
# The formatted local time of the current second: every line of a second shares it.
_clock: list[Any] = [-1, ""]


def _log_time() -> str:
    now = int(time.time())
    clock = _clock
    if clock[0] != now:
        clock[1] = time.strftime(_CLF_TIME, time.localtime(now))
        clock[0] = now
    return str(clock[1])


def _request_header(scope: Mapping[str, Any], name: bytes) -> str:
    # ASGI header names are lower-case; a linear scan beats building a dict for
    # the one or two fields a format asks for.
    for field, value in scope.get("headers", ()):
        if field == name:
            return escape(value)
    return "-"


def _pid_atom(atoms: AccessLogAtoms) -> str:
    return f"<{os.getpid()}>"


def _time_atom(atoms: AccessLogAtoms) -> str:
    return _log_time()


class AccessLogAtoms(dict[str, str]):
    """The values a format string can use, by atom name (see ``docs/logging.md``).

    Each atom is worked out when a format first asks for it, and kept: a line pays
    only for the atoms its format uses. ``%({name}i)s``, ``%({name}o)s`` and
    ``%({name}e)s`` (request header, response header, environment variable) work
    the same way; an unknown atom or a missing header gives ``-``.

    Args:
      scope: the request's ASGI scope; for a request the server refused before
          its head was parsed, what is known of the connection (no ``method``).
      status: the status sent, or ``None``.
      response_headers: the header fields sent.
      bytes_sent: body bytes sent.
      request_time: seconds from the start of the request to its end.
    """

    __slots__ = ("_bytes", "_response_fields", "_response_headers", "_scope", "_status", "_time")

    def __init__(
        self,
        scope: Mapping[str, Any],
        status: int | None,
        response_headers: Iterable[tuple[bytes, bytes]],
        bytes_sent: int,
        request_time: float,
    ) -> None:
        # (dict.__new__ made the mapping; there is nothing to pass to __init__.)
        self._scope = scope
        self._status = status
        self._response_fields = response_headers
        self._response_headers: dict[bytes, bytes] | None = None
        self._bytes = bytes_sent
        self._time = request_time
        # Never empty: logging takes a lone non-empty mapping as the format's.
        self["l"] = "-"

    def __missing__(self, key: str) -> str:
        atom = self._BY_NAME.get(key)
        if atom is not None:
            value = atom(self)
        elif key.startswith("{") and len(key) > 3 and key[-2] == "}":
            value = self._field(key[1:-2], key[-1])
        else:
            return "-"
        self[key] = value
        return value

    def _field(self, name: str, kind: str) -> str:
        if kind == "i":
            return _request_header(self._scope, name.lower().encode("latin-1"))
        if kind == "o":
            headers = self._response_headers
            if headers is None:
                headers = self._response_headers = {
                    field.lower(): value for field, value in self._response_fields
                }
            value = headers.get(name.lower().encode("latin-1"))
            return "-" if value is None else escape(value)
        if kind == "e":
            variable = os.environ.get(name)
            return "-" if variable is None else escape(variable)
        return "-"

    # -- the atoms, by name (see _BY_NAME) ---------------------------------------------

    def _client(self) -> str:
        client = self._scope.get("client")
        return escape(f"{client[0]}:{client[1]}") if client else "-"

    def _method(self) -> str:
        method = self._scope.get("method")
        return "-" if method is None else escape(method)

    def _path(self) -> str:
        # The scope's path already starts with root_path (ASGI: path is the full path).
        path = self._scope.get("path")
        return "-" if path is None else escape(path)

    def _query(self) -> str:
        return escape(self._scope.get("query_string", b""))

    def _path_query(self) -> str:
        path = self["U"]
        query = self["q"]
        return f"{path}?{query}" if query else path

    def _protocol(self) -> str:
        version = self._scope.get("http_version")
        return "-" if version is None else f"HTTP/{version}"

    def _request_line(self) -> str:
        scope = self._scope
        method = scope.get("method")
        if method is None:
            return "-"  # refused before its request line was parsed
        query = scope.get("query_string")
        path = scope["path"]
        target = f"{path}?{query.decode('latin-1')}" if query else path
        return escape(f"{method} {target} HTTP/{scope.get('http_version', '1.1')}")

    def _status_code(self) -> str:
        return "-" if self._status is None else str(self._status)

    def _status_phrase(self) -> str:
        if self._status is None:
            return "-"
        return _REASONS.get(self._status, "-")

    def _scheme(self) -> str:
        return str(self._scope.get("scheme", "-"))

    def _clf_bytes(self) -> str:
        return str(self._bytes) if self._bytes else "-"

    def _bytes_count(self) -> str:
        return str(self._bytes)

    def _referer(self) -> str:
        return _request_header(self._scope, b"referer")

    def _user_agent(self) -> str:
        return _request_header(self._scope, b"user-agent")

    def _seconds(self) -> str:
        return str(int(self._time))

    def _milliseconds(self) -> str:
        return str(int(self._time * 1_000))

    def _microseconds(self) -> str:
        return str(int(self._time * 1_000_000))

    def _decimal_seconds(self) -> str:
        return f"{self._time:.6f}"

    def _dash(self) -> str:
        return "-"

    #: Each atom's method, by name.
    _BY_NAME: ClassVar[dict[str, Callable[[AccessLogAtoms], str]]] = {
        "h": _client,
        "l": _dash,
        "u": _dash,
        "t": _time_atom,
        "r": _request_line,
        "R": _request_line,
        "s": _status_code,
        "st": _status_phrase,
        "S": _scheme,
        "m": _method,
        "U": _path,
        "q": _query,
        "Uq": _path_query,
        "H": _protocol,
        "b": _clf_bytes,
        "B": _bytes_count,
        "f": _referer,
        "a": _user_agent,
        "T": _seconds,
        "M": _milliseconds,
        "D": _microseconds,
        "L": _decimal_seconds,
        "p": _pid_atom,
    }


#: One ``%`` conversion: ``%%``, or an optional ``(name)``, flags, width,
#: precision and the conversion character (absent at the end of the format).
_CONVERSION = re.compile(
    r"%(?:%|(?:\((?P<key>[^)]*)(?P<close>\)?))?[#0\- +]*(?P<width>\*|\d+)?"
    r"(?:\.(?:\*|\d+))?[hlL]?(?P<type>.?))",
    re.S,
)


class _TextAtoms(dict[str, str]):
    """Answers every atom with text, as the real atoms do: two characters, as
    most real values are more than one (``%(s)c`` fails on ``200``). A conversion
    without an atom name (``%s``) formats the mapping itself: that raises."""

    def __missing__(self, key: str) -> str:
        return "--"

    def __str__(self) -> str:
        raise _NoAtomName

    __repr__ = __str__


class _NoAtomName(Exception):
    pass


def access_log_format_problem(log_format: str) -> str | None:
    """Why ``log_format`` cannot make access log lines (every atom is text), or
    ``None`` when it can."""
    for match in _CONVERSION.finditer(log_format):
        text, key, kind = match.group(0), match.group("key"), match.group("type")
        if text == "%%":
            continue
        if key is not None and not match.group("close"):
            return f"{text!r} has no closing ')': write atoms as %({key})s"
        if not kind:
            return "it ends with a lone '%': write %% for a literal %"
        if key is None:
            return f"{text!r} has no atom name: write %% for a literal %, %(name)s for an atom"
        if match.group("width") == "*":
            return f"{text!r}: '*' needs a number argument; write the width out"
        if kind in "diouxXeEfFgGc":
            spelled = text[:-1] + "s"
            return f"atoms are text: write {spelled}, not {text}"
        if kind not in "sra":
            return f"{text!r} is not a conversion: write %% for a literal %"
    try:
        # Formatted only to see that it can be: what the scan above does not know.
        log_format % _TextAtoms(l="-")
    except _NoAtomName:
        return "a conversion has no atom name: write %% for a literal %, %(name)s for an atom"
    except (TypeError, ValueError, KeyError) as exc:
        return str(exc)
    return None


def check_access_log_format(key: str, value: object) -> str:
    """The validator of the ``access_log_format`` key: a string that can make
    access log lines.

    Raises:
      ConfigError: naming ``key``, the format and what is wrong with it.
    """
    if not isinstance(value, str):
        raise ConfigError(f"{key} must be a string, got {value!r} ({type(value).__name__})")
    problem = access_log_format_problem(value)
    if problem is not None:
        raise ConfigError(f"{key} {value!r}: {problem}")
    return value


class AccessLogger:
    """Writes access log lines to the ``trioserve.access`` logger.

    A line is a :class:`logging.LogRecord` at INFO whose ``msg`` is the format and
    whose ``args`` are the :class:`AccessLogAtoms`, so handlers, formatters and
    filters of any logging configuration see it like any other record.

    Args:
      log_format: a ``%``-style format over :class:`AccessLogAtoms`.
    """

    def __init__(self, log_format: str = DEFAULT_ACCESS_LOG_FORMAT) -> None:
        self._reported = False
        self._problem: str | None = None
        self._format = ""
        self.format = log_format

    @property
    def format(self) -> str:
        """The format; one that cannot make lines (see :func:`check_access_log_format`)
        writes none, and says so once in the error log."""
        return self._format

    @format.setter
    def format(self, log_format: str) -> None:
        self._format = log_format
        self._problem = access_log_format_problem(log_format)

    def _report(self, problem: str) -> None:
        # A line that cannot be written must not fail the request it describes, nor
        # fill the error log: one line says why, then lines are dropped quietly.
        if not self._reported:
            self._reported = True
            error_logger.error(
                "Access log lines cannot be written (format %r): %s; "
                "further failures are not reported",
                self._format,
                problem,
            )

    def log(
        self,
        scope: Mapping[str, Any],
        status: int | None,
        response_headers: Iterable[tuple[bytes, bytes]],
        bytes_sent: int,
        request_time: float,
    ) -> None:
        """Write the line for one finished request (or one the server refused)."""
        logger = access_logger
        if not logger.isEnabledFor(logging.INFO):
            return
        if self._problem is not None:
            self._report(self._problem)
            return
        log_format = self._format
        try:
            atoms = AccessLogAtoms(scope, status, response_headers, bytes_sent, request_time)
            if _write_direct(logger, log_format, atoms):
                return
            # Made here rather than by logger.info(), which would first walk the
            # stack to find the caller's file and line: nothing an access line shows.
            record = logger.makeRecord(_ACCESS, logging.INFO, "", 0, log_format, (atoms,), None)
            logger.handle(record)
        except Exception as exc:
            self._report(f"{type(exc).__name__}: {exc}")

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
        logger = access_logger
        if not logger.isEnabledFor(logging.INFO):
            return
        if self._problem is not None:
            self._report(self._problem)
            return
        log_format = self._format + WEBSOCKET_SUFFIX
        try:
            atoms = AccessLogAtoms({**scope, "method": "GET"}, status, (), sent[1], duration)
            ours, theirs = close_codes
            atoms["ws_close"] = (
                f"{'-' if ours is None else ours}/{'-' if theirs is None else theirs}"
            )
            atoms["ws_in"] = f"{received[0]}/{received[1]}"
            atoms["ws_out"] = f"{sent[0]}/{sent[1]}"
            record = logger.makeRecord(_ACCESS, logging.INFO, "", 0, log_format, (atoms,), None)
            logger.handle(record)
        except Exception as exc:
            self._report(f"{type(exc).__name__}: {exc}")


_ACCESS = access_logger.name


def _write_direct(logger: logging.Logger, log_format: str, atoms: AccessLogAtoms) -> bool:
    """Write the line straight to the stream of the handler the command line set
    up, when nothing else could see the record: it is the logger's only handler,
    with the plain formatter, and no filter, other handler or propagation is
    configured. What a log record costs (the record, the filters, the formatter)
    is then most of a request's logging, for nothing. Return whether it wrote."""
    handlers = logger.handlers
    if len(handlers) != 1:
        return False
    handler = handlers[0]
    if (
        not isinstance(handler, (_AccessStreamHandler, _LogFileHandler))
        or logger.filters
        or logger.propagate
        or handler.filters
        or handler.formatter is not None
        or handler.level > logging.INFO
    ):
        return False
    line = log_format % atoms + "\n"
    handler.acquire()
    try:
        stream = handler.stream
        if stream is None:  # a file handler closed at exit
            return False
        stream.write(line)
        stream.flush()
    except Exception:  # a closed or failing stream: the record path reports it
        return False
    finally:
        handler.release()
    return True


def configure_logging(
    *,
    loglevel: str = "INFO",
    errorlog: str | None = "-",
    accesslog: str | None = None,
    logconfig: str | None = None,
    announce: bool = True,
) -> None:
    """Set up the ``trioserve.error`` and ``trioserve.access`` loggers for the CLI.

    ``-`` means stderr (error log) or stdout (access log); another string is a file
    path, appended to; ``None`` turns that log off. ``logconfig`` then applies a
    logging configuration file: ``.json``/``json:`` or ``.toml``/``toml:`` as a
    :func:`logging.config.dictConfig` dict, anything else (``.ini``) with
    :func:`logging.config.fileConfig`. With ``announce``, a logging configuration
    written for uvicorn's or Hypercorn's loggers gets a warning (a worker or a
    reloaded server process leaves that to the command that started it).

    Embedding code that calls :func:`trioserve.serve` configures logging itself;
    trioserve does not touch the root logger.

    Raises:
      ConfigError: the log config file cannot be read or is invalid.
    """
    # A line holds what clients sent (a path, a header): a character the terminal's
    # encoding lacks is written escaped, never as a logging error.
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")
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
            _AccessStreamHandler(sys.stdout) if accesslog == "-" else _LogFileHandler(accesslog)
        )
    else:
        access.addHandler(logging.NullHandler())
    if logconfig is not None:
        _apply_logconfig(logconfig, announce)


class _AccessStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The access log on stdout, as the command line sets it up (the access
    logger writes straight to it while it is the only handler)."""


class _LogFileHandler(logging.FileHandler):
    """A log file that can be reopened at its path, for log rotation; lines are
    UTF-8, with anything that cannot be encoded escaped."""

    def __init__(self, path: str) -> None:
        super().__init__(path, encoding="utf-8", errors="backslashreplace")

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


def _apply_logconfig(spec: str, announce: bool) -> None:
    # Imported here: logging.config imports the socket module, which the sans-IO
    # layer's users must not get from importing trioserve's configuration.
    import logging.config

    kind, _, path = spec.partition(":")
    if kind not in ("json", "toml", "ini", "yaml") or not path:
        path = spec
        kind = os.path.splitext(spec)[1].lstrip(".").lower()
    if kind in ("yaml", "yml"):
        raise ConfigError(
            f"logconfig {spec!r}: YAML is not supported; use JSON (.json), TOML (.toml) or INI"
        )
    try:
        if kind in ("json", "toml"):
            with open(path, "rb") as file:
                data = json.load(file) if kind == "json" else tomllib.load(file)
            # As for .ini files: a config that does not say so must not silence the
            # loggers set up above (dictConfig's default would disable them).
            data.setdefault("disable_existing_loggers", False)
            names = list(data.get("loggers") or ())
            logging.config.dictConfig(data)
        else:
            if not os.path.exists(path):
                raise FileNotFoundError(path)
            names = _ini_logger_names(path)
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
        raise ConfigError(f"logconfig {spec!r}: {_with_causes(exc)}") from None
    if announce:
        _warn_other_servers_loggers(spec, names)


def _with_causes(exc: BaseException) -> str:
    """``exc`` and what caused it, on one line: dictConfig's own message
    (``Unable to configure formatter 'default'``) names the part but not why."""
    parts = [f"{type(exc).__name__}: {exc}"]
    cause = exc.__cause__
    while cause is not None and len(parts) < 4:
        text = str(cause)
        if text and text not in parts[-1]:
            parts.append(text)
        cause = cause.__cause__
    return " ".join(": ".join(parts).split())


def _ini_logger_names(path: str) -> list[str]:
    """The loggers an INI logging config names (its ``qualname`` entries)."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(path, encoding="utf-8")
        keys = parser.get("loggers", "keys", fallback="")
        names = [
            parser.get(f"logger_{key.strip()}", "qualname", fallback="") for key in keys.split(",")
        ]
    except (configparser.Error, UnicodeDecodeError):
        return []  # fileConfig reports what is wrong with the file
    return [name for name in names if name]


def _warn_other_servers_loggers(spec: str, names: list[str]) -> None:
    """A config written for uvicorn or Hypercorn names their loggers: say once
    which loggers trioserve logs to, since nothing of it reaches them."""
    theirs = [name for name in names if name.split(".")[0] in ("uvicorn", "hypercorn")]
    ours = [name for name in names if name.split(".")[0] == "trioserve"]
    if not theirs or ours:
        return
    error_logger.warning(
        "logconfig %r configures another server's loggers (%s) and none of trioserve's: "
        "trioserve logs to 'trioserve.error' and 'trioserve.access', where %s has "
        "'%s.error' and '%s.access'; see docs/logging.md",
        spec,
        ", ".join(repr(name) for name in theirs),
        *[theirs[0].split(".")[0]] * 3,
    )
