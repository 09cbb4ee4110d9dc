"""Real nginx, HAProxy and trioserve processes for the tests behind a proxy (and for
``bench/behind_nginx.py``).

The proxy configs are the ones ``docs/deployment.md`` shows: :func:`doc_config`
reads the fenced block marked ``<!-- tested: NAME -->`` and replaces the
deployment's addresses and paths with the test's, each of which must be in the
block (so the docs and the tests cannot drift apart). Around it the tests add
only what running unprivileged in a temp dir takes: pid file, error log and temp
paths in the temp dir, no daemon.

No port is picked by binding and closing (another process could take it in
between): the test binds and listens on ``127.0.0.1:0`` itself and hands the
listening socket down. nginx takes it through its ``NGINX`` environment
variable (the one its binary upgrade uses), HAProxy as ``bind fd@N``. trioserve
binds port 0 or a Unix socket in the temp dir, and its address is read from its
``Serving on`` log line.

Every wait is bounded by a deadline; every process is stopped by its PID (and
killed if it does not exit) when its context ends.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
DEPLOYMENT_DOC = ROOT / "docs" / "deployment.md"
APPS_DIR = Path(__file__).resolve().parent / "fixtures" / "apps"
#: The app every proxied test serves (see its docstring for the routes).
APP = "fx_proxied:app"
APT_COMMAND = "apt-get install -y nginx haproxy"
#: Seconds a process gets to start, or to stop after a signal.
DEADLINE = 10.0
#: Where Debian installs the daemons: not on an unprivileged user's PATH.
_SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")


def find_program(name: str) -> str | None:
    """The path of ``name`` on PATH or in the sbin directories, or ``None``."""
    return shutil.which(name) or shutil.which(name, path=os.pathsep.join(_SBIN_DIRS))


def require_program(name: str) -> str:
    """The path of ``name``. Missing, it skips the calling module with a reason
    naming the install command, except under CI (``CI`` set), where the proxies
    are part of the set-up and a missing one is a failure."""
    path = find_program(name)
    if path is not None:
        return path
    reason = f"{name} is not installed; install it with: {APT_COMMAND} (nox -s tests does as root)"
    if os.environ.get("CI"):
        pytest.fail(f"CI is set and {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


# -- configs from the docs --------------------------------------------------------------


def doc_config(name: str, replacements: Mapping[str, str]) -> str:
    """The config block marked ``<!-- tested: NAME -->`` in docs/deployment.md, with
    each key of ``replacements`` (which must occur in it) replaced."""
    text = DEPLOYMENT_DOC.read_text()
    match = re.search(rf"<!-- tested: {re.escape(name)} -->\n```\w*\n(.*?)\n```", text, re.S)
    assert match is not None, f"no block marked 'tested: {name}' in {DEPLOYMENT_DOC}"
    block = match.group(1)
    for old, new in replacements.items():
        assert old in block, f"{old!r} is not in the {name} config of {DEPLOYMENT_DOC}"
        block = block.replace(old, new)
    return block


# -- processes -------------------------------------------------------------------------


class LoggedProcess:
    """A subprocess whose stderr (and stdout, merged) is read by a thread, so the
    pipe never fills, and can be searched with a deadline."""

    def __init__(self, args: list[str], **popen: object) -> None:
        self.args = args
        self.process = subprocess.Popen(  # type: ignore[call-overload]
            args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **popen
        )
        self.output = ""
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return int(self.process.pid)

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            with self._changed:
                self.output += raw.decode(errors="replace")
                self._changed.notify_all()
        self.process.stdout.close()
        with self._changed:
            self._changed.notify_all()

    def wait_for(self, pattern: str, timeout: float = DEADLINE) -> re.Match[str]:
        """Wait until the output matches ``pattern``; fail at the deadline or when
        the process ends first."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while (match := re.search(pattern, self.output)) is None:
                left = deadline - time.monotonic()
                ended = self.process.poll() is not None and not self._reader.is_alive()
                if left <= 0 or ended:
                    raise AssertionError(
                        f"{self.args[0]}: no {pattern!r} in its output "
                        f"({'it exited' if ended else 'deadline'}):\n{self.output}"
                    )
                self._changed.wait(min(left, 0.1))
        return match

    def send_signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float = DEADLINE) -> int:
        """Wait for the exit; the exit code (the process is killed at the deadline)."""
        try:
            return int(self.process.wait(timeout))
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(
                f"{self.args[0]} did not exit in {timeout}s:\n{self.output}"
            ) from None

    def stop(self, signum: int = signal.SIGTERM) -> int | None:
        """Signal the process unless it has exited; wait for it (kill at the deadline)."""
        if self.process.poll() is None:
            self.send_signal(signum)
            try:
                self.process.wait(DEADLINE)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(DEADLINE)
        return self.process.returncode


