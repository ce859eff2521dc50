"""Triton python-backend model of the "hf-seq2seq" kind (copied into the repository as
model.py): a Hugging Face seq2seq model (T5, BART, ...) exported by optimum, serving the
built-in `summarize` model's I/O, abstractive only.

TEXT (+ optional METHOD, MAX_SENTENCES, MAX_TOKENS) in -> SUMMARY, METHOD, SENTENCES,
SOURCE_SENTENCES, CHUNKS, NUM_TOKENS out, one row per text; seq2seq_pipeline.py does the
work (encoder once per chunk, greedy decoding with the past key values). The batching,
cancellation and error handling are BatchedModel's. Both targets run the graphs in this
process; on gpu the sessions ask onnxruntime for the CUDA provider first (`providers`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

# Beside this file in the version folder, imported flat (the stub has no package).
sys.path.insert(0, str(Path(__file__).parent))

from batch_model import BatchedModel
from seq2seq_pipeline import Seq2SeqPipeline


class TritonPythonModel(BatchedModel):
    input_name = "TEXT"

    def make_pipeline(self, version_dir: Path, params: dict[str, str], core: Any) -> Any:
        pipeline = Seq2SeqPipeline(version_dir, params)
        # Says where the graphs run: a gpu build without onnxruntime-gpu falls back to
        # the CPU, and this line is how an operator sees it.
        logger = getattr(self.pb, "Logger", None)
        if logger is not None:
            logger.log_info(
                f"{version_dir.parent.name}: asked for {params.get('providers', '')}, "
                f"running on {','.join(pipeline.providers)}"
            )
        return pipeline
