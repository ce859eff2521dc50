"""How one choice picks its next token: the settings and their bounds, the logits
pipeline (penalties, bias, stop suppression, grammar mask) and the draw, which also
gives the distribution the token was drawn from (logprobs.py turns it into entries).

Every option at its neutral value skips its step entirely, so a request that sets none
of them samples exactly (bit for bit, for the same seed) what it did before they existed.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import NoReturn, Protocol

import numpy as np

try:  # as the package export.runtime (build, tests)
    from .failures import GenerationError
    from .logprobs import log_softmax
except ImportError:  # flat, beside model.py in the Triton model directory
    from failures import GenerationError  # type: ignore[no-redef]
    from logprobs import log_softmax  # type: ignore[no-redef]

# The sampling bounds, each one number. The frontend's request schema checks the same
# numbers first (frontend/schemas/chat.py; the packages share no code, so
# tests/unit/test_sampling_bounds.py holds them equal); these are for callers that reach
# Triton's gRPC directly with raw inputs. max_tokens' bound is the model's (`Limits`).
MIN_TEMPERATURE = 0  # greedy
MAX_TEMPERATURE = 2
MAX_TOP_P = 1  # and above 0
MIN_TOP_K = 0  # off; no upper bound: a cut at or above the vocabulary is no cut
MAX_STOP_SEQUENCES = 4  # each non-empty
# Characters per stop sequence: the check for a forming stop at the text's end is
# quadratic in its length, every token (stops.held_back).
MAX_STOP_CHARS = 256
MAX_SEED = 2**63 - 1  # SEED is INT64, and numpy's generator takes no negative seed
MAX_N = 8  # choices per request (and at most the model's slots)
MAX_LOGPROBS = 20  # top alternatives per token
MIN_PENALTY, MAX_PENALTY = -2, 2  # presence / frequency (OpenAI's range)
MAX_REPETITION_PENALTY = 2  # and above 0; 1 is off
MAX_LOGIT_BIAS = 300  # entries
MIN_BIAS, MAX_BIAS = -100, 100  # -100 bans the token

# Nothing left to draw from: every token is banned or masked.
ALL_BANNED = "logit_bias bans every token that response_format / the tool call allows"


@dataclass(frozen=True)
class Sampling:
    max_tokens: int
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 = no top-k cut
    seed: int | None = None
    stop: tuple[str, ...] = ()
    n: int = 1
    logprobs: int | None = None  # None off; else this many alternatives per token
    prompt_logprobs: int | None = None  # None off; the prompt's tokens (echo)
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    logit_bias: tuple[tuple[int, float], ...] = ()
    min_tokens: int = 0
    ignore_eos: bool = False


def check_sampling(
    s: Sampling, max_completion_tokens: int, slots: int = MAX_N, vocab_size: int | None = None
) -> None:
    def refuse(message: str) -> NoReturn:
        raise GenerationError("invalid", message)

    # 0 tokens only to score a prompt (echo with logprobs): a prefill, no token.
    least = 0 if s.prompt_logprobs is not None else 1
    if not least <= s.max_tokens <= max_completion_tokens:
        refuse(f"max_tokens must be 1..{max_completion_tokens} (0 only with prompt logprobs)")
    if not MIN_TEMPERATURE <= s.temperature <= MAX_TEMPERATURE:
        refuse(f"temperature must be {MIN_TEMPERATURE}..{MAX_TEMPERATURE}")
    if not 0 < s.top_p <= MAX_TOP_P:
        refuse(f"top_p must be in (0, {MAX_TOP_P}]")
    if s.top_k < MIN_TOP_K:
        refuse(f"top_k must be >= {MIN_TOP_K}")
    if len(s.stop) > MAX_STOP_SEQUENCES or any(not x for x in s.stop):
        refuse(f"stop takes at most {MAX_STOP_SEQUENCES} non-empty sequences")
    if any(len(x) > MAX_STOP_CHARS for x in s.stop):
        refuse(f"stop: each sequence takes at most {MAX_STOP_CHARS} characters")
    if s.seed is not None and not 0 <= s.seed <= MAX_SEED:
        refuse(f"seed must be 0..{MAX_SEED}")
    most_n = min(slots, MAX_N)
    if not 1 <= s.n <= most_n:
        refuse(f"n must be 1..{most_n}")
    for name, k in (("logprobs", s.logprobs), ("prompt_logprobs", s.prompt_logprobs)):
        if k is not None and not 0 <= k <= MAX_LOGPROBS:
            refuse(f"{name} must be 0..{MAX_LOGPROBS}")
    for name, p in (
        ("presence_penalty", s.presence_penalty),
        ("frequency_penalty", s.frequency_penalty),
    ):
        if not MIN_PENALTY <= p <= MAX_PENALTY:
            refuse(f"{name} must be {MIN_PENALTY}..{MAX_PENALTY}")
    if not 0 < s.repetition_penalty <= MAX_REPETITION_PENALTY:
        refuse(f"repetition_penalty must be in (0, {MAX_REPETITION_PENALTY}]")
    if len(s.logit_bias) > MAX_LOGIT_BIAS:
        refuse(f"logit_bias takes at most {MAX_LOGIT_BIAS} entries")
    for token, bias in s.logit_bias:
        if token < 0 or (vocab_size is not None and token >= vocab_size):
            known = "" if vocab_size is None else f" (0..{vocab_size - 1})"
            refuse(f"logit_bias: token {token} is not in the vocabulary{known}")
        if not MIN_BIAS <= bias <= MAX_BIAS:
            refuse(f"logit_bias: the bias of token {token} must be {MIN_BIAS}..{MAX_BIAS}")
    if not 0 <= s.min_tokens <= s.max_tokens:
        refuse("min_tokens must be 0..max_tokens")


class Mask(Protocol):
    """A grammar's matcher, as the pipeline uses it (grammar.Matcher)."""

    def mask(self, logits: np.ndarray) -> None: ...
    def accept(self, token_id: int) -> None: ...
    def finished(self) -> bool: ...


