"""The command line's own rules: which environment variable sets each flag, and how
a usage error reads.

Every option of ``trioserve`` is read from one variable, ``TRIOSERVE_`` and the
long flag name upper-cased with ``-`` as ``_`` (``--keep-alive-timeout`` is
``TRIOSERVE_KEEP_ALIVE_TIMEOUT``). A ``TRIOSERVE_*`` variable that names no flag is
an error, as a misspelt key in a config file is: a setting the user asked for is
never dropped silently. trioserve itself sets no such variable; worker and reload
processes get their settings through a pipe.

A usage error is one ``Error:`` line, exit 2, and names what the user wrote: the
flag as typed (an alias of uvicorn or Hypercorn included) or the environment
variable the value came from.

The access log is the one setting whose command-line default differs from
:class:`~trioserve.Config`'s: :func:`access_log_target` decides it from the
switch, the path and the config file.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import click
from click.core import ParameterSource

__all__ = [
    "ENV_LINE",
    "ENV_PREFIX",
    "UsageLine",
    "access_log_target",
    "as_given",
    "check_environment",
    "describe_usage_error",
    "envvar_for",
    "name_sources",
    "split_flag",
]

ENV_PREFIX = "TRIOSERVE_"

#: The line ``--help`` gives the variables.
ENV_LINE = (
    "Every flag is also read from TRIOSERVE_ and its long name, upper-cased with '-' "
    "as '_' (TRIOSERVE_LOG_LEVEL=debug); an unknown TRIOSERVE_* variable is an error."
)
_SEE_HELP = "; see 'trioserve --help'"


class UsageLine(click.ClickException):
    """A usage error shown as one ``Error:`` line, exit 2."""

    exit_code = 2


def envvar_for(declarations: Sequence[str]) -> str:
    """The variable of the option declared by ``declarations``: ``TRIOSERVE_`` and
    its first long flag name (``--proxy-headers/--no-proxy-headers`` gives
    ``TRIOSERVE_PROXY_HEADERS``)."""
    long = next(d for d in declarations if d.startswith("--")).split("/")[0]
    return ENV_PREFIX + long[2:].upper().replace("-", "_")


def check_environment(
    known: Iterable[str], environ: Mapping[str, str], renamed: Mapping[str, str]
) -> None:
    """Raise :class:`UsageLine` for the first ``TRIOSERVE_*`` variable in ``environ``
    that is set (not empty) and not one of ``known``. The hint is its new name when
    ``renamed`` has it (the names once made from configuration keys), else the
    nearest known name."""
    known = sorted(known)
    for name in sorted(environ):
        if name.startswith(ENV_PREFIX) and name not in known and environ[name]:
            # Compared without the prefix, which every name shares.
            suffixes = [variable[len(ENV_PREFIX) :] for variable in known]
            close = difflib.get_close_matches(name[len(ENV_PREFIX) :], suffixes, n=1)
            nearest = renamed.get(name) or (ENV_PREFIX + close[0] if close else None)
            hint = f" (did you mean {nearest}?)" if nearest else ""
            raise UsageLine(f"unknown environment variable {name}{hint}{_SEE_HELP}")


def split_flag(token: str) -> tuple[str, str | None]:
    """``--name=value`` and ``-kvalue`` into the option and its inline value."""
    if token.startswith("--"):
        name, equals, value = token.partition("=")
        return name, value if equals else None
    if token.startswith("-") and len(token) > 2:
        return token[:2], token[2:]
    return token, None


def _given(
    param: click.Parameter, args: Sequence[str], typed: Sequence[str | None]
) -> list[tuple[str, str | None]]:
    """Each time ``param`` appears in the parsed ``args``: the flag as the user typed
    it and its value (``None`` for a switch), in order."""
    names = {*param.opts, *param.secondary_opts}
    takes_value = isinstance(param, click.Option) and not param.is_flag and not param.count
    found: list[tuple[str, str | None]] = []
    index = 0
    while index < len(args):
        name, value = split_flag(args[index])
        shown = typed[index] if index < len(typed) else None
        index += 1
        if args[index - 1] == "--":
            break
        if name not in names:
            continue
        if takes_value and value is None and index < len(args):
            value = args[index]
            index += 1
        found.append((shown or name, value))
    return found


def name_sources(
    ctx: click.Context, args: Sequence[str], typed: Sequence[str | None]
) -> dict[str, str]:
    """``{parameter name: what set it}`` for each parameter the user set: the flag as
    typed (the last one, which wins) or the environment variable."""
    sources: dict[str, str] = {}
    for param in ctx.command.get_params(ctx):
        if not param.name or not param.expose_value:
            continue
        source = ctx.get_parameter_source(param.name)
        if source is ParameterSource.COMMANDLINE:
            given = _given(param, args, typed)
            if given:
                sources[param.name] = given[-1][0]
        elif source is ParameterSource.ENVIRONMENT and isinstance(param.envvar, str):
            sources[param.name] = param.envvar
    return sources


def _expected(param_type: click.ParamType[Any]) -> str | None:
    if isinstance(param_type, click.types.BoolParamType):
        return "a boolean (1/0, true/false, yes/no)"
    if isinstance(param_type, click.types.FloatParamType):
        return "a number"
    if isinstance(param_type, click.types.IntParamType):
        return "an integer"
    if isinstance(param_type, click.Choice):
        return "one of " + ", ".join(map(str, param_type.choices))
    return None


def _sentence(message: str) -> str:
    """click's message as a clause: lower-case start, no final full stop."""
    message = message.strip().rstrip(".")
    return message[:1].lower() + message[1:]


