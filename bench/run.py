#!/usr/bin/env python3
"""Benchmark trioserve against its peers, interleaved, in one run.

    python bench/run.py                       # everything, 3 reps x 5 s
    python bench/run.py --scenarios hello,pipelined --reps 5 --duration 10
    python bench/run.py --servers trioserve,uvicorn-h11 --scenarios hello
    python bench/run.py --list

Each server runs as its own process pinned to core 0 (``taskset -c 0``); ``wrk``
runs pinned to core 1 (``taskset -c 1 wrk -t1 -c64``). Every (repetition, scenario,
server) gets a fresh server process on a free port, in the order

    rep 1: scenario 1: A B C D E, scenario 2: A B C D E, ...   rep 2: ...

so that drift of the machine hits all servers alike. Results: a markdown table on
stdout and in ``bench/results/latest.md``; one JSON line per server x scenario x
rep in ``bench/results/latest.jsonl`` (written as the run goes). See README.md.

The websocket scenarios (``ws_echo``, ``ws_idle_rss``) use ``bench/ws_client.py``
instead of wrk, run by this interpreter and pinned like wrk.

Standard library only. Needs ``wrk`` (Debian: ``apt-get install -y wrk``) and the
servers under test importable by ``--python`` (default: this interpreter).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime
import http.client
import json
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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
STOP_TIMEOUT = 5.0  # seconds between SIGTERM and SIGKILL
READY_TIMEOUT = 30.0  # seconds a server may take to accept connections
KEEP_ALIVE = 60  # keep-alive timeout given to every server (idle_rss needs > a few s)
WS_CLIENT = BENCH / "ws_client.py"
WS_SCENARIOS = frozenset({"ws_echo", "ws_idle_rss"})

# ----------------------------------------------------------------------------- servers


@dataclasses.dataclass(frozen=True)
class Server:
    name: str
    describe: str
    argv: Callable[[str, str, int], list[str]]  # (python, app, port) -> argv
    #: Scenarios it can run; None means all. The canned server cannot parse bodies
    #: (nor upgrade to websocket); uvicorn-wsproto differs only in its websocket code.
    scenarios: frozenset[str] | None = None
    #: The directory the server runs in (its ``python -m trioserve`` imports the
    #: trioserve found there); None: this checkout.
    cwd: Path | None = None


def uvicorn_argv(*options: str) -> Callable[[str, str, int], list[str]]:
    """The command of a uvicorn server with ``options`` (its protocol and loop
    choices) and the settings every server gets: no access log, warnings only and
    the shared keep-alive timeout."""
    return lambda py, app, port: [
        py,
        "-m",
        "uvicorn",
        app,
        "--host",
        HOST,
        "--port",
        str(port),
        *options,
        "--no-access-log",
        "--log-level",
        "warning",
        "--timeout-keep-alive",
        str(KEEP_ALIVE),
    ]


SERVERS: dict[str, Server] = {
    s.name: s
    for s in [
        Server(
            "trioserve",
            "trioserve (trio + h11)",
            lambda py, app, port: [
                py,
                "-m",
                "trioserve",
                app,
                "--bind",
                f"{HOST}:{port}",
                "--no-access-log",
                "--log-level",
                "warning",
                "--keep-alive-timeout",
                str(KEEP_ALIVE),
            ],
        ),
        Server(
            "uvicorn-h11",
            "uvicorn --http h11 --loop asyncio",
            uvicorn_argv("--http", "h11", "--loop", "asyncio"),
        ),
        Server(
            "uvicorn-httptools",
            "uvicorn --http httptools --loop uvloop",
            uvicorn_argv("--http", "httptools", "--loop", "uvloop"),
        ),
        Server(
            "uvicorn-wsproto",
            "uvicorn --http h11 --loop asyncio --ws wsproto (websocket scenarios only)",
            uvicorn_argv("--http", "h11", "--loop", "asyncio", "--ws", "wsproto"),
            WS_SCENARIOS,
        ),
        Server(
            "hypercorn-trio",
            "hypercorn -k trio (1 worker process)",
            lambda py, app, port: [
                py,
                "-m",
                "hypercorn",
                "-k",
                "trio",
                "--bind",
                f"{HOST}:{port}",
                "--log-level",
                "warning",
                "--keep-alive",
                str(KEEP_ALIVE),
                app,
            ],  # access log is off unless --access-logfile is given
        ),
        Server(
            "canned-trio",
            "plain trio, canned response, no parsing (ceiling)",
            lambda py, app, port: [py, str(BENCH / "canned_trio.py"), "--bind", f"{HOST}:{port}"],
            frozenset({"hello", "pipelined", "idle_rss", "startup"}),
        ),
    ]
}


def baseline_server(spec: str) -> Server:
    """``trioserve-baseline``: the trioserve of another checkout, run like
    ``trioserve`` but in that directory (and with its interpreter, if given)."""
    directory, _, python = spec.partition(":")
    trioserve = SERVERS["trioserve"]

    def argv(py: str, app: str, port: int) -> list[str]:
        return trioserve.argv(python or py, app, port)

    return Server(
        "trioserve-baseline",
        f"trioserve of {directory}",
        argv,
        frozenset(SCENARIOS) - WS_SCENARIOS,
        Path(directory).resolve(),
    )


# --------------------------------------------------------------------------- scenarios

HELLO = b"Hello world!"
MIB = 1024 * 1024


@dataclasses.dataclass(frozen=True)
class Scenario:
    name: str
    describe: str
    app: str
    kind: str = "wrk"  # wrk | idle_rss | startup | ws_echo | ws_idle_rss
    script: str | None = None  # bench/wrk/<script>
    method: str = "GET"
    body: bytes | None = None
    expect: Callable[[bytes], bool] = lambda body: body == HELLO


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in [
        Scenario(
            "hello",
            "GET, 12 B body with Content-Length; p50/p99 from the same run",
            "bench.apps.hello:app",
        ),
        Scenario(
            "pipelined",
            "hello, 16 requests pipelined per write",
            "bench.apps.hello:app",
            script="pipeline.lua",
        ),
        Scenario(
            "post",
            "POST 64 KiB, body read fully, length echoed",
            "bench.apps.echo_len:app",
            script="post.lua",
            method="POST",
            body=b"x" * 65536,
            expect=lambda body: body == b"65536",
        ),
        Scenario(
            "stream",
            "100 x 1 KiB body messages, chunked",
            "bench.apps.stream:app",
            expect=lambda body: body == b"x" * 102400,
        ),
        Scenario(
            "file",
            "1 MiB file as 64 KiB body messages",
            "bench.apps.file:chunks_app",
            expect=lambda body: len(body) == MIB,
        ),
        Scenario(
            "pathsend",
            "1 MiB file via http.response.pathsend if advertised, else chunks",
            "bench.apps.file:pathsend_app",
            expect=lambda body: len(body) == MIB,
        ),
        Scenario(
            "idle_rss",
            "server RSS delta per idle keep-alive connection",
            "bench.apps.hello:app",
            kind="idle_rss",
        ),
        Scenario(
            "startup", "process start to first 200 response", "bench.apps.hello:app", kind="startup"
        ),
        Scenario(
            "ws_echo",
            "websocket echo, 16 x 32 B text frames per write (bench/ws_client.py)",
            "bench.apps.ws_echo:app",
            kind="ws_echo",
            expect=lambda body: body == b"ok",
        ),
        Scenario(
            "ws_idle_rss",
            "server RSS delta per idle websocket connection",
            "bench.apps.ws_echo:app",
            kind="ws_idle_rss",
            expect=lambda body: body == b"ok",
        ),
    ]
}

# ------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def descendants(pid: int) -> list[int]:
    """PIDs of every descendant of ``pid`` (from /proc; e.g. Hypercorn's worker)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def tree_cpu_seconds(pid: int) -> float:
    total = 0
    for p in [pid, *descendants(pid)]:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime + stime
    return total / CLK_TCK


def cpu_ticks() -> dict[str, tuple[int, int]]:
    """Per CPU (``"0"``, ``"1"``, ...): (busy, total) jiffies from /proc/stat."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                name, *fields = line.split()
                values = [int(v) for v in fields]
                idle = values[3] + values[4]  # idle + iowait
                out[name[3:]] = (sum(values[:8]) - idle, sum(values[:8]))
    return out


def busy_fraction(
    before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]], cpu: str
) -> float:
    busy = after[cpu][0] - before[cpu][0]
    total = after[cpu][1] - before[cpu][1]
    return busy / total if total else 0.0


def wait_quiet(args: argparse.Namespace) -> float:
    """Wait (at most ``--wait-quiet`` s) until the CPUs the run uses are idle; return
    the busiest one's load over the last 0.5 s, as a fraction."""
    cpus = [args.server_cpu, args.wrk_cpu] if args.pin else list(cpu_ticks())
    deadline = time.monotonic() + args.wait_quiet
    while True:
        before = cpu_ticks()
        time.sleep(0.5)
        after = cpu_ticks()
        busiest = max(busy_fraction(before, after, c) for c in cpus if c in after)
        if busiest <= args.quiet_threshold or time.monotonic() >= deadline:
            return busiest


def tree_rss_kib(pid: int) -> int:
    total = 0
    for p in [pid, *descendants(pid)]:
        with contextlib.suppress(OSError), open(f"/proc/{p}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def tree_sockets(pid: int) -> int:
    count = 0
    for p in [pid, *descendants(pid)]:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{p}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{p}/fd/{fd}").startswith("socket:"):
                        count += 1
    return count


def with_access_log(argv: list[str]) -> list[str]:
    """``argv`` with the server's access log on (uvicorn's and trioserve's go to
    stdout, Hypercorn's is asked for there), the error log at INFO."""
    argv = [arg for arg in argv if arg != "--no-access-log"]
    if "hypercorn" in argv:
        argv[argv.index("hypercorn") + 1 : argv.index("hypercorn") + 1] = ["--access-logfile", "-"]
    elif "uvicorn" in argv or "trioserve" in argv:
        # uvicorn drops access lines below INFO; at INFO the error log adds only
        # the start and stop lines.
        argv = [*argv, "--log-level", "info"]
    return argv


class ServerProcess:
    """One server process, pinned, logging to a file; stopped by PID."""

    def __init__(self, server: Server, app: str, args: argparse.Namespace, log_dir: Path):
        self.server = server
        self.port = free_port()
        argv = server.argv(args.python, app, self.port)
        if args.access_log:
            argv = with_access_log(argv)
        if args.pin:
            argv = ["taskset", "-c", args.server_cpu, *argv]
        self.argv = argv
        self.log_path = log_dir / f"{server.name}.log"
        env = dict(os.environ)
        # Let every server cache its bytecode, as it would when deployed: otherwise
        # startup times measure the compiler for whichever package has no .pyc yet.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONUNBUFFERED"] = "1"
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._log.write(f"\n=== {' '.join(argv)}\n".encode())
        self._log.flush()
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            argv,
            cwd=server.cwd or ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.pid = self.proc.pid  # taskset execs the server: same PID

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(
                f"{self.server.name} exited with {self.proc.returncode}; see {self.log_path}:\n"
                + tail(self.log_path)
            )

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Poll the port (bounded) until it accepts a connection."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            try:
                with socket.create_connection((HOST, self.port), timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.server.name} not ready in {timeout} s") from None
                time.sleep(0.01)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after STOP_TIMEOUT; children (by PID) likewise."""
        pids = descendants(self.pid)
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                for pid in [self.pid, *pids]:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                self.proc.wait()
        deadline = time.monotonic() + STOP_TIMEOUT
        for pid in pids:  # reparented children, if the parent left them behind
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self._log.close()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def http_request(
    port: int, method: str = "GET", body: bytes | None = None, timeout: float = 30
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/octet-stream"} if body is not None else {}
        conn.request(method, "/", body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data
    finally:
        conn.close()


def verify(proc: ServerProcess, scenario: Scenario) -> dict[str, Any]:
    """One request checked by Python before the load: status, body, and (pathsend)
    whether the app saw the extension advertised."""
    status, headers, body = http_request(proc.port, scenario.method, scenario.body)
    if status != 200 or not scenario.expect(body):
        raise RuntimeError(
            f"{proc.server.name}/{scenario.name}: bad response {status}, {len(body)} B: {body[:80]!r}"
        )
    info: dict[str, Any] = {"response_bytes": len(body)}
    if "x-bench-pathsend" in headers:
        info["pathsend_used"] = headers["x-bench-pathsend"] == "1"
    return info


# ------------------------------------------------------------------------------ wrk


def wrk_script(scenario: Scenario, tmp: Path) -> Path:
    """The scenario's script with report.lua appended (prints a BENCH_JSON line)."""
    parts = []
    if scenario.script:
        parts.append((BENCH / "wrk" / scenario.script).read_text())
    parts.append((BENCH / "wrk" / "report.lua").read_text())
    path = tmp / f"{scenario.name}.lua"
    path.write_text("\n".join(parts))
    return path


def run_wrk(
    args: argparse.Namespace, port: int, script: Path, duration: int, latency: bool
) -> dict[str, Any]:
    argv = [
        "wrk",
        "-t1",
        f"-c{args.connections}",
        f"-d{duration}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
    ]
    if latency:
        argv.append("--latency")
    argv.append(f"http://{HOST}:{port}/")
    if args.pin:
        argv = ["taskset", "-c", args.wrk_cpu, *argv]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60, check=False)
    for line in out.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            result: dict[str, Any] = json.loads(line[len("BENCH_JSON ") :])
            result["wrk_output"] = out.stdout
            return result
    raise RuntimeError(f"wrk failed ({out.returncode}): {out.stdout}\n{out.stderr}")


def measure_wrk(
    proc: ServerProcess, scenario: Scenario, args: argparse.Namespace, tmp: Path
) -> dict[str, Any]:
    record = verify(proc, scenario)
    script = wrk_script(scenario, tmp)
    if args.warmup > 0:
        run_wrk(args, proc.port, script, args.warmup, latency=False)
    cpu0, ticks0, t0 = tree_cpu_seconds(proc.pid), cpu_ticks(), time.monotonic()
    result = run_wrk(args, proc.port, script, args.duration, latency=scenario.name == "hello")
    cpu1, ticks1, t1 = tree_cpu_seconds(proc.pid), cpu_ticks(), time.monotonic()
    proc.check_alive()
    if args.pin and args.server_cpu in ticks1:
        # The server is pinned there: whatever else kept that CPU busy was interference.
        busy = busy_fraction(ticks0, ticks1, args.server_cpu)
        record["server_cpu_other_load"] = max(0.0, busy - (cpu1 - cpu0) / (t1 - t0))
        record["wrk_cpu_load"] = busy_fraction(ticks0, ticks1, args.wrk_cpu)
    seconds = result["duration_us"] / 1e6
    requests = result["requests"]
    lat = result["latency_us"]
    record.update(
        req_per_s=requests / seconds if seconds else 0.0,
        requests=requests,
        duration_s=seconds,
        mib_per_s=result["bytes"] / seconds / MIB if seconds else 0.0,
        errors=result["errors"],
        error_count=sum(result["errors"].values()),
        cpu_us_per_req=(cpu1 - cpu0) * 1e6 / requests if requests else None,
        server_cpu_util=(cpu1 - cpu0) / seconds if seconds else None,
        rss_after_kib=tree_rss_kib(proc.pid),
    )
    if not scenario.script or scenario.script != "pipeline.lua":
        # wrk times a pipelined batch, not a request: no latency for that scenario.
        record.update(
            latency_p50_ms=lat["p50"] / 1000,
            latency_p99_ms=lat["p99"] / 1000,
            latency_max_ms=lat["max"] / 1000,
        )
    if args.keep_wrk_output:
        record["wrk_output"] = result["wrk_output"]
    return record


# -------------------------------------------------------------------- idle RSS, startup

IDLE_REQUEST = f"GET / HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()


async def _idle_connections(port: int, count: int, pid: int, settle: float) -> dict[str, Any]:
    async def one() -> asyncio.StreamWriter:
        reader, writer = await asyncio.open_connection(HOST, port)
        writer.write(IDLE_REQUEST)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        await reader.readexactly(length)
        return writer  # kept open: an idle keep-alive connection

    writers: list[asyncio.StreamWriter] = []
    await asyncio.sleep(settle)
    rss0, sockets0 = tree_rss_kib(pid), tree_sockets(pid)
    try:
        batch = 100
        for start in range(0, count, batch):
            writers += await asyncio.gather(*(one() for _ in range(min(batch, count - start))))
        await asyncio.sleep(settle)
        rss1, sockets1 = tree_rss_kib(pid), tree_sockets(pid)
    finally:
        for writer in writers:
            writer.close()
        for writer in writers:
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    return {
        "connections": count,
        "rss_before_kib": rss0,
        "rss_after_kib": rss1,
        "server_sockets_delta": sockets1 - sockets0,
        "kib_per_conn": (rss1 - rss0) / count,
    }


def measure_idle_rss(
    proc: ServerProcess, scenario: Scenario, args: argparse.Namespace, tmp: Path
) -> dict[str, Any]:
    record = verify(proc, scenario)
    for _ in range(20):  # a few requests first, so lazily built state is in the baseline
        http_request(proc.port)
    record.update(
        asyncio.run(_idle_connections(proc.port, args.idle_connections, proc.pid, settle=1.0))
    )
    proc.check_alive()
    return record


def measure_startup(
    server: Server, scenario: Scenario, args: argparse.Namespace, log_dir: Path
) -> dict[str, Any]:
    samples = []
    for _ in range(args.startup_samples):
        proc = ServerProcess(server, scenario.app, args, log_dir)
        try:
            deadline = proc.started + READY_TIMEOUT
            while True:
                proc.check_alive()
                try:
                    status, _, body = http_request(proc.port, timeout=READY_TIMEOUT)
                except OSError:
                    if time.perf_counter() > deadline:
                        raise RuntimeError(
                            f"{server.name}: no response in {READY_TIMEOUT} s"
                        ) from None
                    time.sleep(0.002)
                    continue
                if status == 200 and body == HELLO:
                    break
                raise RuntimeError(f"{server.name}: first response {status} {body[:80]!r}")
            samples.append((time.perf_counter() - proc.started) * 1000)
        finally:
            proc.stop()
    return {"startup_ms": statistics.median(samples), "startup_samples_ms": samples}


# ------------------------------------------------------------------------- websockets


def ws_client_argv(args: argparse.Namespace, port: int, *extra: str) -> list[str]:
    """bench/ws_client.py, run by this interpreter, pinned where wrk would be."""
    argv = [sys.executable, str(WS_CLIENT), "--host", HOST, "--port", str(port), *extra]
    if args.pin:
        argv = ["taskset", "-c", args.wrk_cpu, *argv]
    return argv


def ws_check(args: argparse.Namespace, proc: ServerProcess, connections: int) -> None:
    """``connections`` websocket connections one after another, each echoing four
    messages (text and binary, the three length encodings) checked byte for byte,
    then a close handshake."""
    argv = ws_client_argv(args, proc.port, "--check", str(connections), "--timeout", "10")
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    if out.returncode != 0:
        proc.check_alive()
        raise RuntimeError(
            f"{proc.server.name}: websocket check failed: {(out.stderr or out.stdout).strip()}"
        )


class WsClient:
    """bench/ws_client.py as a child process; its stdout is JSON lines (events)."""

    def __init__(self, argv: list[str], time_limit: float) -> None:
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        # A client that hangs must not hang the run: killed after time_limit.
        self._killer = threading.Timer(time_limit, self.proc.kill)
        self._killer.start()

    def events(self) -> Iterator[dict[str, Any]]:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                yield json.loads(line)

    def close_stdin(self) -> None:
        """Ends idle mode: the client closes its connections and prints its result."""
        assert self.proc.stdin is not None
        with contextlib.suppress(OSError):
            self.proc.stdin.close()

    def finish(self) -> str:
        """Close stdin, wait for the exit; returns stderr."""
        assert self.proc.stderr is not None
        self.close_stdin()
        stderr = self.proc.stderr.read()
        self.proc.wait()
        self._killer.cancel()
        return stderr

    def kill(self) -> None:
        self._killer.cancel()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


def _ws_client_error(what: str, result: dict[str, Any] | None, stderr: str) -> RuntimeError:
    samples = "; ".join(result.get("error_samples", [])) if result else ""
    return RuntimeError(f"ws_client {what}: {samples or stderr.strip()[-500:] or 'no output'}")


def measure_ws_echo(
    proc: ServerProcess, scenario: Scenario, args: argparse.Namespace, tmp: Path
) -> dict[str, Any]:
    record = verify(proc, scenario)
    ws_check(args, proc, 1)
    argv = ws_client_argv(
        args,
        proc.port,
        *("--connections", str(args.connections)),
        *("--warmup", str(args.warmup), "--duration", str(args.duration)),
    )
    client = WsClient(argv, time_limit=args.warmup + args.duration + 120)
    start: tuple[float, dict[str, tuple[int, int]], float] | None = None
    end: tuple[float, dict[str, tuple[int, int]], float] | None = None
    result: dict[str, Any] | None = None
    try:
        for event in client.events():
            # The client says when its measured window opens and closes; the
            # server's CPU time is read there.
            if event["event"] in ("measure_start", "measure_end"):
                sample = (tree_cpu_seconds(proc.pid), cpu_ticks(), time.monotonic())
                if event["event"] == "measure_start":
                    start = sample
                else:
                    end = sample
            elif event["event"] == "result":
                result = event
        stderr = client.finish()
    finally:
        client.kill()
    proc.check_alive()
    if result is None or start is None or end is None or not result.get("messages"):
        raise _ws_client_error("measured nothing", result, stderr)
    (cpu0, ticks0, t0), (cpu1, ticks1, t1) = start, end
    if args.pin and args.server_cpu in ticks1:
        busy = busy_fraction(ticks0, ticks1, args.server_cpu)
        record["server_cpu_other_load"] = max(0.0, busy - (cpu1 - cpu0) / (t1 - t0))
        record["client_cpu_load"] = busy_fraction(ticks0, ticks1, args.wrk_cpu)
    messages = result["messages"]
    record.update(
        {k: v for k, v in result.items() if k != "event"},
        cpu_us_per_msg=(cpu1 - cpu0) * 1e6 / messages,
        server_cpu_util=(cpu1 - cpu0) / (t1 - t0) if t1 > t0 else None,
        rss_after_kib=tree_rss_kib(proc.pid),
    )
    return record


def measure_ws_idle_rss(
    proc: ServerProcess, scenario: Scenario, args: argparse.Namespace, tmp: Path
) -> dict[str, Any]:
    record = verify(proc, scenario)
    # 20 websocket connections first (like idle_rss's 20 requests), so that lazily
    # built state (imports, caches) is in the baseline.
    ws_check(args, proc, 20)
    settle = 1.0
    time.sleep(settle)
    rss0, sockets0 = tree_rss_kib(proc.pid), tree_sockets(proc.pid)
    count = args.idle_connections
    client = WsClient(ws_client_argv(args, proc.port, "--idle", str(count)), time_limit=300)
    ready = result = None
    try:
        events = client.events()
        ready = next((e for e in events if e["event"] == "ready"), None)
        if ready is None or not ready["connections"]:
            raise _ws_client_error("opened no connections", ready, client.finish())
        time.sleep(settle)
        rss1, sockets1 = tree_rss_kib(proc.pid), tree_sockets(proc.pid)
        proc.check_alive()
        client.close_stdin()
        result = next((e for e in events if e["event"] == "result"), None)
        stderr = client.finish()
    finally:
        client.kill()
    if result is None:
        raise _ws_client_error("gave no result", None, stderr)
    opened = ready["connections"]
    record.update(
        connections=count,
        connections_opened=opened,
        rss_before_kib=rss0,
        rss_after_kib=rss1,
        server_sockets_delta=sockets1 - sockets0,
        kib_per_conn=(rss1 - rss0) / opened,
        handshake_s=ready["handshake_s"],
        open_at_end=result["open_at_end"],
        closed_cleanly=result["closed_cleanly"],
        errors=result["errors"],
        error_count=result["error_count"],
        error_samples=result["error_samples"],
    )
    proc.check_alive()
    return record


# ----------------------------------------------------------------------------- driver


def machine_info(args: argparse.Namespace) -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    probe = (
        "import json, sys, platform\n"
        "from importlib.metadata import version\n"
        "v = {}\n"
        "for p in ['trioserve', 'trio', 'h11', 'uvicorn', 'httptools', 'uvloop', 'hypercorn',\n"
        "          'websockets', 'wsproto']:\n"
        "    try: v[p] = version(p)\n"
        "    except Exception: v[p] = None\n"
        "print(json.dumps({'python': platform.python_version(), "
        "'implementation': platform.python_implementation(), 'packages': v}))\n"
    )
    py = json.loads(
        subprocess.run(
            [args.python, "-c", probe], capture_output=True, text=True, check=True
        ).stdout
    )
    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
    git = subprocess.run(
        ["git", "describe", "--always", "--dirty"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": f"{py['implementation']} {py['python']}",
        "packages": py["packages"],
        "wrk": (wrk.stdout or wrk.stderr).split("[")[0].strip(),
        "git": git or None,
        "ws_client_python": f"{platform.python_implementation()} {platform.python_version()}",
        "loadavg_at_start": os.getloadavg(),
        "pinning": (
            f"servers on CPU {args.server_cpu}, wrk on CPU {args.wrk_cpu}" if args.pin else "none"
        ),
        "settings": {
            "reps": args.reps,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "connections": args.connections,
            "idle_connections": args.idle_connections,
            "startup_samples": args.startup_samples,
            "keep_alive_timeout_s": KEEP_ALIVE,
            "wait_quiet_s": args.wait_quiet,
            "quiet_threshold": args.quiet_threshold,
        },
    }


def run_one(
    server: Server, scenario: Scenario, args: argparse.Namespace, tmp: Path, log_dir: Path
) -> dict[str, Any]:
    if scenario.kind == "startup":
        return measure_startup(server, scenario, args, log_dir)
    proc = ServerProcess(server, scenario.app, args, log_dir)
    try:
        proc.wait_ready()
        if scenario.kind == "idle_rss":
            return measure_idle_rss(proc, scenario, args, tmp)
        if scenario.kind == "ws_echo":
            return measure_ws_echo(proc, scenario, args, tmp)
        if scenario.kind == "ws_idle_rss":
            return measure_ws_idle_rss(proc, scenario, args, tmp)
        return measure_wrk(proc, scenario, args, tmp)
    finally:
        proc.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Servers: " + ", ".join(SERVERS) + "\nScenarios: " + ", ".join(SCENARIOS),
    )
    parser.add_argument("--servers", default=",".join(SERVERS), help="comma-separated")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated")
    parser.add_argument("--reps", type=int, default=3, help="repetitions (default 3)")
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument(
        "--warmup", type=int, default=1, help="seconds of wrk before each (0: none)"
    )
    parser.add_argument(
        "--connections",
        type=int,
        default=64,
        help="wrk -c, and websocket connections in ws_echo (default 64)",
    )
    parser.add_argument("--idle-connections", type=int, default=1000)
    parser.add_argument("--startup-samples", type=int, default=3, help="starts per rep")
    parser.add_argument("--python", default=sys.executable, help="interpreter for the servers")
    parser.add_argument("--server-cpu", default="0")
    parser.add_argument("--wrk-cpu", default="1")
    parser.add_argument("--no-pin", dest="pin", action="store_false", help="do not use taskset")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=30.0,
        help="before each sample, wait up to this many seconds for the "
        "CPUs in use to be idle (default 30; 0: do not wait)",
    )
    parser.add_argument(
        "--quiet-threshold",
        type=float,
        default=0.10,
        help="'idle' means at most this busy fraction (default 0.10)",
    )
    parser.add_argument("--out-dir", type=Path, default=BENCH / "results")
    parser.add_argument("--name", default="latest", help="basename of the result files")
    parser.add_argument("--keep-wrk-output", action="store_true", help="store wrk's text in JSON")
    parser.add_argument(
        "--access-log",
        action="store_true",
        help="run every server with its access log on (a line per request to its log file)",
    )
    parser.add_argument(
        "--baseline",
        metavar="DIR[:PYTHON]",
        help="also run the trioserve of another checkout (e.g. a git worktree of an "
        "earlier commit), as server 'trioserve-baseline', with its own interpreter "
        "if given; HTTP scenarios only",
    )
    parser.add_argument("--list", action="store_true", help="list servers and scenarios")
    parser.add_argument(
        "--render",
        type=Path,
        metavar="JSONL",
        help="print the markdown report of an earlier run's JSON lines, and exit",
    )
    args = parser.parse_args(argv)

    if args.list:
        for s in SERVERS.values():
            print(f"server   {s.name:18} {s.describe}")
        for sc in SCENARIOS.values():
            print(f"scenario {sc.name:18} {sc.describe}")
        return 0
    if args.render:
        earlier = [json.loads(line) for line in args.render.read_text().splitlines() if line]
        seen_servers = {r["server"] for r in earlier}
        seen_scenarios = {r["scenario"] for r in earlier}
        print(
            render(
                earlier,
                earlier[0]["machine"],
                [s for s in SERVERS.values() if s.name in seen_servers],
                [sc for sc in SCENARIOS.values() if sc.name in seen_scenarios],
            )
        )
        return 0
    servers = [SERVERS[n] for n in _names(args.servers, SERVERS, "server")]
    if args.baseline:
        servers.insert(1, baseline_server(args.baseline))
    scenarios = [SCENARIOS[n] for n in _names(args.scenarios, SCENARIOS, "scenario")]
    # Servers with nothing to run (uvicorn-wsproto without a websocket scenario) are
    # neither started nor reported.
    servers = [
        s for s in servers if s.scenarios is None or any(sc.name in s.scenarios for sc in scenarios)
    ]
    if shutil.which("wrk") is None:
        print("wrk not found. On Debian/Ubuntu: apt-get install -y wrk", file=sys.stderr)
        return 2
    if args.pin and (shutil.which("taskset") is None or (os.cpu_count() or 1) < 2):
        print("warning: no taskset or fewer than 2 CPUs; running unpinned", file=sys.stderr)
        args.pin = False
    _raise_fd_limit(args.idle_connections + 512)

    args.out_dir.mkdir(parents=True, exist_ok=True)
    jsonl_path = args.out_dir / f"{args.name}.jsonl"
    md_path = args.out_dir / f"{args.name}.md"
    tmp = Path(tempfile.mkdtemp(prefix="trioserve-bench-"))
    log_dir = tmp / "logs"
    log_dir.mkdir()
    machine = machine_info(args)
    print(f"# trioserve bench, {machine['date']}; server logs in {log_dir}", file=sys.stderr)

    # Smoke test and bytecode priming: every server once, before anything is timed.
    broken: dict[str, str] = {}
    for server in servers:
        try:
            proc = ServerProcess(server, SCENARIOS["hello"].app, args, log_dir)
            try:
                proc.wait_ready()
                verify(proc, SCENARIOS["hello"])
            finally:
                proc.stop()
        except Exception as exc:  # reported; the server is skipped
            broken[server.name] = str(exc)
            print(f"! {server.name} does not work, skipped: {exc}", file=sys.stderr)

    records: list[dict[str, Any]] = []
    runs = [
        (sc, sv)
        for sc in scenarios
        for sv in servers
        if sv.scenarios is None or sc.name in sv.scenarios
    ]
    with open(jsonl_path, "w") as jsonl:
        for rep in range(1, args.reps + 1):
            for scenario, server in runs:
                base = {
                    "date": machine["date"],
                    "rep": rep,
                    "server": server.name,
                    "scenario": scenario.name,
                }
                if server.name in broken:
                    record = {**base, "error": broken[server.name]}
                else:
                    background = wait_quiet(args)
                    load = os.getloadavg()[0]
                    try:
                        record = {**base, **run_one(server, scenario, args, tmp, log_dir)}
                    except Exception as exc:  # recorded; the run goes on
                        record = {**base, "error": f"{type(exc).__name__}: {exc}"}
                    record["loadavg_1m_before"] = load
                    record["background_load_before"] = background
                record["machine"] = machine
                records.append(record)
                jsonl.write(json.dumps(record) + "\n")
                jsonl.flush()
                print(
                    f"rep {rep} {scenario.name:9} {server.name:18} {_brief(record)}",
                    file=sys.stderr,
                )

    markdown = render(records, machine, servers, scenarios)
    md_path.write_text(markdown)
    print(markdown)
    print(f"(written to {md_path} and {jsonl_path})", file=sys.stderr)
    if any("error" in r for r in records):
        print(f"server logs kept in {log_dir}", file=sys.stderr)
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def _names(spec: str, known: dict[str, Any], what: str) -> list[str]:
    names = [n.strip() for n in spec.split(",") if n.strip()]
    for n in names:
        if n not in known:
            raise SystemExit(f"unknown {what} {n!r}; known: {', '.join(known)}")
    return names


