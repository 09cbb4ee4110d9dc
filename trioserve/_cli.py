"""``trioserve APP``: the command line.

Flags are made from one table, one per :class:`Config` key, and each flag's
parameter *is* the key's name; the help text comes from the key's own doc. Each
option is read from one environment variable, ``TRIOSERVE_`` and its long flag
name (``--keep-alive-timeout`` reads ``TRIOSERVE_KEEP_ALIVE_TIMEOUT``, see
``_usage.py``).

Precedence: flag > environment > ``--config`` file > defaults. Every flag defaults
to ``None`` (unset), so only what the user gave overrides the file. The access log
is the one default of the command that differs from :class:`Config`'s: it is on,
on stdout, unless a flag, a variable or the file says otherwise.

Exit codes: 0 after a clean shutdown; 2 for a usage or configuration error; 3 when
the app cannot be loaded, lifespan startup fails, or a bind fails. Each error is one
line on stderr, never a traceback.
"""

from __future__ import annotations

import dataclasses
import gc
import ipaddress
import logging
import os
import sys
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import click

from ._compat import HELP_LINE, SOURCES, CompatCommand
from ._config import Config
from ._config_sources import load_config
from ._errors import AppLoadError, BindError, ConfigError, LifespanFailure
from ._usage import ENV_LINE, access_log_target, as_given, envvar_for

if sys.version_info < (3, 11):  # pragma: no cover - version-dependent import
    from exceptiongroup import BaseExceptionGroup

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from ._systemd import Notifier
    from ._types import ASGIApp

    #: Serves a loaded app under ``trio.run``: ``runner(app, config, notifier)``.
    Runner = Callable[[ASGIApp, Config, Notifier | None], Awaitable[int | None]]

__all__ = ["cli", "cli_markdown", "main", "run_app"]

_DOCS = {
    field.name: " ".join(field.metadata["doc"].replace("``", "").split())
    for field in dataclasses.fields(Config)
}


class _HeaderLines(click.types.StringParamType):
    """``NAME:VALUE`` strings; in ``TRIOSERVE_HEADER``, one a line, since a header
    value may hold spaces and commas but never a line break."""

    name = "text"
    envvar_list_splitter = "\n"

    def split_envvar_value(self, rv: str) -> Sequence[str]:
        return [line.strip() for line in rv.splitlines() if line.strip()]


