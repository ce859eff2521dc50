"""What is served: the model cards that the build writes into the repository. The
frontend never imports `export`; the cards are the contract between them."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputInvalid, ModelNotFound, VersionNotFound

# ASCII only (re's \d and [0-9] under re.ASCII are the same; str.isdigit() is not).
_VERSION = re.compile(r"[0-9]+", re.ASCII)
# Longer digit strings name no version (and int() refuses more than 4300 digits).
_MAX_VERSION_DIGITS = 18


@dataclass
class ServedModel:
    name: str
    task: str
    cards: dict[int, dict[str, Any]] = field(default_factory=dict)

    @property
    def default_version(self) -> int:
        return max(self.cards)

    def card(self, version: int) -> dict[str, Any]:
        return self.cards[version]


class Catalog:
    def __init__(self, models: dict[str, ServedModel]) -> None:
        self.models = models

    @classmethod
    def load(cls, repository: Path) -> Catalog:
        models: dict[str, ServedModel] = {}
        for path in sorted(repository.glob("*/*/card.json")):
            card = json.loads(path.read_text())
            model = models.setdefault(card["model"], ServedModel(card["model"], card["task"]))
            model.cards[int(card["version"])] = card
        return cls(models)

    def names(self) -> list[str]:
        return sorted(self.models)

    def get(self, name: str, task: str | None = None) -> ServedModel:
        model = self.models.get(name)
        if model is None or (task is not None and model.task != task):
            available = [n for n in self.names() if task is None or self.models[n].task == task]
            raise ModelNotFound(
                f"model {name!r} is not served" + (f" for {task}" if task else ""),
                details={"available": available},
            )
        return model

    def resolve_version(self, model: ServedModel, requested: str | None) -> int:
        """The version named by a path or X-Model-Version: ASCII digits only. str.isdigit()
        also holds for "²" or "①" (which int() then refuses: a 500) and for fullwidth or
        Arabic-Indic digits (which int() accepts): neither is a version. The value is not
        echoed (a header can be long, and is the caller's)."""
        if requested is None or requested == "":
            return model.default_version
        if _VERSION.fullmatch(requested) is None:
            raise InputInvalid(
                "model version must be a positive integer in ASCII digits, e.g. 2",
                details=[{"loc": ["version"], "msg": "not an integer"}],
            )
        version = int(requested) if len(requested) <= _MAX_VERSION_DIGITS else -1
        if version not in model.cards:
            named = str(version) if version >= 0 else "with that many digits"
            raise VersionNotFound(
                f"model {model.name!r} has no version {named}",
                details={"available_versions": sorted(str(v) for v in model.cards)},
            )
        return version
