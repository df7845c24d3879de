"""The confidence measure: mean top-1 token probability, least over choices."""

from __future__ import annotations

import math
from typing import Any

import pytest

from tiermesh.agents.cascade import answer_confidence, choice_confidence, strip_logprobs
from tiermesh.agents.cascade.handler import (
    CHAIN_HEADER,
    STEP_HEADER,
    STEPS_HEADER,
    THRESHOLD_HEADER,
)
from tiermesh.controlplane.model import names


def _chat(*positions: tuple[float, list[float]]) -> dict[str, Any]:
    return {
        "logprobs": {
            "content": [
                {
                    "token": "t",
                    "logprob": chosen,
                    "top_logprobs": [{"token": "a", "logprob": p} for p in top],
                }
                for chosen, top in positions
            ]
        }
    }


def test_mean_of_the_top_one_probabilities() -> None:
    choice = _chat((math.log(0.5), []), (math.log(0.25), [math.log(0.75)]))
    assert choice_confidence(choice) == pytest.approx((0.5 + 0.75) / 2)


def test_certain_tokens_are_confidence_one() -> None:
    assert choice_confidence(_chat((0.0, [0.0]), (0.0, []))) == pytest.approx(1.0)


def test_the_completions_shape_is_read_too() -> None:
    choice = {
        "logprobs": {
            "tokens": ["a", "b"],
            "token_logprobs": [math.log(0.2), math.log(0.9)],
            "top_logprobs": [{"a": math.log(0.2), "c": math.log(0.6)}, {"b": math.log(0.9)}],
        }
    }
    assert choice_confidence(choice) == pytest.approx((0.6 + 0.9) / 2)


@pytest.mark.parametrize(
    "choice",
    [
        {},
        {"logprobs": None},
        {"logprobs": {"content": []}},
        {"logprobs": {"content": [{"token": "t"}]}},
        {"logprobs": {"content": [{"logprob": "x"}]}},
        "not a choice",
    ],
)
def test_an_answer_without_logprobs_cannot_be_judged(choice: Any) -> None:
    assert choice_confidence(choice) == 0.0


def test_an_answer_is_as_confident_as_its_least_confident_choice() -> None:
    sure, unsure = _chat((0.0, [])), _chat((math.log(0.1), []))
    assert answer_confidence({"choices": [sure, unsure]}) == pytest.approx(0.1)
    assert answer_confidence({"choices": []}) == 0.0
    assert answer_confidence([1, 2]) == 0.0


def test_strip_logprobs_nulls_every_choice() -> None:
    answer = {"choices": [_chat((0.0, [])), {"message": {}}]}
    strip_logprobs(answer)
    assert answer["choices"] == [{"logprobs": None}, {"message": {}}]


def test_the_handler_and_the_compiler_agree_on_header_names() -> None:
    assert STEP_HEADER == names.CASCADE_STEP_HEADER
    assert CHAIN_HEADER == names.CASCADE_CHAIN_HEADER
    assert THRESHOLD_HEADER == names.CASCADE_THRESHOLD_HEADER
    assert STEPS_HEADER == names.CASCADE_STEPS_HEADER
