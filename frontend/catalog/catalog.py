"""What is served: the model cards that the build writes into the repository, read and
checked once at start-up. The frontend never imports `export`; the cards are the contract
between them (see card.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from ..errors import InputInvalid, ModelNotFound, VersionNotFound
from ..triton.tensors import EXPECTED_IO
from .card import ModelCard, Task

# ASCII only (re's \d and [0-9] under re.ASCII are the same; str.isdigit() is not).
_VERSION = re.compile(r"[0-9]+", re.ASCII)
# Longer digit strings name no version (and int() refuses more than 4300 digits).
_MAX_VERSION_DIGITS = 18


class CatalogError(RuntimeError):
    """The model repository's cards cannot be served. Raised at start-up, never on a
    request: the message names every bad file and field, so one start shows them all."""


@dataclass
class ServedModel:
    name: str
    task: Task
    cards: dict[int, ModelCard] = field(default_factory=dict)

    @property
    def default_version(self) -> int:
        return max(self.cards)

    def card(self, version: int) -> ModelCard:
        return self.cards[version]


def _problem(path: Path, error: ErrorDetails) -> str:
    """One line per error: the file, the field's dotted path, what is wrong. A whole-card
    check (ModelCard's own validator, invalid JSON) names its fields in its message."""
    field_path = ".".join(str(part) for part in error["loc"])
    # A validator's ValueError without pydantic's "Value error, " in front of it.
    ctx = error.get("ctx", {})
    message = (
        str(ctx["error"]) if error["type"] == "value_error" and "error" in ctx else error["msg"]
    )
    return f"{path}: {field_path}: {message}" if field_path else f"{path}: {message}"


def _read(path: Path, problems: list[str]) -> ModelCard | None:
    try:
        return ModelCard.model_validate_json(path.read_bytes())
    except ValidationError as exc:
        problems.extend(_problem(path, error) for error in exc.errors())
    except OSError as exc:
        problems.append(f"{path}: cannot be read: {exc.strerror or exc}")
    return None


def _check(path: Path, card: ModelCard) -> list[str]:
    """What the card must agree with besides itself: where Triton finds it (its directory)
    and the tensor names the frontend sends and reads for its task."""
    where = f"{path}: model {card.model!r} version {card.version}"
    problems = []
    if (path.parent.parent.name, path.parent.name) != (card.model, str(card.version)):
        problems.append(f"{where}: the card must be in {card.model}/{card.version}/")
    expected = EXPECTED_IO.get(card.task)
    if expected is None:
        return [*problems, f"{where}: task {card.task!r} is not one the frontend serves"]
    inputs, outputs = expected
    lacking_in = sorted(inputs - card.triton_io.inputs.keys())
    lacking_out = sorted(outputs - set(card.triton_io.outputs))
    if lacking_in:
        problems.append(f"{where}: triton_io.inputs lacks {', '.join(lacking_in)}")
    if lacking_out:
        problems.append(f"{where}: triton_io.outputs lacks {', '.join(lacking_out)}")
    return problems


class Catalog:
    def __init__(self, models: dict[str, ServedModel]) -> None:
        self.models = models

    @classmethod
    def load(cls, repository: Path) -> Catalog:
        """Every `<model>/<version>/card.json` under the repository, validated. Any problem
        fails the start (CatalogError) rather than a request later."""
        models: dict[str, ServedModel] = {}
        problems: list[str] = []
        for path in sorted(repository.glob("*/*/card.json")):
            card = _read(path, problems)
            if card is None:
                continue
            found = _check(path, card)
            problems.extend(found)
            model = models.setdefault(card.model, ServedModel(card.model, card.task))
            if card.task != model.task:
                problems.append(
                    f"{path}: model {card.model!r} version {card.version}: task "
                    f"{card.task!r}, but its other versions are {model.task!r}"
                )
            elif not found:
                model.cards[card.version] = card
        if problems:
            raise CatalogError(
                f"model repository {repository}: {len(problems)} problem(s) in the model "
                "cards:\n  " + "\n  ".join(problems)
            )
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