# (group, flag declarations, Config key, click type, extra option settings)
_OPTIONS: list[tuple[str, tuple[str, ...], str, Any, dict[str, Any]]] = [
    ("Binding", ("--bind", "-b"), "bind", str, {"multiple": True, "metavar": "ADDRESS"}),
    (
        "Binding",
        ("--insecure-bind",),
        "insecure_bind",
        str,
        {"multiple": True, "metavar": "ADDRESS"},
    ),
    ("Binding", ("--backlog",), "backlog", int, {}),
    ("Binding", ("--umask",), "umask", str, {"metavar": "OCTAL"}),
    ("TLS", ("--certfile",), "certfile", click.Path(dir_okay=False), {}),
    ("TLS", ("--keyfile",), "keyfile", click.Path(dir_okay=False), {}),
    ("TLS", ("--keyfile-password",), "keyfile_password", str, {}),
    ("TLS", ("--ca-certs",), "ca_certs", click.Path(dir_okay=False), {}),
    ("TLS", ("--ciphers",), "ciphers", str, {}),
    (
        "TLS",
        ("--verify-mode",),
        "verify_mode",
        click.Choice(["CERT_NONE", "CERT_OPTIONAL", "CERT_REQUIRED"]),
        {},
    ),
    ("TLS", ("--ssl-handshake-timeout",), "ssl_handshake_timeout", float, {}),
    ("Timeouts", ("--keep-alive-timeout",), "keep_alive_timeout", float, {}),
    ("Timeouts", ("--header-timeout",), "header_timeout", float, {}),
    ("Timeouts", ("--read-timeout",), "read_timeout", float, {}),
    ("Timeouts", ("--write-timeout",), "write_timeout", float, {}),
    ("Timeouts", ("--graceful-timeout",), "graceful_timeout", float, {}),
    ("Timeouts", ("--startup-timeout",), "startup_timeout", float, {}),
    ("Timeouts", ("--shutdown-timeout",), "shutdown_timeout", float, {}),
    ("Limits", ("--limit-concurrency",), "limit_concurrency", int, {}),
    ("Limits", ("--max-requests",), "max_requests", int, {}),
    ("Limits", ("--max-requests-jitter",), "max_requests_jitter", int, {}),
    ("Workers", ("--workers", "-w"), "workers", int, {}),
    ("Workers", ("--worker-healthcheck-timeout",), "worker_healthcheck_timeout", float, {}),
    ("Workers", ("--worker-max-rss",), "worker_max_rss", int, {"metavar": "MIB"}),
    ("Limits", ("--h11-max-incomplete-size",), "h11_max_incomplete_size", int, {}),
    ("Application", ("--root-path",), "root_path", str, {}),
    ("Proxies", ("--proxy-headers/--no-proxy-headers",), "proxy_headers", bool, {}),
    (
        "Proxies",
        ("--forwarded-allow-ips",),
        "forwarded_allow_ips",
        str,
        {"metavar": "IPS"},
    ),
    (
        "Proxies",
        ("--proxy-headers-mode",),
        "proxy_headers_mode",
        click.Choice(["x-forwarded", "forwarded"]),
        {},
    ),
    ("Proxies", ("--forwarded-host/--no-forwarded-host",), "forwarded_host", bool, {}),
    (
        "Proxies",
        ("--proxy-protocol",),
        "proxy_protocol",
        click.Choice(["off", "v1", "v2", "auto"]),
        {},
    ),
    ("Application", ("--lifespan",), "lifespan", click.Choice(["auto", "on", "off"]), {}),
    (
        "Application",
        ("--cancel-on-disconnect",),
        "cancel_on_disconnect",
        click.Choice(["safe", "always", "never"]),
        {},
    ),
    ("WebSockets", ("--ws",), "ws", click.Choice(["auto", "wsproto", "none"]), {}),
    (
        "WebSockets",
        ("--websocket-max-message-size",),
        "websocket_max_message_size",
        int,
        {"metavar": "BYTES"},
    ),
    ("WebSockets", ("--websocket-ping-interval",), "websocket_ping_interval", float, {}),
    ("WebSockets", ("--websocket-ping-timeout",), "websocket_ping_timeout", float, {}),
    ("WebSockets", ("--websocket-close-timeout",), "websocket_close_timeout", float, {}),
    (
        "WebSockets",
        ("--websocket-per-message-deflate/--no-websocket-per-message-deflate",),
        "websocket_per_message_deflate",
        bool,
        {},
    ),
    (
        "Application",
        ("--header",),
        "headers",
        _HeaderLines(),
        {"multiple": True, "metavar": "NAME:VALUE"},
    ),
    (
        "Application",
        ("--server-header/--no-server-header",),
        "include_server_header",
        bool,
        {},
    ),
    ("Application", ("--date-header/--no-date-header",), "include_date_header", bool, {}),
    (
        "Logging",
        ("--log-level",),
        "loglevel",
        click.Choice(["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], case_sensitive=False),
        {},
    ),
    (
        "Logging",
        ("--access-logfile",),
        "accesslog",
        str,
        {
            "metavar": "PATH|-",
            "help": "Where the access log goes: a file path, or - for stdout (the "
            "default); --access-logfile '' turns it off (an empty variable counts as "
            "unset: use TRIOSERVE_ACCESS_LOG=0).",
        },
    ),
    ("Logging", ("--error-logfile",), "errorlog", str, {"metavar": "PATH|-"}),
    ("Logging", ("--access-logformat",), "access_log_format", str, {"metavar": "FORMAT"}),
    ("Logging", ("--log-config",), "logconfig", str, {"metavar": "PATH"}),
    ("Development", ("--reload/--no-reload",), "reload", bool, {}),
    (
        "Development",
        ("--reload-dir",),
        "reload_dirs",
        click.Path(file_okay=False),
        {"multiple": True},
    ),
    (
        "Development",
        ("--reload-include",),
        "reload_includes",
        str,
        {"multiple": True, "metavar": "GLOB"},
    ),
    (
        "Development",
        ("--reload-exclude",),
        "reload_excludes",
        str,
        {"multiple": True, "metavar": "GLOB"},
    ),
    ("Development", ("--reload-delay",), "reload_delay", float, {}),
]

_GROUP_ORDER = [
    "Application",
    "Binding",
    "Proxies",
    "TLS",
    "Timeouts",
    "Limits",
    "Workers",
    "WebSockets",
    "Logging",
    "Development",
    "Other",
]
_GROUPS: dict[str, str] = {key: group for group, _, key, _, _ in _OPTIONS}
_GROUPS.update(
    {
        "factory": "Application",
        "app_dir": "Application",
        "access_log": "Logging",
        "host": "Binding",
        "port": "Binding",
        "uds": "Binding",
        "fd": "Binding",
        "config_source": "Other",
        "version": "Other",
        "help": "Other",
    }
)


class _GroupedCommand(CompatCommand):
    """A command whose ``--help`` lists options under headings, and which reads
    uvicorn's and Hypercorn's flags too (``_compat.py``)."""

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        for group, rows in self.grouped_help(ctx).items():
            with formatter.section(f"{group} options"):
                formatter.write_dl([(flags, text) for flags, text, _ in rows])

    def grouped_help(self, ctx: click.Context) -> dict[str, list[tuple[str, str, str]]]:
        """``{group: [(flags, help, environment variable)]}`` in ``--help`` order."""
        rows: dict[str, list[tuple[str, str, str]]] = {group: [] for group in _GROUP_ORDER}
        for param in self.get_params(ctx):
            if not isinstance(param, click.Option):
                continue
            record = param.get_help_record(ctx)
            if record is not None:
                # --help and --version are actions, not settings: no variable.
                variable = param.envvar if isinstance(param.envvar, str) else ""
                rows[_GROUPS.get(param.name or "", "Other")].append((*record, variable))
        return {group: group_rows for group, group_rows in rows.items() if group_rows}


def cli_markdown() -> str:
    """The command line reference (``docs/cli.md``), made from the command itself.

    ``tests/test_docs.py`` checks that the committed file equals this output; run
    ``python docs/gen_cli.py`` after changing a flag.
    """
    lines = [
        "# Command line reference",
        "",
        "<!-- Generated from the trioserve command by `python docs/gen_cli.py`; do not edit. -->",
        "",
        "`trioserve APP` serves the ASGI application `APP`, written as `module:attribute`.",
        "`python -m trioserve` does the same. Every configuration key has a flag of its",
        "own, and every flag can also be set through the environment variable shown",
        "(flag > environment > `--config` file > default). uvicorn's and Hypercorn's",
        "flags are accepted too, under their own names: see",
        "[compatibility](compatibility.md).",
        "",
        "A mistake on the command line or in a variable stops the command with one line",
        "on stderr, `Error: ...`, and exit status 2. The line names what was written: the",
        "flag as typed (`--timeout-keep-alive`, not the `--keep-alive-timeout` it stands",
        "for) or the variable the value came from. An unknown flag gets the nearest real",
        "one as a hint, uvicorn's and Hypercorn's included.",
        "",
        "## Environment variables",
        "",
        "Each flag is read from one variable: `TRIOSERVE_` and the long flag name,",
        "upper-cased, with `-` as `_` (`--log-level` is `TRIOSERVE_LOG_LEVEL`,",
        "`--keep-alive-timeout` is `TRIOSERVE_KEEP_ALIVE_TIMEOUT`, `--config` is",
        "`TRIOSERVE_CONFIG`); `TRIOSERVE_APP` gives `APP`. A switch such as",
        "`--proxy-headers/--no-proxy-headers` takes `1`/`0`, `true`/`false` or",
        "`yes`/`no`. A repeated flag takes several values separated by spaces",
        "(`TRIOSERVE_BIND`), by `:` for directories (`TRIOSERVE_RELOAD_DIR`), and one",
        "a line for `TRIOSERVE_HEADER`, whose values may hold spaces. An empty variable",
        "counts as unset.",
        "",
        "Any other `TRIOSERVE_*` variable (one that is neither `TRIOSERVE_APP` nor in",
        "the tables below) is an error, like a misspelt key in a config file, with the",
        "nearest name as a hint (`TRIOSERVE_LOGLEVEL` gets `did you mean",
        "TRIOSERVE_LOG_LEVEL?`): a setting is never dropped silently. trioserve sets",
        "no variable of its own (worker and reload processes get their settings through",
        "a pipe), so there are no exceptions: leave the prefix to trioserve in the",
        "environment the command runs in.",
        "`WEB_CONCURRENCY` (the default of `--workers`) and `FORWARDED_ALLOW_IPS` (the",
        "default of `--forwarded-allow-ips`) are read as uvicorn reads them.",
        "",
        "## The access log",
        "",
        "The command writes the access log to stdout unless told otherwise, as uvicorn",
        "does: `--access-logfile PATH` (or the config file's `accesslog`) sends it",
        "elsewhere, and `--no-access-log` or `TRIOSERVE_ACCESS_LOG=0` turns it off, also",
        "when the config file sets `accesslog`; an empty `accesslog` turns it off too,",
        "as in Hypercorn. The strongest place that says something decides (flag >",
        "variable > file); `-` means stdout in each of them. Embedded,",
        "`serve(app, Config())` writes no access log unless `Config(accesslog=...)` is",
        "set: a program that embeds the server owns its logging and chooses.",
    ]
    command = cli
    assert isinstance(command, _GroupedCommand)
    ctx = click.Context(command, info_name="trioserve", **command.context_settings)
    for group, rows in command.grouped_help(ctx).items():
        lines += ["", f"## {group} options", "", "| flag | meaning | environment |"]
        lines.append("| --- | --- | --- |")
        for flags, text, variable in rows:
            cells = [f"`{flags}`", " ".join(text.split()), f"`{variable}`" if variable else ""]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


def _build_config(
    config_source: str | None,
    shorthands: dict[str, Any],
    access_log: bool | None,
    keys: dict[str, Any],
    sources: dict[str, str],
) -> Config:
    """The file's config with what the user gave on top. ``shorthands`` are
    ``--host``, ``--port``, ``--uds`` and ``--fd``; ``sources`` name the flag or
    variable of each parameter the user set, for the error messages."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        config = load_config(config_source) if config_source else Config()
    for warning in caught:
        click.echo(f"Warning: {warning.message}", err=True)
    overrides = {key: value for key, value in keys.items() if value is not None and value != ()}
    overrides.pop("accesslog", None)
    binds = list(overrides.pop("bind", ()))
    host, port = shorthands["host"], shorthands["port"]
    if host is not None or port is not None:
        bind_host = host if host is not None else "127.0.0.1"
        if ":" in bind_host and not bind_host.startswith("["):
            if not _is_ipv6(bind_host):
                given = sources.get("host", "--host")
                raise ConfigError(
                    f"{given} must be a host name or address, got {bind_host!r}: "
                    "give the port with --port"
                )
            bind_host = f"[{bind_host}]"
        binds.append(f"{bind_host}:{port if port is not None else 8000}")
    if shorthands["uds"] is not None:
        binds.append(f"unix:{shorthands['uds']}")
    if shorthands["fd"] is not None:
        binds.append(f"fd://{shorthands['fd']}")
    if binds:
        overrides["bind"] = binds
    if "umask" in overrides:
        overrides["umask"] = str(overrides["umask"])
    if "workers" not in overrides and config.workers == Config().workers:
        web_concurrency = _web_concurrency()
        if web_concurrency is not None:
            overrides["workers"] = web_concurrency
    overrides["accesslog"] = access_log_target(
        config.accesslog, keys.get("accesslog"), access_log, sources
    )
    try:
        return config.replace(**overrides)
    except ConfigError as exc:
        raise ConfigError(as_given(str(exc), overrides, sources)) from None


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text.split("%", 1)[0])
    except ValueError:
        return False
    return True


def _web_concurrency() -> int | None:
    """``WEB_CONCURRENCY``, the worker count platforms such as Heroku set: the
    default of ``workers`` when no flag, variable or file sets it (as in uvicorn)."""
    text = os.environ.get("WEB_CONCURRENCY")
    if text is None:
        return None
    text = text.strip()
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise ConfigError(f"WEB_CONCURRENCY must be an integer >= 1, got {text!r}")
    return int(text)


def _socket_activation(config: Config, explicit_bind: bool) -> tuple[Config, list[str]]:
    """Add the sockets systemd passed (``LISTEN_FDS``) as ``fd://N`` binds; they
    replace the default bind, and are served next to binds given explicitly. An
    activated socket that an explicit ``fd://N`` already names is served once, by
    that bind. Returns the config and a description of each socket for the log."""
    from ._binds import FdBind, parse_bind
    from ._systemd import take_listen_fds

    fds = take_listen_fds(os.environ)
    if not fds:
        return config, []
    given = (*config.bind, *config.insecure_bind) if explicit_bind else config.insecure_bind
    named = {spec.fd for spec in map(parse_bind, given) if isinstance(spec, FdBind)}
    binds = [f"fd://{fd}" for fd, _ in fds if fd not in named]
    if explicit_bind:
        binds = [*config.bind, *binds]
    elif not binds:
        # Every activated socket is an insecure_bind: nothing else to serve.
        binds = list(config.bind)
    names = [f"fd://{fd} ({name})" for fd, name in fds]
    return config.replace(bind=binds), names


def _run_workers(
    config: Config, app: str, factory: bool, app_dir: str, notifier: Notifier | None
) -> NoReturn:
    """``workers > 1``: the supervisor, which never imports the app itself."""
    import trio

    from ._supervisor import AppSpec, supervise

    try:
        code, message = trio.run(supervise, config, AppSpec(app, factory, app_dir), notifier)
    except ConfigError as exc:
        _fail(str(exc), 2)
    except BindError as exc:
        _fail(str(exc), 3)
    if message is not None:
        _fail(message, code)
    sys.exit(code)


def _command(function: Any) -> click.Command:
    for _, declarations, key, click_type, extra in reversed(_OPTIONS):
        envvar = envvar_for(declarations)
        if click_type is bool:
            function = click.option(
                *declarations, key, default=None, help=_DOCS[key], envvar=envvar
            )(function)
        else:
            settings = {"help": _DOCS[key], **extra}
            function = click.option(
                *declarations, key, type=click_type, default=None, envvar=envvar, **settings
            )(function)
    return function  # type: ignore[no-any-return]


@click.command(
    cls=_GroupedCommand,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=f"{ENV_LINE}\n\n{HELP_LINE}",
)
@click.argument("app", envvar="TRIOSERVE_APP")
@click.option(
    "--config",
    "-c",
    "config_source",
    metavar="SOURCE",
    envvar="TRIOSERVE_CONFIG",
    help="Configuration: a TOML file, 'python:module.attr' or 'file:path/to/config.py' "
    "(Hypercorn's formats and key names). Flags and TRIOSERVE_* variables override it.",
)
@click.option(
    "--factory",
    is_flag=True,
    default=False,
    envvar="TRIOSERVE_FACTORY",
    help="APP names a factory: call it with no arguments to get the app.",
)
@click.option(
    "--app-dir",
    default=".",
    show_default=True,
    envvar="TRIOSERVE_APP_DIR",
    help="Directory put first on sys.path before APP is imported.",
)
@click.option(
    "--host",
    envvar="TRIOSERVE_HOST",
    help="Shorthand (as in uvicorn): bind HOST:PORT. Default 127.0.0.1.",
)
@click.option(
    "--port",
    type=int,
    envvar="TRIOSERVE_PORT",
    help="Shorthand (as in uvicorn): bind HOST:PORT. Default 8000.",
)
@click.option("--uds", metavar="PATH", envvar="TRIOSERVE_UDS", help="Shorthand: bind unix:PATH.")
@click.option(
    "--fd",
    type=int,
    envvar="TRIOSERVE_FD",
    help="Shorthand: bind fd://FD, an inherited listening socket.",
)
@click.option(
    "--access-log/--no-access-log",
    "access_log",
    default=None,
    envvar="TRIOSERVE_ACCESS_LOG",
    help="Write the access log (as uvicorn does): on by default, on stdout unless "
    "--access-logfile or the config file's accesslog names another place. "
    "--no-access-log turns it off, also when the config file sets accesslog.",
)
@click.version_option(package_name="trioserve", message="trioserve %(version)s")
@_command
def cli(
    app: str,
    config_source: str | None,
    factory: bool,
    app_dir: str,
    host: str | None,
    port: int | None,
    uds: str | None,
    fd: int | None,
    access_log: bool | None,
    **keys: Any,
) -> None:
    """Serve the ASGI application APP ('module:attribute').

    Examples: trioserve myapp:app --bind 0.0.0.0:8000; trioserve -c hypercorn.toml
    myapp:app; trioserve --factory myapp:create_app.
    """
    # Before the config too: a `python:` config may live next to the app. Absolute,
    # because Python caches the finder of "." for the directory current at the time.
    app_dir = os.path.abspath(app_dir)
    if app_dir not in sys.path:
        sys.path.insert(0, app_dir)
    try:
        sources: dict[str, str] = click.get_current_context().meta.get(SOURCES, {})
        shorthands = {"host": host, "port": port, "uds": uds, "fd": fd}
        config = _build_config(config_source, shorthands, access_log, keys, sources)
        explicit_bind = bool(keys.get("bind")) or config.bind != Config().bind
        config, activated = _socket_activation(config, explicit_bind)
        from ._logging import configure_logging
        from ._systemd import Notifier

        try:
            configure_logging(
                loglevel=config.loglevel,
                errorlog=config.errorlog,
                accesslog=config.accesslog,
                logconfig=config.logconfig,
            )
        except OSError as exc:
            key = "accesslog" if exc.filename == config.accesslog else "errorlog"
            raise ConfigError(
                f"{sources.get(key, key)}: cannot open log file {exc.filename!r}: {exc.strerror}"
            ) from None
        notifier = Notifier.from_environ(os.environ, os.getpid())
    except ConfigError as exc:
        _fail(str(exc), 2)
    if activated:
        logging.getLogger("trioserve.error").info("Socket activation: %s", ", ".join(activated))
    if config.reload:
        if config.workers > 1:
            logging.getLogger("trioserve.error").warning(
                "--reload runs one server process: workers = %d is ignored", config.workers
            )
        _run_reloader(app, factory, app_dir, config.replace(workers=1))
    if config.workers > 1:
        _run_workers(config, app, factory, app_dir, notifier)
    run_app(app, factory=factory, app_dir=app_dir, config=config, notifier=notifier)


def _run_reloader(app: str, factory: bool, app_dir: str, config: Config) -> NoReturn:
    # Before the app is loaded: the reloader process never imports it.
    from ._reload import ServerCommand, run_reloader

    try:
        code = run_reloader(ServerCommand(app, factory, app_dir, config))
    except ConfigError as exc:
        _fail(str(exc), 2)
    except BindError as exc:
        _fail(str(exc), 3)
    sys.exit(code)


def run_app(
    app: str,
    *,
    factory: bool,
    app_dir: str,
    config: Config,
    notifier: Notifier | None = None,
    runner: Runner | None = None,
) -> None:
    """Load the app named ``app`` and serve it until shut down, the way the command
    does; with a ``notifier``, tell systemd when it is ready and when it stops.
    ``runner`` serves the loaded app (``runner(app, config, notifier)`` under
    ``trio.run``); by default the server acts on SIGINT and SIGTERM itself.

    Exits (``SystemExit``) with one ``Error:`` line: 2 for a configuration error, 3
    when the app cannot be loaded, lifespan startup fails or a bind fails; 130 when
    a second SIGINT or SIGTERM arrives during the graceful shutdown.
    """
    # Imported here so that `--help` and config errors stay fast.
    import trio

    from ._app_loader import load_app
    from ._worker import serve_in_process

    try:
        asgi_app = load_app(app, factory=factory, app_dir=app_dir)
    except AppLoadError as exc:
        _fail(str(exc), 3)
    except KeyboardInterrupt:
        # A Ctrl+C while the app is imported: the user wants out, quietly.
        sys.exit(130)
    # Everything imported so far (trio, h11, the app and its framework) lives as
    # long as the process: moving it out of the collector's reach makes every full
    # collection cheaper, which shows in throughput and p99 (docs/performance.md).
    # serve() itself leaves the embedder's GC alone.
    gc.collect()
    gc.freeze()
    try:
        code = trio.run(runner or serve_in_process, asgi_app, config, notifier)
    except ConfigError as exc:
        _fail(str(exc), 2)
    except (AppLoadError, LifespanFailure, BindError) as exc:
        _fail(str(exc), 3)
    except KeyboardInterrupt:
        # A Ctrl+C before the server watches the signals itself: the user wants out.
        sys.exit(130)
    except BaseExceptionGroup as group:
        # The same, as trio's nurseries deliver it from inside the server.
        if group.split(KeyboardInterrupt)[1] is not None:
            raise
        sys.exit(130)
    if code:
        sys.exit(code)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the ``trioserve`` command (``python -m trioserve`` too)."""
    cli.main(args=argv, prog_name="trioserve")
