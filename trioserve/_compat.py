"""uvicorn's and Hypercorn's flags on the ``trioserve`` command line.

A command line written for uvicorn or Hypercorn works once the program name is
changed: before click parses the arguments, :func:`translate` rewrites each of
their flags into the trioserve flag with the same meaning (``--timeout-keep-alive
5`` becomes ``--keep-alive-timeout 5``). Since the rewritten line is parsed like
any other, precedence, environment variables and the checks of each key are the
trioserve flag's own, and the aliases add nothing to ``--help``.

A flag, or a flag's value, that has no trioserve meaning is an error of one line
that names the flag, the server it comes from and the reason (exit 2): a setting
the user asked for is never dropped silently. Only values that name what trioserve
does anyway (``-k trio``, ``--loop auto``, ``--http h11``) are accepted and
dropped.

:data:`FLAGS` lists every flag of uvicorn and Hypercorn (the versions named in
``UVICORN_VERSION`` and ``HYPERCORN_VERSION``), including those trioserve has
under the same name;
``docs/compatibility.md`` is generated from it (``python docs/gen_compat.py``).
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import click

from ._usage import (
    UsageLine,
    check_environment,
    describe_usage_error,
    envvar_for,
    name_sources,
    split_flag,
)

__all__ = [
    "FLAGS",
    "HELP_LINE",
    "SOURCES",
    "CompatCommand",
    "CompatFlag",
    "FlagError",
    "Translation",
    "compatibility_markdown",
    "translate",
]

UVICORN = "uvicorn"
HYPERCORN = "Hypercorn"
UVICORN_VERSION = "0.55"
HYPERCORN_VERSION = "0.18"

#: ``ctx.meta`` key: ``{parameter name: the flag as typed, or the variable}``.
SOURCES = "trioserve.sources"

#: The one line ``--help`` gives the aliases.
HELP_LINE = (
    "uvicorn's and Hypercorn's flags are accepted too, under their own names: "
    "see docs/compatibility.md."
)


class FlagError(click.ClickException):
    """A uvicorn or Hypercorn flag (or value) that trioserve cannot honour: one
    ``Error:`` line, exit 2, like any other configuration error."""

    exit_code = 2


#: What an alias turns into: the trioserve tokens for a value (``None`` for a flag
#: that takes none), or a :class:`FlagError`.
Rewrite = Callable[[str | None], list[str]]


@dataclasses.dataclass(frozen=True)
class CompatFlag:
    """One flag of uvicorn or Hypercorn and what it means to trioserve.

    ``names`` are the option strings the rewrite intercepts (none for a flag that
    trioserve has itself under the same name and with the same value syntax);
    ``takes_value`` whether the flag is followed by a value; ``meaning`` the
    compatibility page's cell; ``target`` the trioserve flag an alias stands for.
    """

    server: str
    shown: str
    meaning: str
    names: tuple[str, ...] = ()
    takes_value: bool = False
    rewrite: Rewrite | None = None
    target: str | None = None


def _same(server: str, shown: str, note: str = "") -> CompatFlag:
    return CompatFlag(server, shown, "the same" + (f"; {note}" if note else ""))


def _alias(
    server: str, names: tuple[str, ...], target: str, *, value: bool = True, note: str = ""
) -> CompatFlag:
    def rewrite(given: str | None) -> list[str]:
        return [target] if given is None else [target, given]

    meaning = f"alias of `{target}`" + (f"; {note}" if note else "")
    return CompatFlag(server, "/".join(names), meaning, names, value, rewrite, target)


def _refused(
    server: str, names: tuple[str, ...], reason: str, *, value: bool, yet: bool = True
) -> CompatFlag:
    """A flag trioserve does not have: ``yet`` for a feature it may grow, otherwise
    one that has no meaning on trio and h11."""
    verdict = "is not supported by trioserve yet" if yet else "has no meaning in trioserve"

    def rewrite(given: str | None) -> list[str]:
        raise FlagError(f"{names[-1]} ({server}) {verdict}: {reason}")

    label = "not supported yet" if yet else "not applicable"
    return CompatFlag(server, "/".join(names), f"{label}: {reason}", names, value, rewrite)


def _choices(
    server: str,
    names: tuple[str, ...],
    accepted: dict[str, list[str]],
    refused: dict[str, str],
    meaning: str,
    *,
    native: str | None = None,
) -> CompatFlag:
    """A flag whose values each mean something different: ``accepted`` maps a value
    to its trioserve tokens, ``refused`` a value to the reason it is an error. Any
    other value goes to the ``native`` trioserve flag of the same name, whose own
    check reports it, or else is an error listing the values."""

    def rewrite(given: str | None) -> list[str]:
        value = (given or "").lower()
        if value in accepted:
            return accepted[value]
        reason = refused.get(value)
        if reason is None and native is not None:
            return [native, given or ""]
        if reason is None:
            known = ", ".join([*accepted, *refused])
            raise FlagError(f"{names[-1]} ({server}) must be one of {known}, got {given!r}")
        raise FlagError(f"{names[-1]} {given} ({server}): {reason}")

    return CompatFlag(server, "/".join(names), meaning, names, True, rewrite)


_ON_TRIO = (
    "trioserve runs apps on trio, never on an asyncio loop; apps on anyio "
    "(Starlette, FastAPI) run unchanged. Drop the flag"
)
_BOOLEANS = {
    **dict.fromkeys(("1", "true", "t", "yes", "y", "on"), True),
    **dict.fromkeys(("0", "false", "f", "no", "n", "off"), False),
}
_VERIFY_MODES = {"0": "CERT_NONE", "1": "CERT_OPTIONAL", "2": "CERT_REQUIRED"}


def _deflate(given: str | None) -> list[str]:
    value = _BOOLEANS.get((given or "").lower())
    if value is None:
        raise FlagError(f"--ws-per-message-deflate (uvicorn) must be a boolean, got {given!r}")
    return [f"--{'' if value else 'no-'}websocket-per-message-deflate"]


def _cert_reqs(server: str, flag: str) -> CompatFlag:
    def rewrite(given: str | None) -> list[str]:
        mode = _VERIFY_MODES.get((given or "").strip())
        if mode is None:
            raise FlagError(f"{flag} ({server}) must be 0, 1 or 2 (ssl.CERT_*), got {given!r}")
        return ["--verify-mode", mode]

    meaning = "alias of `--verify-mode`: 0, 1, 2 are `CERT_NONE`, `CERT_OPTIONAL`, `CERT_REQUIRED`"
    return CompatFlag(server, flag, meaning, (flag,), True, rewrite)


def _log_level(given: str | None) -> list[str]:
    # uvicorn's "trace" is below DEBUG; DEBUG is the most trioserve logs.
    value = given or ""
    return ["--log-level", "DEBUG" if value.lower() == "trace" else value]


def _access_log(given: str | None) -> list[str]:
    # uvicorn's `--access-log` is a switch (trioserve's own); Hypercorn's deprecated
    # `--access-log PATH` takes a value, told apart only when written `=PATH`.
    return ["--access-log"] if given is None else ["--access-logfile", given]


_ENV_FILE = "--env-file"

FLAGS: tuple[CompatFlag, ...] = (
    # ---- uvicorn -------------------------------------------------------------------
    _same(UVICORN, "--host", "binds HOST:PORT, as `--bind` does"),
    _same(UVICORN, "--port", "binds HOST:PORT, as `--bind` does"),
    _same(UVICORN, "--uds", "binds `unix:PATH`"),
    _same(UVICORN, "--fd", "binds `fd://N`"),
    _same(UVICORN, "--reload", "needs `trioserve[reload]` (watchfiles)"),
    _same(UVICORN, "--reload-dir"),
    _same(UVICORN, "--reload-include"),
    _same(UVICORN, "--reload-exclude"),
    _same(UVICORN, "--reload-delay"),
    _same(UVICORN, "--workers", "`WEB_CONCURRENCY` is read too"),
    _choices(
        UVICORN,
        ("--loop",),
        {"auto": []},
        dict.fromkeys(("asyncio", "uvloop", "zuvloop", "none"), _ON_TRIO),
        "`auto`: accepted, no effect (trio is the loop); any other value is an error",
    ),
    _choices(
        UVICORN,
        ("--http",),
        {"auto": [], "h11": []},
        dict.fromkeys(
            ("httptools", "zttp"),
            "trioserve parses HTTP/1.1 with h11 and its own fast path, always. Drop the flag",
        ),
        "`auto`, `h11`: accepted, no effect (h11 is what trioserve uses); "
        "any other value is an error",
    ),
    _refused(UVICORN, ("--http2",), "trioserve speaks HTTP/1.1 only", value=False),
    _choices(
        UVICORN,
        ("--ws",),
        {value: ["--ws", value] for value in ("auto", "wsproto", "none")},
        dict.fromkeys(
            ("websockets", "websockets-sansio"),
            "trioserve serves websockets with wsproto; use --ws auto",
        ),
        "the same for `auto`, `wsproto`, `none`; `websockets` and `websockets-sansio` "
        "are an error (trioserve serves websockets with wsproto)",
        native="--ws",
    ),
    _alias(UVICORN, ("--ws-max-size",), "--websocket-max-message-size"),
    _refused(
        UVICORN,
        ("--ws-max-queue",),
        "there is no message queue to size: at most 64 KiB of messages wait for an app "
        "that is not receiving, then reading stops",
        value=True,
        yet=False,
    ),
    _alias(UVICORN, ("--ws-ping-interval",), "--websocket-ping-interval"),
    _alias(UVICORN, ("--ws-ping-timeout",), "--websocket-ping-timeout"),
    CompatFlag(
        UVICORN,
        "--ws-per-message-deflate",
        "alias of `--websocket-per-message-deflate` (`true`) and "
        "`--no-websocket-per-message-deflate` (`false`)",
        ("--ws-per-message-deflate",),
        True,
        _deflate,
    ),
    _same(UVICORN, "--lifespan"),
    _choices(
        UVICORN,
        ("--interface",),
        {value: [] for value in ("auto", "asgi3", "asgi2")},
        {
            "wsgi": "trioserve serves ASGI apps only; wrap a WSGI app in an ASGI adapter "
            "such as a2wsgi"
        },
        "`auto`, `asgi3`, `asgi2`: accepted, no effect (ASGI 2 and 3 are told apart "
        "by themselves); `wsgi` is an error",
    ),
    CompatFlag(
        UVICORN,
        _ENV_FILE,
        "loads the file's variables into the environment (those already set win), "
        "for the app; needs `python-dotenv` (`trioserve[dotenv]`)",
        (_ENV_FILE,),
        True,
    ),
    _same(UVICORN, "--log-config", "JSON, TOML or INI; YAML is not read"),
    CompatFlag(
        UVICORN,
        "--log-level",
        "the same; `trace` is read as `debug`",
        ("--log-level",),
        True,
        _log_level,
    ),
    _same(
        UVICORN,
        "--access-log/--no-access-log",
        "on by default, on stdout, as in uvicorn; `--no-access-log` also turns off an "
        "access log that a config file sets",
    ),
    _refused(
        UVICORN,
        ("--use-colors",),
        "trioserve's log lines are plain text",
        value=False,
    ),
    CompatFlag(
        UVICORN,
        "--no-use-colors",
        "accepted, no effect: trioserve's log lines are plain text",
        ("--no-use-colors",),
        False,
        lambda given: [],
    ),
    _same(UVICORN, "--proxy-headers/--no-proxy-headers"),
    _same(UVICORN, "--server-header/--no-server-header"),
    _same(UVICORN, "--date-header/--no-date-header"),
    _same(UVICORN, "--forwarded-allow-ips"),
    _same(UVICORN, "--root-path"),
    _same(UVICORN, "--limit-concurrency", "counts requests, not connections"),
    _same(UVICORN, "--backlog"),
    _alias(UVICORN, ("--limit-max-requests",), "--max-requests"),
    _alias(UVICORN, ("--limit-max-requests-jitter",), "--max-requests-jitter"),
    _alias(UVICORN, ("--timeout-keep-alive",), "--keep-alive-timeout"),
    _alias(
        UVICORN,
        ("--timeout-graceful-shutdown",),
        "--graceful-timeout",
        note="trioserve's default is 30 s, uvicorn's is no limit",
    ),
    _alias(UVICORN, ("--timeout-worker-healthcheck",), "--worker-healthcheck-timeout"),
    _alias(UVICORN, ("--ssl-keyfile",), "--keyfile"),
    _alias(UVICORN, ("--ssl-certfile",), "--certfile"),
    _alias(UVICORN, ("--ssl-keyfile-password",), "--keyfile-password"),
    _refused(
        UVICORN,
        ("--ssl-version",),
        "trioserve negotiates TLS 1.2 or 1.3 and has no setting for it",
        value=True,
    ),
    _cert_reqs(UVICORN, "--ssl-cert-reqs"),
    _alias(UVICORN, ("--ssl-ca-certs",), "--ca-certs"),
    _alias(UVICORN, ("--ssl-ciphers",), "--ciphers"),
    _same(UVICORN, "--header"),
    _same(UVICORN, "--version"),
    _same(UVICORN, "--app-dir"),
    _alias(UVICORN, ("--h11-max-incomplete-event-size",), "--h11-max-incomplete-size"),
    _refused(
        UVICORN,
        ("--reset-contextvars",),
        "trioserve has no switch for the context each request runs in",
        value=False,
    ),
    _same(UVICORN, "--factory"),
    _same(UVICORN, "--help"),
    # ---- Hypercorn -----------------------------------------------------------------
    CompatFlag(
        HYPERCORN,
        "--access-log",
        "deprecated in Hypercorn: written `--access-log=PATH`, an alias of "
        "`--access-logfile PATH` (without `=`, it is uvicorn's switch)",
        ("--access-log",),
        False,
        _access_log,
    ),
    _same(HYPERCORN, "--access-logfile"),
    _same(HYPERCORN, "--access-logformat"),
    _same(HYPERCORN, "--backlog", "trioserve's default is 2048, Hypercorn's 100"),
    _same(HYPERCORN, "-b/--bind"),
    _same(HYPERCORN, "--ca-certs"),
    _same(HYPERCORN, "--certfile"),
    _cert_reqs(HYPERCORN, "--cert-reqs"),
    _same(HYPERCORN, "--ciphers"),
    _same(HYPERCORN, "-c/--config", "Hypercorn's TOML, `python:` and `file:` forms"),
    _refused(
        HYPERCORN,
        ("-D", "--daemon"),
        "trioserve runs in the foreground; let systemd or a container runtime "
        "keep it in the background",
        value=False,
    ),
    _refused(
        HYPERCORN,
        ("--debug",),
        "it is asyncio's debug mode; for more logging use --log-level debug",
        value=False,
        yet=False,
    ),
    _alias(HYPERCORN, ("--error-log",), "--error-logfile", note="deprecated in Hypercorn"),
    _same(HYPERCORN, "--error-logfile"),
    _alias(HYPERCORN, ("--log-file",), "--error-logfile"),
    _same(HYPERCORN, "--graceful-timeout", "trioserve's default is 30 s, Hypercorn's 3 s"),
    _same(
        HYPERCORN,
        "--read-timeout",
        "bounds each wait for a piece of a request body; default 30 s",
    ),
    _same(HYPERCORN, "--max-requests"),
    _same(HYPERCORN, "--max-requests-jitter"),
    _refused(
        HYPERCORN,
        ("-g", "--group"),
        "unix sockets are owned by the user and group running trioserve; "
        "use --umask and the directory's group",
        value=True,
    ),
    _choices(
        HYPERCORN,
        ("-k", "--worker-class"),
        {"trio": []},
        dict.fromkeys(("asyncio", "uvloop"), _ON_TRIO),
        "`trio`: accepted, no effect (trioserve always runs on trio); "
        "`asyncio` and `uvloop` are an error",
    ),
    _alias(HYPERCORN, ("--keep-alive",), "--keep-alive-timeout"),
    _same(HYPERCORN, "--keyfile"),
    _same(HYPERCORN, "--keyfile-password"),
    _same(HYPERCORN, "--insecure-bind"),
    _same(HYPERCORN, "--log-config", "`json:` and `toml:` prefixes too"),
    _same(HYPERCORN, "--log-level"),
    _refused(
        HYPERCORN,
        ("-p", "--pid"),
        "trioserve writes no PID file; systemd and container runtimes track the process",
        value=True,
    ),
    _refused(HYPERCORN, ("--quic-bind",), "trioserve has no HTTP/3", value=True),
    _same(HYPERCORN, "--reload", "needs `trioserve[reload]` (watchfiles)"),
    _same(HYPERCORN, "--root-path"),
    _refused(
        HYPERCORN,
        ("--server-name",),
        "every Host is served; filter it in the proxy or the app",
        value=True,
    ),
    _refused(HYPERCORN, ("--statsd-host",), "trioserve sends no statsd metrics", value=True),
    _refused(HYPERCORN, ("--statsd-prefix",), "trioserve sends no statsd metrics", value=True),
    _alias(
        HYPERCORN,
        ("-m",),
        "--umask",
        note="trioserve reads the mask as octal (`007`), Hypercorn as a decimal number",
    ),
    _same(HYPERCORN, "--umask", "the mask is octal (`007`); Hypercorn reads a decimal number"),
    _refused(
        HYPERCORN,
        ("-u", "--user"),
        "unix sockets are owned by the user running trioserve",
        value=True,
    ),
    _same(HYPERCORN, "--verify-mode"),
    _same(HYPERCORN, "--websocket-ping-interval", "on by default (20 s); Hypercorn's is off"),
    _same(HYPERCORN, "-w/--workers"),
    _same(HYPERCORN, "-h/--help"),
)

_BY_NAME: dict[str, CompatFlag] = {name: flag for flag in FLAGS for name in flag.names}


def _option_names(command: click.Command, ctx: click.Context) -> tuple[set[str], set[str]]:
    """The command's own option strings: all of them, and those that take a value."""
    every: set[str] = set()
    valued: set[str] = set()
    for param in command.get_params(ctx):
        if isinstance(param, click.Option):
            names = [*param.opts, *param.secondary_opts]
            every.update(names)
            if not param.is_flag and not param.count:
                valued.update(names)
    return every, valued


