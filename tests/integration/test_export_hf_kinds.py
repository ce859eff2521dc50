"""`export hf` for the served kinds: a token classifier, an image classifier and a
seq2seq model, each a tiny randomly initialised model built here (no download), exported
through optimum by the CLI, checked against PyTorch and served by a real Triton."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from export.runtime.pii_pipeline import PiiPipeline
from export.triton_config import read_config
from export.triton_launcher import EmbeddedTriton
from export.validate import validate_repository
from tests.tiny_hf import IMAGE_LABELS, tiny_t5, tiny_token_classifier, tiny_vit, torch_greedy

from .conftest import ADMIN, LiveFrontend, free_ports, frontend_settings, infer

pytestmark = pytest.mark.integration

TEXTS = [
    "Ada Lovelace met Charles Babbage in London.",
    "hello world",
    "ünïcödé 😀 Zoë visited São Paulo with e\u0301mile",
    "x " * 700,  # over one 480-character window and over --max-length tokens
]


def _export(
    root: Path, repo: Path, model_dir: Path, task: str, name: str, target: str = "cpu"
) -> None:
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
            "--target",
            target,
        ],
        check=True,
        env=env,
        timeout=900,
    )


@pytest.fixture(scope="module")
def hf_kinds(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hf_kinds")
    repo = root / "repo"
    tiny_token_classifier(root / "tiny_ner")
    _export(root, repo, root / "tiny_ner", "token-classification", "tiny_ner")
    tiny_t5(root / "tiny_t5")
    _export(root, repo, root / "tiny_t5", "summarization", "tiny_t5")
    tiny_vit(root / "tiny_vit")
    _export(root, repo, root / "tiny_vit", "image-classification", "tiny_vit")
    return repo


@pytest.fixture(scope="module")
def hf_triton(hf_kinds) -> Iterator[EmbeddedTriton]:
    with EmbeddedTriton(hf_kinds, free_ports()).start(180) as server:
        yield server


@pytest.fixture(scope="module")
def hf_client(hf_triton):
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(hf_triton.grpc_url)
    yield client
    client.close()


@pytest.fixture(scope="module")
def hf_http(hf_triton, hf_kinds):
    """The frontend over the Triton that serves only the exported models."""
    import httpx

    from frontend.app import create_app

    live = LiveFrontend(create_app(frontend_settings(hf_triton.grpc_url, hf_kinds)))
    with httpx.Client(base_url=live.url, timeout=60, headers=ADMIN) as http:
        yield http
    live.stop()


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


def test_gpu_target_generates_and_validates(hf_kinds):
    """The same three directories for the gpu target (the artifacts are cached): every
    config parses and matches its graphs; the token and image models get GPU cores."""
    root = hf_kinds.parent
    gpu = root / "gpu_repo"
    for name, task in (
        ("tiny_ner", "token-classification"),
        ("tiny_t5", "summarization"),
        ("tiny_vit", "image-classification"),
    ):
        _export(root, gpu, root / name, task, name, target="gpu")
    assert validate_repository(gpu) == []
    for core in ("tiny_ner_core", "tiny_vit_core"):
        config = read_config(gpu / core / "config.pbtxt")
        assert config.backend == "onnxruntime"
        assert config.instance_group[0].kind == config.instance_group[0].KIND_GPU
        assert (gpu / core / "1" / "model.onnx").exists()
    assert "CUDAExecutionProvider" in _params(gpu, "tiny_t5")["providers"]


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


def test_token_classifier_served_by_triton(hf_kinds, hf_client):
    """Triton's spans equal the same runner's spans computed on the PyTorch model, and
    every offset indexes the original string."""
    from tritonclient.utils import InferenceServerException

    from export.hf_token_export import TorchCore, compare_spans

    params = _params(hf_kinds, "tiny_ner")
    reference = PiiPipeline(
        hf_kinds / "tiny_ner" / "1", params, core=TorchCore(str(hf_kinds.parent / "tiny_ner"))
    )
    expected = reference.run(TEXTS)
    out = infer(hf_client, "tiny_ner", TEXTS, ("ENTITIES", "NUM_TOKENS", "TRUNCATED"))
    with pytest.raises(InferenceServerException, match=r"TEXT\[1\] is empty"):
        infer(hf_client, "tiny_ner", ["fine", "  "], ("ENTITIES",))
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


def test_token_classifier_over_rest(hf_http, hf_client):
    response = hf_http.post("/v1/models/tiny_ner/predict", json={"inputs": TEXTS[:3]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["model"], body["task"]) == ("tiny_ner", "token-classification")
    out = infer(hf_client, "tiny_ner", TEXTS[:3], ("ENTITIES",))
    assert [p["entities"] for p in body["predictions"]] == [
        json.loads(row) for row in out["ENTITIES"].reshape(-1)
    ]


SEQ2SEQ_TEXTS = [
    "hello",
    "the quick brown fox jumps over the lazy dog",
    "summaries of long texts are short and to the point",
    "plants turn light water and air into sugar",
    "the " * 200,  # over --max-length: read to its first 128 tokens
]


def _t5_reference(model_dir: Path, texts: list[str], new_tokens: int) -> tuple[list[str], list]:
    from transformers import AutoTokenizer, T5ForConditionalGeneration

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    rows = [tokenizer(t, truncation=True, max_length=128).input_ids for t in texts]
    model = T5ForConditionalGeneration.from_pretrained(model_dir).eval()
    ids = torch_greedy(model, rows, new_tokens)
    return [tokenizer.decode(r, skip_special_tokens=True).strip() for r in ids], rows


def test_seq2seq_card(hf_kinds):
    card = _card(hf_kinds, "tiny_t5")
    assert card["task"] == "summarization"
    assert card["methods"] == ["abstractive"]
    assert card["quality"]["seq2seq_greedy_identical"] == "8/8"


def test_seq2seq_served_by_triton_is_pytorchs_greedy_output(hf_kinds, hf_client):
    import tritonclient.grpc as grpcclient

    expected, rows = _t5_reference(hf_kinds.parent / "tiny_t5", SEQ2SEQ_TEXTS, 10)
    assert len(set(expected)) >= 4  # not one answer for every text
    texts = grpcclient.InferInput("TEXT", [len(SEQ2SEQ_TEXTS), 1], "BYTES")
    texts.set_data_from_numpy(np.array([[t.encode()] for t in SEQ2SEQ_TEXTS], dtype=np.object_))
    tokens = grpcclient.InferInput("MAX_TOKENS", [len(SEQ2SEQ_TEXTS), 1], "INT32")
    tokens.set_data_from_numpy(np.full((len(SEQ2SEQ_TEXTS), 1), 10, dtype=np.int32))
    result = hf_client.infer(
        "tiny_t5",
        [texts, tokens],
        outputs=[grpcclient.InferRequestedOutput(n) for n in ("SUMMARY", "NUM_TOKENS")],
        client_timeout=120,
    )
    assert [s.decode() for s in result.as_numpy("SUMMARY").reshape(-1)] == expected
    assert result.as_numpy("NUM_TOKENS").reshape(-1).tolist() == [len(r) for r in rows]
    assert result.as_numpy("NUM_TOKENS").reshape(-1)[-1] == 128


def test_seq2seq_over_rest(hf_http, hf_kinds):
    [expected], _ = _t5_reference(hf_kinds.parent / "tiny_t5", SEQ2SEQ_TEXTS[1:2], 8)
    response = hf_http.post(
        "/v1/models/tiny_t5/predict",
        json={"inputs": SEQ2SEQ_TEXTS[1:2], "method": "abstractive", "max_tokens": 8},
    )
    assert response.status_code == 200, response.text
    [prediction] = response.json()["predictions"]
    assert prediction["summary"] == expected
    assert prediction["method"] == "abstractive"
    # No method named: the model's only one (its card's first).
    default = hf_http.post(
        "/v1/models/tiny_t5/predict", json={"inputs": SEQ2SEQ_TEXTS[1:2], "max_tokens": 8}
    )
    assert default.status_code == 200, default.text
    assert default.json()["predictions"] == [prediction]
    refused = hf_http.post(
        "/v1/models/tiny_t5/predict", json={"inputs": ["x"], "method": "extractive"}
    )
    assert refused.status_code == 422, refused.text
    assert "offers abstractive" in refused.text
    too_long = hf_http.post(
        "/v1/models/tiny_t5/predict", json={"inputs": ["x", "y"], "max_tokens": 600}
    )
    assert too_long.status_code == 422, too_long.text
    assert "1..512" in too_long.text


def _vit_reference(model_dir: Path, images: list[bytes]) -> np.ndarray:
    """transformers' own processor and PyTorch on the decoded, oriented RGB image."""
    import torch
    from transformers import AutoImageProcessor, ViTForImageClassification

    from export.runtime.image_input import ImageLimits, decode_rgb

    processor = AutoImageProcessor.from_pretrained(model_dir, use_fast=False)
    model = ViTForImageClassification.from_pretrained(model_dir).eval()
    rgb = [decode_rgb(data, f"IMAGE[{i}]", ImageLimits()) for i, data in enumerate(images)]
    with torch.no_grad():
        logits = model(**processor(rgb, return_tensors="pt")).logits
    return torch.softmax(logits, -1).numpy()


