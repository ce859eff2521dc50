"""The four model kinds of issue 15 (ner, pii, imagenet, summarize) on the real stack.

Raw gRPC first (what an internal caller does: the tensors, no preprocessing of ours):
  - ner gives exactly spaCy's own `nlp(text).ents` (the package's whole pipeline, loaded
    here as export/ner_export.py loads it);
  - pii gives exactly what an in-process PiiPipeline over the served version folder and
    config gives (that pipeline's parity with the package is a unit test);
  - imagenet's SCORES are PyTorch's softmax on the same preprocessing, top-5 identical;
  - summarize's extractive summaries are the text's own sentences, in order.
Then the REST API over them (the documented shapes, multipart and base64 alike, the
cache, the routes, the listing), and bad input: every refusal a 4xx naming the item and
its file, never a 500; the odd-but-valid images accepted and classified as in-process.
"""

from __future__ import annotations

import base64
import io
import json
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from export import fidelity_images, image_export, ner_export
from export.fidelity_pii import pii_sentences
from export.fidelity_texts import ner_sentences
from export.runtime.image_input import ImageLimits, decode_image
from export.runtime.image_pipeline import ImagePipeline
from export.runtime.pii_pipeline import PiiPipeline
from export.runtime.sentences import split_sentences
from export.runtime.summarize_extractive import centrality, top_sentences
from export.triton_config import read_config
from procs.triton_metrics import settled_counter

from .conftest import ADMIN, LiveFrontend, frontend_settings, infer

pytestmark = pytest.mark.integration

ENTITY_OUTPUTS = ("ENTITIES", "NUM_TOKENS", "TRUNCATED")
IMAGE_OUTPUTS = ("LABEL", "SCORE", "SCORES", "WIDTH", "HEIGHT")
SUMMARY_OUTPUTS = ("SUMMARY", "METHOD", "SENTENCES", "SOURCE_SENTENCES", "CHUNKS", "NUM_TOKENS")
# The fidelity images sent over gRPC: real photos and drawings, and one of each decode
# path (EXIF rotation, CMYK, palette + transparency, 16-bit, alpha, GIF, WebP, sizes).
GRPC_IMAGES = (
    fidelity_images.CAT,
    fidelity_images.COFFEE,
    "astronaut.png",
    "camera.png",
    "horse.png",
    "hubble_deep_field.jpg",
    "rocket.jpg",
    "chelsea:exif6.jpg",
    "chelsea:cmyk.jpg",
    "chelsea:palette_transparent.png",
    "chelsea:animated.gif",
    "chelsea:small.png",
    "coffee:grey16.png",
    "coffee:la.png",
    "coffee:lossy.webp",
    "coffee:strip.png",
)
MIB = 1 << 20


def predict_url(model: str) -> str:
    return f"/v1/models/{model}/predict"


# --- fixtures -------------------------------------------------------------------------


def config_params(repository: Path, model: str) -> dict[str, str]:
    config = read_config(repository / model / "config.pbtxt")
    return {k: v.string_value for k, v in config.parameters.items()}


@pytest.fixture(scope="module")
def images() -> dict[str, bytes]:
    return dict(fidelity_images.fidelity_images())


@pytest.fixture(scope="module")
def image_labels(repository: Path) -> list[str]:
    return json.loads((repository / "imagenet" / "1" / "labels.json").read_text())


@pytest.fixture(scope="module")
def image_pipeline(repository: Path) -> ImagePipeline:
    """The served runner's pipeline, in this process, over the served files and config."""
    return ImagePipeline(repository / "imagenet" / "1", config_params(repository, "imagenet"))


@pytest.fixture(scope="module")
def cached_http(triton, repository) -> Iterator[httpx.Client]:
    """A second frontend over the same Triton with response caching on (in-process LRU):
    the session one has it off."""
    from frontend.app import create_app

    live = LiveFrontend(
        create_app(frontend_settings(triton.grpc_url, repository, cache={"enabled": True}))
    )
    with httpx.Client(base_url=live.url, timeout=60, headers=ADMIN) as http:
        yield http
    live.stop()


# --- helpers --------------------------------------------------------------------------


