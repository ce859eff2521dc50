"""Triton python-backend model `imagenet` (copied into the repository as model.py).

IMAGE (encoded JPEG / PNG / WebP / GIF bytes, one per row) -> LABEL, SCORE, SCORES
(softmax over the 1 000 ImageNet classes), WIDTH, HEIGHT. batch_model.BatchedModel does
the Triton side (per-request decode, one pass per dynamic batch, cancellation, metrics);
image_pipeline.ImagePipeline the rest.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

# The modules copied beside this file are imported flat.
sys.path.insert(0, str(Path(__file__).parent))

from batch_model import BatchedModel
from image_pipeline import ImagePipeline


class TritonPythonModel(BatchedModel):
    input_name = "IMAGE"

    def make_pipeline(self, version_dir: Path, params: dict[str, str], core: Any) -> Any:
        return ImagePipeline(version_dir, params, core)
