"""Live traffic figures: per-minute buckets, the recent window, totals and per node."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pytest

from tiermesh.controlplane.api import AnswerCounts
from tiermesh.controlplane.runtime.traffic import LiveTraffic

START = dt.datetime(2026, 12, 6, 17, 0, 30, tzinfo=dt.UTC)


@dataclass
class Clock:
    now: dt.datetime = START

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, minutes: float) -> None:
        self.now += dt.timedelta(minutes=minutes)


CLOUD = AnswerCounts(by_tier={"cloud": 3}, first_choice=3)
FALLBACK = AnswerCounts(
    by_tier={"local": 1}, fallback=1, fallback_reasons={"retry": 1}, refused={"401": 2}
)


def test_totals_recent_nodes_and_minutes_add_up() -> None:
    clock = Clock()
    traffic = LiveTraffic(window_minutes=3, recent_minutes=2, clock=clock)
    traffic.add("edge-1", CLOUD)
    clock.advance(1)
    traffic.add("edge-1", FALLBACK)
    traffic.add("private-1", CLOUD)
    document = traffic.document()
    assert document["total"] == {
        "answers": 7,
        "by_tier": {"cloud": 6, "local": 1},
        "first_choice": 6,
        "fallback": 1,
        "fallback_rate": pytest.approx(1 / 7),
        "fallback_reasons": {"retry": 1},
        "refused": {"401": 2},
        "refused_total": 2,
    }
    assert document["nodes"]["edge-1"]["answers"] == 4
    assert document["nodes"]["private-1"]["answers"] == 3
    assert [m["answers"] for m in document["minutes"]] == [3, 4]
    assert document["recent"]["answers"] == 7

    clock.advance(1)  # the first minute leaves the recent window
    assert traffic.document()["recent"]["answers"] == 4
    clock.advance(1)  # and the 3-minute window
    later = traffic.document()
    assert [m["answers"] for m in later["minutes"]] == [4]
    assert later["total"]["answers"] == 7  # totals are since start
    clock.advance(5)
    assert traffic.document()["minutes"] == []
    assert traffic.document()["recent"]["fallback_rate"] is None


def test_bad_windows_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        LiveTraffic(window_minutes=0)
