"""Where a :class:`~trioserve.Config` comes from: Hypercorn-style configuration
sources (a TOML file, ``python:module.attr``, ``file:path.py``) and the generated
reference page of every key.

A key Hypercorn knows but trioserve does not implement is a warning; any other
unknown key is an error with a did-you-mean hint, so a typo never passes silently.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import inspect
import sys
import types
import warnings
from collections.abc import Mapping
from typing import Any

from ._config import Config, suggest_key
from ._errors import ConfigError, ConfigWarning

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - version-dependent import
    import tomli as tomllib

__all__ = [
    "HYPERCORN_DEFAULTS",
    "HYPERCORN_ONLY_KEYS",
    "HYPERCORN_RENAMED_KEYS",
    "config_from_mapping",
    "load_config",
    "reference_markdown",
]

_FIELD_NAMES = frozenset(field.name for field in dataclasses.fields(Config))


#: Hypercorn's default for each setting trioserve does not implement. A config
#: file that sets one to another value gets a ConfigWarning naming it, and it is
#: ignored; its default changes nothing, so it passes quietly (a file written out
#: from Hypercorn's defaults holds them all). ``_NO_DEFAULT``: always warned of.
_NO_DEFAULT = object()
HYPERCORN_DEFAULTS: dict[str, object] = {
    "alpn_protocols": ["h2", "http/1.1"],
    "alt_svc_headers": [],
    "application_path": _NO_DEFAULT,
    "daemon": True,
    "debug": False,
    "dogstatsd_tags": "",
    "group": None,
    "h11_pass_raw_headers": False,
    "h2_max_concurrent_streams": 100,
    "h2_max_header_list_size": 2**16,
    "h2_max_inbound_frame_size": 2**14,
    "keep_alive_max_requests": 1000,
    "logconfig_dict": None,
    "logger_class": _NO_DEFAULT,
    "max_app_queue_size": 10,
    "pid_path": None,
    "quic_bind": [],
    "server_names": [],
    "statsd_host": None,
    "statsd_prefix": "",
    "user": None,
    "verify_flags": None,
    # trioserve runs every app on trio: asyncio (the default) and trio are what
    # a file means anyway; uvloop gets its own warning.
    "worker_class": "asyncio",
    "wsgi_max_body_size": 16 * 1024 * 1024,
}

#: Hypercorn settings trioserve does not implement: a config file that sets one to
#: a value other than Hypercorn's default gets a ConfigWarning naming it, and it
#: is ignored.
HYPERCORN_ONLY_KEYS = frozenset(HYPERCORN_DEFAULTS)

#: Hypercorn settings trioserve implements under another name: Hypercorn's name is
#: read as trioserve's.
HYPERCORN_RENAMED_KEYS = {"use_reloader": "reload"}


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
        "A configuration file that sets one of these to a value other than Hypercorn's",
        "default gets a `ConfigWarning` naming it, and the setting is ignored; Hypercorn's",
        "default changes nothing and passes quietly:",
        "",
        ", ".join(f"`{key}`" for key in sorted(HYPERCORN_ONLY_KEYS)) + ".",
        "",
        "## Hypercorn settings under another name",
        "",
        "A configuration file may use Hypercorn's name; it is read as trioserve's key:",
        "",
        *(f"- `{old}`: `{new}`" for old, new in sorted(HYPERCORN_RENAMED_KEYS.items())),
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
        if key in HYPERCORN_RENAMED_KEYS:
            key = HYPERCORN_RENAMED_KEYS[key]
            if key in data:
                raise ConfigError(
                    f"{source}: sets both {key!r} and Hypercorn's name for it; keep one"
                )
        if key in _FIELD_NAMES:
            keys[key] = value
        elif key in HYPERCORN_ONLY_KEYS:
            warning = _ignored_setting(key, value)
            if warning is not None:
                warnings.warn(f"{source}: {warning}", ConfigWarning, stacklevel=2)
        else:
            raise ConfigError(f"{source}: unknown configuration key {key!r}{suggest_key(key)}")
    try:
        return Config(**keys)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def _ignored_setting(key: str, value: object) -> str | None:
    """The warning for a Hypercorn setting trioserve ignores; ``None`` when its
    value changes nothing."""
    if key == "worker_class" and value in ("asyncio", "trio"):
        return None
    if key == "worker_class" and value == "uvloop":
        return (
            "Hypercorn setting 'worker_class' = 'uvloop' is ignored: trioserve runs apps "
            "on trio, not on an asyncio loop; see docs/asyncio-libraries.md"
        )
    default = HYPERCORN_DEFAULTS[key]
    if default is not _NO_DEFAULT and value == default and type(value) is type(default):
        return None
    return f"Hypercorn setting {key!r} is not supported by trioserve; ignored"


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
