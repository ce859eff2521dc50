"""Triton python-backend model `pii` (copied into the repository as model.py).

TEXT in -> ENTITIES (JSON spans of personal data), NUM_TOKENS, TRUNCATED out, one row
per text; see pii_pipeline.py for what runs. The batching, cancellation and error
handling are BatchedModel's. cpu target: the ONNX graph runs in this process; gpu
target: in the `pii_core` onnxruntime-backend model, called through BLS (`core_model`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

# Beside this file in the version folder, imported flat (the stub has no package).
sys.path.insert(0, str(Path(__file__).parent))

from batch_model import BatchedModel
from pii_pipeline import PiiPipeline


class TritonPythonModel(BatchedModel):
    input_name = "TEXT"

    def make_pipeline(self, version_dir: Path, params: dict[str, str], core: Any) -> Any:
        return PiiPipeline(version_dir, params, core)