@pytest.fixture(scope="module")
def sample_images() -> list[tuple[str, bytes]]:
    from export import fidelity_images

    return fidelity_images.fidelity_images()[:24]


def test_image_classifier_card(hf_kinds):
    card = _card(hf_kinds, "tiny_vit")
    assert card["task"] == "image-classification"
    assert card["labels"] == IMAGE_LABELS
    assert card["quality"]["hf_image_top1_identical"] == "80/80"
    assert card["quality"]["hf_image_max_abs_prob_diff"] <= 1e-4


def test_image_classifier_served_by_triton_matches_pytorch(hf_kinds, hf_client, sample_images):
    import tritonclient.grpc as grpcclient

    data = [content for _, content in sample_images]
    images = grpcclient.InferInput("IMAGE", [len(data), 1], "BYTES")
    images.set_data_from_numpy(np.array([[d] for d in data], dtype=np.object_))
    result = hf_client.infer(
        "tiny_vit",
        [images],
        outputs=[grpcclient.InferRequestedOutput(n) for n in ("LABEL", "SCORES")],
        client_timeout=120,
    )
    expected = _vit_reference(hf_kinds.parent / "tiny_vit", data)
    np.testing.assert_allclose(result.as_numpy("SCORES"), expected, atol=1e-4)
    labels = [x.decode() for x in result.as_numpy("LABEL").reshape(-1)]
    assert labels == [IMAGE_LABELS[i] for i in expected.argmax(1)]
    assert len(set(labels)) >= 2  # the images are told apart


def test_image_classifier_over_rest(hf_http, hf_kinds, sample_images):
    named = sample_images[:3]
    files = [("file", (name, content, "application/octet-stream")) for name, content in named]
    response = hf_http.post("/v1/models/tiny_vit/predict", files=files, data={"top_k": "2"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["task"] == "image-classification"
    expected = _vit_reference(hf_kinds.parent / "tiny_vit", [c for _, c in named])
    for (name, _), prediction, want in zip(named, body["predictions"], expected, strict=True):
        assert prediction["file"] == name
        assert prediction["label"] == IMAGE_LABELS[int(want.argmax())]
        assert abs(prediction["score"] - float(want.max())) <= 1e-4
        assert len(prediction["top_k"]) == 2
    bad = [("file", ("notes.txt", b"plain text, not an image", "text/plain"))]
    refused = hf_http.post("/v1/models/tiny_vit/predict", files=bad)
    assert refused.status_code == 422, refused.text
    assert "notes.txt" in refused.text
