"""Build and assemble the models of export/served.py: one builder module per kind.

Each builder module (export/<kind>_export.py) declares its artifact files, the runtime
files copied into the repository, the distributions whose versions key its cache, and
four functions: build (slow, on a cache miss only, runs the export-time fidelity check),
config and extra_configs (the Triton configs per target) and card_fields.
"""

from __future__ import annotations

import importlib
import json
import shutil
from pathlib import Path
from types import ModuleType
from typing import Any

from tqdm import tqdm

from . import cards
from .cache import artifact_key, cache_root, extra_fingerprint, link_or_copy
from .served import Kind, ServedSpec
from .spec import Target
from .triton_config import write_config

RUNTIME = Path(__file__).parent / "runtime"
BUILDERS: dict[Kind, str] = {
    "spacy-ner": "ner_export",
    "onnx-token-classifier": "pii_export",
    "image-classifier": "image_export",
    "summarizer": "summarize_export",
    "hf-token-classifier": "hf_token_export",
    "hf-seq2seq": "hf_seq2seq_export",
    "hf-image-classifier": "hf_image_export",
}


# Besides its builder module, the export code each kind's artifact depends on (its
# fidelity inputs and reference loaders): a change to one re-exports that kind only.
KEYED_MODULES: dict[Kind, tuple[str, ...]] = {
    "spacy-ner": ("fidelity_texts.py",),
    "onnx-token-classifier": ("fidelity_pii.py", "pii_reference.py"),
    "image-classifier": ("fidelity_images.py",),
    "summarizer": (),
    "hf-token-classifier": ("fidelity_texts.py", "onnx_export.py"),
    "hf-seq2seq": (),
    "hf-image-classifier": ("fidelity_images.py", "onnx_export.py"),
}


def builder(kind: Kind) -> ModuleType:
    return importlib.import_module(f"{__package__}.{BUILDERS[kind]}")


def artifact_dir(spec: ServedSpec) -> Path:
    module = builder(spec.kind)
    # The builder's own code and its packages key the artifact; the runtime files do
    # not (they are copied at assembly, so a runner fix needs no re-export).
    own = (f"{BUILDERS[spec.kind]}.py", "kinds.py", "served.py", *KEYED_MODULES[spec.kind])
    extra = extra_fingerprint(own, tuple(module.SOURCE_PACKAGES))
    return cache_root() / "artifacts" / f"{spec.name}-v1-{artifact_key(spec.to_json(), extra)}"


def is_cached(spec: ServedSpec) -> bool:
    art = artifact_dir(spec)
    return all((art / name).exists() for name in builder(spec.kind).ARTIFACT_FILES)


def build_artifact(spec: ServedSpec, bar: tqdm) -> dict[str, Any]:
    """Into a .partial folder, published by one rename: a crash mid-build never leaves a
    half artifact that looks complete."""
    out_dir = artifact_dir(spec)
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    facts = builder(spec.kind).build(spec, tmp, bar)
    (tmp / "facts.json").write_text(json.dumps(facts, indent=2))
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return facts


def assemble(spec: ServedSpec, target: Target, repository: Path) -> dict[str, Any]:
    module = builder(spec.kind)
    art = artifact_dir(spec)
    facts = json.loads((art / "facts.json").read_text())
    model_dir = repository / spec.name
    write_config(module.config(spec, target, facts), model_dir)
    extra = module.extra_configs(spec, target, facts)
    for name, config in extra.items():
        write_config(config, repository / name)
    vdir = model_dir / "1"
    vdir.mkdir(parents=True, exist_ok=True)
    shutil.copy2(RUNTIME / module.RUNTIME, vdir / "model.py")
    for name in module.RUNTIME_MODULES:
        shutil.copy2(RUNTIME / name, vdir / name)
    for name in module.ARTIFACT_FILES:
        source = art / name
        if name == "facts.json":
            continue
        # An ONNX graph served by a separate onnxruntime-backend core (gpu) lives in the
        # core's version folder; the python model then calls it through BLS.
        home = repository / next(iter(extra)) / "1" if name == "model.onnx" and extra else vdir
        if source.is_dir():
            shutil.copytree(source, home / name, copy_function=_link, dirs_exist_ok=True)
        else:
            link_or_copy(source, home / name)
    data = cards.served_card(spec, facts, target, module.card_fields(spec, facts, target))
    cards.write_card(vdir, data)
    return data


def _link(src: str, dst: str) -> None:
    link_or_copy(Path(src), Path(dst))
