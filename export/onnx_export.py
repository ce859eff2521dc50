"""PyTorch -> ONNX.

Bundled models: the encoder, mean pooling, L2 normalisation and the linear head (+ softmax)
in one graph, so that the served core is a single ONNX file whose outputs are final scores
or embeddings. Any Hugging Face directory: optimum's exporter, unchanged graph.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .heads import LinearHead

OPSET = 17


def _encoder_with_head(encoder: Any, head: LinearHead | None) -> Any:
    import torch

    class EncoderWithHead(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder
            if head is not None:
                self.register_buffer("weight", torch.from_numpy(head.weight.copy()))
                self.register_buffer("bias", torch.from_numpy(head.bias.copy()))

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.encoder(
                input_ids=input_ids,
                attention_mask=attention_mask,
                token_type_ids=torch.zeros_like(input_ids),
            ).last_hidden_state
            # sentence-transformers' Pooling(mean) and Normalize, written out.
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            embedding = torch.nn.functional.normalize(pooled, p=2.0, dim=1)
            if head is None:
                return embedding
            weight, bias = self.get_buffer("weight"), self.get_buffer("bias")
            logits = embedding @ weight.T + bias
            return torch.softmax(logits, dim=-1) if head.softmax else logits

    return EncoderWithHead().eval()


def export_encoder_with_head(
    encoder_dir: Path, head: LinearHead | None, output_name: str, out_path: Path
) -> None:
    import torch
    from transformers import AutoModel

    encoder = AutoModel.from_pretrained(str(encoder_dir), attn_implementation="eager")
    module = _encoder_with_head(encoder, head)
    ids = torch.tensor([[101, 7592, 2088, 102], [101, 7592, 102, 0]], dtype=torch.int64)
    mask = (ids != 0).to(torch.int64)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(
            module,
            (ids, mask),
            str(out_path),
            input_names=["input_ids", "attention_mask"],
            output_names=[output_name],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "sequence"},
                "attention_mask": {0: "batch", 1: "sequence"},
                output_name: {0: "batch"},
            },
            opset_version=OPSET,
            dynamo=False,
        )
        width = int(module(ids, mask).shape[1])
    _pin_output_width(out_path, output_name, width)


def _pin_output_width(path: Path, output_name: str, width: int) -> None:
    """The exporter leaves the normalised embedding's width symbolic; Triton configs and
    clients want the static size, so write it into the graph's output shape."""
    import onnx

    model = onnx.load(str(path))
    for value in model.graph.output:
        if value.name == output_name:
            dims = value.type.tensor_type.shape.dim
            dims[1].ClearField("dim_param")
            dims[1].dim_value = width
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def export_hf_directory(model_dir: str, task: str, out_dir: Path) -> Path:
    """optimum's exporter for any HF directory (or hub id when online)."""
    from optimum.exporters.onnx import main_export

    out_dir.mkdir(parents=True, exist_ok=True)
    main_export(model_dir, output=out_dir, task=task, opset=OPSET, do_validation=False)
    return out_dir / "model.onnx"


def onnx_io(path: Path) -> tuple[dict[str, list[int | str]], dict[str, list[int | str]]]:
    """Input and output names -> dims (symbolic dims as strings) of an ONNX graph."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph

    def dims(value: Any) -> list[int | str]:
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    inputs = {v.name: dims(v) for v in graph.input}
    outputs = {v.name: dims(v) for v in graph.output}
    return inputs, outputs


def run_onnx(path: Path, feeds: dict[str, np.ndarray], threads: int = 2) -> list[np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    wanted = {i.name for i in session.get_inputs()}
    return list(session.run(None, {k: v for k, v in feeds.items() if k in wanted}))
