"""Model descriptions: the cards for what a model is, Triton for what is live now."""

from __future__ import annotations

from typing import Any

from ..routing.config import ModelRouting
from ..routing.router import Router
from ..triton.client import TritonClient
from .catalog import Catalog, ServedModel


def _version_states(index: list[dict[str, str]]) -> dict[tuple[str, str], dict[str, str]]:
    return {(m.get("name", ""), m.get("version", "")): m for m in index}


def describe(
    model: ServedModel,
    states: dict[tuple[str, str], dict[str, str]],
    with_labels: bool,
    routing: ModelRouting,
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
                "description": card.get("version_description"),
                "score_kind": card.get("score_kind"),
                "score_meaning": card.get("score_meaning"),
                "artifact_sha256": card.get("artifact", {}).get("sha256"),
                "quality": card.get("quality"),
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
        "task": model.task,
        "description": default.get("description", ""),
        "default_version": str(default_version),
        "versions": versions,
        "num_labels": default.get("num_labels", 0),
        "embedding_dim": default.get("embedding_dim"),
        "max_input_tokens": default.get("max_length_tokens", 0),
        "ready": any(v["status"] == "READY" for v in versions),
        "labels": default.get("labels") if with_labels else None,
    }


async def list_models(catalog: Catalog, triton: TritonClient, router: Router) -> dict[str, Any]:
    states = _version_states(await triton.repository_index())
    return {
        "object": "list",
        "data": [
            describe(catalog.models[n], states, False, router.table[n]) for n in catalog.names()
        ],
    }


async def get_model(
    catalog: Catalog, triton: TritonClient, router: Router, name: str
) -> dict[str, Any]:
    model = catalog.get(name)
    states = _version_states(await triton.repository_index())
    return describe(model, states, True, router.table[name])
