"""`export hf` for the served kinds: the spec it declares (export/__main__.py) and the
artifact key that follows the directory's content."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from export import kinds
from export.__main__ import _served_hf_spec


def _args(model_dir: Path, task: str) -> argparse.Namespace:
    return argparse.Namespace(model_dir=str(model_dir), task=task, name="mine", max_length=128)


def _directory(tmp_path: Path) -> Path:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text('{"model_type": "bert"}')
    (model_dir / "model.safetensors").write_bytes(b"weights v1")
    return model_dir


def test_the_directory_content_keys_the_artifact(tmp_path):
    model_dir = _directory(tmp_path)
    first = _served_hf_spec(_args(model_dir, "token-classification"))
    assert first.option("path", "") == str(model_dir.resolve())
    again = _served_hf_spec(_args(model_dir, "token-classification"))
    assert kinds.artifact_dir(again) == kinds.artifact_dir(first)
    (model_dir / "model.safetensors").write_bytes(b"weights v2")  # retrained in place
    changed = _served_hf_spec(_args(model_dir, "token-classification"))
    assert changed.option("dir_sha256", "") != first.option("dir_sha256", "")
    assert kinds.artifact_dir(changed) != kinds.artifact_dir(first)
    (model_dir / "sub").mkdir()
    (model_dir / "sub" / "extra.txt").write_text("x")  # a new file counts too
    assert _served_hf_spec(_args(model_dir, "token-classification")).option(
        "dir_sha256", ""
    ) != changed.option("dir_sha256", "")


def test_tasks_map_to_kinds_and_serving(tmp_path):
    model_dir = _directory(tmp_path)
    token = _served_hf_spec(_args(model_dir, "token-classification"))
    assert (token.task, token.kind, token.max_length) == (
        "token-classification",
        "hf-token-classifier",
        128,
    )
    image = _served_hf_spec(_args(model_dir, "image-classification"))
    assert (image.task, image.kind, image.max_length) == (
        "image-classification",
        "hf-image-classifier",
        1,
    )
    assert image.batching.max_batch_size == 32
    assert (image.instances.cpu_count, image.instances.cpu_threads) == (1, 2)


def test_a_missing_directory_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="is not a directory"):
        _served_hf_spec(_args(tmp_path / "absent", "token-classification"))
