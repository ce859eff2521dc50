"""Logprob entries: a token's text on its own, its exact bytes, its logprob and the most
likely alternatives, for generated tokens (one at a time, as they are drawn) and for a
prompt's tokens (all at once, after the prefill).

Every logprob is computed in float64. A token outside the distribution it is reported
against (cut, banned, masked) gets EXCLUDED_LOGPROB.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

# A token outside the distribution it was drawn from (cut, banned, masked): JSON has no
# -inf, and this is vLLM's convention.
EXCLUDED_LOGPROB = -9999.0

# Prompt rows scored together: one float64 log-softmax over [rows, vocabulary] and one
# top-k selection per block, instead of a pass per row. Few rows, so that a block (8 of
# a 49152-token vocabulary: 3 MB of float64) stays in cache between its passes; for a
# 1024-token prompt with top 20 this measured ~200 ms against ~330 ms with 64 rows
# and ~575 ms row by row (shared 2-core machine).
PROMPT_ROWS_PER_CHUNK = 8


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Over the last axis, in float64 (one row or a block of rows)."""
    x = logits.astype(np.float64)  # a copy: shifted in place, as (x - max) - log(sum)
    x -= x.max(axis=-1, keepdims=True)
    x -= np.log(np.exp(x).sum(axis=-1, keepdims=True))
    return x


def top_ids(logp: np.ndarray, k: int) -> np.ndarray:
    """The k most likely ids of one row, descending; ties go to the smaller id."""
    k = min(k, logp.size)
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    threshold = logp[np.argpartition(-logp, k - 1)[:k]].min()
    candidates = np.flatnonzero(logp >= threshold)
    return candidates[np.lexsort((candidates, -logp[candidates]))[:k]]


def top_ids_rows(logp: np.ndarray, k: int) -> np.ndarray:
    """top_ids of every row of a [rows, vocabulary] block at once: [rows, k], the same
    ids in the same order. An argpartition of the whole block costs more than all the
    rest of the scoring (~0.45 ms a row), so the candidates are narrowed first: the k-th
    largest value of every 16th column is at most the row's own k-th largest, so the
    values at or above it hold the row's top k and every tie of its k-th (for k = 20,
    ~16 * 20 columns of a row's 49152); only those are sorted."""
    rows, width = logp.shape
    k = min(k, width)
    if k <= 0:
        return np.zeros((rows, 0), dtype=np.int64)
    sample = logp[:, :: max(1, min(16, width // k))]
    floor = np.partition(sample, sample.shape[1] - k, axis=1)[:, sample.shape[1] - k]
    row, col = np.divmod(_true_at(logp >= floor[:, None]), width)
    # Grouped by row, then by value descending, then by id ascending (lexsort's last
    # key leads); each row has at least k candidates.
    order = np.lexsort((col, -logp[row, col], row))
    starts = np.concatenate([[0], np.cumsum(np.bincount(row, minlength=rows))[:-1]])
    return col[order][starts[:, None] + np.arange(k)]


def _true_at(mask: np.ndarray) -> np.ndarray:
    """np.flatnonzero of a sparse boolean block, 8 bytes at a time: the words with any
    true byte first, then their bytes (measured 3x faster than np.nonzero on a block
    with a few hundred true values a row)."""
    flat = mask.reshape(-1)
    spare = -flat.size % 8
    if spare:
        flat = np.concatenate([flat, np.zeros(spare, dtype=bool)])
    words = np.flatnonzero(flat.view(np.uint64))
    at = (words[:, None] * 8 + np.arange(8)).reshape(-1)
    return at[flat[at]]


def reported(value: float) -> float:
    return float(value) if np.isfinite(value) else EXCLUDED_LOGPROB


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's table: every byte as a printable character (ByteLevel tokenizers)."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, chars, strict=True)}


class TokenText:
    """A token's text on its own, and its exact bytes (a byte-level piece of a UTF-8
    character decodes to U+FFFD; its bytes say which piece it is)."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        config = json.loads(tokenizer.to_str())
        self._byte_level = "ByteLevel" in json.dumps(
            [config.get("pre_tokenizer"), config.get("decoder")]
        )
        self._special = set(tokenizer.get_added_tokens_decoder())
        self._unbyte = {c: b for b, c in bytes_to_unicode().items()}
        self._cache: dict[int, tuple[str, list[int]]] = {}

    def of(self, token: int) -> tuple[str, list[int]]:
        known = self._cache.get(token)
        if known is None:
            text = self.tokenizer.decode([token], skip_special_tokens=False)
            piece = self.tokenizer.id_to_token(token) or ""
            if (
                self._byte_level
                and token not in self._special
                and all(c in self._unbyte for c in piece)
            ):
                raw = [self._unbyte[c] for c in piece]
            else:
                raw = list(text.encode("utf-8"))
            known = self._cache[token] = (text, raw)
        return known

    def entry(self, token: int, logprob: float | None) -> dict[str, Any]:
        text, raw = self.of(token)
        return {"id": token, "token": text, "bytes": raw, "logprob": logprob}

    def generated(self, token: int, logp: np.ndarray, k: int) -> dict[str, Any]:
        """A generated token's entry: its logprob and the k most likely alternatives."""
        return self._with_tops(token, logp[token], top_ids(logp, k), logp)

    def _with_tops(
        self, token: int, logprob: float, tops: np.ndarray, logp: np.ndarray
    ) -> dict[str, Any]:
        item = self.entry(token, reported(logprob))
        item["top_logprobs"] = [self.entry(int(t), reported(logp[t])) for t in tops]
        return item

    def prompt(self, logits: np.ndarray, ids: list[int], k: int) -> list[dict[str, Any]]:
        """The prompt's tokens under the plain model (no penalties): position j's logits
        predict token j + 1; nothing predicts the first. Scored in blocks of rows."""
        first = self.entry(ids[0], None)
        first["top_logprobs"] = []
        entries = [first]
        for start in range(0, len(ids) - 1, PROMPT_ROWS_PER_CHUNK):
            stop = min(start + PROMPT_ROWS_PER_CHUNK, len(ids) - 1)
            logp = log_softmax(logits[start:stop])
            tops = top_ids_rows(logp, k)
            for row in range(stop - start):
                token = ids[start + row + 1]
                entries.append(self._with_tops(token, logp[row, token], tops[row], logp[row]))
        return entries
