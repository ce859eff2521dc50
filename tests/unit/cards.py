"""A small model repository of cards, for unit tests that run the real app over a fake
Triton (the cards are all the catalog reads; no model files are needed)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from .test_card_contract import complete_card

LABELS = ["greeting", "goodbye", "refund"]

Served = tuple[str, int, str]  # model, version, task

# Two versions of a classifier and one embedder: the predict and embeddings routes.
CLASSIFY_AND_EMBED: tuple[Served, ...] = (
    ("intent", 1, "text-classification"),
    ("intent", 2, "text-classification"),
    ("embed", 1, "feature-extraction"),
)
# The same and a generation model: the chat and completion routes too.
WITH_CHAT: tuple[Served, ...] = (*CLASSIFY_AND_EMBED, ("chat", 1, "text-generation"))
# The same and the other kinds the predict route serves (two versions of ner: routing).
WITH_KINDS: tuple[Served, ...] = (
    *CLASSIFY_AND_EMBED,
    ("ner", 1, "token-classification"),
    ("ner", 2, "token-classification"),
    ("pii", 1, "token-classification"),
    ("imagenet", 1, "image-classification"),
    ("summarize", 1, "summarization"),
)

# Each new kind's own card fields (labels: entity types, or image classes).
ENTITY_LABELS = {"ner": ["PERSON", "ORG", "GPE", "DATE"], "pii": ["EMAIL", "PHONE", "NAME"]}
IMAGE_LABELS = [
    "tabby",
    "tiger cat",
    "goldfish",
    "great white shark",
    "tree frog",
    "macaw",
    "lighthouse",
    "teapot",
    "volcano",
    "daisy",
    "espresso",
    "bicycle",
]
IMAGE_FIELDS = {"image_size": 224, "max_image_pixels": 40_000_000, "max_image_bytes": 20 << 20}
SUMMARY_METHODS = ["extractive", "abstractive"]


def _task_fields(model: str, task: str) -> dict:
    if task == "token-classification":
        labels = ENTITY_LABELS[model]
        return {"labels": labels, "num_labels": len(labels)}
    if task == "image-classification":
        return {"labels": IMAGE_LABELS, "num_labels": len(IMAGE_LABELS), **IMAGE_FIELDS}
    if task == "summarization":
        return {"methods": SUMMARY_METHODS, "score_kind": None}
    return {}


def write_cards(root: Path, served: Iterable[Served] = CLASSIFY_AND_EMBED) -> Path:
    """One card.json per (model, version, task) under `root`; returns `root`."""
    for model, version, task in served:
        vdir = root / model / str(version)
        vdir.mkdir(parents=True)
        classifies = task == "text-classification"
        card = {
            "model": model,
            "version": version,
            "task": task,
            "labels": LABELS if classifies else [],
            "num_labels": len(LABELS) if classifies else 0,
            "embedding_dim": 4 if task == "feature-extraction" else None,
            "max_length_tokens": 256,
            "score_kind": "probability",
            "artifact": {"sha256": f"{model}-{version}-digest"},
        }
        if task == "text-generation":
            card["max_completion_tokens"] = 1024
        card.update(_task_fields(model, task))
        (vdir / "card.json").write_text(json.dumps(complete_card(card)))
    return root
