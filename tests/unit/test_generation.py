"""Sampling and streaming-text rules of the generation engine (no model needed)."""

from __future__ import annotations

import numpy as np
import pytest

from export.runtime.generation import (
    GenerationError,
    Sampling,
    _held_back,
    sample,
    validate_messages,
)

LOGITS = np.array([0.1, 3.0, 2.9, -1.0, 0.5], dtype=np.float32)


def test_temperature_zero_is_argmax():
    rng = np.random.default_rng(0)
    assert {sample(LOGITS, Sampling(max_tokens=1), rng) for _ in range(20)} == {1}


def test_top_k_one_and_tiny_top_p_are_greedy_even_when_hot():
    rng = np.random.default_rng(0)
    hot_k1 = Sampling(max_tokens=1, temperature=2.0, top_k=1)
    hot_p = Sampling(max_tokens=1, temperature=2.0, top_p=1e-6)
    assert {sample(LOGITS, hot_k1, rng) for _ in range(50)} == {1}
    assert {sample(LOGITS, hot_p, rng) for _ in range(50)} == {1}


def test_top_k_limits_the_candidates():
    rng = np.random.default_rng(0)
    s = Sampling(max_tokens=1, temperature=5.0, top_k=2)
    assert {sample(LOGITS, s, rng) for _ in range(300)} == {1, 2}


def test_same_seed_same_draws_and_frequencies_follow_softmax():
    s = Sampling(max_tokens=1, temperature=1.0)
    a = [sample(LOGITS, s, np.random.default_rng(42)) for _ in range(5)]
    b = [sample(LOGITS, s, np.random.default_rng(42)) for _ in range(5)]
    assert a == b
    rng = np.random.default_rng(7)
    draws = np.bincount([sample(LOGITS, s, rng) for _ in range(20_000)], minlength=5)
    expected = np.exp(LOGITS - LOGITS.max()) / np.exp(LOGITS - LOGITS.max()).sum()
    assert np.allclose(draws / draws.sum(), expected, atol=0.015)


@pytest.mark.parametrize(
    ("text", "stops", "held"),
    [
        ("Hello wor", ("world",), 3),  # "wor" may become "world"
        ("Hello", ("world",), 0),
        ("caf\ufffd", (), 1),  # half a UTF-8 character
        ("a END", ("END",), 0),  # complete stops are cut by the engine, not held
        ("ab", ("abc", "b!"), 2),
    ],
)
def test_held_back_text(text, stops, held):
    assert _held_back(text, stops) == held


def test_messages_are_checked():
    assert validate_messages([{"role": "user", "content": "hi"}]) == [
        {"role": "user", "content": "hi"}
    ]
    for bad in ([], [{"role": "robot", "content": "x"}], [{"role": "user"}], "hi"):
        with pytest.raises(GenerationError):
            validate_messages(bad)
