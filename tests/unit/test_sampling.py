"""The logits pipeline and logprob entries (sampling.py), option by option, with no
model: each option's exact effect on the row, the distribution that logprobs report,
and that a request setting none of the new options draws exactly what the engine drew
before they existed."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from export.runtime.failures import GenerationError
from export.runtime.logprobs import (
    EXCLUDED_LOGPROB,
    PROMPT_ROWS_PER_CHUNK,
    TokenText,
    log_softmax,
    top_ids,
    top_ids_rows,
)
from export.runtime.sampling import (
    ALL_BANNED,
    MAX_LOGIT_BIAS,
    MAX_LOGPROBS,
    MAX_N,
    MAX_STOP_CHARS,
    MAX_STOP_SEQUENCES,
    LogitsPipeline,
    Sampling,
    check_sampling,
    draw,
)

STOP_IDS = {0, 2}


def old_sample(logits: np.ndarray, sampling: Sampling, rng: np.random.Generator) -> int:
    """generation.sample() as it was before the new options (commit b64ee91), verbatim."""
    if sampling.temperature <= 0:
        return int(np.argmax(logits))
    x = logits.astype(np.float64) / sampling.temperature
    if 0 < sampling.top_k < x.size:
        kth = np.partition(x, -sampling.top_k)[-sampling.top_k]
        x = np.where(x < kth, -np.inf, x)
    probs = np.exp(x - x.max())
    probs /= probs.sum()
    if sampling.top_p < 1.0:
        order = np.argsort(-probs, kind="stable")
        cumulative = np.cumsum(probs[order])
        keep = order[: int(np.searchsorted(cumulative, sampling.top_p)) + 1]
        kept = np.zeros_like(probs)
        kept[keep] = probs[keep]
        probs = kept / kept.sum()
    cdf = np.cumsum(probs)
    return int(min(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"), probs.size - 1))


@pytest.mark.parametrize(
    ("temperature", "top_p", "top_k"),
    list(itertools.product((0.0, 0.4, 1.0, 1.9), (1.0, 0.9, 0.3), (0, 1, 7, 60))),
)
def test_without_new_options_the_tokens_are_bit_identical_to_before(temperature, top_p, top_k):
    data = np.random.default_rng(1234)
    for seed in range(6):
        s = Sampling(max_tokens=50, temperature=temperature, top_p=top_p, top_k=top_k, seed=seed)
        old_rng, new_rng = np.random.default_rng(seed), np.random.default_rng(seed)
        pipeline = LogitsPipeline(s, [5, 6, 7], STOP_IDS)
        scale = float(data.choice([0.5, 3.0, 12.0]))
        for _ in range(25):
            logits = (data.standard_normal(500) * scale).astype(np.float32)
            adjusted = pipeline.adjust(logits)
            assert adjusted is logits  # every neutral step skipped: not even a copy
            want_logprobs = bool(data.integers(2))  # asking for logprobs changes no draw
            token, _ = draw(adjusted, s, new_rng, want_logprobs)
            assert token == old_sample(logits, s, old_rng)
            pipeline.accept(token)


def pipeline_row(s: Sampling, generated: list[int], prompt=(), width: int = 8) -> np.ndarray:
    pipeline = LogitsPipeline(s, list(prompt), STOP_IDS)
    for token in generated:
        pipeline.accept(token)
    logits = np.linspace(-2.0, 3.0, width).astype(np.float32)
    return pipeline.adjust(logits) - logits.astype(np.float64)


def test_presence_and_frequency_subtract_openais_exact_amounts():
    s = Sampling(max_tokens=9, presence_penalty=0.5, frequency_penalty=0.25)
    delta = pipeline_row(s, generated=[3, 3, 5, 3], prompt=[6, 7])
    expected = np.zeros(8)
    expected[3] = -(3 * 0.25 + 0.5)
    expected[5] = -(1 * 0.25 + 0.5)
    assert np.allclose(delta, expected)  # prompt tokens 6, 7 do not count
    negative = pipeline_row(Sampling(max_tokens=9, presence_penalty=-1.0), generated=[4])
    assert negative[4] == pytest.approx(1.0) and np.count_nonzero(negative) == 1


def test_repetition_penalty_divides_positive_and_multiplies_negative_logits_of_seen_tokens():
    s = Sampling(max_tokens=9, repetition_penalty=1.5)
    pipeline = LogitsPipeline(s, [1, 6], STOP_IDS)
    pipeline.accept(7)
    logits = np.linspace(-2.0, 3.0, 8).astype(np.float32)
    x = pipeline.adjust(logits)
    for j in range(8):
        raw = float(logits[j])
        if j in (1, 6, 7):  # prompt and generated
            assert x[j] == pytest.approx(raw / 1.5 if raw > 0 else raw * 1.5)
        else:
            assert x[j] == raw


def test_logit_bias_adds_and_minus_100_bans():
    s = Sampling(max_tokens=9, logit_bias=((1, 2.5), (7, -100.0), (4, -99.0)))
    delta = pipeline_row(s, generated=[])
    assert delta[1] == pytest.approx(2.5) and delta[4] == pytest.approx(-99.0)
    assert delta[7] == -np.inf
    # The banned token was the argmax: greedy and any temperature never pick it.
    pipeline = LogitsPipeline(s, [], STOP_IDS)
    x = pipeline.adjust(np.linspace(-2.0, 3.0, 8).astype(np.float32))
    assert draw(x, s, np.random.default_rng(0))[0] == 6
    hot = Sampling(max_tokens=9, temperature=2.0, logit_bias=((7, -100.0),))
    hot_row = LogitsPipeline(hot, [], STOP_IDS).adjust(np.full(8, 5.0, dtype=np.float32))
    rng = np.random.default_rng(1)
    assert 7 not in {draw(hot_row, hot, rng)[0] for _ in range(500)}


def test_min_tokens_bans_the_stop_tokens_until_reached_and_ignore_eos_always():
    s = Sampling(max_tokens=9, min_tokens=2)
    pipeline = LogitsPipeline(s, [], STOP_IDS)
    logits = np.zeros(8, dtype=np.float32)
    logits[2] = 10.0  # EOS is the likeliest
    for _ in range(2):
        x = pipeline.adjust(logits)
        assert x[0] == x[2] == -np.inf and np.isfinite(np.delete(x, [0, 2])).all()
        pipeline.accept(int(np.argmax(x)))
    assert pipeline.adjust(logits) is logits  # reached: the step is skipped again
    forever = LogitsPipeline(Sampling(max_tokens=9, ignore_eos=True), [], STOP_IDS)
    for _ in range(5):
        assert forever.adjust(logits)[2] == -np.inf
        forever.accept(3)


class OnlyAllows:
    """A grammar's mask that allows only these tokens (sampling.Mask)."""

    def __init__(self, *allowed: int) -> None:
        self.allowed = list(allowed)

    def mask(self, logits: np.ndarray) -> None:
        kept = logits[self.allowed].copy()
        logits.fill(-np.inf)
        logits[self.allowed] = kept

    def accept(self, token_id: int) -> None: ...

    def finished(self) -> bool:
        return False


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_a_bias_that_bans_what_the_grammar_allows_is_refused_not_sampled(temperature):
    logits = np.linspace(-2.0, 3.0, 8).astype(np.float32)
    s = Sampling(max_tokens=9, temperature=temperature, logit_bias=((3, -100.0), (5, -100.0)))
    pipeline = LogitsPipeline(s, [], STOP_IDS, OnlyAllows(3, 5))
    with pytest.raises(GenerationError) as refused:
        pipeline.adjust(logits)
    assert refused.value.code == "invalid" and str(refused.value) == ALL_BANNED
    # One allowed token left unbanned: drawn, whatever the temperature.
    kept = LogitsPipeline(s, [], STOP_IDS, OnlyAllows(3, 5, 6))
    assert draw(kept.adjust(logits), s, np.random.default_rng(0))[0] == 6
    # Without a grammar: a bias over the whole vocabulary.
    everything = Sampling(
        max_tokens=9, temperature=temperature, logit_bias=tuple((t, -100.0) for t in range(8))
    )
    with pytest.raises(GenerationError) as refused:
        LogitsPipeline(everything, [], STOP_IDS).adjust(logits)
    assert refused.value.code == "invalid" and "logit_bias bans every token" in str(refused.value)


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_draw_never_samples_from_an_empty_or_nan_row(temperature):
    s = Sampling(max_tokens=1, temperature=temperature)
    rng = np.random.default_rng(0)
    with pytest.raises(GenerationError) as refused:
        draw(np.full(6, -np.inf, dtype=np.float32), s, rng, want_logprobs=True)
    assert refused.value.code == "invalid" and str(refused.value) == ALL_BANNED
    broken = np.array([0.5, np.nan, 1.0], dtype=np.float32)
    with pytest.raises(GenerationError) as refused:
        draw(broken, s, rng)
    assert refused.value.code == "internal"  # the model's fault, not the request's


