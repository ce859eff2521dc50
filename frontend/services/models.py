"""Model descriptions: the cards for what a model is, Triton for what is live now."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from ..catalog import Catalog, ServedModel
from ..routing.config import ModelRouting
from ..routing.router import Router
from ..triton.client import TritonClient

OWNER = "infergate"


@lru_cache(maxsize=256)
def built_at(version_dir: Path) -> int:
    """When a version was built: its directory's modification time (the card records no
    build time), read once per process so that it never changes between two calls."""
    try:
        return int(version_dir.stat().st_mtime)
    except OSError:
        return 0


def _version_states(index: list[dict[str, str]]) -> dict[tuple[str, str], dict[str, str]]:
    return {(m.get("name", ""), m.get("version", "")): m for m in index}


def describe(
    model: ServedModel,
    states: dict[tuple[str, str], dict[str, str]],
    with_labels: bool,
    routing: ModelRouting,
    repository: Path,
) -> dict[str, Any]:
    versions = []
    for version in sorted(model.cards):
        card = model.cards[version]
        state = states.get((model.name, str(version)), {})
        versions.append(
            {
                "version": str(version),
                "status": state.get("state", "UNKNOWN"),
                "reason": state.get("reason") or None,
                "description": card.version_description,
                "score_kind": card.score_kind,
                "score_meaning": card.score_meaning,
                "artifact_sha256": card.artifact.sha256,
                "quality": card.quality,
                "routing_status": routing.status(str(version)).status,
                "sunset": routing.status(str(version)).sunset,
                "replacement": routing.status(str(version)).replacement,
            }
        )
    default_version = int(routing.default or model.default_version)
    default = model.card(default_version)
    return {
        "id": model.name,
        "object": "model",
        "created": built_at(repository / model.name / str(default_version)),
        "owned_by": OWNER,
        "task": model.task,
        "description": default.description,
        "default_version": str(default_version),
        "versions": versions,
        "num_labels": default.num_labels,
        "embedding_dim": default.embedding_dim,
        "max_input_tokens": default.max_length_tokens,
        "image_size": default.image_size,
        "max_image_pixels": default.max_image_pixels,
        "max_image_bytes": default.max_image_bytes,
        "methods": default.methods,
        "ready": any(v["status"] == "READY" for v in versions),
        "labels": default.labels if with_labels else None,
    }


async def list_models(
    catalog: Catalog,
    triton: TritonClient,
    router: Router,
    repository: Path,
    names: list[str] | None = None,
) -> dict[str, Any]:
    """Every served model, or only `names` (what the caller's key may use)."""
    states = _version_states(await triton.repository_index())
    listed = catalog.names() if names is None else names
    return {
        "object": "list",
        "data": [
            describe(catalog.models[n], states, False, router.table[n], repository) for n in listed
        ],
    }


async def get_model(
    catalog: Catalog, triton: TritonClient, router: Router, repository: Path, name: str
) -> dict[str, Any]:
    model = catalog.get(name)
    states = _version_states(await triton.repository_index())
    return describe(model, states, True, router.table[name], repository)