class Translation(NamedTuple):
    """What :func:`translate` makes of a command line.

    ``args`` are trioserve's arguments; ``typed`` runs beside them and names, for
    each option token, the flag the user typed (``--timeout-keep-alive`` for the
    ``--keep-alive-timeout`` it became), so that an error can name it; ``env_files``
    are the paths given to ``--env-file``.
    """

    args: list[str]
    typed: list[str | None]
    env_files: list[str]


def translate(args: Sequence[str], valued: Iterable[str] = ()) -> Translation:
    """Rewrite uvicorn's and Hypercorn's flags in ``args`` into trioserve's.

    ``valued`` are the trioserve option strings that take a value, so that a value
    is never mistaken for a flag. The caller loads the ``env_files`` once the
    arguments are known to be valid. Raises :class:`FlagError` for a flag or value
    trioserve cannot honour, and :class:`click.BadOptionUsage` for an alias given
    without its value.
    """
    valued = set(valued)
    out: list[str] = []
    typed: list[str | None] = []
    env_files: list[str] = []
    tokens = list(args)
    index = 0
    while index < len(tokens):
        token = tokens[index]
        index += 1
        if token == "--":
            out.extend(tokens[index - 1 :])
            break
        name, value = split_flag(token)
        flag = _BY_NAME.get(name)
        if flag is None:
            out.append(token)
            typed.append(name if token.startswith("-") else None)
            if name in valued and value is None and index < len(tokens):
                out.append(tokens[index])  # the trioserve option's own value
                typed.append(None)
                index += 1
            continue
        if flag.takes_value and value is None:
            if index == len(tokens):
                raise click.BadOptionUsage(name, f"Option '{name}' requires an argument.")
            value = tokens[index]
            index += 1
        if flag.names == (_ENV_FILE,):
            env_files.append(value or "")
        elif flag.rewrite is not None:
            rewritten = flag.rewrite(value)
            out.extend(rewritten)
            typed.extend(name if part.startswith("-") else None for part in rewritten)
    typed.extend([None] * (len(out) - len(typed)))
    return Translation(out, typed, env_files)