def _raise_fd_limit(wanted: int) -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))  # inherited by the servers


def _brief(r: dict[str, Any]) -> str:
    if "error" in r:
        return "ERROR " + str(r["error"]).splitlines()[0]
    if "req_per_s" in r:
        s = f"{r['req_per_s']:9.0f} req/s"
        if r.get("latency_p99_ms") is not None:
            s += f"  p99 {r['latency_p99_ms']:.2f} ms"
        if r.get("cpu_us_per_req"):
            s += f"  {r['cpu_us_per_req']:.0f} us/req"
        if r.get("server_cpu_other_load") is not None:
            s += f"  other load on server CPU {r['server_cpu_other_load']:.0%}"
        if r["error_count"]:
            s += f"  errors {r['errors']}"
        return s
    if "messages_per_s" in r:
        s = f"{r['messages_per_s']:9.0f} msg/s  batch p99 {r['batch_rtt_p99_ms']:.2f} ms"
        s += f"  {r['cpu_us_per_msg']:.1f} us/msg  client CPU {r['client_cpu_util']:.0%}"
        if r.get("server_cpu_other_load") is not None:
            s += f"  other load on server CPU {r['server_cpu_other_load']:.0%}"
        if r["error_count"]:
            s += f"  errors {r['error_samples']}"
        return s
    if "kib_per_conn" in r:
        s = f"{r['kib_per_conn']:.1f} KiB/conn ({r['server_sockets_delta']} sockets)"
        if r.get("error_count"):
            s += f"  errors {r['error_samples']}"
        return s
    return f"{r['startup_ms']:.0f} ms"


