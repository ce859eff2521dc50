"""Any Hugging Face token-classification directory (kind "hf-token-classifier", added by
`export hf --task token-classification`): optimum's ONNX export, served by the `pii`
model's runner (export/runtime/pii_pipeline.py) with the model's own labels and no
recognizers, so its spans come out in the shape `ner` and `pii` answer with.

The export-time check runs the served pipeline twice over the fidelity texts, once on
the ONNX graph and once on the PyTorch model behind the same feeds: the logits must agree
within 1e-4 and the spans must be identical, or nothing is published.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm
from tritonclient.grpc import model_config_pb2 as mc

from . import pii_export
from . import triton_config as tc
from .cache import file_sha256
from .fidelity_texts import ner_sentences
from .onnx_export import export_hf_directory, onnx_io
from .runtime.pii_labels import bio_label
from .runtime.pii_pipeline import PiiPipeline
from .served import ServedSpec
from .spec import NUM_TOKENS, TEXT_INPUT, TRUNCATED, Target

ARTIFACT_FILES = ("model.onnx", "tokenizer.json", "config.json", "labels.json", "facts.json")
RUNTIME = pii_export.RUNTIME
RUNTIME_MODULES = pii_export.RUNTIME_MODULES
SOURCE_PACKAGES = ("optimum-onnx", "transformers", "onnx", "tokenizers")
TOLERANCE = 1e-4
CHECK_TEXTS = 64  # of the ~300 fidelity texts, plus the 4 long ones


class FidelityError(RuntimeError):
    """The ONNX graph and the PyTorch model disagree: the artifact is not published."""


def runner_params(spec: ServedSpec, facts: dict[str, Any], target: Target) -> dict[str, str]:
    rows, tokens = (32, 16_384) if target == "gpu" else (8, 4096)
    return {
        "label_style": "bio",
        "recognizers": "none",
        "threshold": spec.option("threshold", "0"),
        "spans": spec.option("spans", "words"),
        "max_input_chars": spec.option("max_input_chars", "100000"),
        "max_tokens": str(facts["max_tokens"]),
        "cls_token": facts["cls_token"],
        "sep_token": facts["sep_token"],
        "core_inputs": ",".join(facts["core_inputs"]),
        "chunk_rows": str(rows),
        "chunk_tokens": str(tokens),
        "ort_intra_op_threads": str(spec.instances.cpu_threads),
        "ort_allow_spinning": "0",
    }


class TorchCore:
    """The PyTorch model behind the pipeline's core interface (feeds -> logits)."""

    def __init__(self, model_dir: str):
        from transformers import AutoModelForTokenClassification

        self.model = AutoModelForTokenClassification.from_pretrained(model_dir).eval()
        self.calls: list[tuple[dict[str, np.ndarray], np.ndarray]] = []

    def __call__(self, feeds: dict[str, np.ndarray], output: str) -> np.ndarray:
        import torch

        with torch.no_grad():
            logits = self.model(**{k: torch.from_numpy(v) for k, v in feeds.items()}).logits
        result = logits.numpy().astype(np.float32)
        self.calls.append((feeds, result))
        return result


