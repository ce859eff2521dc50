"""Measurement-only python-backend model: the ONNX core alone (input_ids, attention_mask ->
scores), so that a split 'tokenize -> core' topology can be measured on CPU against the
fused one. Not part of the served repository."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

for _path in os.environ.get("INFERGATE_PYTHONPATH", "").split(os.pathsep):
    if _path and _path not in sys.path:
        sys.path.append(_path)


class TritonPythonModel:
    def initialize(self, args):
        import onnxruntime as ort
        import triton_python_backend_utils as pb_utils

        self.pb = pb_utils
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        path = Path(args["model_repository"]) / args["model_version"] / "model.onnx"
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.output = json.loads(args["model_config"])["output"][0]["name"]

    def execute(self, requests):
        pb = self.pb
        responses = []
        for request in requests:  # one BLS request per front batch, already merged
            feeds = {
                n: pb.get_input_tensor_by_name(request, n).as_numpy()
                for n in ("input_ids", "attention_mask")
            }
            out = self.session.run([self.output], feeds)[0]
            responses.append(pb.InferenceResponse([pb.Tensor(self.output, out)]))
        return responses