# ----------------------------------------------------------------------------- report

#: (column title, scenario, record key, format, higher is better)
COLUMNS = [
    ("hello req/s", "hello", "req_per_s", "{:,.0f}", True),
    ("hello CPU µs/req", "hello", "cpu_us_per_req", "{:.1f}", False),
    ("p50 ms", "hello", "latency_p50_ms", "{:.2f}", False),
    ("p99 ms", "hello", "latency_p99_ms", "{:.2f}", False),
    ("pipelined x16 req/s", "pipelined", "req_per_s", "{:,.0f}", True),
    ("POST 64 KiB req/s", "post", "req_per_s", "{:,.0f}", True),
    ("stream 100 x 1 KiB req/s", "stream", "req_per_s", "{:,.0f}", True),
    ("1 MiB file chunks req/s", "file", "req_per_s", "{:,.0f}", True),
    ("1 MiB pathsend req/s", "pathsend", "req_per_s", "{:,.0f}", True),
    ("KiB per idle conn", "idle_rss", "kib_per_conn", "{:.1f}", False),
    ("startup ms", "startup", "startup_ms", "{:.0f}", False),
    ("ws echo msg/s", "ws_echo", "messages_per_s", "{:,.0f}", True),
    ("ws CPU µs/msg", "ws_echo", "cpu_us_per_msg", "{:.1f}", False),
    ("ws batch p50 ms", "ws_echo", "batch_rtt_p50_ms", "{:.2f}", False),
    ("ws batch p99 ms", "ws_echo", "batch_rtt_p99_ms", "{:.2f}", False),
    ("KiB per idle ws", "ws_idle_rss", "kib_per_conn", "{:.1f}", False),
]
PEERS = ("uvicorn-h11", "hypercorn-trio")
TIMES, DASH = "\N{MULTIPLICATION SIGN}", "\N{EN DASH}"
#: A sample is marked † when other processes used more than this of the server's CPU.
NOISE_LIMIT = 0.05