def batches(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def entity_rows(client, model: str, texts: list[str]) -> list[dict[str, Any]]:
    """One gRPC request: per text its spans (parsed), NUM_TOKENS and TRUNCATED."""
    out = infer(client, model, texts, ENTITY_OUTPUTS)
    return [
        {
            "entities": json.loads(out["ENTITIES"][i, 0]),
            "tokens": int(out["NUM_TOKENS"][i, 0]),
            "truncated": bool(out["TRUNCATED"][i, 0]),
        }
        for i in range(len(texts))
    ]


def bytes_input(name: str, values: list[bytes]) -> grpcclient.InferInput:
    array = np.empty((len(values), 1), dtype=np.object_)
    array[:, 0] = values
    tensor = grpcclient.InferInput(name, list(array.shape), "BYTES")
    tensor.set_data_from_numpy(array)
    return tensor


def int_input(name: str, values: list[int]) -> grpcclient.InferInput:
    array = np.array([[v] for v in values], dtype=np.int32)
    tensor = grpcclient.InferInput(name, list(array.shape), "INT32")
    tensor.set_data_from_numpy(array)
    return tensor


def grpc_call(
    client, model: str, inputs: list[grpcclient.InferInput], outputs: tuple[str, ...]
) -> dict[str, np.ndarray]:
    result = client.infer(
        model,
        inputs,
        outputs=[grpcclient.InferRequestedOutput(o) for o in outputs],
        client_timeout=120,
    )
    return {o: result.as_numpy(o) for o in outputs}


def classify_grpc(client, data: list[bytes]) -> dict[str, np.ndarray]:
    return grpc_call(client, "imagenet", [bytes_input("IMAGE", data)], IMAGE_OUTPUTS)


def softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def top5(scores: np.ndarray) -> np.ndarray:
    return np.argsort(-scores, axis=1, kind="stable")[:, :5]


def shown_size(data: bytes) -> tuple[int, int]:
    """Width x height as a viewer shows the image (after EXIF orientation), by Pillow
    directly: the reference for WIDTH / HEIGHT."""
    from PIL import Image, ImageOps

    with Image.open(io.BytesIO(data)) as img:
        return ImageOps.exif_transpose(img).size


def predictions_of(
    outputs: dict[str, np.ndarray], labels: list[str], top_k: int
) -> list[dict[str, Any]]:
    """imagenet's tensors in the REST prediction's shape (top-k from SCORES, ties in label
    order)."""
    rows = []
    for i, scores in enumerate(outputs["SCORES"]):
        best = np.argsort(-scores, kind="stable")[:top_k]
        rows.append(
            {
                "label": outputs["LABEL"][i, 0].decode(),
                "score": float(outputs["SCORE"][i, 0]),
                "top_k": [{"label": labels[j], "score": float(scores[j])} for j in best],
                "width": int(outputs["WIDTH"][i, 0]),
                "height": int(outputs["HEIGHT"][i, 0]),
            }
        )
    return rows


def in_process(
    pipeline: ImagePipeline, data: list[bytes], labels: list[str], top_k: int = 5
) -> list[dict[str, Any]]:
    """What the runner's pipeline gives in this process for the same bytes."""
    items = pipeline.decode(np.array([[d] for d in data], dtype=np.object_))
    return predictions_of(pipeline.run(items), labels, top_k)


def assert_same_predictions(got: list[dict], want: list[dict], tol: float = 1e-5) -> None:
    """Same labels, ranking and sizes; scores within `tol` (the same graph on other
    threads or batches)."""
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g["label"] == w["label"]
        assert (g["width"], g["height"]) == (w["width"], w["height"])
        assert [t["label"] for t in g["top_k"]] == [t["label"] for t in w["top_k"]]
        assert g["score"] == pytest.approx(w["score"], abs=tol)
        assert [t["score"] for t in g["top_k"]] == pytest.approx(
            [t["score"] for t in w["top_k"]], abs=tol
        )


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def upload(
    http: httpx.Client, named: list[tuple[str, bytes]], url: str = predict_url("imagenet"), **data
) -> httpx.Response:
    files = [("file", (name, content, "application/octet-stream")) for name, content in named]
    return http.post(url, files=files, data=data)


def refused(response: httpx.Response, status: int, starts: str) -> dict[str, Any]:
    """A clear client error: the status, this API's envelope, a message that starts by
    naming the item (and file), no internals."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"].startswith(starts), error["message"]
    assert "Traceback" not in response.text and "Exception" not in error["message"]
    assert error["request_id"] == response.headers["X-Request-ID"]
    return error


def png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data)
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def encoded(img: Any, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, fmt, **options)
    return buffer.getvalue()


# --- raw gRPC -------------------------------------------------------------------------


def test_ner_over_grpc_is_spacys_own_entities(client):
    every = ner_sentences()
    # A spread of the templated, styled, unicode and boundary texts, and the long ones.
    texts = list(dict.fromkeys(every[::4] + every[-4:]))
    assert len(texts) >= 60
    nlp = ner_export.load_package()
    docs = [nlp(text) for text in texts]
    rows = [row for batch in batches(texts, 24) for row in entity_rows(client, "ner", batch)]
    for text, doc, row in zip(texts, docs, rows, strict=True):
        expected = [(e.text, e.label_, e.start_char, e.end_char) for e in doc.ents]
        got = [(e["text"], e["label"], e["start"], e["end"]) for e in row["entities"]]
        assert got == expected, text[:60]
        for entity in row["entities"]:
            assert entity["text"] == text[entity["start"] : entity["end"]]
            assert "score" not in entity  # spaCy's recognizer has none
        assert row["tokens"] == len(doc) and row["truncated"] is False
    assert sum(len(doc.ents) for doc in docs) >= len(texts)  # the texts do hold entities


def test_pii_over_grpc_is_the_in_process_pipelines_spans(client, repository):
    every = pii_sentences()
    # Two long texts of several windows, one Korean, the rest a spread of the kinds.
    texts = every[:2] + every[6:7] + every[8::6][:38]
    assert len(texts) >= 40
    pipeline = PiiPipeline(repository / "pii" / "1", config_params(repository, "pii"))
    spans = 0
    for batch in batches(texts, 16):
        # Each request is one batch of the runner; in-process, the same batch.
        want = pipeline.run(batch)
        got = entity_rows(client, "pii", batch)
        for i, (text, row) in enumerate(zip(batch, got, strict=True)):
            assert row["entities"] == json.loads(want["ENTITIES"][i, 0]), text[:60]
            assert row["tokens"] == int(want["NUM_TOKENS"][i, 0])
            assert row["truncated"] is False
            for entity in row["entities"]:
                assert entity["text"] == text[entity["start"] : entity["end"]]
                assert entity["label"] in pipeline.labels
                assert 0.0 < entity["score"] <= 1.0
            spans += len(row["entities"])
    assert spans >= 12


def test_imagenet_over_grpc_matches_pytorch(client, images, repository, image_labels):
    data = [images[name] for name in GRPC_IMAGES]
    out = classify_grpc(client, data)
    limits = ImageLimits.from_params(config_params(repository, "imagenet"))
    arrays = [decode_image(d, f"IMAGE[{i}]", limits).array for i, d in enumerate(data)]
    reference = softmax(image_export.reference_logits(image_export.load_model(), arrays))
    scores = out["SCORES"]
    assert scores.shape == (len(data), 1000) and scores.dtype == np.float32
    np.testing.assert_allclose(scores, reference, rtol=0, atol=1e-4)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-5)
    assert (top5(scores) == top5(reference)).all()
    labels = [label.decode() for label in out["LABEL"].reshape(-1)]
    assert labels == [image_labels[j] for j in scores.argmax(axis=1)]
    np.testing.assert_array_equal(out["SCORE"].reshape(-1), scores.max(axis=1))
    assert labels[GRPC_IMAGES.index(fidelity_images.CAT)] in image_export.CAT_CLASSES
    assert labels[GRPC_IMAGES.index(fidelity_images.COFFEE)] == "espresso"
    sizes = list(zip(out["WIDTH"].reshape(-1), out["HEIGHT"].reshape(-1), strict=True))
    assert sizes == [shown_size(d) for d in data]
    # The EXIF-rotated photo is stored on its side and reported as shown: upright.
    from PIL import Image

    rotated = images["chelsea:exif6.jpg"]
    with Image.open(io.BytesIO(rotated)) as stored:
        assert stored.size == shown_size(images[fidelity_images.CAT])[::-1]
    assert sizes[GRPC_IMAGES.index("chelsea:exif6.jpg")] == shown_size(images[fidelity_images.CAT])


def summarize_texts() -> list[str]:
    every = ner_sentences()
    longest = sorted(every, key=len)[-3:]  # the long paragraphs: dozens of sentences
    return [
        *longest,
        "The council met on Tuesday. It approved the budget.",  # fewer than asked: whole
    ]


def test_summarize_extractive_over_grpc_picks_its_own_sentences(client):
    texts = summarize_texts()
    keep = [3, 1, 5, 3]
    ranked_checked = 0
    out = grpc_call(
        client,
        "summarize",
        [
            bytes_input("TEXT", [t.encode() for t in texts]),
            bytes_input("METHOD", [b"extractive"] * len(texts)),
            int_input("MAX_SENTENCES", keep),
        ],
        SUMMARY_OUTPUTS,
    )
    for i, (text, k) in enumerate(zip(texts, keep, strict=True)):
        spans = split_sentences(text)
        chosen = json.loads(out["SENTENCES"][i, 0])
        assert out["METHOD"][i, 0] == b"extractive" and int(out["CHUNKS"][i, 0]) == 1
        assert int(out["SOURCE_SENTENCES"][i, 0]) == len(spans)
        assert len(chosen) == min(k, len(spans))
        indices = [c["index"] for c in chosen]
        assert indices == sorted(set(indices))  # in text order, each once
        for c in chosen:
            assert (c["start"], c["end"]) == spans[c["index"]]  # verbatim sentences
        summary = out["SUMMARY"][i, 0].decode()
        assert summary == " ".join(text[c["start"] : c["end"]] for c in chosen)
        if len(spans) <= k:
            assert indices == list(range(len(spans))) and int(out["NUM_TOKENS"][i, 0]) == 0
            continue
        assert int(out["NUM_TOKENS"][i, 0]) > 0
        # The documented choice: the k most central sentences by embed's own vectors
        # (checked where the k-th and the next are apart more than batching noise).
        sentences = [text[a:b] for a, b in spans]
        vectors = np.concatenate(
            [
                infer(client, "embed", part, ("EMBEDDING",))["EMBEDDING"]
                for part in batches(sentences, 64)
            ]
        )
        scores = centrality(vectors)
        ranked = np.sort(scores)[::-1]
        if ranked[k - 1] - ranked[k] > 1e-4:
            assert indices == top_sentences(scores, k)
            ranked_checked += 1
    assert ranked_checked >= 2  # the choice itself was checked, not only its shape


# --- REST -----------------------------------------------------------------------------


def test_rest_entities_for_ner_and_pii(http, client):
    texts = [
        "Ada Lovelace met Charles Babbage in London in 1833.",
        "Apple is looking at buying a U.K. startup for $1 billion.",
    ]
    response = http.post(predict_url("ner"), json={"inputs": texts})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["model"], body["version"], body["task"]) == ("ner", "1", "token-classification")
    rows = entity_rows(client, "ner", texts)
    assert body["predictions"] == [{"entities": r["entities"], "truncated": False} for r in rows]
    assert body["usage"] == {"input_tokens": sum(r["tokens"] for r in rows)}
    assert all(p["entities"] for p in body["predictions"])  # not two empty answers

    text = "Hi, I am Maria Rivera, write to maria.rivera@example.com or call 555-201-3344."
    response = http.post(predict_url("pii"), json={"inputs": text})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["task"] == "token-classification"
    [prediction] = body["predictions"]
    [row] = entity_rows(client, "pii", [text])
    assert prediction == {"entities": row["entities"], "truncated": False}
    assert prediction["entities"]
    for entity in prediction["entities"]:
        assert text[entity["start"] : entity["end"]] == entity["text"]
        assert isinstance(entity["score"], float)


def test_rest_summarize_extractive(http, client):
    text = summarize_texts()[0]
    response = http.post(predict_url("summarize"), json={"inputs": [text], "max_sentences": 2})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["model"], body["task"]) == ("summarize", "summarization")
    [prediction] = body["predictions"]
    out = grpc_call(
        client,
        "summarize",
        [bytes_input("TEXT", [text.encode()]), int_input("MAX_SENTENCES", [2])],
        SUMMARY_OUTPUTS,
    )
    chosen = json.loads(out["SENTENCES"][0, 0])
    assert prediction == {
        "summary": out["SUMMARY"][0, 0].decode(),
        "method": "extractive",
        "source_chars": len(text),
        "source_sentences": int(out["SOURCE_SENTENCES"][0, 0]),
        "chunks": 1,
        "sentences": [{**c, "text": text[c["start"] : c["end"]]} for c in chosen],
    }
    assert len(prediction["sentences"]) == 2
    assert body["usage"] == {"input_tokens": int(out["NUM_TOKENS"][0, 0])}


def test_rest_images_multipart_and_base64_agree(http, client, images, image_labels):
    named = [("chelsea.png", images[fidelity_images.CAT]), ("cup.png", images["coffee.png"])]
    response = upload(http, named, top_k="3")
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["model"], body["version"], body["task"]) == (
        "imagenet",
        "1",
        "image-classification",
    )
    assert body["usage"] == {"images": 2}
    files = [p.pop("file") for p in body["predictions"]]
    assert files == ["chelsea.png", "cup.png"]
    want = predictions_of(classify_grpc(client, [d for _, d in named]), image_labels, 3)
    assert_same_predictions(body["predictions"], want)
    assert body["predictions"][1]["label"] == "espresso"

    as_json = http.post(
        predict_url("imagenet"), json={"inputs": [b64(d) for _, d in named], "top_k": 3}
    )
    assert as_json.status_code == 200, as_json.text
    predictions = as_json.json()["predictions"]
    assert all("file" not in p for p in predictions)
    assert_same_predictions(predictions, body["predictions"])


def test_versioned_route_and_the_model_listing(http, images, image_labels):
    one = http.post(
        "/v1/models/imagenet/versions/1/predict",
        json={"inputs": b64(images[fidelity_images.COFFEE])},
    )
    assert one.status_code == 200, one.text
    assert one.headers["X-Model-Version"] == "1" == one.json()["version"]
    [prediction] = one.json()["predictions"]
    assert prediction["label"] == "espresso" and len(prediction["top_k"]) == 5

    listed = {m["id"]: m for m in http.get("/v1/models").json()["data"]}
    tasks = {name: listed[name]["task"] for name in ("ner", "pii", "imagenet", "summarize")}
    assert tasks == {
        "ner": "token-classification",
        "pii": "token-classification",
        "imagenet": "image-classification",
        "summarize": "summarization",
    }
    assert listed["summarize"]["methods"] == ["extractive", "abstractive"]
    card = http.get("/v1/models/imagenet").json()
    assert card["labels"] == image_labels and card["image_size"] == 224
    assert card["max_image_bytes"] == 20 * MIB and card["max_image_pixels"] == 40_000_000


def test_the_same_image_again_is_a_cache_hit(cached_http, triton, images):
    data = images["chelsea:q75.jpg"]

    def inferred() -> float:
        return settled_counter(triton.metrics_url, "nv_inference_count", "imagenet", "1")

    first = cached_http.post(predict_url("imagenet"), json={"inputs": b64(data)})
    before = inferred()
    second = cached_http.post(predict_url("imagenet"), json={"inputs": b64(data)})
    assert first.status_code == second.status_code == 200, second.text
    assert (first.headers["X-Cache"], second.headers["X-Cache"]) == ("MISS", "HIT")
    assert second.content == first.content
    # The same bytes as a file under another name: the key is the bytes, still a hit.
    as_file = upload(cached_http, [("renamed.jpg", data)])
    assert as_file.status_code == 200 and as_file.headers["X-Cache"] == "HIT"
    [prediction] = as_file.json()["predictions"]
    assert prediction == {"file": "renamed.jpg", **first.json()["predictions"][0]}
    assert inferred() == before  # Triton saw neither


# --- bad input ------------------------------------------------------------------------


def _bad_images(images: dict[str, bytes]) -> dict[str, tuple[bytes, str]]:
    """name -> (bytes, what the refusal says after naming the file)."""
    from PIL import Image

    jpeg = images["chelsea:q95.jpg"]
    png = images[fidelity_images.COFFEE]
    at = png.index(b"IDAT") + 200  # inside the first image data chunk
    corrupt = png[:at] + bytes(b ^ 0x5A for b in png[at : at + 16]) + png[at + 16 :]
    return {
        "notes.txt": (b"just some words, not pixels\n", "not a JPEG, PNG, WebP or GIF image"),
        "empty.png": (b"", "the image is empty (0 bytes)"),
        "cut.jpg": (jpeg[: len(jpeg) // 2], "the JPEG data is truncated or corrupt"),
        "flipped.png": (corrupt, "the PNG data is truncated or corrupt"),
        "dot.png": (encoded(Image.new("RGB", (1, 1)), "PNG"), "1x1 pixels is too small"),
    }


@pytest.mark.parametrize("name", ["notes.txt", "empty.png", "cut.jpg", "flipped.png", "dot.png"])
def test_a_bad_file_is_a_422_naming_it(http, images, name):
    bad, says = _bad_images(images)[name]
    good = images[fidelity_images.CAT]
    response = upload(http, [("good.png", good), (name, bad)])
    error = refused(response, 422, f"file.1 ({name!r}): {says}")
    assert error["code"] == "validation_error" and error["param"] == "file.1"
    assert error["details"][0]["file"] == name
    # As base64 JSON, the same refusal names the list item.
    as_json = http.post(predict_url("imagenet"), json={"inputs": [b64(good), b64(bad)]})
    refused(as_json, 422, f"inputs.1: {says}")


def test_a_decompression_bomb_is_refused_fast_from_its_header(http):
    header = struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)
    bomb = (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 4096))
        + png_chunk(b"IEND", b"")
    )
    assert len(bomb) < 1024  # claims 900 megapixels (2.7 GB of RGB)
    started = time.monotonic()
    response = upload(http, [("bomb.png", bomb)])
    elapsed = time.monotonic() - started
    error = refused(response, 422, "file.0 ('bomb.png'): ")
    assert "over the limit of 40000000 pixels" in error["message"]
    assert elapsed < 5.0


def test_an_animated_gif_is_its_first_frame(http, images):
    from PIL import Image

    animated = images["chelsea:animated.gif"]
    with Image.open(io.BytesIO(animated)) as gif:
        assert getattr(gif, "n_frames", 1) > 1
        first = gif.convert("RGBA")  # frame 0; any transparency over white, as documented
    white = Image.new("RGBA", first.size, (255, 255, 255, 255))
    still = encoded(Image.alpha_composite(white, first).convert("RGB"), "PNG")
    response = upload(http, [("anim.gif", animated), ("still.png", still)])
    assert response.status_code == 200, response.text
    got, want = response.json()["predictions"]
    assert (got.pop("file"), want.pop("file")) == ("anim.gif", "still.png")
    assert_same_predictions([got], [want])


def test_odd_colour_modes_are_classified_as_in_process(http, images, image_pipeline, image_labels):
    names = (
        "chelsea:cmyk.jpg",
        "coffee:grey16.png",
        "chelsea:palette_transparent.png",
        "coffee:rgba.png",
    )
    data = [images[n] for n in names]
    response = upload(http, [(n.replace(":", "_"), d) for n, d in zip(names, data, strict=True)])
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert_same_predictions(predictions, in_process(image_pipeline, data, image_labels), tol=1e-4)


def test_image_count_and_size_caps(http, images):
    from PIL import Image

    tiny = encoded(Image.new("RGB", (16, 16)), "PNG")
    error = refused(upload(http, [(f"{i}.png", tiny) for i in range(17)]), 422, "file: ")
    assert error["message"] == "file: more than 16 files; the limit is 16 per request"
    error = refused(
        http.post(predict_url("imagenet"), json={"inputs": [b64(tiny)] * 17}), 422, "inputs "
    )
    assert error["message"] == "inputs holds 17 images; the limit is 16 per request"
    over = tiny + b"\x00" * (20 * MIB + 1 - len(tiny))  # one byte over the 20 MiB cap
    error = refused(upload(http, [("ok.png", tiny), ("huge.png", over)]), 413, "file.1 ")
    assert error["message"] == (
        f"file.1 ('huge.png') is over the limit of {20 * MIB} bytes per image"
    )
    assert error["code"] == "payload_too_large"
    # Still serving after the refusals.
    assert upload(http, [("ok.png", images["coffee.png"])]).status_code == 200


def test_text_caps_and_foreign_fields(http):
    error = refused(http.post(predict_url("ner"), json={"inputs": ["Ada"] * 65}), 422, "inputs ")
    assert error["message"] == "inputs holds 65 texts; the limit is 64 per request"
    long_text = "Maria Rivera lives in Boston. " * 700  # 21 000 characters
    error = refused(
        http.post(predict_url("pii"), json={"inputs": ["short", long_text]}), 422, "inputs.1: "
    )
    assert f"{len(long_text)} characters; the limit is 20000" in error["message"]
    for model, body, field in (
        ("ner", {"inputs": "Ada", "top_k": 3}, "top_k"),
        ("intent", {"inputs": "hello", "method": "extractive"}, "method"),
    ):
        error = refused(http.post(predict_url(model), json=body), 422, f"body.{field}: ")
        assert error["message"] == f"body.{field}: Extra inputs are not permitted"
        assert error["param"] == field


def test_an_image_body_sent_to_a_text_model_is_a_422(http, images):
    response = upload(http, [("cat.png", images[fidelity_images.CAT])], url=predict_url("intent"))
    error = refused(response, 422, "body: ")
    assert error["code"] == "validation_error"
