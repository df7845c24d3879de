"""A regorus Engine is unsendable: the adapter must never use or drop one off its thread.

pytest turns unraisable exceptions into errors here, so a foreign-thread drop
(pyo3 reports it as an unraisable RuntimeError) fails these tests.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable

from tiermesh.rego import RegorusEngine

MODULE = {"a.rego": "package a\n\nv := data.d.v\n\nseen := input.x\n"}


def _in_thread(fn: Callable[[], object]) -> object:
    out: list[object] = []
    worker = threading.Thread(target=lambda: out.append(fn()))
    worker.start()
    worker.join()
    return out[0]


def test_other_threads_see_the_current_set() -> None:
    engine = RegorusEngine()
    engine.load(MODULE, {"d": {"v": 1}})
    assert _in_thread(lambda: engine.evaluate("data.a.v")) == 1
    engine.load(MODULE, {"d": {"v": 2}})
    assert _in_thread(lambda: engine.evaluate("data.a.v")) == 2
    assert engine.evaluate("data.a.v") == 2
    engine.close()


def test_load_on_one_thread_is_seen_by_a_long_lived_other() -> None:
    engine = RegorusEngine()
    engine.load(MODULE, {"d": {"v": 1}})
    ask, answer = threading.Event(), threading.Event()
    seen: list[object] = []
    stop = False

    def worker() -> None:
        while True:
            ask.wait()
            ask.clear()
            if stop:
                return
            seen.append(engine.evaluate("data.a.seen", {"x": len(seen)}))
            seen.append(engine.evaluate("data.a.v"))
            answer.set()

    thread = threading.Thread(target=worker)
    thread.start()
    ask.set()
    answer.wait()
    answer.clear()
    engine.load(MODULE, {"d": {"v": 5}})
    ask.set()
    answer.wait()
    stop = True
    ask.set()
    thread.join()
    assert seen == [0, 1, 2, 5]
    engine.close()


def test_adapter_collected_while_a_worker_holds_engines() -> None:
    engine: RegorusEngine | None = RegorusEngine()
    assert engine is not None
    engine.load(MODULE, {"d": {"v": 1}})
    go, done = threading.Event(), threading.Event()

    def worker() -> None:
        assert engine is not None
        engine.evaluate("data.a.v")
        done.set()
        go.wait()
        # Building engines for another adapter purges the dead adapter's slot here.
        other = RegorusEngine()
        other.load(MODULE, {"d": {"v": 3}})
        assert other.evaluate("data.a.v") == 3
        other.close()

    thread = threading.Thread(target=worker)
    thread.start()
    done.wait()
    engine = None
    gc.collect()
    go.set()
    thread.join()