def _values(records: list[dict[str, Any]], server: str, scenario: str, key: str) -> list[float]:
    return [
        r[key]
        for r in records
        if r["server"] == server and r["scenario"] == scenario and r.get(key) is not None
    ]


def _errors(records: list[dict[str, Any]], server: str, scenario: str) -> list[str]:
    out = []
    for r in records:
        if r["server"] != server or r["scenario"] != scenario:
            continue
        if "error" in r:
            out.append(f"rep {r['rep']}: {r['error'].splitlines()[0]}")
        elif r.get("error_count"):
            bad = {k: v for k, v in r["errors"].items() if v}
            if "requests" in r:
                out.append(f"rep {r['rep']}: wrk errors {bad} of {r['requests']} requests")
            else:
                samples = "; ".join(r.get("error_samples", [])[:2])
                out.append(f"rep {r['rep']}: websocket client errors {bad}: {samples}")
    return out


def render(
    records: list[dict[str, Any]],
    machine: dict[str, Any],
    servers: list[Server],
    scenarios: list[Scenario],
) -> str:
    names = [s.name for s in servers]
    wanted = {s.name for s in scenarios}
    columns = [c for c in COLUMNS if c[1] in wanted]
    pk = machine["packages"]
    out = [
        "## trioserve benchmark",
        "",
        f"- date: {machine['date']}; git: {machine['git']}",
        f"- machine: {machine['nproc']} CPUs, {machine['cpu']}, Linux {machine['kernel']}, "
        f"load average at start {machine['loadavg_at_start'][0]:.2f}",
        f"- python: {machine['python']}; " + ", ".join(f"{k} {v}" for k, v in pk.items() if v),
        f"- load: {machine['wrk']}, `wrk -t1 -c{machine['settings']['connections']}`, "
        f"{machine['settings']['warmup_s']:g} s warm-up + {machine['settings']['duration_s']:g} s "
        f"measured; pinning: {machine['pinning']}",
        f"- {machine['settings']['reps']} interleaved repetitions; cells are "
        "**median (min\N{EN DASH}max)**; a fresh server process for every cell sample",
    ]
    if wanted & WS_SCENARIOS:
        out.append(
            f"- websocket load: `bench/ws_client.py` ({machine.get('ws_client_python', '?')}), "
            f"{machine['settings']['connections']} connections, 16 masked text frames of 32 B "
            "per write, the next write when all 16 echoes are back; idle: "
            f"{machine['settings']['idle_connections']} connections, pinned like wrk"
        )
    out.append("")
    table: dict[tuple[str, str], float] = {}
    flagged: list[tuple[str, str, str]] = []
    noisy: list[str] = []
    http_columns = [c for c in columns if c[1] not in WS_SCENARIOS]
    groups = [
        ("Throughput, requests per second", [c for c in http_columns if c[2] == "req_per_s"]),
        ("CPU, latency, memory, startup", [c for c in http_columns if c[2] != "req_per_s"]),
        (
            "WebSocket: echo (messages per second, batch round trip) and idle memory",
            [c for c in columns if c[1] in WS_SCENARIOS],
        ),
    ]
    for heading, group in groups:
        if not group:
            continue
        out += [
            f"### {heading}",
            "",
            "| server | " + " | ".join(c[0] for c in group) + " |",
            "|---|" + "---|" * len(group),
        ]
        for name in names:
            cells = []
            for title, scenario, key, fmt, _ in group:
                values = _values(records, name, scenario, key)
                errs = _errors(records, name, scenario)
                if not values:
                    cells.append("failed" if errs else "—")
                    continue
                med = statistics.median(values)
                table[(name, title)] = med
                cell = fmt.format(med)
                if len(values) > 1:
                    cell += f" ({fmt.format(min(values))}{DASH}{fmt.format(max(values))})"
                if errs:
                    cell += " ⚠"
                    if (name, scenario) not in {(f[0], f[1]) for f in flagged}:
                        flagged += [(name, scenario, e) for e in errs]
                other = [
                    r
                    for r in records
                    if r["server"] == name
                    and r["scenario"] == scenario
                    and (r.get("server_cpu_other_load") or 0) > NOISE_LIMIT
                ]
                if other:
                    cell += " †"
                    line = f"{name} / {scenario}: " + ", ".join(
                        f"rep {r['rep']} {r['server_cpu_other_load']:.0%}" for r in other
                    )
                    if line not in noisy:
                        noisy.append(line)
                cells.append(cell)
            out.append(f"| {name} | " + " | ".join(cells) + " |")
        out.append("")

    peers = [p for p in PEERS if p in names]
    if peers:
        out += [
            "### Ratios to the peers (medians of this run)",
            "",
            "Each cell: server ÷ "
            + " and ÷ ".join(f"`{p}`" for p in peers)
            + ". Throughput: higher is better; CPU, latency, RSS and startup: lower is better.",
            "",
        ]
        for _, group in groups:
            if not group:
                continue
            out += [
                "| server | " + " | ".join(c[0] for c in group) + " |",
                "|---|" + "---|" * len(group),
            ]
            for name in names:
                cells = []
                for title, *_ in group:
                    parts = []
                    for peer in peers:
                        a, b = table.get((name, title)), table.get((peer, title))
                        parts.append(f"{a / b:.2f}{TIMES}" if a is not None and b else "—")
                    cells.append(" / ".join(parts))
                out.append(f"| {name} | " + " | ".join(cells) + " |")
            out.append("")

    if wanted & TARGET_SCENARIOS:
        out += _targets(table, records, names)
    pathsend = [r for r in records if r["scenario"] == "pathsend" and "pathsend_used" in r]
    if pathsend:
        used: dict[str, set[bool]] = {}
        for r in pathsend:
            used.setdefault(r["server"], set()).add(r["pathsend_used"])
        out += ["### http.response.pathsend", ""]
        for name in names:
            if name in used:
                how = (
                    "used"
                    if used[name] == {True}
                    else (
                        "not advertised: the app fell back to body chunks"
                        if used[name] == {False}
                        else "mixed"
                    )
                )
                out.append(f"- {name}: {how}")
        out.append("")
    if flagged:
        out += ["### Errors (⚠)", ""] + [f"- {n} / {sc}: {e}" for n, sc, e in flagged] + [""]
    if noisy:
        out += [
            "### Interference (†)",
            "",
            f"Samples during which other processes kept the server's CPU more than "
            f"{NOISE_LIMIT:.0%} busy (that CPU's busy time minus the server's own):",
            "",
            *[f"- {line}" for line in noisy],
            "",
        ]
    return "\n".join(out)


