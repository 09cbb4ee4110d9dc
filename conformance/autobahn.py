"""Run the Autobahn|Testsuite fuzzingclient cases against trioserve.

    python conformance/autobahn.py [--cases 1.*,2.*,...] [--out DIR]

Starts ``trioserve conformance.echo_app:app`` on a free port, runs ``kosoku``
(which drives the original Autobahn case files) against it, and reads its
report. Exits 0 only if no case is FAILED, NON-STRICT or UNIMPLEMENTED and
every closing behaviour is OK or INFORMATIONAL; prints the counts and every case
that is not OK. Standard library only; ``kosoku`` must be on PATH (``pip install
kosoku``).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
#: RFC 6455 framing, pings, reserved bits, opcodes, fragmentation, UTF-8, close
#: handling, and permessage-deflate (12.1, 13.1). 9.x (performance) is left out.
DEFAULT_CASES = "1.*,2.*,3.*,4.*,5.*,6.*,7.*,10.*,12.1.*,13.1.*"
PASSING = {"OK", "INFORMATIONAL"}
PASSING_CLOSE = {"OK", "INFORMATIONAL"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_serving(port: int, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"trioserve exited with {process.returncode} before serving")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"trioserve did not accept connections within {timeout:g}s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default=DEFAULT_CASES, help="comma-separated case globs")
    parser.add_argument("--out", help="keep kosoku's report here (default: a temp dir)")
    args = parser.parse_args()
    # Installed beside this interpreter (a venv not activated), or on PATH.
    search = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    kosoku = shutil.which("kosoku", path=search)
    if kosoku is None:
        sys.exit("kosoku is not installed: pip install kosoku")
    out = pathlib.Path(args.out or tempfile.mkdtemp(prefix="autobahn-"))
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "trioserve",
            "conformance.echo_app:app",
            "--bind",
            f"127.0.0.1:{port}",
            "--log-level",
            "warning",
            # Case 9-size messages are not run; the default limits apply otherwise.
        ],
        cwd=ROOT,
    )
    try:
        wait_until_serving(port, server, 30)
        command = [kosoku, f"ws://127.0.0.1:{port}", "-o", str(out)]
        for case in args.cases.split(","):
            command += ["-i", case]
        started = time.monotonic()
        subprocess.run(command, check=False, stdout=subprocess.DEVNULL)
        elapsed = time.monotonic() - started
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    return report(out / "index.json", elapsed)


def report(index: pathlib.Path, elapsed: float) -> int:
    if not index.exists():
        print(f"no report at {index}")
        return 1
    agents = json.loads(index.read_text())
    results = next(iter(agents.values()))
    behaviours = collections.Counter(r["behavior"] for r in results.values())
    closes = collections.Counter(r["behaviorClose"] for r in results.values())
    bad = {
        case: result
        for case, result in results.items()
        if result["behavior"] not in PASSING or result["behaviorClose"] not in PASSING_CLOSE
    }
    print(f"Autobahn fuzzingclient: {len(results)} cases in {elapsed:.1f}s")
    print("  behaviour: " + ", ".join(f"{k} {v}" for k, v in sorted(behaviours.items())))
    print("  close:     " + ", ".join(f"{k} {v}" for k, v in sorted(closes.items())))
    for case in sorted(bad, key=lambda c: [int(p) for p in c.split(".")]):
        result = bad[case]
        print(f"  {case}: {result['behavior']} / {result['behaviorClose']}")
    print(f"  report: {index.parent}")
    return 1 if bad else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
