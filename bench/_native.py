"""Native-code helpers of the benchmarks (``bench/native/*.cc``, built with gRPC's C++
library: Debian's ``libgrpc++-dev``, which ``make bench`` installs): build one on first
use, and run the fleet benchmarks' simulated Envoy ADS clients.

The C++ ADS client (``ads_client.cc``) does on the wire what ``bench/_fanout_client.py``
does in Python (SotW, all four types, as Envoy subscribes, every response ACKed) at a
fraction of its CPU, so that on this 2-core machine the simulated fleet takes less of the
CPU the control plane is measured on. ``authz_noop.cc`` is ``bench/authz_floor.py``'s
allow-everything ext_authz server. ``read_body_filter.c`` is its pass-through Envoy dynamic
module (a shared library, :func:`build_module`; plain C, no gRPC).
"""

from __future__ import annotations

import contextlib
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
SOURCES = HERE / "native"
BUILD = SOURCES / ".build"
PACKAGES = "g++ pkg-config libgrpc++-dev"


def _fresh(output: Path, source: Path) -> bool:
    return output.exists() and output.stat().st_mtime >= source.stat().st_mtime


def _compile(command: list[str], source: Path, output: Path, libraries: list[str]) -> Path:
    """``output``, built by ``command -o <partial> source libraries`` and then moved into
    place (a failed or interrupted build leaves no output that looks fresh)."""
    BUILD.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(f"{output.name}.partial")
    done = subprocess.run(
        [*command, "-o", str(partial), str(source), *libraries],
        check=False,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"building {source.name} failed:\n{done.stderr[-4000:]}")
    partial.replace(output)
    return output


def build(name: str) -> Path:
    """The binary of ``bench/native/<name>.cc``, compiled when missing or older than its
    source (~5 s)."""
    source = SOURCES / f"{name}.cc"
    binary = BUILD / name
    if _fresh(binary, source):
        return binary
    if shutil.which("g++") is None or shutil.which("pkg-config") is None:
        raise SystemExit(f"bench/native/{name}.cc needs the OS packages {PACKAGES}")
    flags = subprocess.run(
        ["pkg-config", "--cflags", "--libs", "grpc++"], check=False, capture_output=True, text=True
    )
    if flags.returncode != 0:
        raise SystemExit(
            f"bench/native/{name}.cc needs gRPC's C++ library: {flags.stderr.strip()} "
            f"(OS packages {PACKAGES})"
        )
    return _compile(["g++", "-O2", "-std=c++17"], source, binary, shlex.split(flags.stdout))


def build_module(name: str) -> Path:
    """The shared library ``lib<name>.so`` of ``bench/native/<name>.c`` (an Envoy dynamic
    module), compiled with gcc when missing or older than its source (~1 s). Envoy loads it
    by name from the folder it is in (``ENVOY_DYNAMIC_MODULES_SEARCH_PATH``)."""
    source = SOURCES / f"{name}.c"
    library = BUILD / f"lib{name}.so"
    if _fresh(library, source):
        return library
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        raise SystemExit(f"bench/native/{name}.c needs a C compiler (OS package gcc)")
    flags = ["-O2", "-std=c11", "-Wall", "-Wextra", "-shared", "-fPIC", "-fvisibility=hidden"]
    return _compile([compiler, *flags], source, library, [])


def stop(process: subprocess.Popen[str]) -> None:
    """Stop a helper that runs until its standard input ends: close that, and kill it if
    it has not gone within 10 s."""
    with contextlib.suppress(BrokenPipeError, OSError):
        assert process.stdin is not None
        process.stdin.close()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


@contextlib.contextmanager
def native_clients(
    count: int, nodes: int, port: int, timeout_s: float
) -> Iterator[list[psutil.Process]]:
    """``count`` client processes running nodes 0..nodes-1 (node i in process i mod count)
    against ``port``; yields them once every stream is started. On exit each is told to
    stop (its standard input closes), and is killed if it has not gone within 10 s."""
    binary = build("ads_client")
    processes: list[subprocess.Popen[str]] = []
    try:
        for w in range(count):
            share = len(range(w, nodes, count))
            argv = [str(binary), f"127.0.0.1:{port}", str(w), str(count), str(share)]
            processes.append(
                subprocess.Popen(
                    [*argv, str(timeout_s)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
        deadline = time.monotonic() + timeout_s
        for process in processes:
            assert process.stdout is not None
            line = process.stdout.readline()
            if not line.startswith("started") or time.monotonic() > deadline:
                raise RuntimeError(f"a native ADS client did not start: {line!r}")
        yield [psutil.Process(p.pid) for p in processes]
    finally:
        for process in processes:
            with contextlib.suppress(BrokenPipeError, OSError):
                assert process.stdin is not None
                process.stdin.close()  # all of them first: they stop side by side
        for process in processes:
            stop(process)
            assert process.stdout is not None
            out = process.stdout.read()
            failures = out.split()[2:3] if out.startswith("done") else []
            if failures and failures[0] != "0":
                print(f"  native client {process.pid}: {out.strip()} (streams failed)")