def test_min_tokens_gives_way_when_the_grammar_allows_only_a_stop_token():
    s = Sampling(max_tokens=9, min_tokens=5)
    pipeline = LogitsPipeline(s, [], STOP_IDS, OnlyAllows(2))
    x = pipeline.adjust(np.zeros(8, dtype=np.float32))
    assert np.flatnonzero(np.isfinite(x)).tolist() == [2]


def reference_distribution(logits: np.ndarray, temperature: float, top_p: float) -> np.ndarray:
    x = logits.astype(np.float64) / temperature
    p = np.exp(x - x.max())
    p /= p.sum()
    order = np.argsort(-p, kind="stable")
    keep = order[: int(np.searchsorted(np.cumsum(p[order]), top_p)) + 1]
    q = np.zeros_like(p)
    q[keep] = p[keep]
    return q / q.sum()


def test_logprobs_are_the_log_of_the_distribution_sampled_from():
    text = TokenText(byte_level_tokenizer())
    logits = np.array([1.0, 0.2, 2.5, -0.7, 2.0, 0.9], dtype=np.float32)
    greedy = Sampling(max_tokens=1, logprobs=3)
    token, logp = draw(logits, greedy, np.random.default_rng(0), want_logprobs=True)
    assert token == 2 and logp is not None
    assert np.allclose(logp, np.log(np.exp(logits) / np.exp(logits).sum()))
    hot = Sampling(max_tokens=1, temperature=0.7, top_p=0.8, logprobs=6)
    token, logp = draw(logits, hot, np.random.default_rng(3), want_logprobs=True)
    q = reference_distribution(logits, 0.7, 0.8)
    assert q[token] > 0 and logp is not None
    entry = text.generated(token, logp, 6)
    assert entry["logprob"] == pytest.approx(math.log(q[token]))
    tops = entry["top_logprobs"]
    assert [t["id"] for t in tops] == list(np.argsort(-q, kind="stable"))
    for t in tops:  # the nucleus cut the rest: outside the distribution
        want = math.log(q[t["id"]]) if q[t["id"]] > 0 else EXCLUDED_LOGPROB
        assert t["logprob"] == pytest.approx(want)
    assert any(t["logprob"] == EXCLUDED_LOGPROB for t in tops)


