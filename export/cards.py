"""Model cards: one JSON + Markdown per model version, and an index for the repository.

The frontend reads card.json from the repository; export and frontend share nothing else.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .served import ServedSpec
from .spec import CHAT_INPUTS, CHAT_OUTPUTS, ChatSpec, ModelSpec, VersionSpec

# The image and summary fields: every card names every field (the frontend's schema is
# one field set), None where the task has none.
OTHER_TASK_FIELDS: dict[str, Any] = {
    "image_size": None,
    "max_image_pixels": None,
    "max_image_bytes": None,
    "methods": None,
}


def card(spec: ModelSpec, version: VersionSpec, facts: dict[str, Any], target: str) -> dict:
    labels = facts["labels"]
    return {
        "model": spec.name,
        "version": version.version,
        "task": spec.task,
        "description": spec.description,
        "version_description": version.description,
        "target": target,
        "labels": labels,
        "num_labels": len(labels),
        "embedding_dim": facts["width"] if spec.task == "feature-extraction" else None,
        "max_length_tokens": spec.max_length,
        # Generation limits: every card names every field (the frontend's schema).
        "max_prompt_tokens": None,
        "max_completion_tokens": None,
        "slots": None,
        "queue": None,
        "truncation": f"texts longer than {spec.max_length} tokens are truncated to the first "
        f"{spec.max_length}; the TRUNCATED output is true for them",
        "score_kind": version.head.score_kind if labels else None,
        "score_meaning": version.head.score_meaning or None,
        "licence": spec.licence,
        "sources": facts["sources"],
        "quality": facts["quality"],
        "artifact": facts["artifact"],
        "onnx_io": facts["onnx_io"],
        **OTHER_TASK_FIELDS,
        "triton_io": {
            "inputs": {"TEXT": "BYTES [batch, 1], UTF-8"},
            "outputs": (
                ["EMBEDDING", "NUM_TOKENS", "TRUNCATED"]
                if spec.task == "feature-extraction"
                else ["LABEL", "SCORE", "SCORES", "NUM_TOKENS", "TRUNCATED"]
            ),
            "decoupled": False,
        },
    }


def served_card(
    spec: ServedSpec, facts: dict[str, Any], target: str, fields: dict[str, Any]
) -> dict:
    """The card of a model built by its kind's builder (export/kinds.py): the common
    fields here, the task's own (truncation, scores, triton_io, image and summary
    fields) from the builder's card_fields."""
    labels = facts.get("labels", [])
    data = {
        "model": spec.name,
        "version": 1,
        "task": spec.task,
        "description": spec.description,
        "version_description": spec.version_description,
        "target": target,
        "labels": labels,
        "num_labels": len(labels),
        "embedding_dim": None,
        "max_length_tokens": spec.max_length,
        "max_prompt_tokens": None,
        "max_completion_tokens": None,
        "slots": None,
        "queue": None,
        "truncation": "",  # the task's own words (card_fields)
        "score_kind": None,
        "score_meaning": None,
        "licence": spec.licence,
        "sources": facts["sources"],
        "quality": facts["quality"],
        "artifact": facts["artifact"],
        "onnx_io": facts["onnx_io"],
        **OTHER_TASK_FIELDS,
        "triton_io": {},  # the task's own tensors (card_fields)
    }
    unknown = set(fields) - set(data)
    if unknown:  # one field set for every card: a builder cannot add its own
        raise ValueError(f"{spec.name}: card_fields names unknown fields {sorted(unknown)}")
    data.update(fields)  # in place: the card's field order is the schema's
    return data


def chat_card(spec: ChatSpec, facts: dict[str, Any], target: str) -> dict:
    serving = spec.serving
    return {
        "model": spec.name,
        "version": 1,
        "task": "text-generation",
        "description": spec.description,
        "version_description": f"{spec.package} / {spec.gguf_file}, exported with KV cache",
        "target": target,
        "labels": [],
        "num_labels": 0,
        "embedding_dim": None,
        "max_length_tokens": serving.max_context,
        "max_prompt_tokens": serving.max_prompt_tokens,
        "max_completion_tokens": serving.max_completion_tokens,
        "slots": serving.slots,
        "queue": serving.queue,
        "truncation": "none: a longer prompt is refused (400); generation stops with "
        "finish_reason 'length' at max_tokens or at the context size",
        "score_kind": None,
        "score_meaning": None,
        "licence": spec.licence,
        "sources": facts["sources"],
        "quality": {
            "greedy_parity_prompts_identical": facts["parity"]["identical_prompts"],
            "greedy_parity_prompts": facts["parity"]["prompts"],
            "greedy_parity_tokens_per_prompt": facts["parity"]["tokens_per_prompt"],
        },
        "artifact": facts["artifact"],
        "onnx_io": facts["onnx_io"],
        **OTHER_TASK_FIELDS,
        "triton_io": {
            "inputs": {t.name: f"{t.data_type} {list(t.dims)}, optional" for t in CHAT_INPUTS},
            "outputs": [t.name for t in CHAT_OUTPUTS],
            "decoupled": True,
        },
    }


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items())
    return str(value)


def card_markdown(data: dict) -> str:
    rows = [
        ("model", f"{data['model']} v{data['version']}"),
        ("task", data["task"]),
        ("description", data["description"] + " " + data["version_description"]),
        (
            "labels",
            f"{data['num_labels']}"
            + (
                f" ({', '.join(data['labels'][:8])}…)"
                if data["num_labels"] > 8
                else f" ({', '.join(data['labels'])})"
            ),
        ),
        ("input limit", data["truncation"]),
        ("score", data["score_meaning"] or "n/a"),
        ("licence", data["licence"]),
        (
            "sources",
            "; ".join(f"{s['package']} {s['version']} ({s['licence']})" for s in data["sources"]),
        ),
        ("artifact sha256", data["artifact"]["sha256"][:16] + "…"),
    ]
    rows += [(f"quality: {k}", _fmt(v)) for k, v in data["quality"].items()]
    lines = ["| field | value |", "| --- | --- |"]
    lines += [f"| {k} | {str(v).replace('|', '/')} |" for k, v in rows]
    return f"# {data['model']} v{data['version']}\n\n" + "\n".join(lines) + "\n"


def write_card(version_dir: Path, data: dict) -> None:
    (version_dir / "card.json").write_text(json.dumps(data, indent=2))
    (version_dir / "card.md").write_text(card_markdown(data))


def write_index(repository: Path, cards: list[dict]) -> None:
    lines = [
        "# Model repository (generated by `python -m export build`; do not edit)",
        "",
        "| model | version | task | labels / dim | max tokens | key quality figures |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for data in cards:
        width = data["num_labels"] or data["embedding_dim"]
        figures = {
            k: v
            for k, v in data["quality"].items()
            if isinstance(v, float | int) and not k.endswith("_size")
        }
        lines.append(
            f"| {data['model']} | {data['version']} | {data['task']} | {width} | "
            f"{data['max_length_tokens']} | {_fmt(figures)} |"
        )
    (repository / "MODELS.md").write_text("\n".join(lines) + "\n")