def _bad_value(
    ctx: click.Context,
    exc: click.BadParameter,
    args: Sequence[str],
    typed: Sequence[str | None],
) -> str:
    param = exc.param
    assert param is not None
    assert param.name is not None
    source = ctx.get_parameter_source(param.name)
    name: str | None = None
    raw: str | None = None
    if source is ParameterSource.ENVIRONMENT and isinstance(param.envvar, str):
        name, raw = param.envvar, os.environ.get(param.envvar)
    elif source is ParameterSource.COMMANDLINE:
        given = _given(param, args, typed)
        for shown, value in given:
            try:
                param.type.convert(value, param, ctx)
            except click.BadParameter:
                name, raw = shown, value
                break
    if name is None:
        return _sentence(exc.format_message())
    expected = _expected(param.type)
    if expected is not None:
        return f"{name} must be {expected}, got {raw!r}"
    return f"{name} {raw!r}: {_sentence(exc.message)}"


def describe_usage_error(
    ctx: click.Context,
    exc: click.UsageError,
    args: Sequence[str],
    typed: Sequence[str | None],
    known_flags: Iterable[str],
) -> str:
    """The one line for ``exc``, raised while parsing the translated ``args``
    (``typed`` beside them); ``known_flags`` are the names an unknown flag is
    matched against for the hint."""
    if isinstance(exc, click.NoSuchOption):
        hint = ""
        if exc.option_name.startswith("--"):
            close = difflib.get_close_matches(exc.option_name, sorted(known_flags), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"no such option {exc.option_name!r}{hint}{_SEE_HELP}"
    if isinstance(exc, click.MissingParameter):
        if isinstance(exc.param, click.Argument):
            return f"no application: give APP ('module:attribute') or TRIOSERVE_APP{_SEE_HELP}"
        return _sentence(exc.format_message()) + _SEE_HELP
    if isinstance(exc, click.BadParameter) and exc.param is not None:
        return _bad_value(ctx, exc, args, typed)
    return _sentence(exc.format_message()) + _SEE_HELP


def as_given(message: str, keys: Iterable[str], sources: Mapping[str, str]) -> str:
    """A configuration error about one of ``keys`` as the user set it:
    ``keep_alive_timeout must be ...`` becomes ``--timeout-keep-alive must be ...``
    or ``TRIOSERVE_KEEP_ALIVE_TIMEOUT must be ...`` (``sources`` as from
    :func:`name_sources`). The binds may come from ``--host``/``--port``, ``--uds``
    or ``--fd``."""
    for key in keys:
        if message.startswith((f"{key} ", f"{key}:")):
            names = [key] if key != "bind" else ["bind", "host", "port", "uds", "fd"]
            given = [sources[name] for name in names if name in sources]
            if not given:
                return message
            # Typed text has no Python type, and spells "no limit" as inf.
            rest = re.sub(r" \((?:int|float|str|bool)\)$", "", message[len(key) :])
            return "/".join(given) + rest.replace("or None for no limit", "or inf for no limit")
    return message


#: How strongly each place sets the access log: the higher wins.
_RANK = {"flag": 2, "variable": 1, "file": 0}


def access_log_target(
    from_file: str | None, path: str | None, switch: bool | None, sources: Mapping[str, str]
) -> str | None:
    """Where the command writes the access log, ``None`` for nowhere.

    ``--access-log``/``--no-access-log`` (``switch``) and ``--access-logfile``
    (``path``) each come from a flag or a variable, and the config file's
    ``accesslog`` (``from_file``) counts when set; an empty path means off, as in
    Hypercorn. The strongest of them (flag > variable > file) says whether the log
    is on, the switch before a path of the same place; then it goes to the strongest
    path given, else stdout. With none of them, the log is on, as in uvicorn.
    """

    def rank(name: str) -> int:
        return _RANK["variable" if sources.get(name, "").startswith(ENV_PREFIX) else "flag"]

    said: list[tuple[int, int, bool]] = []
    if switch is not None:
        said.append((rank("access_log"), 1, switch))
    if path is not None:
        said.append((rank("accesslog"), 0, path != ""))
    if from_file is not None:
        said.append((_RANK["file"], 0, from_file != ""))
    if said and not max(said)[2]:
        return None
    return path or from_file or "-"
