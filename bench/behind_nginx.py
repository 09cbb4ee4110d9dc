#!/usr/bin/env python3
"""502s from nginx in front of a server whose keep-alive timeout is short.

    python bench/behind_nginx.py                       # trioserve and uvicorn
    python bench/behind_nginx.py --servers trioserve --keep-alive 0.05 --requests 500
    PYTHONPATH=/tmp/uvicorn-lib python bench/behind_nginx.py   # uvicorn from elsewhere

Each server listens on a Unix socket behind nginx with upstream keep-alive, set up
as docs/deployment.md shows (the harness of ``tests/_proxies.py``), with a
keep-alive timeout far below nginx's idle time for upstream connections. The
clients are threads, one keep-alive connection each, every other request a POST.
nginx retries a GET that fails on a reused connection, not a POST: a lost request
comes back as a 502. Two scenarios (``--scenarios``):

- ``pauses``: requests answered at once, and every fourth request the clients
  first pause for a random 0.6 to 1.6 keep-alive timeouts, so nginx keeps
  sending requests on connections that the server's deadline is closing. Some
  502s are HTTP/1.1's close race, which no server avoids.
- ``long-requests``: each request takes 1.2 to 2 keep-alive timeouts to answer
  (the app sleeps), and the clients send the next one as soon as the answer is
  back, so no connection is ever idle for long. A server whose keep-alive timer
  counts only idle time gives no 502 here; one whose timer keeps running into
  the next request kills that request's connection.

Prints the counts per scenario and server, and nginx's error-log reasons.

Needs nginx (``apt-get install -y nginx``), trustme and httpx (the test extra),
and uvicorn importable by this interpreter for the comparison (put it on
``PYTHONPATH`` if it is installed elsewhere). A counting experiment, not a
benchmark: run it on an idle machine for stable figures.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import trustme

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from _proxies import (  # noqa: E402 - the test harness lives with the tests
    APP,
    APPS_DIR,
    Load,
    LoggedProcess,
    nginx_error_log,
    run_nginx,
    run_trioserve,
    summary,
)


@contextlib.contextmanager
def run_uvicorn(sock: str, keep_alive: float) -> Iterator[str]:
    """uvicorn on ``sock``; its keep-alive timeout set through the Python API, since
    the command line takes whole seconds only."""
    code = (
        "import sys, uvicorn; sys.path.insert(0, sys.argv[1]); "
        "uvicorn.run(sys.argv[2], uds=sys.argv[3], timeout_keep_alive=float(sys.argv[4]))"
    )
    process = LoggedProcess([sys.executable, "-c", code, str(APPS_DIR), APP, sock, str(keep_alive)])
    try:
        process.wait_for(r"Uvicorn running on")
        yield f"unix:{sock}"
    finally:
        process.stop()


@contextlib.contextmanager
def run_server(name: str, sock: str, keep_alive: float) -> Iterator[str]:
    if name == "uvicorn":
        with run_uvicorn(sock, keep_alive) as upstream:
            yield upstream
    else:
        with run_trioserve("--keep-alive-timeout", str(keep_alive), bind=f"unix:{sock}") as server:
            yield server.upstream


def reasons(log: str) -> str:
    """nginx's upstream errors, counted by their message."""
    found = re.findall(r"\[error\] [^:]+: \*\d+ (.*?) while ", log)
    return ", ".join(f"{n} x {msg}" for msg, n in collections.Counter(found).most_common())


def load_for(scenario: str, url: str, args: argparse.Namespace) -> Load:
    """The clients of ``scenario`` (see the module docstring) against ``url``."""
    keep_alive = args.keep_alive
    if scenario == "pauses":
        pause = (0.6 * keep_alive, 1.6 * keep_alive)
        return Load(url, args.clients, args.requests, 300, pause_every=4, pause=pause)
    path = f"/work?min={1.2 * keep_alive:g}&max={2 * keep_alive:g}"
    return Load(url, args.clients, args.requests, 300, path=path)


def measure(scenario: str, name: str, args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="bn-") as tmp_name:
        tmp = Path(tmp_name)
        cert = trustme.CA().issue_cert("127.0.0.1")
        cert.cert_chain_pems[0].write_to_path(str(tmp / "cert.pem"))
        cert.private_key_pem.write_to_path(str(tmp / "key.pem"))
        with (
            run_server(name, str(tmp / "app.sock"), args.keep_alive) as upstream,
            run_nginx(tmp, upstream, tmp / "cert.pem", tmp / "key.pem") as nginx,
        ):
            with load_for(scenario, nginx.http_url, args) as load:
                outcomes = load.join()
            log = nginx_error_log(tmp)
        print(f"{scenario:14} {name:10} {summary(outcomes)}", flush=True)
        if why := reasons(log):
            print(f"{'':25} nginx: {why}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", default="trioserve,uvicorn")
    parser.add_argument("--scenarios", default="pauses,long-requests")
    parser.add_argument("--keep-alive", type=float, default=0.05, help="seconds (default 0.05)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=500, help="per client (default 500)")
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    os.environ.pop("CI", None)  # a missing nginx stops the script either way
    if "uvicorn" in args.servers:
        import uvicorn

        print(f"uvicorn {uvicorn.__version__} from {Path(uvicorn.__file__).parent}")
    for _ in range(args.runs):
        for scenario in args.scenarios.split(","):
            if scenario not in ("pauses", "long-requests"):
                parser.error(f"unknown scenario {scenario!r}")
            for name in args.servers.split(","):
                measure(scenario, name, args)


if __name__ == "__main__":
    main()