def test_top_logprobs_descend_and_ties_go_to_the_smaller_id():
    logp = np.log(np.array([0.1, 0.3, 0.1, 0.3, 0.2]))
    assert list(top_ids(logp, 5)) == [1, 3, 4, 0, 2]
    assert list(top_ids(logp, 2)) == [1, 3]
    assert list(top_ids(logp, 0)) == []
    banned = np.array([-np.inf, 0.0, -np.inf, -1.0])
    assert list(top_ids(banned, 3)) == [1, 3, 0]


def byte_level_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    # "é" is two bytes, C3 A9: GPT-2's table writes them "Ã" and "©".
    vocab = {"<|im_end|>": 0, "a": 1, "Ġb": 2, "Ã": 3, "©": 4, "Ã©": 5}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[("Ã", "©")]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(["<|im_end|>"])
    return tokenizer


def test_entries_carry_each_tokens_own_text_and_exact_bytes():
    text = TokenText(byte_level_tokenizer())
    assert text.of(2) == (" b", [32, 98])
    assert text.of(3) == ("\ufffd", [0xC3])  # half of "é": the bytes say which half
    assert text.of(4) == ("\ufffd", [0xA9])
    assert text.of(5) == ("é", [0xC3, 0xA9])
    assert text.of(0) == ("<|im_end|>", list(b"<|im_end|>"))


@pytest.mark.parametrize("k", [0, 1, 3, 7, 40])
def test_top_ids_of_a_block_of_rows_equal_each_rows_own_ties_included(k):
    data = np.random.default_rng(k)
    continuous = data.standard_normal((9, 301))
    # Few distinct values: the k-th value is tied inside and outside the k picked.
    tied = data.integers(0, 4, (9, 301)).astype(np.float64)
    banned = continuous.copy()
    banned[:, ::3] = -np.inf
    for block in (continuous, tied, banned, log_softmax(continuous.astype(np.float32))):
        got = top_ids_rows(block, k)
        assert got.shape == (9, min(k, 301))
        for row in range(9):
            assert got[row].tolist() == top_ids(block[row], k).tolist()


