"""CPU time of a gateway's processes, for ``gateway_overhead.py``'s CPU µs per request.

:func:`cpu_seconds` reads each process's user + system time (all its threads; Linux
``/proc/PID/stat`` through psutil, clock-tick resolution, 10 ms here) and
:func:`spent` subtracts two readings. A process that exited between the readings counts
what it had at the first (it is then missing from the second).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping

import psutil


def cpu_seconds(pids: Iterable[int]) -> dict[int, float]:
    """PID → user + system CPU seconds so far; PIDs that no longer exist are left out."""
    found: dict[int, float] = {}
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            times = psutil.Process(pid).cpu_times()
            found[pid] = times.user + times.system
    return found


def spent(before: Mapping[int, float], after: Mapping[int, float]) -> dict[int, float]:
    """PID → CPU seconds spent between two :func:`cpu_seconds` readings."""
    return {pid: after.get(pid, start) - start for pid, start in before.items()}
