"""Varied test sentences from the data the packages ship (no hand-picked easy cases)."""

from __future__ import annotations

import random

from export import quality, sources


def varied_sentences(per_corpus: int = 45, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    by_corpus: dict[str, list[str]] = {}
    for row in sources.hutto_sentences():
        by_corpus.setdefault(row.corpus, []).append(row.text)
    picked: list[str] = []
    for corpus in sorted(by_corpus):
        picked.extend(rng.sample(by_corpus[corpus], per_corpus))
    reviews = [text for text, _ in sources.rotten_tomatoes()]
    picked.extend(rng.sample(reviews, per_corpus))
    picked.extend(quality.PROBE_SENTENCES)
    return picked