#: The scenarios trioserve's targets are about (no table when none of them ran).
TARGET_SCENARIOS = frozenset(
    {"hello", "pipelined", "post", "idle_rss", "file", "pathsend", "ws_echo", "ws_idle_rss"}
)


def _targets(
    table: dict[tuple[str, str], float], records: list[dict[str, Any]], names: list[str]
) -> list[str]:
    """trioserve's performance targets, checked against this run's medians (a
    target whose scenario did not run is "not measured")."""
    if "trioserve" not in names:
        return []
    rows = []

    def ratio(title: str, peer: str) -> float | None:
        a, b = table.get(("trioserve", title)), table.get((peer, title))
        return a / b if a is not None and b else None

    def add(what: str, value: float | None, goal: float, higher: bool, note: str = "") -> None:
        if value is None:
            rows.append(f"| {what} | — | {'≥' if higher else '≤'} {goal:g} | not measured {note}|")
            return
        ok = value >= goal if higher else value <= goal
        rows.append(
            f"| {what} | {value:.2f} | {'≥' if higher else '≤'} {goal:g} | "
            f"{'met' if ok else 'not met'} {note}|"
        )

    add("hello ÷ uvicorn-h11", ratio("hello req/s", "uvicorn-h11"), 1.3, True)
    add("hello ÷ hypercorn-trio", ratio("hello req/s", "hypercorn-trio"), 6, True)
    add("pipelined ÷ uvicorn-h11", ratio("pipelined x16 req/s", "uvicorn-h11"), 1.5, True)
    add("POST 64 KiB ÷ uvicorn-h11", ratio("POST 64 KiB req/s", "uvicorn-h11"), 1.2, True)
    add("p99 ÷ uvicorn-h11's", ratio("p99 ms", "uvicorn-h11"), 1.0, False)
    add("RSS per idle conn ÷ uvicorn-h11's", ratio("KiB per idle conn", "uvicorn-h11"), 1.0, False)
    used = {
        r.get("pathsend_used")
        for r in records
        if r["server"] == "trioserve" and r["scenario"] == "pathsend" and "error" not in r
    }
    a = table.get(("trioserve", "1 MiB pathsend req/s"))
    b = table.get(("trioserve", "1 MiB file chunks req/s"))
    note = "" if used == {True} else "(pathsend not advertised; fallback to chunks) "
    add(
        "pathsend ÷ file chunks (trioserve)",
        a / b if a and b and used == {True} else None,
        2,
        True,
        note,
    )
    add("ws echo ÷ uvicorn-h11", ratio("ws echo msg/s", "uvicorn-h11"), 1.0, True)
    add("ws echo ÷ hypercorn-trio", ratio("ws echo msg/s", "hypercorn-trio"), 4, True)
    add("ws batch p99 ÷ uvicorn-h11's", ratio("ws batch p99 ms", "uvicorn-h11"), 1.0, False)
    add("RSS per idle ws ÷ uvicorn-h11's", ratio("KiB per idle ws", "uvicorn-h11"), 1.0, False)
    return [
        "### Targets for trioserve",
        "",
        "| target | this run | goal | |",
        "|---|---|---|---|",
        *rows,
        "",
    ]


if __name__ == "__main__":
    sys.exit(main())