def listening_socket() -> socket.socket:
    """A TCP socket listening on 127.0.0.1, on a port the kernel chose."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    return sock


def wait_until_answering(url: str, **client: object) -> None:
    """GET ``url`` until it answers 200, for at most :data:`DEADLINE` seconds. A
    proxy on a socket we listen on accepts before it runs, so answering is the
    readiness that counts."""
    deadline = time.monotonic() + DEADLINE
    last: object = None
    while time.monotonic() < deadline:
        try:
            with httpx.Client(timeout=DEADLINE, **client) as http:  # type: ignore[arg-type]
                response = http.get(url)
            if response.status_code == 200:
                return
            last = response
        except httpx.TransportError as exc:
            last = exc
        time.sleep(0.05)
    raise AssertionError(f"{url} did not answer 200 within {DEADLINE}s: {last!r}")


class Trioserve:
    """A ``python -m trioserve`` process serving :data:`APP`.

    Attributes:
      process: the process.
      url: what its (first) ``Serving on`` line says: ``http://127.0.0.1:PORT`` or
        ``unix:PATH``.
    """

    def __init__(self, process: LoggedProcess, url: str) -> None:
        self.process = process
        self.url = url

    @property
    def upstream(self) -> str:
        """The address as an nginx ``server`` line or HAProxy ``server`` takes it:
        ``127.0.0.1:PORT`` or ``unix:PATH``."""
        return self.url.removeprefix("http://")


@contextlib.contextmanager
def run_trioserve(*args: str, bind: str = "127.0.0.1:0") -> Iterator[Trioserve]:
    """Run trioserve with ``args`` on ``bind``; stopped with SIGTERM at the end."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    env = {k: v for k, v in env.items() if not k.startswith("TRIOSERVE_")}
    command = [sys.executable, "-m", "trioserve", "--app-dir", str(APPS_DIR), "--bind", bind]
    process = LoggedProcess([*command, *args, APP], env=env)
    try:
        url = process.wait_for(r"Serving on (\S+)").group(1)
        yield Trioserve(process, url)
    finally:
        process.stop()


# -- nginx ------------------------------------------------------------------------------

#: Where the documented nginx config points, and what the tests put there.
NGINX_UPSTREAM = "server unix:/run/trioserve/trioserve.sock;"
NGINX_HTTP = "listen 80;"
NGINX_HTTPS = "listen 443 ssl;"
NGINX_CERT = "/etc/ssl/certs/example.com.pem"
NGINX_KEY = "/etc/ssl/private/example.com.key"


class Nginx:
    """A running nginx: its plain and TLS ports, and the CA that signed its cert."""

    def __init__(self, process: LoggedProcess, http_port: int, https_port: int) -> None:
        self.process = process
        self.http_url = f"http://127.0.0.1:{http_port}"
        self.https_url = f"https://127.0.0.1:{https_port}"


