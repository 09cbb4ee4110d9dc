"""trioserve: an ASGI server built on trio's structured concurrency.

Public API: :func:`serve`, :class:`Config` and the exception classes. Testing
helpers live in :mod:`trioserve.testing`.
"""

from __future__ import annotations

from ._config import Config
from ._errors import (
    BindError,
    ClientDisconnected,
    ConfigError,
    LifespanFailure,
    LocalProtocolError,
    RemoteProtocolError,
    TrioserveError,
)
from ._serve import serve

__version__ = "0.1.0"

__all__ = [
    "BindError",
    "ClientDisconnected",
    "Config",
    "ConfigError",
    "LifespanFailure",
    "LocalProtocolError",
    "RemoteProtocolError",
    "TrioserveError",
    "serve",
]


def _fixup_module_metadata() -> None:
    # Public names report the public module, so that docs and reprs say
    # ``trioserve.Config`` and not ``trioserve._config.Config``.
    for name in __all__:
        obj = globals()[name]
        if getattr(obj, "__module__", "").startswith("trioserve."):
            obj.__module__ = "trioserve"


_fixup_module_metadata()
del _fixup_module_metadata
