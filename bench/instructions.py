#!/usr/bin/env python3
"""Instructions per hello request, counted by callgrind.

    python bench/instructions.py                          # trioserve, 1,000 and 3,000 requests
    python bench/instructions.py --repeat 3 --server uvicorn-h11
    python bench/instructions.py --python /path/to/venv/bin/python --out-dir /tmp/cg

For each request total N (``--requests``, default 1000,3000) the server runs under
``valgrind --tool=callgrind``; once it accepts connections, N keep-alive GETs of
``bench.apps.hello:app`` are spread over ``--connections`` (default 16) connections,
one request in flight on each; then every connection is half-closed and read to its
end, the server is stopped with SIGINT (its graceful shutdown) and callgrind's total
of executed instructions (``Ir``) is read from its output file. Start-up, the
first requests on each connection and shutdown are the same for every N, so

    (Ir(N2) - Ir(N1)) / (N2 - N1)

is the server's user-space instruction count for one request. The count does not
depend on the machine's load or clock; repetitions (``--repeat``) show how much the
timing of the connections moves it. See README.md.

Standard library only. Needs ``valgrind`` (Debian: ``apt-get install -y valgrind``)
and the server under test importable by ``--python`` (default: this interpreter).
The server runs in the repository root, as in run.py, so ``python -m trioserve``
imports the ``trioserve`` of this checkout.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import run  # bench/run.py, beside this script

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
HOST = run.HOST
APP = "bench.apps.hello:app"
REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
HELLO = b"Hello world!"
READY_TIMEOUT = 120.0  # seconds the server may take to accept a connection under callgrind
IO_TIMEOUT = 120.0  # seconds the client waits for any one send or receive
STOP_TIMEOUT = 120.0  # seconds between SIGINT and SIGKILL
MAX_LINE = 65536  # longest status or header line the client accepts


def hello_command(server: run.Server) -> Callable[[str, int], list[str]]:
    """``server``'s command for ``(python, port)``, serving the hello app."""
    return lambda py, port: server.argv(py, APP, port)


# run.py's servers that can answer hello, with the same commands, so that the
# figures describe the same server configurations as the wrk bench.
SERVERS: dict[str, Callable[[str, int], list[str]]] = {
    name: hello_command(server)
    for name, server in run.SERVERS.items()
    if server.scenarios is None or "hello" in server.scenarios
}

# ------------------------------------------------------------------------------ client


