"""Build one model version's artifact folder (model.onnx, tokenizer.json, labels.json,
facts.json) into the cache. Slow steps run here and only on a cache miss."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from . import heads, onnx_export, quality, sources
from .cache import file_sha256
from .spec import CorePost, ModelSpec, VersionSpec, core_output
from .triton_config import runner_params

ARTIFACT_FILES = ("model.onnx", "tokenizer.json", "labels.json", "facts.json")
# Rows per batch when computing reference embeddings at build time.
_ENCODE_BATCH = 128


class _Reference:
    """sentence-transformers, loaded once per build: the reference every export is
    checked against, and the encoder whose embeddings train the sentiment head."""

    _model: Any = None

    @classmethod
    def encode(cls, encoder_dir: Path, texts: list[str]) -> np.ndarray:
        if cls._model is None:
            from sentence_transformers import SentenceTransformer

            cls._model = SentenceTransformer(str(encoder_dir), device="cpu")
        return np.asarray(
            cls._model.encode(texts, batch_size=_ENCODE_BATCH, show_progress_bar=False)
        )


def _pipeline(out_dir: Path, params: dict[str, str]) -> Any:
    from .runtime.text_model import TextPipeline

    return TextPipeline(out_dir, params)


def build_bundled(spec: ModelSpec, version: VersionSpec, out_dir: Path, bar: tqdm) -> dict:
    """Bundled models: packaged encoder + head -> one ONNX graph with final outputs."""
    encoder_dir = sources.encoder_dir(spec.encoder.package)
    head: heads.LinearHead | None = None
    reference_scores = None
    bar.set_postfix_str(f"{spec.name} v{version.version}: head")
    if version.head.kind == "sklearn-package":
        head = heads.packaged_head(version.head)
        clf = heads.load_pickled_estimator(version.head.package, version.head.estimator)
        reference_scores = clf.predict_proba if head.softmax else clf.decision_function
    elif version.head.kind == "train-hutto-logreg":
        head, clf = heads.train_sentiment_head(lambda t: _Reference.encode(encoder_dir, t))
        reference_scores = clf.predict_proba
    width = len(head.labels) if head else 384
    output = core_output(spec.task, width, "none")

    bar.set_postfix_str(f"{spec.name} v{version.version}: export ONNX")
    started = time.monotonic()
    onnx_export.export_encoder_with_head(encoder_dir, head, output.name, out_dir / "model.onnx")
    export_s = time.monotonic() - started
    shutil.copy2(encoder_dir / "tokenizer.json", out_dir / "tokenizer.json")
    (out_dir / "labels.json").write_text(json.dumps(head.labels if head else []))

    bar.set_postfix_str(f"{spec.name} v{version.version}: parity + quality")
    pipeline = _pipeline(out_dir, runner_params(spec, output, "none", threads=2))
    measured = quality.parity(
        pipeline.run, lambda t: _Reference.encode(encoder_dir, t), head, reference_scores
    )
    if head is not None:
        measured.update(head.quality)
    if version.head.kind == "train-hutto-logreg":
        measured.update(quality.rotten_tomatoes_accuracy(pipeline.run))
    if version.head.kind == "sklearn-package":
        measured["package_reported_validation_accuracy"] = _PACKAGE_REPORTED.get(
            version.head.estimator
        )
    source_facts = [sources.distribution_facts(spec.encoder.package.replace("_", "-"))]
    if version.head.kind == "sklearn-package":
        source_facts.append(sources.distribution_facts(version.head.package.replace("_", "-")))
    if head is not None:
        source_facts.extend(head.extra_sources)
    return {
        "labels": head.labels if head else [],
        "width": width,
        "core_post": "none",
        "quality": measured,
        "sources": source_facts,
        "export_seconds": round(export_s, 1),
    }


# Figures the rag-intent-classifier package reports for its own validation split
# (docs/MODELS_INFO.md); its data is not shipped, so they are quoted, not re-measured.
_PACKAGE_REPORTED = {"LogisticRegression": 0.9453, "LinearSVC": 0.9464}


def build_hf(spec: ModelSpec, out_dir: Path, bar: tqdm) -> dict:
    """Any Hugging Face directory through optimum; post-processing stays in the runner."""
    from transformers import AutoConfig, AutoTokenizer

    model_dir = spec.encoder.path
    bar.set_postfix_str(f"{spec.name}: optimum export")
    work = out_dir / "_optimum"
    onnx_path = onnx_export.export_hf_directory(model_dir, spec.task, work)
    shutil.move(str(onnx_path), out_dir / "model.onnx")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.save_pretrained(str(work / "tok"))
    shutil.copy2(work / "tok" / "tokenizer.json", out_dir / "tokenizer.json")
    shutil.rmtree(work, ignore_errors=True)
    config = AutoConfig.from_pretrained(model_dir)
    if spec.task == "text-classification":
        labels = [config.id2label[i] for i in range(config.num_labels)]
        post: CorePost = "softmax"
        width = len(labels)
    else:
        labels, post, width = [], "mean_pool_normalize", int(config.hidden_size)
    (out_dir / "labels.json").write_text(json.dumps(labels))
    return {
        "labels": labels,
        "width": width,
        "core_post": post,
        "quality": {},
        "sources": [
            {
                "package": "huggingface-directory",
                "version": str(model_dir),
                "licence": "see the model directory",
            }
        ],
    }


def build_artifact(spec: ModelSpec, version: VersionSpec, out_dir: Path, bar: tqdm) -> dict:
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if version.head.kind == "hf":
        facts = build_hf(spec, tmp, bar)
    else:
        facts = build_bundled(spec, version, tmp, bar)
    facts["artifact"] = {
        "file": "model.onnx",
        "sha256": file_sha256(tmp / "model.onnx"),
        "bytes": (tmp / "model.onnx").stat().st_size,
    }
    facts["onnx_io"] = dict(
        zip(("inputs", "outputs"), onnx_export.onnx_io(tmp / "model.onnx"), strict=True)
    )
    (tmp / "facts.json").write_text(json.dumps(facts, indent=2))
    # Atomic publish: a crash mid-build never leaves a half artifact that looks complete.
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return facts
