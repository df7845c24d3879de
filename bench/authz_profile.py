"""Where an ext_authz decision's CPU goes: py-spy on the authz server, alone in its process.

The server of ``--tree`` (default: this one; shipped request policy on regorus, durable
decision log in a temp dir, the benchmark's chat body with one email; with the decision
cache where the tree has one, unless ``--no-cache``) runs in a child process; this process sends
``Check`` calls one at a time over gRPC for ``--seconds`` while ``py-spy record`` samples
the child (``--format raw``: collapsed stacks). The summary is the share of samples per
function, inclusive (the function or anything it called is on the stack) and self (it is
the innermost Python frame), over every thread of the server: the event loop and the
decision log's writer thread.

Needs ``py-spy`` (dev dependency) and ptrace permission over a child process.

    .venv/bin/python bench/authz_profile.py [--seconds 20] [--top 30] [--no-cache]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402
from envoy.service.auth.v3 import external_auth_pb2_grpc  # noqa: E402

from _gw_cpu import cpu_seconds  # noqa: E402
from authz_cpu import serve  # noqa: E402
from ext_authz import check_request  # noqa: E402


def drive(port: int, seconds: float) -> int:
    request = check_request()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = external_auth_pb2_grpc.AuthorizationStub(channel)
        deadline = time.monotonic() + seconds
        calls = 0
        while time.monotonic() < deadline and calls < 1_000_000:
            stub.Check(request, timeout=5)
            calls += 1
    return calls


def summarise(raw: Path, top: int) -> list[str]:
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame(f) for f in stack.split(";")[1:]]  # first: the thread
        total += count
        for name in set(frames):
            inclusive[name] += count
        if frames:
            own[frames[-1]] += count
    rows = [f"samples: {total}", "", "| function | inclusive % | self % |", "|---|---:|---:|"]
    for name, count in inclusive.most_common(top):
        rows.append(f"| `{name}` | {100 * count / total:.1f} | {100 * own[name] / total:.1f} |")
    rows += ["", "| top self | self % |", "|---|---:|"]
    for name, count in own.most_common(top):
        rows.append(f"| `{name}` | {100 * count / total:.1f} |")
    return rows


def _frame(text: str) -> str:
    """``func (path/to/file.py:line)`` → ``file.py:func``."""
    name, _, where = text.partition(" (")
    file = where.split(":", 1)[0].rsplit("/", 1)[-1]
    return f"{file}:{name}" if file else name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--no-cache", action="store_true", help="decide without the cache")
    parser.add_argument("--gil", action="store_true", help="sample only the GIL holder")
    parser.add_argument("--native", action="store_true", help="C and Rust frames too")
    parser.add_argument("--raw", type=Path, help="keep py-spy's collapsed stacks here")
    parser.add_argument("--tree", type=Path, default=ROOT, help="the source tree to profile")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        sys.path[:0] = [str(Path.cwd() / "src"), str(Path.cwd())]
        serve(args.serve, cache=not args.no_cache)
        return
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    with tempfile.TemporaryDirectory(prefix="tiermesh-authz-profile-") as tmp:
        work = Path(tmp)
        child_args = [sys.executable, __file__, "--serve", str(work / "spool")]
        if args.no_cache:
            child_args.append("--no-cache")
        tree = args.tree.resolve()
        child = subprocess.Popen(
            child_args,
            cwd=tree,
            env={**os.environ, "PYTHONPATH": f"{tree / 'src'}:{tree}"},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        try:
            assert child.stdout is not None
            port = int(child.stdout.readline())
            drive(port, 2.0)  # warm up
            raw = work / "profile.txt"
            spy = subprocess.Popen(
                [pyspy, "record", "--pid", str(child.pid), "--format", "raw", "--rate", "250"]
                + (["--gil"] if args.gil else [])
                + (["--native"] if args.native else [])
                + ["--duration", str(int(args.seconds)), "--output", str(raw)]
                + ([] if args.native else ["--nonblocking"]),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(1.0)
            began, cpu = time.monotonic(), cpu_seconds([child.pid])[child.pid]
            calls = drive(port, args.seconds - 1.5)
            elapsed, cpu = time.monotonic() - began, cpu_seconds([child.pid])[child.pid] - cpu
            spy.wait(timeout=args.seconds + 30)
        finally:
            if child.stdin is not None:
                child.stdin.close()
            child.wait(timeout=30)
        load = os.getloadavg()
        print(
            f"{calls} calls in {elapsed:.1f} s ({calls / elapsed:.0f}/s, one at a time); server "
            f"CPU {1e6 * cpu / calls:.0f} us per call (with py-spy attached); "
            f"load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}"
        )
        print("\n".join(summarise(raw, args.top)))
        if args.raw is not None:
            shutil.copy(raw, args.raw)


if __name__ == "__main__":
    asyncio.set_event_loop_policy(None)
    main()