def _nginx_conf(tmp: Path, site: str) -> str:
    paths = {kind: tmp / kind for kind in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
    for path in paths.values():
        path.mkdir()
    # As root, nginx's workers would switch to an unprivileged user, which cannot
    # enter the test's temp dir; unprivileged, the directive is ignored.
    user = "user root root;" if os.geteuid() == 0 else ""
    return f"""
daemon off;
master_process on;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log notice;
{user}
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {paths["body"]};
    proxy_temp_path {paths["proxy"]};
    fastcgi_temp_path {paths["fastcgi"]};
    uwsgi_temp_path {paths["uwsgi"]};
    scgi_temp_path {paths["scgi"]};
{site}
}}
"""


@contextlib.contextmanager
def run_nginx(
    tmp: Path, upstream: str, cert: Path, key: Path, changes: Mapping[str, str] | None = None
) -> Iterator[Nginx]:
    """Run nginx with the documented config, proxying to ``upstream``
    (``127.0.0.1:PORT`` or ``unix:PATH``), serving plain HTTP and TLS (``cert``,
    ``key``) on ports of its own, with ``changes`` (each text must be in the
    config) made. Stopped with SIGQUIT (graceful) at the end."""
    nginx = require_program("nginx")
    tmp = tmp / "nginx"
    tmp.mkdir()
    with listening_socket() as plain, listening_socket() as tls:
        http_port, https_port = plain.getsockname()[1], tls.getsockname()[1]
        site = doc_config(
            "nginx",
            {
                NGINX_UPSTREAM: f"server {upstream};",
                NGINX_HTTP: f"listen 127.0.0.1:{http_port};",
                NGINX_HTTPS: f"listen 127.0.0.1:{https_port} ssl;",
                NGINX_CERT: str(cert),
                NGINX_KEY: str(key),
                **(changes or {}),
            },
        )
        conf = tmp / "nginx.conf"
        conf.write_text(_nginx_conf(tmp, site))
        fds = [plain.fileno(), tls.fileno()]
        env = {**os.environ, "NGINX": "".join(f"{fd};" for fd in fds)}
        args = [nginx, "-e", str(tmp / "error.log"), "-p", str(tmp), "-c", str(conf)]
        process = LoggedProcess(args, pass_fds=fds, env=env)
    try:
        wait_until_answering(f"http://127.0.0.1:{http_port}/")
        yield Nginx(process, http_port, https_port)
    finally:
        process.stop(signal.SIGQUIT)


def nginx_error_log(tmp: Path) -> str:
    """What nginx wrote to its error log under ``tmp``."""
    return (tmp / "nginx" / "error.log").read_text()


# -- HAProxy -----------------------------------------------------------------------------

HAPROXY_BIND = "bind :80"
HAPROXY_SERVER = "server app1 127.0.0.1:8000"


@contextlib.contextmanager
def run_haproxy(tmp: Path, upstream: str) -> Iterator[str]:
    """Run HAProxy with the documented config in front of ``upstream``
    (``127.0.0.1:PORT``); yields its URL. Stopped with SIGTERM at the end."""
    haproxy = require_program("haproxy")
    tmp = tmp / "haproxy"
    tmp.mkdir()
    with listening_socket() as front:
        port = front.getsockname()[1]
        site = doc_config(
            "haproxy",
            {HAPROXY_BIND: f"bind fd@{front.fileno()}", HAPROXY_SERVER: f"server app1 {upstream}"},
        )
        conf = tmp / "haproxy.cfg"
        conf.write_text(f"global\n    maxconn 1024\n\n{site}\n")
        process = LoggedProcess([haproxy, "-db", "-f", str(conf)], pass_fds=[front.fileno()])
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_answering(f"{url}/")
        yield url
    finally:
        process.stop()


# -- load -------------------------------------------------------------------------------


@dataclasses.dataclass
class Outcome:
    """One request of a load run: when it was sent (``time.monotonic()``), and its
    status and ``x-pid``, or the transport error."""

    sent: float
    status: int | None = None
    pid: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == 200


@dataclasses.dataclass
class Load:
    """Clients in threads, each with its own keep-alive connection to ``url``,
    sending ``path`` (every other request a POST with a small body) until
    ``per_client`` requests are done, :meth:`stop` is called, or ``seconds`` pass.
    Every ``pause_every``-th request a client first pauses for a random time in
    ``pause`` (to hit the server's keep-alive deadline from both sides)."""

    url: str
    clients: int = 8
    per_client: int = 10**9
    seconds: float = 60.0
    path: str = "/"
    pause_every: int = 0
    pause: tuple[float, float] = (0.0, 0.0)
    outcomes: list[Outcome] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        self._stopped = threading.Event()
        self._lock = threading.Condition()
        self._threads = [
            threading.Thread(target=self._client, args=(n,), daemon=True)
            for n in range(self.clients)
        ]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> list[Outcome]:
        """Stop the clients after their current request; all outcomes."""
        self._stopped.set()
        for thread in self._threads:
            thread.join(DEADLINE + 5)
        return self.outcomes

    def join(self) -> list[Outcome]:
        """Wait for the clients to finish on their own; all outcomes."""
        for thread in self._threads:
            thread.join(self.seconds + DEADLINE)
        return self.outcomes

    def wait_for(self, predicate: Callable[[list[Outcome]], bool], timeout: float) -> None:
        """Wait until ``predicate(outcomes)`` holds; fail at the deadline."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while not predicate(self.outcomes):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"load: condition not met in {timeout}s")
                self._lock.wait(min(left, 0.1))

    def _client(self, number: int) -> None:
        rng = random.Random(number)
        end = time.monotonic() + self.seconds
        with httpx.Client(base_url=self.url, timeout=DEADLINE) as http:
            for i in range(self.per_client):
                if self._stopped.is_set() or time.monotonic() > end:
                    return
                if self.pause_every and i % self.pause_every == self.pause_every - 1:
                    self._stopped.wait(rng.uniform(*self.pause))
                outcome = Outcome(time.monotonic())
                try:
                    if i % 2:
                        response = http.post(self.path, content=b"x" * 100)
                    else:
                        response = http.get(self.path)
                    outcome.status = response.status_code
                    outcome.pid = response.headers.get("x-pid")
                except httpx.TransportError as exc:
                    outcome.error = repr(exc)
                with self._lock:
                    self.outcomes.append(outcome)
                    self._lock.notify_all()


def summary(outcomes: list[Outcome]) -> str:
    """Counts by status or error kind, for assertion messages and reports."""
    counts = collections.Counter(
        str(o.status) if o.status is not None else (o.error or "?").split("(")[0] for o in outcomes
    )
    return ", ".join(f"{key}: {n}" for key, n in sorted(counts.items()))