class LogitsPipeline:
    """One choice's logits, step by step, in this order: repetition penalty (every token
    seen: prompt and generated), presence / frequency penalty (generated tokens), logit
    bias, stop tokens banned (before min_tokens, or always with ignore_eos), the grammar's
    mask. Tokens are counted only when a penalty needs them."""

    def __init__(
        self,
        s: Sampling,
        prompt_ids: Iterable[int],
        stop_ids: Collection[int],
        matcher: Mask | None = None,
    ):
        self.s = s
        self.matcher = matcher
        self.stop_ids = np.array(sorted(stop_ids), dtype=np.int64)
        self.generated = 0
        self._repeating = s.repetition_penalty != 1.0
        self._counting = s.presence_penalty != 0.0 or s.frequency_penalty != 0.0
        self._seen: set[int] = set(prompt_ids) if self._repeating else set()
        self._counts: dict[int, int] = {}  # generated token -> times
        self._bias_ids = np.array([t for t, _ in s.logit_bias], dtype=np.int64)
        self._bias = np.array([b for _, b in s.logit_bias], dtype=np.float64)

    def adjust(self, logits: np.ndarray) -> np.ndarray:
        """The row to sample from: `logits` itself when no step applies, else a float64
        copy (the caller's row is shared by the choices of one prefill)."""
        s = self.s
        x = logits

        def own() -> np.ndarray:
            return x.astype(np.float64) if x is logits else x

        if self._repeating and self._seen:
            x = own()
            seen = np.fromiter(self._seen, dtype=np.int64)
            v = x[seen]
            x[seen] = np.where(v > 0, v / s.repetition_penalty, v * s.repetition_penalty)
        if self._counting and self._counts:
            x = own()
            ids = np.fromiter(self._counts, dtype=np.int64)
            counts = np.fromiter(self._counts.values(), dtype=np.float64)
            x[ids] -= counts * s.frequency_penalty + s.presence_penalty
        if self._bias_ids.size:
            x = own()
            x[self._bias_ids] += self._bias
            x[self._bias_ids[self._bias <= MIN_BIAS]] = -np.inf
        saved = None
        if self.stop_ids.size and (s.ignore_eos or self.generated < s.min_tokens):
            x = own()
            saved = x[self.stop_ids].copy()
            x[self.stop_ids] = -np.inf
        if self.matcher is not None:
            x = own()
            self.matcher.mask(x)
            if saved is not None and x.max() == -np.inf:
                # The grammar allows only a stop token here: it wins over min_tokens.
                x[self.stop_ids] = saved
                self.matcher.mask(x)
        # Only bans and masks make -inf, and only a changed row has any: the others skip
        # the check. An empty row is the request's doing (its bias against its format).
        if x is not logits and x.max() == -np.inf:
            raise GenerationError(
                "invalid", ALL_BANNED if self.matcher is not None else "logit_bias bans every token"
            )
        return x

    def accept(self, token: int) -> None:
        self.generated += 1
        if self._repeating:
            self._seen.add(token)
        if self._counting:
            self._counts[token] = self._counts.get(token, 0) + 1
        if self.matcher is not None:
            self.matcher.accept(token)

    def finished(self) -> bool:
        return self.matcher is not None and self.matcher.finished()


def _distribution(logits: np.ndarray, s: Sampling) -> np.ndarray:
    """The probabilities sampled from at temperature > 0: temperature, top-k, then top-p
    (nucleus) over what is left."""
    x = logits.astype(np.float64) / s.temperature
    if 0 < s.top_k < x.size:
        kth = np.partition(x, -s.top_k)[-s.top_k]
        x = np.where(x < kth, -np.inf, x)
    probs = np.exp(x - x.max())
    probs /= probs.sum()
    if s.top_p < 1.0:
        order = np.argsort(-probs, kind="stable")
        cumulative = np.cumsum(probs[order])
        keep = order[: int(np.searchsorted(cumulative, s.top_p)) + 1]
        kept = np.zeros_like(probs)
        kept[keep] = probs[keep]
        probs = kept / kept.sum()
    return probs


def draw(
    logits: np.ndarray, s: Sampling, rng: np.random.Generator, want_logprobs: bool = False
) -> tuple[int, np.ndarray | None]:
    """One token, and (when asked) the log of the distribution it came from: at
    temperature 0 the log-softmax of the logits; else the temperature / top-k / top-p
    distribution, -inf where it is zero. A row with nothing to draw from is refused,
    never sampled (argmax would pick token 0, the cdf would be NaN)."""
    top = logits.max()
    if np.isnan(top):
        raise GenerationError("internal", "the model's logits are not numbers (NaN)")
    if top == -np.inf:
        raise GenerationError("invalid", ALL_BANNED)
    if s.temperature <= 0:
        token = int(np.argmax(logits))
        return token, (log_softmax(logits) if want_logprobs else None)
    probs = _distribution(logits, s)
    cdf = np.cumsum(probs)
    token = int(min(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"), probs.size - 1))
    if not want_logprobs:
        return token, None
    with np.errstate(divide="ignore"):
        return token, np.log(probs)
