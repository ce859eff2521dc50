from __future__ import annotations

import numpy as np
import pytest

from export.heads import (
    binary_logreg_as_softmax,
    resolve_intent_labels,
    sentiment_label,
    sentiment_split,
)
from export.runtime.text_model import softmax


def test_label_map_quirks():
    label_map = {"61": "translate", "200": "follow_up", "connect_to_human": "201", "42": "oos"}
    classes = ["61", "200", "connect_to_human", "42", "999"]
    assert resolve_intent_labels(classes, label_map) == [
        "translate",
        "follow_up",
        "connect_to_human",
        "oos",
        "999",
    ]


def test_duplicate_names_refused():
    with pytest.raises(ValueError):
        resolve_intent_labels(["1", "2"], {"1": "same", "2": "same"})


def test_binary_logreg_rows_reproduce_predict_proba():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5))
    y = np.where(x[:, 0] + 0.3 * rng.normal(size=200) > 0, "positive", "negative")
    clf = LogisticRegression().fit(x, y)
    weight, bias = binary_logreg_as_softmax(clf)
    np.testing.assert_allclose(softmax(x @ weight.T + bias), clf.predict_proba(x), atol=1e-6)


def test_sentiment_split_is_fixed_and_filtered():
    train, test = sentiment_split()
    _, again_test = sentiment_split()
    assert [r.text for r in test] == [r.text for r in again_test]
    assert abs(len(test) / (len(train) + len(test)) - 0.2) < 0.001
    assert all(abs(r.valence) >= 0.5 for r in train + test)
    assert {sentiment_label(r.valence) for r in test} == {"positive", "negative"}
    assert len({id(r) for r in train} | {id(r) for r in test}) == len(train) + len(test)
