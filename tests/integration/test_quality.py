"""Quality recorded, not faked: measured through the served model, compared with the card."""

from __future__ import annotations

import pytest

from export import heads, sources

from .conftest import card, infer

pytestmark = pytest.mark.integration


def _accuracy(client, rows: list[tuple[str, str]]) -> float:
    correct = 0
    for start in range(0, len(rows), 256):
        chunk = rows[start : start + 256]
        got = infer(client, "sentiment", [t for t, _ in chunk], ("LABEL",))["LABEL"].reshape(-1)
        correct += sum(g.decode() == label for g, (_, label) in zip(got, chunk, strict=True))
    return correct / len(rows)


def test_sentiment_rotten_tomatoes(client, repository):
    accuracy = _accuracy(client, sources.rotten_tomatoes())
    print(
        f"sentiment accuracy on {len(sources.rotten_tomatoes())} Rotten Tomatoes snippets: "
        f"{accuracy:.4f}"
    )
    assert accuracy >= 0.72
    recorded = card(repository, "sentiment", 1)["quality"]["rotten_tomatoes_accuracy"]
    assert abs(recorded - accuracy) < 0.002, "the card must record what the served model does"


def test_sentiment_hutto_holdout(client, repository):
    _, test = heads.sentiment_split()
    by_corpus: dict[str, list[tuple[str, str]]] = {}
    for row in test:
        by_corpus.setdefault(row.corpus, []).append((row.text, heads.sentiment_label(row.valence)))
    overall = _accuracy(client, [r for rows in by_corpus.values() for r in rows])
    per = {c: round(_accuracy(client, rows), 4) for c, rows in sorted(by_corpus.items())}
    print(f"sentiment Hutto held-out accuracy {overall:.4f} by corpus {per}")
    assert overall >= 0.75
    recorded = card(repository, "sentiment", 1)["quality"]
    assert abs(recorded["hutto_holdout_accuracy"] - overall) < 0.002
    assert recorded["hutto_holdout_size"] == len(test)