def load_env_files(paths: Iterable[str]) -> None:
    """Load each dotenv file into ``os.environ``; variables already set are kept (as
    uvicorn does). Read after the arguments, they configure the app, not trioserve."""
    paths = list(paths)
    if not paths:
        return
    try:
        dotenv: Any = importlib.import_module("dotenv")
    except ImportError:
        raise FlagError(
            "--env-file (uvicorn) needs python-dotenv: pip install python-dotenv"
        ) from None
    for path in paths:
        if not os.path.isfile(path):
            raise FlagError(f"--env-file (uvicorn): no such file: {path!r}")
        ignored = sorted(
            name for name in dotenv.dotenv_values(path) if name.startswith("TRIOSERVE_")
        )
        if ignored:
            click.echo(
                f"Warning: --env-file {path}: {', '.join(ignored)} reach the app only; "
                "trioserve reads its settings from flags, the environment and --config",
                err=True,
            )
        dotenv.load_dotenv(path, override=False)


class CompatCommand(click.Command):
    """A click command that reads uvicorn's and Hypercorn's flags as its own (they
    are rewritten before parsing), reads each option from its ``TRIOSERVE_*``
    variable only, and reports every usage error in one line naming what the user
    wrote (``_usage.py``).

    After parsing, ``ctx.meta[SOURCES]`` maps each parameter the user set to the
    flag as typed or the variable it came from.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        every, valued = _option_names(self, ctx)
        translation = Translation(list(args), [None] * len(args), [])
        try:
            translation = translate(args, valued)
            # A copy: click consumes the list it parses.
            rest = super().parse_args(ctx, list(translation.args))
        except click.UsageError as exc:
            known = every | {name for name in _BY_NAME if name.startswith("--")}
            message = describe_usage_error(ctx, exc, translation.args, translation.typed, known)
            raise UsageLine(message) from None
        ctx.meta[SOURCES] = name_sources(ctx, translation.args, translation.typed)
        check_environment(
            [param.envvar for param in self.get_params(ctx) if isinstance(param.envvar, str)],
            os.environ,
            _variable_hints(self, ctx),
        )
        load_env_files(translation.env_files)
        return rest


def _variable_hints(command: click.Command, ctx: click.Context) -> dict[str, str]:
    """Variables a user may write for an option, each with the option's real one:
    the name made from its configuration key (``TRIOSERVE_LOGLEVEL``) and the names
    made from its uvicorn and Hypercorn aliases (``TRIOSERVE_TIMEOUT_KEEP_ALIVE``)."""
    by_flag: dict[str, str] = {}
    hints: dict[str, str] = {}
    for param in command.get_params(ctx):
        if isinstance(param.envvar, str) and param.name:
            hints[f"TRIOSERVE_{param.name.upper()}"] = param.envvar
            by_flag.update({opt: param.envvar for opt in param.opts if opt.startswith("--")})
    for flag in FLAGS:
        if flag.target in by_flag:
            for name in flag.names:
                if name.startswith("--"):
                    hints[envvar_for([name])] = by_flag[flag.target]
    return hints


def compatibility_markdown() -> str:
    """The compatibility page (``docs/compatibility.md``), made from :data:`FLAGS`.

    ``tests/test_compat_flags.py`` checks that the committed file equals this
    output; run ``python docs/gen_compat.py`` after changing the table.
    """
    lines = [
        "# uvicorn and Hypercorn flags",
        "",
        "<!-- Generated by docs/gen_compat.py from trioserve/_compat.py: do not edit. -->",
        "",
        "A `uvicorn` or `hypercorn` command line runs under trioserve once the program",
        "name is changed: every flag of uvicorn and Hypercorn that has a trioserve",
        "meaning is accepted under its own name. `trioserve --help` lists only",
        "trioserve's own names; this page lists every flag of uvicorn",
        f"{UVICORN_VERSION} and Hypercorn {HYPERCORN_VERSION} and what it does here.",
        "",
        "- **the same**: trioserve has the flag under that name.",
        "- **alias of `--x`**: the flag is read as trioserve's `--x`, with that",
        "  flag's checks, environment variable and place in the precedence",
        "  (flag > environment > config file > default).",
        "- **accepted, no effect**: the flag (or that value) asks for what trioserve",
        "  does anyway, and is dropped.",
        "- **not supported yet** and **not applicable**: the command stops with one",
        "  line naming the flag, the server it comes from and the reason (exit 2),",
        "  rather than run without a setting that was asked for.",
        "",
        'An unknown flag gets a "did you mean" hint drawn from trioserve\'s flags and',
        "these, and a bad value is reported under the flag as it was typed.",
    ]
    for server in (UVICORN, HYPERCORN):
        lines += ["", f"## {server}", "", f"| {server} flag | trioserve |", "| --- | --- |"]
        for flag in FLAGS:
            if flag.server == server:
                shown = " ".join(f"`{part}`" for part in flag.shown.split(" "))
                lines.append(f"| {shown} | {flag.meaning} |")
    lines += [
        "",
        "Environment variables of the other servers (`UVICORN_*`) are not read;",
        "trioserve's are `TRIOSERVE_` and the long flag name, so `UVICORN_PORT` becomes",
        "`TRIOSERVE_PORT` and `UVICORN_TIMEOUT_KEEP_ALIVE` becomes",
        "`TRIOSERVE_KEEP_ALIVE_TIMEOUT` ([command line](cli.md#environment-variables)).",
        "",
    ]
    return "\n".join(lines)