def read_response(reader: BinaryIO) -> None:
    """Read exactly one response, framed by its Content-Length; it must be hello's."""
    status_line = reader.readline(MAX_LINE)
    if not status_line:
        raise ConnectionError("the server closed the connection instead of answering")
    parts = status_line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or parts[1] != b"200":
        raise RuntimeError(f"unexpected status line {status_line!r}")
    length = None
    while True:
        line = reader.readline(MAX_LINE)
        if not line.endswith(b"\n"):
            raise ConnectionError(f"response head cut off at {line!r}")
        if line in (b"\r\n", b"\n"):
            break
        name, _, value = line.partition(b":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection" and value == b"close":
            raise RuntimeError("the server closes the connection: not keep-alive")
    if length is None:
        raise RuntimeError("response without Content-Length")
    body = reader.read(length)
    if body != HELLO:
        raise RuntimeError(f"unexpected body {body!r}")


def drive(port: int, requests: int, connections: int) -> None:
    """``requests`` GETs over ``connections`` keep-alive connections, one thread each.

    Every connection is opened before the first request is sent, and at the end is
    half-closed and read until the server closes it, so that the server has finished
    with every connection before it is stopped.
    """
    counts = [requests // connections + (i < requests % connections) for i in range(connections)]
    socks = [socket.create_connection((HOST, port), timeout=IO_TIMEOUT) for _ in counts]
    errors: list[BaseException] = []

    def one(sock: socket.socket, count: int) -> None:
        try:
            with sock, sock.makefile("rb") as reader:
                for _ in range(count):
                    sock.sendall(REQUEST)
                    read_response(reader)
                sock.shutdown(socket.SHUT_WR)
                rest = reader.read()
                if rest:
                    raise RuntimeError(f"unexpected bytes after the last response: {rest!r}")
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [
        threading.Thread(target=one, args=(sock, count), daemon=True)
        for sock, count in zip(socks, counts, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        # Each send and receive is bounded by IO_TIMEOUT, so every thread ends.
        thread.join()
    if errors:
        raise RuntimeError(f"{len(errors)} of {connections} connections failed") from errors[0]


# ------------------------------------------------------------------------------ server


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def server_env() -> dict[str, str]:
    env = dict(os.environ)
    # Bytecode is cached (and primed by prime()), so that no run pays for the
    # compiler and the others not.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    # A fixed string hash seed: every run probes its dicts and sets the same way.
    env["PYTHONHASHSEED"] = "0"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def wait_ready(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    """Poll the port until it accepts a connection (at most READY_TIMEOUT)."""
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}; see {log}:\n{tail(log)}")
        try:
            with socket.create_connection((HOST, port), timeout=IO_TIMEOUT):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not ready in {READY_TIMEOUT} s; see {log}") from None
            time.sleep(0.05)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGINT (graceful shutdown), then SIGKILL after STOP_TIMEOUT."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise RuntimeError(f"server still running {STOP_TIMEOUT} s after SIGINT") from None


def run_server(
    command: Callable[[int], list[str]], log: Path, requests: int, connections: int
) -> None:
    """Start ``command(port)``, wait until it accepts, drive ``requests`` GETs, stop it."""
    port = free_port()
    argv = command(port)
    with open(log, "ab") as out:
        out.write(f"\n=== {' '.join(argv)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            argv, cwd=ROOT, env=server_env(), stdin=subprocess.DEVNULL, stdout=out, stderr=out
        )
        try:
            wait_ready(proc, port, log)
            drive(port, requests, connections)
        finally:
            stop(proc)
    if proc.returncode != 0:
        raise RuntimeError(f"server exited with {proc.returncode}; see {log}:\n{tail(log)}")


def prime(args: argparse.Namespace, log: Path) -> None:
    """One run without callgrind: checks that the server answers, and writes its
    bytecode cache, so that every callgrind run loads the same files."""

    def command(port: int) -> list[str]:
        return SERVERS[args.server](args.python, port)

    run_server(command, log, args.connections, args.connections)


def measure(args: argparse.Namespace, out_dir: Path, rep: int, requests: int) -> int:
    """Instructions executed by one server process that answered ``requests`` GETs."""
    out = out_dir / f"callgrind.{args.server}.{rep}.{requests}"
    out.unlink(missing_ok=True)

    def command(port: int) -> list[str]:
        return [
            args.valgrind,
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            *SERVERS[args.server](args.python, port),
        ]

    run_server(command, out_dir / f"{args.server}.log", requests, args.connections)
    return callgrind_total(out)


def callgrind_total(path: Path) -> int:
    """``Ir`` from the ``totals:`` line of a callgrind output file.

    The ``summary:`` line of the header is the fallback: callgrind writes it before
    the cost lines, and it lacks the instructions run while they are written (about
    a thousand); ``totals:`` is the figure callgrind prints as ``Collected``.
    """
    events: list[str] = []
    found: dict[bytes, int] = {}
    with open(path, "rb") as f:
        for raw in f:
            if raw.startswith(b"events:"):
                events = raw.decode().split(":", 1)[1].split()
            elif raw.startswith((b"totals:", b"summary:")):
                if "Ir" not in events:
                    raise RuntimeError(f"{path}: no Ir among the events {events}")
                key, _, values = raw.partition(b":")
                found[key] = int(values.split()[events.index("Ir")])
    for key in (b"totals", b"summary"):
        if key in found:
            return found[key]
    raise RuntimeError(f"{path}: no totals: or summary: line")


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# ------------------------------------------------------------------------------ driver


def describe(args: argparse.Namespace) -> list[str]:
    """Header lines: what ran, from where, with which versions."""
    # The server's package and where it is imported from; canned-trio is trio alone.
    package = "trio" if args.server == "canned-trio" else args.server.split("-")[0]
    probe = (
        "import importlib, platform\n"
        "from importlib.metadata import version\n"
        f"m = importlib.import_module({package!r})\n"
        "print(platform.python_implementation(), platform.python_version(), m.__file__)\n"
        "for p in ['trioserve', 'trio', 'h11', 'uvicorn', 'hypercorn']:\n"
        "    try: print(p, version(p))\n"
        "    except Exception: pass\n"
    )
    found = subprocess.run(
        [args.python, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=False
    )
    if found.returncode != 0:
        raise SystemExit(f"{args.python} cannot import the server:\n{found.stderr.strip()}")
    lines = found.stdout.splitlines()
    git = subprocess.run(
        ["git", "describe", "--always", "--dirty"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    valgrind = subprocess.run(
        [args.valgrind, "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    implementation, version, module = lines[0].split(" ", 2)
    packages = ", ".join(lines[1:])
    return [
        f"# instructions per request: {args.server}, git {git or 'unknown'}, "
        f"{platform.machine()}, {valgrind}",
        f"# {implementation} {version} ({args.python}); server code: {module}",
        f"# {packages}",
        f"# {APP}, requests {args.requests[0]:,} and {args.requests[1]:,} "
        f"over {args.connections} keep-alive connections, {args.repeat} repetition(s)",
    ]


def requests_pair(spec: str) -> tuple[int, int]:
    try:
        n1, n2 = (int(part) for part in spec.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError("two totals, e.g. 1000,3000") from None
    if not 0 < n1 < n2:
        raise argparse.ArgumentTypeError("need 0 < N1 < N2")
    return n1, n2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Servers: " + ", ".join(SERVERS),
    )
    parser.add_argument("--server", choices=sorted(SERVERS), default="trioserve")
    parser.add_argument("--python", default=sys.executable, help="interpreter for the server")
    parser.add_argument(
        "--requests",
        type=requests_pair,
        default=(1000, 3000),
        metavar="N1,N2",
        help="the two request totals (default 1000,3000)",
    )
    parser.add_argument("--connections", type=int, default=16, help="keep-alive connections")
    parser.add_argument("--repeat", type=int, default=1, help="repetitions (default 1)")
    parser.add_argument("--valgrind", default="valgrind", help="the valgrind executable")
    parser.add_argument(
        "--out-dir",
        type=Path,
        help="keep callgrind's output files and the server log here "
        "(default: a temporary directory, removed after a successful run)",
    )
    args = parser.parse_args(argv)
    if args.connections < 1 or args.repeat < 1:
        parser.error("--connections and --repeat must be at least 1")
    if os.sep in args.python:
        # The server starts in ROOT. absolute(), not resolve(): a venv's python is a
        # symlink, and the venv is found from the path it is started by.
        args.python = str(Path(args.python).absolute())
    if shutil.which(args.valgrind) is None:
        print("valgrind not found. On Debian/Ubuntu: apt-get install -y valgrind", file=sys.stderr)
        return 2

    for line in describe(args):
        print(line, flush=True)
    if args.out_dir is None:
        out_dir = Path(tempfile.mkdtemp(prefix="trioserve-callgrind-"))
    else:
        out_dir = args.out_dir.resolve()
        out_dir.mkdir(parents=True, exist_ok=True)
    n1, n2 = args.requests
    per_request: list[float] = []
    try:
        prime(args, out_dir / f"{args.server}.log")
        for rep in range(1, args.repeat + 1):
            totals = []
            for n in (n1, n2):
                started = time.monotonic()
                totals.append(measure(args, out_dir, rep, n))
                print(
                    f"  rep {rep}: {n:,} requests: Ir {totals[-1]:,} "
                    f"({time.monotonic() - started:.0f} s)",
                    file=sys.stderr,
                    flush=True,
                )
            per_request.append((totals[1] - totals[0]) / (n2 - n1))
            print(
                f"rep {rep}: Ir({n1}) = {totals[0]:,}  Ir({n2}) = {totals[1]:,}  "
                f"per request = {per_request[-1]:,.0f}",
                flush=True,
            )
    except Exception:
        print(f"server log and callgrind files kept in {out_dir}", file=sys.stderr)
        raise
    median = statistics.median(per_request)
    low, high = min(per_request), max(per_request)
    print(
        f"instructions per request: {median:,.0f} (median of {len(per_request)}; "
        f"min {low:,.0f}, max {high:,.0f}, spread {(high - low) / median:.3%})"
    )
    if args.out_dir is None:
        shutil.rmtree(out_dir, ignore_errors=True)
    else:
        print(f"callgrind files in {out_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
