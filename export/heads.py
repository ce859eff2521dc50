"""Classifier heads as plain linear layers (W, b, labels) that the ONNX graph appends to the
encoder, plus the sentiment head trained at build time.

Reference behaviour is sklearn's own (`predict_proba` / `decision_function`); the parity
tests compare against it.
"""

from __future__ import annotations

import random
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import sources
from .spec import HeadSpec

SENTIMENT_SEED = 20140601
SENTIMENT_MIN_VALENCE = 0.5
SENTIMENT_HOLDOUT = 0.2


@dataclass
class LinearHead:
    labels: list[str]
    weight: np.ndarray  # (classes, dim)
    bias: np.ndarray  # (classes,)
    softmax: bool  # True: scores are probabilities; False: raw decision values
    quality: dict[str, Any] = field(default_factory=dict)
    extra_sources: list[dict[str, str]] = field(default_factory=list)


def load_pickled_estimator(package: str, estimator: str) -> Any:
    import joblib
    from sklearn.exceptions import InconsistentVersionWarning

    with warnings.catch_warnings():
        # The packaged heads were pickled by sklearn 1.5; the linear models are unchanged.
        warnings.simplefilter("ignore", InconsistentVersionWarning)
        return joblib.load(sources.sklearn_estimator_path(package, estimator))


def resolve_intent_labels(classes: list[str], label_map: dict[str, str]) -> list[str]:
    """Map the estimator's classes_ to intent names.

    rag-intent-classifier's label_map maps id -> name for most intents ('61' -> 'translate')
    but name -> id for the support meta-intents ('connect_to_human' -> '201'), and classes_
    mixes ids and names. A class is a name already when it is not a number.
    """
    labels = []
    for cls in classes:
        mapped = label_map.get(cls)
        if isinstance(mapped, str) and not mapped.lstrip("-").isdigit():
            labels.append(mapped)
        else:
            labels.append(cls)
    if len(set(labels)) != len(labels):
        raise ValueError("label map produced duplicate intent names")
    return labels


def packaged_head(head: HeadSpec) -> LinearHead:
    import joblib

    clf = load_pickled_estimator(head.package, head.estimator)
    label_map = joblib.load(sources.sklearn_estimator_path(head.package, "label_map"))
    classes = [str(c) for c in clf.classes_]
    coef = np.asarray(clf.coef_, dtype=np.float64)
    intercept = np.asarray(clf.intercept_, dtype=np.float64)
    if coef.shape[0] != len(classes):
        raise ValueError(f"{head.estimator}: expected one row per class, got {coef.shape}")
    return LinearHead(
        labels=resolve_intent_labels(classes, label_map),
        weight=coef.astype(np.float32),
        bias=intercept.astype(np.float32),
        softmax=head.score_kind == "probability",
    )


def binary_logreg_as_softmax(clf: Any) -> tuple[np.ndarray, np.ndarray]:
    """A binary LogisticRegression has one row: p(classes_[1]) = sigmoid(x.w + b).
    softmax([0, z]) = [sigmoid(-z), sigmoid(z)], so rows [0; w] and [0; b] reproduce
    predict_proba exactly with the same softmax graph as the multiclass heads."""
    w = np.asarray(clf.coef_, dtype=np.float32)
    b = np.asarray(clf.intercept_, dtype=np.float32)
    return np.vstack([np.zeros_like(w), w]), np.concatenate([np.zeros_like(b), b])


def sentiment_split() -> tuple[list[sources.RatedSentence], list[sources.RatedSentence]]:
    """Hutto sentences with |valence| >= 0.5, split 80/20 by a fixed seed."""
    rows = [r for r in sources.hutto_sentences() if abs(r.valence) >= SENTIMENT_MIN_VALENCE]
    rng = random.Random(SENTIMENT_SEED)
    order = list(range(len(rows)))
    rng.shuffle(order)
    n_test = round(len(rows) * SENTIMENT_HOLDOUT)
    test = [rows[i] for i in order[:n_test]]
    train = [rows[i] for i in order[n_test:]]
    return train, test


def sentiment_label(valence: float) -> str:
    return "positive" if valence > 0 else "negative"


def train_sentiment_head(encode: Any) -> tuple[LinearHead, Any]:
    """Train on reference (sentence-transformers) embeddings. `encode(texts)` -> array.
    Returns the head and the fitted sklearn estimator (the reference for parity)."""
    from sklearn.linear_model import LogisticRegression

    train, test = sentiment_split()
    x_train = encode([r.text for r in train])
    y_train = [sentiment_label(r.valence) for r in train]
    clf = LogisticRegression(max_iter=2000, C=1.0)
    clf.fit(x_train, y_train)
    weight, bias = binary_logreg_as_softmax(clf)

    x_test = encode([r.text for r in test])
    predicted = clf.predict(x_test)
    truth = np.array([sentiment_label(r.valence) for r in test])
    by_corpus: dict[str, float] = {}
    for corpus in sorted({r.corpus for r in test}):
        mask = np.array([r.corpus == corpus for r in test])
        by_corpus[corpus] = round(float((predicted[mask] == truth[mask]).mean()), 4)
    quality = {
        "hutto_holdout_accuracy": round(float((predicted == truth).mean()), 4),
        "hutto_holdout_accuracy_by_corpus": by_corpus,
        "hutto_train_size": len(train),
        "hutto_holdout_size": len(test),
    }
    head = LinearHead(
        labels=[str(c) for c in clf.classes_],
        weight=weight,
        bias=bias,
        softmax=True,
        quality=quality,
        extra_sources=[
            {
                "package": "vaderSentiment",
                "version": "3.3.2",
                "licence": "MIT",
                "file": sources.HUTTO_MEMBER,
            }
        ],
    )
    return head, clf