def stage(model_dir: str, out_dir: Path, max_length: int) -> dict[str, Any]:
    """optimum's export and the files the runner reads; returns the runner's facts."""
    from transformers import AutoConfig, AutoTokenizer

    work = out_dir / "_optimum"
    shutil.move(str(export_hf_directory(model_dir, "token-classification", work)), out_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if not tokenizer.is_fast:
        raise ValueError(f"{model_dir}: a fast tokenizer (tokenizer.json) is needed for offsets")
    if tokenizer.cls_token is None or tokenizer.sep_token is None:
        raise ValueError(f"{model_dir}: the tokenizer has no cls/sep tokens (BERT-style needed)")
    tokenizer.save_pretrained(str(work / "tok"))
    shutil.copy2(work / "tok" / "tokenizer.json", out_dir / "tokenizer.json")
    shutil.rmtree(work, ignore_errors=True)
    config = AutoConfig.from_pretrained(model_dir)
    tags = [config.id2label[i] for i in range(config.num_labels)]
    (out_dir / "config.json").write_text(
        json.dumps(
            {
                "id2label": {str(i): tag for i, tag in enumerate(tags)},
                "max_position_embeddings": int(config.max_position_embeddings),
            }
        )
    )
    labels = list(dict.fromkeys(x for x in map(bio_label, tags) if x is not None))
    (out_dir / "labels.json").write_text(json.dumps(labels))
    inputs, outputs = onnx_io(out_dir / "model.onnx")
    if "logits" not in outputs:
        raise ValueError(f"{model_dir}: the exported graph has no `logits` output")
    return {
        "labels": labels,
        "tags": tags,
        "core_inputs": list(inputs),
        "cls_token": tokenizer.cls_token,
        "sep_token": tokenizer.sep_token,
        "max_tokens": min(max_length, int(config.max_position_embeddings)),
        "onnx_io": {"inputs": inputs, "outputs": outputs},
    }


def check_texts() -> list[str]:
    """Every k-th fidelity text (templates, styles, Unicode, short ones), plus the long
    ones at the end of the list (several 480-character windows each)."""
    texts = ner_sentences()
    step = max(1, len(texts) // CHECK_TEXTS)
    return list(dict.fromkeys([*texts[::step], *texts[-4:]]))


def compare_spans(ours: Any, theirs: Any) -> tuple[int, float]:
    """Texts whose spans (start, end, label, text) are identical, and the largest score
    difference between spans matched so: float32 noise of 1e-7 may move a rounded score's
    last digit, never a span."""
    same, worst = 0, 0.0
    for a_row, b_row in zip(ours, theirs, strict=True):
        a, b = json.loads(a_row), json.loads(b_row)
        key = [(x["start"], x["end"], x["label"], x["text"]) for x in a]
        if key == [(x["start"], x["end"], x["label"], x["text"]) for x in b]:
            same += 1
            for x, y in zip(a, b, strict=True):
                worst = max(worst, abs(x["score"] - y["score"]))
    return same, worst


def fidelity(
    spec: ServedSpec, out_dir: Path, facts: dict[str, Any], texts: list[str]
) -> dict[str, Any]:
    """The served pipeline on ONNX vs the same pipeline on PyTorch: logits per window
    within TOLERANCE and identical spans; raises FidelityError otherwise."""
    model_dir = spec.option("path", "")
    params = {**runner_params(spec, facts, "cpu"), "ort_intra_op_threads": "2"}
    onnx_pipeline = PiiPipeline(out_dir, params)
    torch_core = TorchCore(model_dir)
    torch_pipeline = PiiPipeline(out_dir, params, core=torch_core)
    started = time.monotonic()
    ours = onnx_pipeline.run(texts)["ENTITIES"][:, 0]
    seconds = round(time.monotonic() - started, 2)
    theirs = torch_pipeline.run(texts)["ENTITIES"][:, 0]
    worst = 0.0
    for feeds, expected in torch_core.calls:
        got = onnx_pipeline.core({k: feeds[k] for k in facts["core_inputs"]}, "logits")
        mask = feeds["attention_mask"].astype(bool)
        worst = max(worst, float(np.abs(np.asarray(got)[mask] - expected[mask]).max()))
    same, score_diff = compare_spans(ours, theirs)
    spans = sum(len(json.loads(row)) for row in theirs)
    if worst > TOLERANCE or score_diff > TOLERANCE or same != len(texts):
        raise FidelityError(
            f"{spec.name}: ONNX vs PyTorch max |logit diff| {worst:.2e}, max |score diff| "
            f"{score_diff:.2e} (limit {TOLERANCE}), identical spans on {same} of "
            f"{len(texts)} texts"
        )
    return {
        "hf_token_texts": len(texts),
        "hf_token_spans": spans,
        "hf_token_identical_texts": same / len(texts),
        "hf_token_max_abs_logit_diff": worst,
        "hf_token_max_abs_score_diff": score_diff,
        "hf_token_onnx_seconds": seconds,
    }


def build(spec: ServedSpec, out_dir: Path, bar: tqdm) -> dict[str, Any]:
    bar.set_postfix_str(f"{spec.name}: optimum export")
    facts = stage(spec.option("path", ""), out_dir, spec.max_length)
    bar.set_postfix_str(f"{spec.name}: ONNX vs PyTorch")
    facts["quality"] = fidelity(spec, out_dir, facts, check_texts())
    facts["sources"] = [
        {
            "package": "huggingface-directory",
            "version": spec.option("path", ""),
            "licence": "see the model directory",
        }
    ]
    facts["artifact"] = {
        "file": "model.onnx",
        "sha256": file_sha256(out_dir / "model.onnx"),
        "bytes": (out_dir / "model.onnx").stat().st_size,
    }
    facts["max_input_chars"] = int(spec.option("max_input_chars", "100000"))
    return facts


def config(spec: ServedSpec, target: Target, facts: dict[str, Any]) -> mc.ModelConfig:
    params = runner_params(spec, facts, target)
    if target == "gpu":
        params["core_model"] = tc.core_name(spec.name)
    outputs = (pii_export.ENTITIES, NUM_TOKENS, TRUNCATED)
    return tc.served_python_config(spec, (TEXT_INPUT,), outputs, params)


def extra_configs(
    spec: ServedSpec, target: Target, facts: dict[str, Any]
) -> dict[str, mc.ModelConfig]:
    """gpu: the graph as an onnxruntime-backend core on the GPU, as `pii` has."""
    return pii_export.extra_configs(spec, target, facts)


def card_fields(spec: ServedSpec, facts: dict[str, Any], target: str) -> dict[str, Any]:
    limit = facts["max_input_chars"]
    return {
        "truncation": f"texts longer than {limit:,} characters are cut to the first "
        f"{limit:,} (TRUNCATED is true for them); every character up to there is read, in "
        f"480-character windows overlapping by 64, each window at most {facts['max_tokens']} "
        "tokens",
        "score_kind": "probability",
        "score_meaning": "the mean softmax probability of the span's tokens (each token's "
        f"tag is its argmax{_threshold_words(spec)})",
        "triton_io": {
            "inputs": {"TEXT": "BYTES [batch, 1], UTF-8"},
            "outputs": [pii_export.ENTITIES.name, NUM_TOKENS.name, TRUNCATED.name],
            "decoupled": False,
        },
    }


def _threshold_words(spec: ServedSpec) -> str:
    threshold = float(spec.option("threshold", "0"))
    return f"; a token under {threshold} ends a span" if threshold > 0 else ""
