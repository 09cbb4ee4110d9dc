"""The public surface of ``trioserve`` and ``trioserve.testing``: ``__all__`` is
sorted and complete, exported objects report the public module, and the exception
classes have the built-in bases their documentation promises.
"""

from __future__ import annotations

import types

import pytest

import trioserve
import trioserve.testing


def _public_names_defined_in(module: types.ModuleType) -> set[str]:
    """Names a user could import from ``module``, leaving out submodules (bound as
    attributes by the import system) and ``from __future__`` features."""
    names = set()
    for name, value in vars(module).items():
        if name.startswith("_"):
            continue
        if isinstance(value, types.ModuleType):
            continue
        if type(value).__module__ == "__future__":
            continue
        names.add(name)
    return names


def test_all_is_sorted() -> None:
    assert list(trioserve.__all__) == sorted(trioserve.__all__)


def test_all_has_no_duplicates() -> None:
    assert len(set(trioserve.__all__)) == len(trioserve.__all__)


def test_all_is_complete() -> None:
    """Every public name in the package namespace is exported, and every exported
    name exists (a stale ``__all__`` entry breaks ``from trioserve import *``).
    ``serve`` is bound on first access (so that the sans-IO layer imports without
    trio), hence every name is touched first."""
    for name in trioserve.__all__:
        getattr(trioserve, name)
    assert set(trioserve.__all__) == _public_names_defined_in(trioserve)


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from trioserve import *", namespace)
    namespace.pop("__builtins__")
    assert set(namespace) == set(trioserve.__all__)


def test_documented_api_is_exported() -> None:
    for name in [
        "serve",
        "Config",
        "ClientDisconnected",
        "LocalProtocolError",
        "RemoteProtocolError",
        "LifespanFailure",
        "BindError",
        "ConfigError",
    ]:
        assert name in trioserve.__all__


@pytest.mark.parametrize("name", trioserve.__all__)
def test_exported_object_reports_public_module(name: str) -> None:
    """``trioserve.Config``, not ``trioserve._config.Config``, in reprs, pickles
    and docs."""
    assert getattr(trioserve, name).__module__ == "trioserve"


def test_testing_all_is_sorted_and_complete() -> None:
    assert list(trioserve.testing.__all__) == sorted(trioserve.testing.__all__)
    assert set(trioserve.testing.__all__) == _public_names_defined_in(trioserve.testing)
    assert {"open_test_client", "open_test_server"} <= set(trioserve.testing.__all__)


@pytest.mark.parametrize(
    ("name", "builtin_base"),
    [
        ("ClientDisconnected", OSError),
        ("LocalProtocolError", RuntimeError),
        ("ConfigError", ValueError),
        ("BindError", OSError),
    ],
)
def test_exception_has_documented_builtin_base(name: str, builtin_base: type) -> None:
    exc_type = getattr(trioserve, name)
    assert issubclass(exc_type, builtin_base)
    assert issubclass(exc_type, trioserve.TrioserveError)


def test_client_disconnected_is_caught_by_oserror_handlers() -> None:
    """ASGI 2.5: send() on a closed connection raises an OSError subclass, so app
    code written against ``except OSError`` keeps working."""
    with pytest.raises(OSError, match="gone"):
        raise trioserve.ClientDisconnected("gone")


def test_every_exception_class_derives_from_trioserve_error() -> None:
    """One hierarchy: ``except trioserve.TrioserveError`` catches every error
    trioserve raises on purpose. (Warning categories are not errors and are left
    out.)"""
    exceptions = [
        obj
        for obj in (getattr(trioserve, name) for name in trioserve.__all__)
        if isinstance(obj, type) and issubclass(obj, BaseException) and not issubclass(obj, Warning)
    ]
    assert {exc.__name__ for exc in exceptions} >= {
        "BindError",
        "ClientDisconnected",
        "ConfigError",
        "LifespanFailure",
        "LocalProtocolError",
        "RemoteProtocolError",
        "TrioserveError",
    }
    for exc_type in exceptions:
        assert issubclass(exc_type, trioserve.TrioserveError)
        # Plain Exceptions: never BaseException-only, so `except Exception` sees them.
        assert issubclass(exc_type, Exception)


def test_remote_protocol_error_carries_status_hint() -> None:
    assert trioserve.RemoteProtocolError("bad").status_hint == 400
    assert trioserve.RemoteProtocolError("big", 431).status_hint == 431
