"""``module:attr`` to an ASGI 3 callable.

Every way this can fail becomes an :class:`AppLoadError` whose message is one line
naming the cause, because the CLI prints that line and exits 3.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import os
import sys
from typing import Any, cast

from ._errors import AppLoadError
from ._types import ASGIApp, Receive, Scope, Send

__all__ = ["load_app", "to_asgi3"]


def load_app(spec: str, *, factory: bool = False, app_dir: str | None = ".") -> ASGIApp:
    """Import ``spec`` (``module:attr``, ``module:obj.attr``, or ``module`` meaning
    ``module:app``) and return it as an ASGI 3 callable.

    Args:
      spec: where the app is.
      factory: call the attribute with no arguments and serve what it returns.
      app_dir: put this directory first on ``sys.path`` before importing.

    Raises:
      AppLoadError: with a one-line reason.
    """
    module_name, colon, attr_path = spec.partition(":")
    attr_path = attr_path or "app"
    if _names_a_file(module_name, app_dir):
        raise AppLoadError(
            f"invalid app {spec!r}: give a module name, not a file; did you mean "
            f"{_module_spelling(module_name, attr_path)}?"
        )
    if not module_name or not all(part.isidentifier() for part in attr_path.split(".")):
        raise AppLoadError(f"invalid app {spec!r}: expected 'module:attribute'")
    if app_dir is not None:
        # Absolute: Python caches the finder of "." for the directory current then.
        app_dir = os.path.abspath(app_dir)
        if app_dir not in sys.path:
            sys.path.insert(0, app_dir)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (
            module_name == exc.name or module_name.startswith(exc.name + ".")
        ):
            raise AppLoadError(_not_found(module_name, app_dir)) from exc
        raise AppLoadError(f"error importing module {module_name!r}: {exc}") from exc
    except Exception as exc:
        raise AppLoadError(
            f"error importing module {module_name!r}: {type(exc).__name__}: {exc}"
        ) from exc
    obj: Any = module
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise AppLoadError(_no_attribute(module, module_name, attr_path, colon)) from None
    if factory:
        if not callable(obj):
            raise AppLoadError(f"app factory {spec!r} is not callable")
        try:
            obj = obj()
        except Exception as exc:
            raise AppLoadError(f"app factory {spec!r} raised {type(exc).__name__}: {exc}") from exc
        if obj is None:
            raise AppLoadError(
                f"app factory {spec!r} returned None, not an ASGI app; "
                "does it end with 'return app'?"
            )
        if not callable(obj):
            raise AppLoadError(
                f"app factory {spec!r} returned an object of type {type(obj).__name__}, not an ASGI app"
            )
    if not callable(obj):
        raise AppLoadError(f"{spec!r} is not callable (got {type(obj).__name__})")
    return to_asgi3(obj, spec)


#: Directories below the working directory where a missing module is looked for,
#: to name it in the error: only these, so that the look stays cheap.
_LOOK_IN = ("src", "app")
#: ASGI apps the attribute error names at most.
_APPS_SHOWN = 5


def _names_a_file(module_name: str, app_dir: str | None) -> bool:
    """``module_name`` is a path (``app.py``, ``src/app.py``) rather than a
    module name, whether or not the file is there: a module named ``py`` in a
    package ``app`` counts only when that module's file is there."""
    if "/" in module_name or os.sep in module_name:
        return True
    if not module_name.endswith(".py"):
        return False
    base = os.path.join(app_dir if app_dir is not None else ".", *module_name.split("."))
    return not (os.path.isfile(base + ".py") or os.path.isdir(base))


def _module_spelling(path: str, attr_path: str) -> str:
    """How the command names the app in the file ``path``: ``'app:app'``, with
    ``--app-dir`` when the file is in another directory."""
    directory, _, name = path.replace(os.sep, "/").rpartition("/")
    name = name.removesuffix(".py")
    spelling = f"'{name}:{attr_path}'"
    return f"'--app-dir {directory} {name}:{attr_path}'" if directory else spelling


def _not_found(module_name: str, app_dir: str | None) -> str:
    where = app_dir or os.getcwd()
    message = f"module {module_name!r} not found in {where}"
    top = module_name.partition(".")[0]
    for sub in (*_LOOK_IN, *_subdirectories(os.getcwd())):
        base = os.path.join(os.getcwd(), sub)
        if os.path.isfile(os.path.join(base, top + ".py")) or os.path.isfile(
            os.path.join(base, top, "__init__.py")
        ):
            return f"{message}; it is in {sub}/: pass --app-dir {sub}"
    return f"{message}; run trioserve from the app's directory or pass --app-dir DIR"


def _subdirectories(path: str) -> list[str]:
    try:
        with os.scandir(path) as entries:
            names = [e.name for e in entries if e.is_dir() and not e.name.startswith(".")]
    except OSError:
        return []
    return sorted(name for name in names if name not in _LOOK_IN)[:50]


def _no_attribute(module: Any, module_name: str, attr_path: str, colon: str) -> str:
    message = f"attribute {attr_path!r} not found in module {module_name!r}"
    if not colon:
        message += f" ({module_name!r} means '{module_name}:app')"
    apps = [
        name
        for name, value in sorted(vars(module).items())
        if not name.startswith("_") and _looks_like_asgi(value)
    ]
    if not apps:
        return message + "; it has nothing that looks like an ASGI app"
    shown = ", ".join(f"'{module_name}:{name}'" for name in apps[:_APPS_SHOWN])
    return f"{message}; ASGI apps in it: {shown}"


def _looks_like_asgi(value: Any) -> bool:
    if inspect.isclass(value) or inspect.ismodule(value) or not callable(value):
        return False
    try:
        return _is_coroutine_callable(value) and _positional_count(value) == 3
    except (TypeError, ValueError):
        return False


def _is_coroutine_callable(obj: Any) -> bool:
    if inspect.isclass(obj):
        return False
    call = obj if inspect.isfunction(obj) or inspect.ismethod(obj) else obj.__call__
    while isinstance(call, functools.partial):
        call = call.func
    return inspect.iscoroutinefunction(call)


def _positional_count(obj: Any) -> int | None:
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return None
    return sum(
        p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        for p in signature.parameters.values()
    )


def to_asgi3(obj: Any, name: str = "app") -> ASGIApp:
    """Return ``obj`` as an ASGI 3 app, adapting an ASGI 2 (double-callable) one.

    Raises:
      AppLoadError: ``obj`` looks like a WSGI application.
    """
    if _is_coroutine_callable(obj):
        return cast(ASGIApp, obj)
    count = _positional_count(obj)
    if count == 2:
        raise AppLoadError(
            f"{name!r} looks like a WSGI application (it takes environ and "
            "start_response); trioserve serves ASGI. Wrap it with a2wsgi: "
            "https://pypi.org/project/a2wsgi/"
        )
    if count == 3 and not inspect.isclass(obj):
        # Three positional arguments but not a coroutine function: an ASGI 3 app
        # written as a plain function returning an awaitable. Serve it as is.
        return cast(ASGIApp, obj)

    async def asgi2_adapter(scope: Scope, receive: Receive, send: Send) -> None:
        instance = obj(scope)
        await instance(receive, send)

    return asgi2_adapter
