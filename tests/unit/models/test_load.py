"""The load report's wire format and the token rate's sliding window (a fake clock)."""

from __future__ import annotations

import json
import threading

import pytest

from tiermesh.agents.models.load import LoadReport, TokenRate


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_rate_is_tokens_in_the_window_over_the_window() -> None:
    clock = Clock()
    rate = TokenRate(10.0, clock=clock)
    assert rate.rate() == 0.0
    rate.add(30)
    clock.now += 4.0
    rate.add(20)
    assert rate.rate() == pytest.approx(5.0)  # 50 tokens / 10 s
    assert rate.total == 50


def test_tokens_leave_the_window_after_window_s() -> None:
    clock = Clock()
    rate = TokenRate(10.0, clock=clock)
    rate.add(30)
    clock.now += 4.0
    rate.add(20)
    clock.now += 6.0  # the first 30 are exactly 10 s old: out
    assert rate.rate() == pytest.approx(2.0)
    clock.now += 3.999
    assert rate.rate() == pytest.approx(2.0)
    clock.now += 0.001
    assert rate.rate() == 0.0
    assert rate.total == 50  # the total never expires


def test_single_tokens_from_many_threads_all_count() -> None:
    rate = TokenRate(60.0)

    def add_1000() -> None:
        for _ in range(1000):
            rate.add()

    threads = [threading.Thread(target=add_1000) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert rate.total == 4000
    assert rate.rate() == pytest.approx(4000 / 60.0)


def test_window_must_be_positive() -> None:
    with pytest.raises(ValueError, match="window_s"):
        TokenRate(0.0)


def test_report_round_trips() -> None:
    report = LoadReport(in_flight=3, queue_depth=2, tokens_per_s=12.5, completion_tokens_total=9)
    assert json.loads(report.to_json()) == {
        "in_flight": 3,
        "queue_depth": 2,
        "tokens_per_s": 12.5,
        "completion_tokens_total": 9,
    }
    assert LoadReport.from_json(report.to_json()) == report
    integral = b'{"in_flight":0,"queue_depth":0,"tokens_per_s":7,"completion_tokens_total":0}'
    assert LoadReport.from_json(integral).tokens_per_s == 7.0


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        (b"[]", "JSON object"),
        (b'{"queue_depth":0,"tokens_per_s":0,"completion_tokens_total":0}', "in_flight"),
        (
            b'{"in_flight":-1,"queue_depth":0,"tokens_per_s":0,"completion_tokens_total":0}',
            "in_flight",
        ),
        (
            b'{"in_flight":true,"queue_depth":0,"tokens_per_s":0,"completion_tokens_total":0}',
            "in_flight",
        ),
        (
            b'{"in_flight":0,"queue_depth":0,"tokens_per_s":"1","completion_tokens_total":0}',
            "tokens_per_s",
        ),
        (
            b'{"in_flight":0,"queue_depth":0,"tokens_per_s":-0.5,"completion_tokens_total":0}',
            "tokens_per_s",
        ),
        (
            b'{"in_flight":0,"queue_depth":0,"tokens_per_s":1e999,"completion_tokens_total":0}',
            "tokens_per_s",
        ),
    ],
)
def test_malformed_reports_are_refused(body: bytes, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        LoadReport.from_json(body)
