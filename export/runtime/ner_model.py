"""Triton python-backend model `ner` (copied into the repository as model.py).

TEXT in -> ENTITIES (JSON: spaCy's entities with their code-point offsets), NUM_TOKENS,
TRUNCATED out, one row per text; see ner_pipeline.py for what runs. The batching,
cancellation and error handling are BatchedModel's. spaCy runs on the CPU, in this
process, on both targets: there is no core model.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

# Beside this file in the version folder, imported flat (the stub has no package).
sys.path.insert(0, str(Path(__file__).parent))

from batch_model import BatchedModel
from ner_pipeline import NerPipeline


class TritonPythonModel(BatchedModel):
    input_name = "TEXT"

    def make_pipeline(self, version_dir: Path, params: dict[str, str], core: Any) -> Any:
        return NerPipeline(version_dir, params)
