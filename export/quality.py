"""Measured at build time and written into the model cards: export parity against the
reference implementation, and task quality on data the package ships."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from . import heads, sources

# Varied probe sentences for the build-time parity check; the integration tests use 200+.
PROBE_SENTENCES = (
    "How do I renew my insurance policy?",
    "I want to speak to a real person right now!!!",
    "What's the weather going to be like in Paris tomorrow?",
    "Transfer $250 from checking to savings, please.",
    "This is the worst service I have ever had.",
    "The movie was a delight from start to finish.",
    "ok",
    "Pourquoi mon paiement a-t-il été refusé ?",
    "😀 great job team 🎉",
    "set a timer for 10 minutes",
    "Can you tell me the meaning of life?",
    "My card was declined at the store again and I'm furious.",
    "a " * 400,  # longer than max_length: truncated the same way by both
    "NUL\x00inside and tabs\tand\nnewlines",
    "The quick brown fox jumps over the lazy dog.",
    "I need help with my order #12345, it never arrived",
)


def parity(
    run_pipeline: Callable[[list[str]], dict[str, np.ndarray]],
    reference_embed: Callable[[list[str]], np.ndarray],
    head: heads.LinearHead | None,
    reference_scores: Callable[[np.ndarray], np.ndarray] | None,
    texts: Sequence[str] = PROBE_SENTENCES,
) -> dict[str, Any]:
    got = run_pipeline(list(texts))
    embeddings = reference_embed(list(texts))
    if head is None or reference_scores is None:
        cos = (got["EMBEDDING"] * embeddings).sum(1) / (
            np.linalg.norm(got["EMBEDDING"], axis=1) * np.linalg.norm(embeddings, axis=1)
        )
        return {"parity_sentences": len(texts), "parity_min_cosine": round(float(cos.min()), 7)}
    ref = reference_scores(embeddings)
    same = float((ref.argmax(1) == got["SCORES"].argmax(1)).mean())
    return {
        "parity_sentences": len(texts),
        "parity_label_agreement": same,
        "parity_max_abs_score_diff": float(np.abs(ref - got["SCORES"]).max()),
    }


def rotten_tomatoes_accuracy(run_pipeline: Callable[[list[str]], dict[str, np.ndarray]]) -> dict:
    rows = sources.rotten_tomatoes()
    predicted: list[str] = []
    for start in range(0, len(rows), 256):
        batch = [text for text, _ in rows[start : start + 256]]
        predicted.extend(x.decode() for x in run_pipeline(batch)["LABEL"].reshape(-1))
    truth = [label for _, label in rows]
    correct = sum(p == t for p, t in zip(predicted, truth, strict=True))
    return {
        "rotten_tomatoes_accuracy": round(correct / len(rows), 4),
        "rotten_tomatoes_size": len(rows),
    }
