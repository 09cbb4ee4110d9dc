"""trioserve: an ASGI server built on trio's structured concurrency.

Public API: :func:`serve`, :class:`Config`, :func:`load_config` (a Hypercorn-style
configuration file or object) and the exception classes. Testing
helpers live in :mod:`trioserve.testing`.
"""

from __future__ import annotations

import typing

from ._config import Config
from ._config_sources import load_config
from ._errors import (
    AppLoadError,
    BindError,
    ClientDisconnected,
    ConfigError,
    ConfigWarning,
    LifespanFailure,
    LocalProtocolError,
    RemoteProtocolError,
    TrioserveError,
)

if typing.TYPE_CHECKING:
    from ._serve import serve

__version__ = "0.1.0"

__all__ = [
    "AppLoadError",
    "BindError",
    "ClientDisconnected",
    "Config",
    "ConfigError",
    "ConfigWarning",
    "LifespanFailure",
    "LocalProtocolError",
    "RemoteProtocolError",
    "TrioserveError",
    "load_config",
    "serve",
]


def __getattr__(name: str) -> typing.Any:
    # `serve` is imported on first use, so that importing trioserve (or the sans-IO
    # trioserve.protocol) does not import trio, socket and ssl.
    if name == "serve":
        from ._serve import serve

        serve.__module__ = "trioserve"
        globals()["serve"] = serve
        return serve
    raise AttributeError(f"module 'trioserve' has no attribute {name!r}")


def _fixup_module_metadata() -> None:
    # Public names report the public module, so that docs and reprs say
    # ``trioserve.Config`` and not ``trioserve._config.Config``.
    for name in __all__:
        obj = globals().get(name)
        if getattr(obj, "__module__", "").startswith("trioserve."):
            obj.__module__ = "trioserve"


_fixup_module_metadata()
del _fixup_module_metadata
