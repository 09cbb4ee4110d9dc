"""``load_app``: from ``module:attr`` to an ASGI 3 callable, as the CLI uses it.

Covers the spellings (``module:attr``, a dotted attribute path, ``module`` alone
meaning ``module:app``), ``app_dir`` on ``sys.path``, factories, every failure as a
one-line ``AppLoadError`` (module or attribute not found, a module that raises on
import or imports a missing dependency, a factory that raises, not callable, an
invalid spec), and the interface detection: ASGI 3 coroutine functions and objects
are served as they are, a plain function of three parameters returning an awaitable
is ASGI 3 too, ASGI 2 double-callables (class or function style) are adapted and
served correctly through the real server, and WSGI apps are refused with a pointer
to a2wsgi. The app modules live in ``tests/fixtures/apps``.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from trioserve import AppLoadError, Config
from trioserve._app_loader import load_app
from trioserve.testing import open_test_client

APPS_DIR = Path(__file__).parent / "fixtures" / "apps"
APP_DIR = str(APPS_DIR)


@pytest.fixture(autouse=True)
def isolated_imports() -> Iterator[None]:
    """load_app puts ``app_dir`` on sys.path and imports the fixture modules: undo
    both, so that every test imports afresh and no test leaks into another."""
    saved_path = list(sys.path)
    saved_modules = set(sys.modules)
    yield
    sys.path[:] = saved_path
    for name in set(sys.modules) - saved_modules:
        if name.startswith("fx_"):
            del sys.modules[name]


def load(spec: str, *, factory: bool = False):  # type: ignore[no-untyped-def]
    return load_app(spec, factory=factory, app_dir=APP_DIR)


def load_error(spec: str, *, factory: bool = False) -> str:
    """The message of the AppLoadError that loading ``spec`` raises; checked to be
    one line, since the CLI prints it as its only line of output."""
    with pytest.raises(AppLoadError) as info:
        load(spec, factory=factory)
    message = str(info.value)
    assert "\n" not in message
    assert message.strip() == message
    return message


async def get_json(app, path: str, *, method: str = "GET", body: bytes = b"") -> dict:  # type: ignore[no-untyped-def]
    """Serve ``app`` with the real server and return its JSON answer to one request."""
    async with open_test_client(app, Config()) as client:
        response = await client.request(method, path, body=body)
    assert response.status == 200, response.body
    return json.loads(response.body)


def no_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


# -- where the app is ---------------------------------------------------------------


def test_module_colon_attribute_returns_the_asgi3_app_itself() -> None:
    """An ASGI 3 coroutine function is served as it is, not wrapped (a loader that
    wraps everything in an ASGI 2 adapter would call ``app(scope)``)."""
    loaded = load("fx_asgi3:app")
    assert loaded is sys.modules["fx_asgi3"].app


def test_dotted_attribute_path_is_followed() -> None:
    assert load("fx_asgi3:holder.app") is sys.modules["fx_asgi3"].app


def test_module_without_attribute_means_its_app() -> None:
    assert load("fx_asgi3") is sys.modules["fx_asgi3"].app


def test_app_dir_is_put_first_on_sys_path() -> None:
    """The fixture modules are importable only from ``app_dir``."""
    assert APP_DIR not in sys.path
    load("fx_asgi3:app")
    assert sys.path[0] == APP_DIR
    assert Path(sys.modules["fx_asgi3"].__file__).parent == APPS_DIR


async def test_factory_is_called_and_what_it_returns_is_served(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="trioserve.error")
    app = load("fx_factory:create_app", factory=True)
    assert await get_json(app, "/made") == {
        "app": "factory",
        "method": "GET",
        "path": "/made",
        "root_path": "",
        "lifespan": False,
    }
    assert no_errors(caplog) == []


# -- failures: one line each ----------------------------------------------------------


def test_module_not_found() -> None:
    assert load_error("fx_no_such_module:app").startswith("module 'fx_no_such_module' not found")


def test_missing_dependency_of_an_existing_module_is_not_reported_as_module_not_found() -> None:
    """The module exists; what is missing is its import. A naive loader says
    "module 'fx_missing_dependency' not found" and sends the user looking for the
    wrong file."""
    message = load_error("fx_missing_dependency:app")
    assert "fx_this_dependency_is_not_installed" in message
    assert "module 'fx_missing_dependency' not found" not in message


def test_attribute_not_found() -> None:
    assert load_error("fx_asgi3:nope").startswith("attribute 'nope' not found in module 'fx_asgi3'")


def test_dotted_attribute_not_found_names_the_whole_path() -> None:
    message = load_error("fx_asgi3:holder.nope")
    assert "'holder.nope'" in message
    assert "'fx_asgi3'" in message


def test_module_raising_on_import_names_the_exception() -> None:
    message = load_error("fx_import_error:app")
    assert message == "error importing module 'fx_import_error': RuntimeError: API_KEY is not set"


def test_not_callable_names_the_type() -> None:
    message = load_error("fx_asgi3:not_callable")
    assert "'fx_asgi3:not_callable'" in message
    assert "not callable" in message
    assert "dict" in message


def test_factory_raising_is_an_app_load_error_naming_the_exception() -> None:
    message = load_error("fx_factory:broken_factory", factory=True)
    assert "fx_factory:broken_factory" in message
    assert "RuntimeError: cannot reach the database" in message


def test_factory_that_needs_arguments_is_an_app_load_error() -> None:
    message = load_error("fx_factory:needs_settings", factory=True)
    assert "fx_factory:needs_settings" in message
    assert "TypeError" in message


def test_factory_that_returns_none_says_so_not_that_the_app_is_not_callable() -> None:
    """The factory ran; what it gave is the mistake (a missing ``return app``)."""
    message = load_error("fx_factory:forgets_to_return", factory=True)
    assert message == (
        "app factory 'fx_factory:forgets_to_return' returned None, not an ASGI app; "
        "does it end with 'return app'?"
    )


def test_factory_that_returns_a_non_callable_names_what_it_returned() -> None:
    message = load_error("fx_factory:returns_settings", factory=True)
    assert message == (
        "app factory 'fx_factory:returns_settings' returned an object of type dict, not an ASGI app"
    )


@pytest.mark.parametrize(
    ("spec", "meant"),
    [
        ("absent.py:app", "'absent:app'"),
        ("absent.py", "'absent:app'"),
        ("src/absent.py:make", "'--app-dir src absent:make'"),
    ],
)
def test_a_file_name_that_does_not_exist_still_gets_the_module_name_hint(
    spec: str, meant: str
) -> None:
    """``app.py:app`` is a file name whether or not the file is there: the hint
    says how to name a module, rather than that no module 'app.py' exists."""
    message = load_error(spec)
    assert message == (
        f"invalid app {spec!r}: give a module name, not a file; did you mean {meant}?"
    )


def test_a_module_named_py_in_a_package_is_still_imported(tmp_path: Path) -> None:
    """``fx_pkg.py`` names the module ``py`` of the package ``fx_pkg`` when that is there."""
    (tmp_path / "fx_pkg").mkdir()
    (tmp_path / "fx_pkg" / "__init__.py").write_text("")
    (tmp_path / "fx_pkg" / "py.py").write_text("async def app(scope, receive, send):\n    pass\n")
    app = load_app("fx_pkg.py:app", app_dir=str(tmp_path))
    assert app is sys.modules["fx_pkg.py"].app


def test_factory_that_is_not_callable_is_an_app_load_error() -> None:
    assert "not callable" in load_error("fx_asgi3:not_callable", factory=True)


@pytest.mark.parametrize("spec", [":app", "fx_asgi3:not-an-identifier", "fx_asgi3:holder..app"])
def test_invalid_spec_is_refused_before_importing(spec: str) -> None:
    assert load_error(spec).startswith(f"invalid app {spec!r}")


# -- interface detection ------------------------------------------------------------


async def test_asgi2_class_app_is_adapted_and_served(caplog: pytest.LogCaptureFixture) -> None:
    """``App(scope)`` then ``await instance(receive, send)``: a server that calls an
    ASGI 2 class with three arguments gets a TypeError and answers 500."""
    caplog.set_level(logging.DEBUG, logger="trioserve.error")
    app = load("fx_asgi2:app")
    assert app is not sys.modules["fx_asgi2"].App
    body = await get_json(app, "/two", method="POST", body=b"hello")
    assert body == {"app": "asgi2", "path": "/two", "body": "hello"}
    assert no_errors(caplog) == []


async def test_asgi2_function_style_app_is_adapted_and_served() -> None:
    app = load("fx_asgi2:function_style")
    async with open_test_client(app) as client:
        response = await client.get("/")
    assert response.status == 200
    assert response.body == b"asgi2 function GET"


async def test_plain_function_of_three_parameters_returning_an_awaitable_is_asgi3(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Not a coroutine function, yet ASGI 3: taking it for ASGI 2 would call it with
    the scope alone (TypeError, 500)."""
    caplog.set_level(logging.DEBUG, logger="trioserve.error")
    app = load("fx_asgi3:plain_function")
    assert app is sys.modules["fx_asgi3"].plain_function
    body = await get_json(app, "/plain")
    assert body["app"] == "plain-function"
    assert body["path"] == "/plain"
    assert no_errors(caplog) == []


async def test_object_with_async_call_is_served_as_asgi3() -> None:
    app = load("fx_asgi3:instance")
    assert app is sys.modules["fx_asgi3"].instance
    assert (await get_json(app, "/obj"))["app"] == "instance"


@pytest.mark.parametrize("spec", ["fx_wsgi:app", "fx_wsgi:flask_like"])
def test_wsgi_app_is_refused_with_a2wsgi_hint(spec: str) -> None:
    """A WSGI app would otherwise be taken for ASGI 2 and fail on every request."""
    message = load_error(spec)
    assert spec in message
    assert "WSGI" in message
    assert "a2wsgi" in message