def test_prompt_entries_in_blocks_equal_row_by_row_scoring():
    text = TokenText(byte_level_tokenizer())
    n = 2 * PROMPT_ROWS_PER_CHUNK + 5  # blocks: full, full, partial
    rows = np.random.default_rng(9).standard_normal((n, 6)).astype(np.float32)
    ids = [int(i) for i in np.random.default_rng(10).integers(0, 6, n)]
    entries = text.prompt(rows, ids, 3)
    assert len(entries) == n
    for j in range(1, n):
        assert entries[j] == text.generated(ids[j], log_softmax(rows[j - 1]), 3)


def test_prompt_entries_use_the_plain_model_and_nothing_predicts_the_first_token():
    text = TokenText(byte_level_tokenizer())
    rows = np.random.default_rng(5).standard_normal((3, 6)).astype(np.float32)
    entries = text.prompt(rows, [1, 2, 5], 2)
    assert entries[0] == {"id": 1, "token": "a", "bytes": [97], "logprob": None, "top_logprobs": []}
    for j in (1, 2):
        reference = log_softmax(rows[j - 1])
        assert entries[j]["logprob"] == pytest.approx(reference[[1, 2, 5][j]], abs=1e-12)
        assert [t["id"] for t in entries[j]["top_logprobs"]] == list(np.argsort(-reference)[:2])


# --- bounds -------------------------------------------------------------------------------


def refused(s: Sampling, **kwargs) -> str:
    with pytest.raises(GenerationError) as caught:
        check_sampling(s, 64, **kwargs)
    assert caught.value.code == "invalid"
    return str(caught.value)


def test_n_is_bounded_by_the_slots_and_max_n():
    check_sampling(Sampling(max_tokens=4, n=4), 64, slots=4)
    assert "n must be 1..4" in refused(Sampling(max_tokens=4, n=5), slots=4)
    check_sampling(Sampling(max_tokens=4, n=MAX_N), 64, slots=16)
    assert f"1..{MAX_N}" in refused(Sampling(max_tokens=4, n=MAX_N + 1), slots=16)
    refused(Sampling(max_tokens=4, n=0))


def test_logprobs_penalties_and_bias_bounds():
    check_sampling(Sampling(max_tokens=4, logprobs=MAX_LOGPROBS, prompt_logprobs=0), 64)
    assert "logprobs" in refused(Sampling(max_tokens=4, logprobs=MAX_LOGPROBS + 1))
    assert "prompt_logprobs" in refused(Sampling(max_tokens=4, prompt_logprobs=-1))
    check_sampling(Sampling(max_tokens=4, presence_penalty=-2, frequency_penalty=2), 64)
    assert "presence_penalty" in refused(Sampling(max_tokens=4, presence_penalty=2.01))
    assert "frequency_penalty" in refused(Sampling(max_tokens=4, frequency_penalty=float("nan")))
    check_sampling(Sampling(max_tokens=4, repetition_penalty=2.0), 64)
    assert "repetition_penalty" in refused(Sampling(max_tokens=4, repetition_penalty=0.0))
    check_sampling(
        Sampling(max_tokens=4, logit_bias=((99, -100.0), (0, 100.0))), 64, vocab_size=100
    )
    assert "token 100" in refused(Sampling(max_tokens=4, logit_bias=((100, 1.0),)), vocab_size=100)
    assert "token -1" in refused(Sampling(max_tokens=4, logit_bias=((-1, 1.0),)))
    assert "-100..100" in refused(Sampling(max_tokens=4, logit_bias=((5, 100.5),)))
    many = tuple((i, 1.0) for i in range(MAX_LOGIT_BIAS + 1))
    assert "at most" in refused(Sampling(max_tokens=4, logit_bias=many))
    check_sampling(Sampling(max_tokens=4, logit_bias=many[:-1]), 64)


def test_each_stop_sequence_is_bounded_in_characters():
    longest = "x" * MAX_STOP_CHARS
    check_sampling(Sampling(max_tokens=4, stop=(longest,) * MAX_STOP_SEQUENCES), 64)
    message = refused(Sampling(max_tokens=4, stop=("ok", longest + "x")))
    assert message.startswith("stop") and str(MAX_STOP_CHARS) in message


def test_min_tokens_at_most_max_tokens_and_zero_tokens_only_to_score_a_prompt():
    check_sampling(Sampling(max_tokens=4, min_tokens=4), 64)
    assert "min_tokens" in refused(Sampling(max_tokens=4, min_tokens=5))
    assert "min_tokens" in refused(Sampling(max_tokens=4, min_tokens=-1))
    assert "max_tokens" in refused(Sampling(max_tokens=0))
    check_sampling(Sampling(max_tokens=0, prompt_logprobs=0), 64)
    assert "max_tokens" in refused(Sampling(max_tokens=-1, prompt_logprobs=0))
