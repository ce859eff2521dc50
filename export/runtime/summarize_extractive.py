"""The `summarize` model's extractive method (summarize_pipeline.py runs it).

The text's sentences (sentences.py), each embedded by `embed` (unit vectors); a
sentence's centrality is its mean cosine similarity to the other sentences of the same
text,
    c_i = (sum_j cos(e_i, e_j) - cos(e_i, e_i)) / (n - 1)      (n > 1 sentences),
i.e. degree centrality on the complete similarity graph (LexRank without a threshold or
damping). The `max_sentences` highest (ties: the earlier one) are returned verbatim, in
text order, joined by one space. A text of at most `max_sentences` sentences is returned
whole and embeds nothing (NUM_TOKENS 0: no model read it). One embed pass for the whole
batch: every sentence of every text, in chunks of `embed_rows`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

try:  # as the package export.runtime (build, tests)
    from .batch_model import BatchCancelled
except ImportError:  # flat, beside model.py in the Triton model directory
    from batch_model import BatchCancelled  # type: ignore[no-redef]

EmbedResult = np.ndarray | tuple[np.ndarray, np.ndarray]  # vectors [, NUM_TOKENS per text]
Embed = Callable[[list[str]], EmbedResult]


def centrality(vectors: np.ndarray) -> np.ndarray:
    """Mean cosine similarity of each row to the other rows (0 for a single row).

    For unit vectors sum_j cos(e_i, e_j) = e_i . sum_j e_j, so no n x n matrix is built
    (a 20 000-character text of short exclamations has thousands of sentences)."""
    v = vectors.astype(np.float64)
    unit = v / np.clip(np.linalg.norm(v, axis=1, keepdims=True), 1e-12, None)
    n = len(unit)
    if n < 2:
        return np.zeros(n)
    to_all = unit @ unit.sum(axis=0)
    return (to_all - np.einsum("ij,ij->i", unit, unit)) / (n - 1)


def top_sentences(scores: np.ndarray, k: int) -> list[int]:
    """The k highest scores' indices (ties: the earlier), in text order."""
    return sorted(int(i) for i in np.argsort(-scores, kind="stable")[:k])


def extractive_rows(
    rows: list[tuple[int, str, list[tuple[int, int]], int]],
    cancelled: Callable[[], bool],
    embed: Embed,
    count: Callable[[str], int],
    embed_rows: int,
) -> Iterable[tuple[int, str, list[tuple[int, int, int]], int]]:
    """(row, text, chosen (index, start, end), tokens read) per extractive row."""
    ranked = [r for r in rows if len(r[2]) > r[3]]
    for row, text, spans, k in rows:
        if len(spans) <= k:
            yield row, text, [(i, a, b) for i, (a, b) in enumerate(spans)], 0
    flat = [text[a:b] for _, text, spans, _ in ranked for a, b in spans]
    if not flat:
        return
    vectors, read = embed_all(flat, cancelled, embed, count, embed_rows)
    at = 0
    for row, text, spans, k in ranked:
        rows_of_text = slice(at, at + len(spans))
        at += len(spans)
        picked = top_sentences(centrality(vectors[rows_of_text]), k)
        yield (
            row,
            text,
            [(i, *spans[i]) for i in picked],
            int(read[rows_of_text].sum()),
        )


def embed_all(
    sentences: list[str],
    cancelled: Callable[[], bool],
    embed: Embed,
    count: Callable[[str], int],
    embed_rows: int,
) -> tuple[np.ndarray, np.ndarray]:
    """The sentences' vectors and token counts: `embed` over chunks of `embed_rows`,
    `cancelled()` asked between chunks; `count` stands in for an embedder without counts."""
    vectors: list[np.ndarray] = []
    read: list[np.ndarray] = []
    step = embed_rows
    for start in range(0, len(sentences), step):
        if start and cancelled():
            raise BatchCancelled(f"cancelled after embedding {start} sentences")
        part = sentences[start : start + step]
        result = embed(part)
        if isinstance(result, tuple):
            got, counts = np.asarray(result[0]), np.asarray(result[1]).reshape(-1)
        else:  # no counts from this embedder: the token estimate stands in
            got, counts = np.asarray(result), np.array([count(t) for t in part])
        if got.shape[0] != len(part) or counts.shape[0] != len(part):
            raise RuntimeError(f"the embed model returned {got.shape[0]} rows for {len(part)}")
        vectors.append(got.reshape(len(part), -1))
        read.append(counts.astype(np.int64))
    return np.concatenate(vectors), np.concatenate(read)
