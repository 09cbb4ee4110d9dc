"""``trioserve.protocol`` is sans-IO: importing it (every module in it) must not
import ``trio``, ``socket`` or ``ssl``.

Each check runs in a fresh interpreter (``sys.executable -c ...``), because the
test process has long imported trio. Three checks:

- a control: a bare interpreter has none of the three modules loaded, and
  importing the whole ``trioserve`` package does load trio (so the detector can
  fail at all);
- the protocol modules themselves: with ``import trio``/``socket``/``ssl`` made
  to fail, and ``trioserve``'s own ``__init__`` (which serves sockets and so needs
  trio) replaced by a bare namespace, every module under ``trioserve/protocol``
  imports and a request/response round trip runs (catching lazy imports too);
- the package as users import it: ``import trioserve.protocol`` leaves none of
  the three in ``sys.modules``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import trioserve

FORBIDDEN = ("trio", "socket", "ssl")
PACKAGE_DIR = Path(trioserve.__file__).resolve().parent


def run_python(code: str) -> list[str]:
    """Run ``code`` in a fresh interpreter; it prints a JSON list on its last line."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    loaded: list[str] = json.loads(result.stdout.strip().splitlines()[-1])
    return loaded


def test_control_detector_sees_trio_when_it_is_imported() -> None:
    assert (
        run_python(
            f"""
        import json, sys
        print(json.dumps([m for m in {FORBIDDEN!r} if m in sys.modules]))
        """
        )
        == []
    )
    assert "trio" in run_python(
        f"""
        import json, sys
        import trioserve.testing
        print(json.dumps([m for m in {FORBIDDEN!r} if m in sys.modules]))
        """
    )


def test_protocol_modules_import_no_trio_socket_or_ssl() -> None:
    loaded = run_python(
        f"""
        import importlib, json, pkgutil, sys, types

        FORBIDDEN = {FORBIDDEN!r}

        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in FORBIDDEN:
                    raise ImportError(f"sans-IO code imported {{name}}")
                return None

        sys.meta_path.insert(0, Block())

        # trioserve/__init__.py imports the server (and so trio); stand in a bare
        # package so that only the protocol modules and what they import run.
        parent = types.ModuleType("trioserve")
        parent.__path__ = [{str(PACKAGE_DIR)!r}]
        sys.modules["trioserve"] = parent

        protocol = importlib.import_module("trioserve.protocol")
        names = [m.name for m in pkgutil.iter_modules(protocol.__path__, "trioserve.protocol.")]
        assert {{"trioserve.protocol._asgi", "trioserve.protocol._http11"}} <= set(names), names
        for name in names:
            importlib.import_module(name)

        from trioserve.protocol._asgi import ResponseState, build_http_scope, check_response_start
        from trioserve.protocol._http11 import HTTP11Protocol
        from trioserve.protocol._http11_policy import RequestLimits

        proto = HTTP11Protocol(RequestLimits(max_head_size=16384))
        proto.receive_data(b"GET /x?y HTTP/1.1\\r\\nHost: a\\r\\n\\r\\n")
        head = proto.next_event()
        scope = build_http_scope(head, {{"type": "http"}}, "", {{}})
        assert scope["path"] == "/x"
        status, headers = check_response_start(
            {{"type": "http.response.start", "status": 200}}, ResponseState.START
        )
        assert proto.response_head(status, headers).startswith(b"HTTP/1.1 200 OK")
        assert proto.response_body(b"hi") == b"2\\r\\nhi\\r\\n"
        assert proto.response_end() == b"0\\r\\n\\r\\n"
        proto.error_response(500, [])

        print(json.dumps([m for m in FORBIDDEN if m in sys.modules]))
        """
    )
    assert loaded == []


def test_import_trioserve_protocol_does_not_import_trio_socket_or_ssl() -> None:
    """What a user of the sans-IO layer sees: ``import trioserve.protocol`` (and its
    modules) from the installed package, with nothing stubbed."""
    loaded = run_python(
        f"""
        import json, sys
        import trioserve.protocol
        import trioserve.protocol._asgi
        import trioserve.protocol._events
        import trioserve.protocol._http11
        print(json.dumps([m for m in {FORBIDDEN!r} if m in sys.modules]))
        """
    )
    assert loaded == []
