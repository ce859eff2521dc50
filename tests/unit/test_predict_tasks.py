"""POST /v1/models/{model}/predict for every task it serves, through the real app and the
real Triton client over a fake gRPC client that reads the tensors it is sent (the bytes
the client serialized) and answers from them as the exported models' tensors do
(frontend/triton/tensors.py): ENTITIES spans, IMAGE -> LABEL/SCORES/WIDTH/HEIGHT,
SUMMARY/SENTENCES. Nothing it answers is a constant: entities are the text's own words,
an image's scores come from its bytes and its size from its PNG header, a summary from
the text's sentences."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from tritonclient.utils import InferenceServerException, deserialize_bytes_tensor

from export import image_export
from frontend.api.predict_docs import ANSWER_EXAMPLES
from frontend.app import create_app
from frontend.catalog import ModelCard
from frontend.errors import InputInvalid, Overloaded
from frontend.settings import AuthSettings, LimitSettings, Settings, TritonSettings
from frontend.triton.errors import map_error
from frontend.triton.tensors import EXPECTED_IO

from .cards import ENTITY_LABELS, IMAGE_LABELS, WITH_KINDS, write_cards
from .test_card_contract import complete_card
from .test_frontend_errors import ADMIN_KEY, FakeResult, FakeTriton, assert_envelope, over_fake

KIB = 1024


# --- the fake models ----------------------------------------------------------------------


def _received(tensor: Any) -> np.ndarray:
    """What the real client put on the wire for one input, read back."""
    raw = tensor._get_content()
    shape = tensor.shape()
    if tensor.datatype() == "BYTES":
        return deserialize_bytes_tensor(raw).reshape(shape)
    return np.frombuffer(raw, dtype={"INT32": np.int32}[tensor.datatype()]).reshape(shape)


def png_size(data: bytes) -> tuple[int, int] | None:
    if not data.startswith(b"\x89PNG\r\n\x1a\n") or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _entities(model: str, text: str) -> list[dict[str, Any]]:
    if model == "pii":  # e-mail addresses, scored by their length (a model's confidence)
        return [
            {
                "text": m.group(),
                "label": "EMAIL",
                "start": m.start(),
                "end": m.end(),
                "score": round(0.5 + len(m.group()) / 100, 4),
            }
            for m in re.finditer(r"[\w.]+@[\w.]+\w", text)
        ]
    labels = ENTITY_LABELS["ner"]  # capitalised words, no score (as spaCy)
    return [
        {
            "text": m.group(),
            "label": labels[len(m.group()) % len(labels)],
            "start": m.start(),
            "end": m.end(),
        }
        for m in re.finditer(r"\b[A-Z][a-z]+\b", text)
    ]


def _sentences(text: str) -> list[tuple[int, int]]:
    return [(m.start(), m.end()) for m in re.finditer(r"[^\s.!?][^.!?]*[.!?]?", text)]


# Texts the fake models refuse or fail, as the runners do (the index names the text's row
# in that Triton request, which holds only the cache's misses).
REFUSE, BUSY = "REFUSE", "BUSY"
CHAT_FAILURES = (
    (REFUSE, "invalid", "StatusCode.INVALID_ARGUMENT"),
    (BUSY, "overloaded", "StatusCode.UNAVAILABLE"),
)
CHAT_SAYS = {  # chat_model.py's text after its kind
    "invalid": "the prompt is 9000 tokens, over the limit of 8192",
    "overloaded": "4 sequences are generating and 8 requests wait; try again shortly",
}


class KindsTriton(FakeTriton):
    """FakeTriton that also answers ner, pii, imagenet and summarize from their inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.received: list[tuple[str, dict[str, np.ndarray]]] = []
        self.infer_kwargs: list[dict[str, Any]] = []

    async def infer(self, model, inputs, model_version="", outputs=(), **kwargs):
        if model not in ("ner", "pii", "imagenet", "summarize"):
            return await super().infer(model, inputs, model_version, outputs, **kwargs)
        sent = {tensor.name(): _received(tensor) for tensor in inputs}
        n = inputs[0].shape()[0]
        self.calls.append((model, model_version, n))
        self.received.append((model, sent))
        self.infer_kwargs.append(kwargs)
        if self.raise_next is not None:
            raise self.raise_next
        answer = {"imagenet": self._images, "summarize": self._summaries}.get(model, self._spans)
        out = answer(model, sent, n, kwargs.get("request_id", ""))
        return FakeResult({o.name(): out[o.name()] for o in outputs})

    def _spans(self, model, sent, n, request_id):
        texts = [t.decode() for t in sent["TEXT"].reshape(-1)]
        for j, text in enumerate(texts):
            if text.startswith(REFUSE):  # as decode_utf8_texts words it: no colon
                raise InferenceServerException(
                    msg=f"[request id: {request_id}] TEXT[{j}] is not valid UTF-8 (byte 3)",
                    status="StatusCode.INVALID_ARGUMENT",
                )
        return {
            "ENTITIES": np.array(
                [[json.dumps(_entities(model, t)).encode()] for t in texts], dtype=object
            ),
            "NUM_TOKENS": np.array([[len(t.split())] for t in texts], dtype=np.int32),
            "TRUNCATED": np.array([[len(t) > 60] for t in texts], dtype=bool),
        }

    def _images(self, model, sent, n, request_id):
        images = [bytes(b) for b in sent["IMAGE"].reshape(-1)]
        sizes = []
        for j, data in enumerate(images):
            size = png_size(data)
            if size is None:  # as the runner refuses it: INVALID_ARG naming the item
                raise InferenceServerException(
                    msg=f"[request id: {request_id}] IMAGE[{j}]: not a JPEG, PNG, WebP or "
                    "GIF image (its first bytes match no known format)",
                    status="StatusCode.INVALID_ARGUMENT",
                )
            sizes.append(size)
        logits = (
            np.array(
                [list(hashlib.sha256(d).digest()[: len(IMAGE_LABELS)]) for d in images],
                dtype=np.float32,
            )
            / 32
        )
        scores = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        best = scores.argmax(axis=1)
        return {
            "LABEL": np.array([[IMAGE_LABELS[b].encode()] for b in best], dtype=object),
            "SCORE": scores.max(axis=1, keepdims=True).astype(np.float32),
            "SCORES": scores.astype(np.float32),
            "WIDTH": np.array([[w] for w, _ in sizes], dtype=np.int32),
            "HEIGHT": np.array([[h] for _, h in sizes], dtype=np.int32),
        }

    def _summaries(self, model, sent, n, request_id):
        texts = [t.decode() for t in sent["TEXT"].reshape(-1)]
        methods = [m.decode() for m in sent["METHOD"].reshape(-1)]
        keep = sent["MAX_SENTENCES"].reshape(-1).tolist()
        budget = sent["MAX_TOKENS"].reshape(-1).tolist()
        for j, text in enumerate(texts):  # chat's refusal, as summarize_model.py passes it on
            for marker, kind, status in CHAT_FAILURES:
                if text.startswith(marker):
                    raise InferenceServerException(
                        msg=f"[request id: {request_id}] TEXT[{j}]: summarizing it failed: "
                        f"{kind}: {CHAT_SAYS[kind]}",
                        status=status,
                    )
        rows: dict[str, list] = {
            k: [] for k in ("SUMMARY", "METHOD", "SENTENCES", "SRC", "CH", "T")
        }
        for text, method, k, tokens in zip(texts, methods, keep, budget, strict=True):
            spans = _sentences(text)
            if method == "extractive":  # the longest k sentences, in input order
                chosen = sorted(
                    sorted(range(len(spans)), key=lambda i: spans[i][0] - spans[i][1])[:k]
                )
                picked = [{"index": i, "start": spans[i][0], "end": spans[i][1]} for i in chosen]
                summary = " ".join(text[s["start"] : s["end"]] for s in picked)
            else:  # the first `tokens` words
                picked, summary = [], " ".join(text.split()[:tokens])
            rows["SUMMARY"].append([summary.encode()])
            rows["METHOD"].append([method.encode()])
            rows["SENTENCES"].append([json.dumps(picked).encode()])
            rows["SRC"].append([len(spans)])
            rows["CH"].append([1 + len(text) // 200])
            rows["T"].append([len(text.split())])
        return {
            "SUMMARY": np.array(rows["SUMMARY"], dtype=object),
            "METHOD": np.array(rows["METHOD"], dtype=object),
            "SENTENCES": np.array(rows["SENTENCES"], dtype=object),
            "SOURCE_SENTENCES": np.array(rows["SRC"], dtype=np.int32),
            "CHUNKS": np.array(rows["CH"], dtype=np.int32),
            "NUM_TOKENS": np.array(rows["T"], dtype=np.int32),
        }


def png(width: int, height: int, seed: int = 0) -> bytes:
    """A valid RGB PNG of that size; `seed` changes its pixels (so its bytes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    row = b"\x00" + bytes((seed + x) % 256 for x in range(width * 3))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * height))
        + chunk(b"IEND", b"")
    )


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# --- the app ------------------------------------------------------------------------------

LIMITS = LimitSettings(
    max_body_bytes=4096,
    max_batch_items=8,
    max_input_chars=200,
    max_images=4,
    max_image_bytes=8 * KIB,
    max_image_body_bytes=48 * KIB,
    max_summary_items=3,
    max_entity_items=5,
)


def _client(tmp_path: Path, fake: KindsTriton, limits: LimitSettings = LIMITS) -> TestClient:
    settings = Settings(
        environment="test",
        triton=TritonSettings(model_repository=write_cards(tmp_path / "repo", WITH_KINDS)),
        limits=limits,
        auth=AuthSettings(bootstrap_admin_key=ADMIN_KEY),
    )
    client = TestClient(
        create_app(settings, over_fake(settings, fake)),
        raise_server_exceptions=False,
        headers={"X-API-Key": ADMIN_KEY},
    )
    client.__enter__()
    return client


@pytest.fixture
def fake() -> KindsTriton:
    return KindsTriton()


@pytest.fixture
def api(tmp_path, fake):
    client = _client(tmp_path, fake)
    yield client
    client.__exit__(None, None, None)


def url(model: str) -> str:
    return f"/v1/models/{model}/predict"


def files(*named: tuple[str, bytes]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("file", (name, data, "image/png")) for name, data in named]


# --- text classification: unchanged ---------------------------------------------------------

# The answer before the predict route served other tasks, byte for byte (recorded from it).
TEXT_ANSWER = (
    b'{"model":"intent","version":"1","score_kind":"probability","predictions":[{"label":'
    b'"greeting","score":0.699999988079071,"top_k":[{"label":"greeting","score":'
    b'0.699999988079071},{"label":"goodbye","score":0.20000000298023224}],"truncated":false},'
    b'{"label":"greeting","score":0.699999988079071,"top_k":[{"label":"greeting","score":'
    b'0.699999988079071},{"label":"goodbye","score":0.20000000298023224}],"truncated":false}],'
    b'"usage":{"input_tokens":8}}'
)


def test_text_classification_answers_the_same_bytes(api, fake):
    body = {"inputs": ["hi", "hello"], "top_k": 2}
    for response in (
        api.post(url("intent"), json=body, headers={"X-Model-Version": "1"}),
        api.post("/v1/models/intent/versions/1/predict", json=body),
    ):
        assert response.status_code == 200, response.text
        assert response.content == TEXT_ANSWER
    assert fake.calls == [("intent", "1", 2)]  # the second answered from the cache


# --- token classification -------------------------------------------------------------------


def test_ner_finds_the_texts_own_spans_without_scores(api, fake):
    texts = ["Ada met Charles in London.", "nothing here"]
    response = api.post(url("ner"), json={"inputs": texts})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["task"] == "token-classification" and body["version"] == "2"
    first, second = body["predictions"]
    assert [e["text"] for e in first["entities"]] == ["Ada", "Charles", "London"]
    for entity in first["entities"]:
        assert texts[0][entity["start"] : entity["end"]] == entity["text"]
        assert entity["label"] in ENTITY_LABELS["ner"] and "score" not in entity
    assert second == {"entities": [], "truncated": False}
    assert body["usage"] == {"input_tokens": 5 + 2}
    assert [t.decode() for t in fake.received[0][1]["TEXT"].reshape(-1)] == texts


def test_pii_spans_carry_the_models_score(api):
    text = "write to ada.l@example.org today"
    body = api.post(url("pii"), json={"inputs": text}).json()
    [entity] = body["predictions"][0]["entities"]
    assert entity == {
        "text": "ada.l@example.org",
        "label": "EMAIL",
        "start": 9,
        "end": 26,
        "score": pytest.approx(0.5 + 17 / 100),
    }


def test_entities_that_are_not_the_texts_slice_are_a_502(api, fake):
    fake._spans = lambda model, sent, n, rid: {  # type: ignore[method-assign]
        "ENTITIES": np.array(
            [[b'[{"text": "Bob", "label": "PERSON", "start": 0, "end": 3}]']], dtype=object
        ),
        "NUM_TOKENS": np.array([[1]], dtype=np.int32),
        "TRUNCATED": np.array([[False]], dtype=bool),
    }
    assert_envelope(api.post(url("ner"), json={"inputs": "Ada"}), 502, "upstream_error")


def test_entity_item_cap(api, fake):
    error = assert_envelope(
        api.post(url("ner"), json={"inputs": ["x"] * 6}), 422, "validation_error"
    )
    assert error["message"] == "inputs holds 6 texts; the limit is 5 per request"
    assert fake.calls == []


def test_a_text_triton_refuses_is_named_as_the_requests_item(api, fake):
    assert api.post(url("ner"), json={"inputs": ["Ada met Bob."]}).status_code == 200
    # The first text is cached, so Triton is sent [the second] and refuses TEXT[0].
    body = {"inputs": ["Ada met Bob.", f"{REFUSE} Charles"]}
    error = assert_envelope(api.post(url("ner"), json=body), 422, "validation_error")
    assert error["message"] == "inputs.1 is not valid UTF-8 (byte 3)"
    assert error["param"] == "inputs.1"
    assert error["details"] == [
        {"loc": ["body", "inputs", 1], "msg": "is not valid UTF-8 (byte 3)"}
    ]
    assert [t.decode() for t in fake.received[-1][1]["TEXT"].reshape(-1)] == [f"{REFUSE} Charles"]
    error = assert_envelope(
        api.post(url("pii"), json={"inputs": f"{REFUSE} me"}), 422, "validation_error"
    )
    assert error["message"] == "inputs is not valid UTF-8 (byte 3)" and error["param"] == "inputs"


# --- image classification -------------------------------------------------------------------


def _check_image(prediction: dict, data: bytes, top_k: int = 5) -> None:
    size = png_size(data)
    assert size is not None
    assert (prediction["width"], prediction["height"]) == size
    ranked = prediction["top_k"]
    assert len(ranked) == top_k and all(r["label"] in IMAGE_LABELS for r in ranked)
    assert [r["score"] for r in ranked] == sorted((r["score"] for r in ranked), reverse=True)
    assert ranked[0] == {"label": prediction["label"], "score": pytest.approx(prediction["score"])}


def test_one_uploaded_file(api, fake):
    image = png(40, 30)
    response = api.post(url("imagenet"), files=files(("cat.png", image)))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["task"] == "image-classification" and body["usage"] == {"images": 1}
    [prediction] = body["predictions"]
    assert prediction["file"] == "cat.png"
    _check_image(prediction, image)
    assert fake.received[0][1]["IMAGE"].shape == (1, 1)
    assert bytes(fake.received[0][1]["IMAGE"][0, 0]) == image  # exactly the bytes sent


def test_several_files_each_answered_under_its_name(api, fake):
    images = [("a.png", png(20, 20, 1)), ("b.png", png(64, 16, 2)), ("c.png", png(17, 33, 3))]
    response = api.post(url("imagenet"), files=files(*images), data={"top_k": "3"})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert [p["file"] for p in predictions] == ["a.png", "b.png", "c.png"]
    for prediction, (_, data) in zip(predictions, images, strict=True):
        _check_image(prediction, data, top_k=3)
    assert [bytes(b) for b in fake.received[0][1]["IMAGE"].reshape(-1)] == [d for _, d in images]
    assert fake.calls == [("imagenet", "1", 3)]  # one Triton request for the batch


def test_base64_json_one_image_or_several_and_data_urls(api, fake):
    first, second = png(24, 24, 5), png(30, 18, 6)
    one = api.post(url("imagenet"), json={"inputs": b64(first), "top_k": 2}).json()
    [prediction] = one["predictions"]
    assert "file" not in prediction
    _check_image(prediction, first, top_k=2)
    many = api.post(
        url("imagenet"), json={"inputs": [b64(first), "data:image/png;base64," + b64(second)]}
    )
    assert many.status_code == 200, many.text
    for prediction, data in zip(many.json()["predictions"], (first, second), strict=True):
        _check_image(prediction, data)
    wrapped = "\n".join(re.findall(".{1,76}", b64(second)))  # as `base64` prints it
    assert api.post(url("imagenet"), json={"inputs": wrapped}).status_code == 200


def test_the_same_image_bytes_are_computed_once(api, fake):
    image = png(32, 32, 9)
    first = api.post(url("imagenet"), files=files(("one.png", image)))
    again = api.post(url("imagenet"), json={"inputs": [b64(image)]})
    assert first.status_code == again.status_code == 200
    assert first.headers["X-Cache"] == "MISS" and again.headers["X-Cache"] == "HIT"
    assert len(fake.calls) == 1
    expected = {k: v for k, v in first.json()["predictions"][0].items() if k != "file"}
    assert again.json()["predictions"][0] == expected
    # Twice in one request: sent once, answered twice under each name.
    other = png(16, 16, 10)
    both = api.post(url("imagenet"), files=files(("x.png", other), ("y.png", other)))
    assert [p["file"] for p in both.json()["predictions"]] == ["x.png", "y.png"]
    assert fake.calls[-1] == ("imagenet", "1", 1)


def test_image_count_cap(api, fake):
    error = assert_envelope(
        api.post(url("imagenet"), files=files(*((f"{i}.png", png(16, 16, i)) for i in range(5)))),
        422,
        "validation_error",
    )
    assert error["message"] == "file: more than 4 files; the limit is 4 per request"
    assert error["param"] == "file"
    error = assert_envelope(
        api.post(url("imagenet"), json={"inputs": [b64(png(16, 16))] * 5}), 422, "validation_error"
    )
    assert error["message"] == "inputs holds 5 images; the limit is 4 per request"
    assert fake.calls == []


def test_an_image_over_the_byte_cap_is_413_naming_it(api, fake):
    big = png(16, 16) + b"\x00" * (8 * KIB)  # under the body cap, over the image cap
    error = assert_envelope(
        api.post(url("imagenet"), files=files(("small.png", png(16, 16)), ("huge.png", big))),
        413,
        "payload_too_large",
    )
    assert error["message"] == "file.1 ('huge.png') is over the limit of 8192 bytes per image"
    assert error["details"] == {"item": "file.1", "file": "huge.png", "limit_bytes": 8192}
    assert error["param"] == "file.1"
    error = assert_envelope(
        api.post(url("imagenet"), json={"inputs": [b64(png(16, 16)), b64(big)]}),
        413,
        "payload_too_large",
    )
    assert error["message"] == "inputs.1 is over the limit of 8192 bytes per image"
    assert fake.calls == []


def test_image_models_take_bodies_up_to_their_own_cap(api, fake):
    images = files(*((f"{i}.png", png(40, 40, i) + b"\x00" * (6 * KIB)) for i in range(4)))
    assert api.post(url("imagenet"), files=images).status_code == 200  # ~25 KiB > 4 KiB
    text = {"inputs": "x" * 150, "pad": "y" * 5000}  # the global 4 KiB cap elsewhere
    assert_envelope(api.post(url("intent"), json=text), 413, "payload_too_large")
    over = json.dumps({"inputs": b64(b"\x00" * 40 * KIB)})  # over 48 KiB as base64
    error = assert_envelope(
        api.post(url("imagenet"), content=over, headers={"Content-Type": "application/json"}),
        413,
        "payload_too_large",
    )
    assert error["details"] == {"limit_bytes": 48 * KIB}

    def chunks():  # no Content-Length: refused as it streams
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n\r\n'
        for _ in range(60):
            yield b"\x00" * KIB

    streamed = api.post(
        url("imagenet"),
        content=chunks(),
        headers={"Content-Type": "multipart/form-data; boundary=b"},
    )
    assert streamed.status_code == 413
    assert len(fake.calls) == 1


@pytest.mark.parametrize(
    ("inputs", "where"),
    [
        ("not base64!", "inputs"),
        (["iVBORw0KGgo=", "%%%%"], "inputs.1"),
        (["iVBORw0KGgo", "x"], "inputs.0"),  # unpadded
        (["é" * 8], "inputs.0"),
    ],
)
def test_bad_base64_is_422_naming_the_item(api, fake, inputs, where):
    error = assert_envelope(
        api.post(url("imagenet"), json={"inputs": inputs}), 422, "validation_error"
    )
    assert error["message"] == f"{where}: not valid base64 (the standard alphabet, padded)"
    assert error["param"] == where
    assert fake.calls == []


def test_triton_refusing_an_image_names_the_requests_item_and_file(api, fake):
    good, other = png(20, 20, 1), png(20, 20, 2)
    # The first image is cached, so Triton is sent [notes.txt, other] and refuses IMAGE[0].
    assert api.post(url("imagenet"), json={"inputs": b64(good)}).status_code == 200
    sent = files(("good.png", good), ("notes.txt", b"just some text"), ("other.png", other))
    error = assert_envelope(api.post(url("imagenet"), files=sent), 422, "validation_error")
    assert error["message"] == (
        "file.1 ('notes.txt'): not a JPEG, PNG, WebP or GIF image (its first bytes match no "
        "known format)"
    )
    assert error["param"] == "file.1"
    assert error["details"][0]["file"] == "notes.txt"
    assert error["details"][0]["loc"] == ["body", "file", 1]
    assert [bytes(b) for b in fake.received[-1][1]["IMAGE"].reshape(-1)] == [
        b"just some text",
        other,
    ]
    error = assert_envelope(
        api.post(url("imagenet"), json={"inputs": [b64(other), b64(b"GIF-ish")]}),
        422,
        "validation_error",
    )
    assert error["message"].startswith("inputs.1: not a JPEG, PNG, WebP or GIF image")


@pytest.mark.parametrize(
    ("parts", "status", "start"),
    [
        ([("file", (None, b"not a file", None))], 422, "file: a file part must be a file"),
        ([("top_k", (None, b"2", None))], 422, "file: no files"),
        ([("image", ("a.png", b"x", "image/png"))], 422, "body.image: Extra inputs are not"),
        ([*files(("a.png", b"x")), ("method", (None, b"extractive", None))], 422, "body.method"),
        ([*files(("a.png", b"x")), ("top_k", (None, b"two", None))], 422, "top_k: must be a whole"),
        (
            [*files(("a.png", b"x")), ("top_k", ("k.txt", b"2", None))],
            422,
            "top_k: must be a plain",
        ),
        (files(("empty.png", b"")), 422, "file.0 ('empty.png'): the image is empty"),
    ],
)
def test_multipart_refusals(api, fake, parts, status, start):
    error = assert_envelope(
        api.post(url("imagenet"), files=parts),
        status,
        "validation_error" if status == 422 else "bad_request",
    )
    assert error["message"].startswith(start), error["message"]
    assert fake.calls == []


def test_malformed_multipart_is_400(api):
    for raw, content_type in (
        (
            b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\nxx',
            "multipart/form-data; boundary=b",
        ),
        (b"whatever", "multipart/form-data"),
    ):
        assert_envelope(
            api.post(url("imagenet"), content=raw, headers={"Content-Type": content_type}),
            400,
            "bad_request",
        )


def test_top_k_is_bounded_by_the_labels(api):
    error = assert_envelope(
        api.post(url("imagenet"), json={"inputs": b64(png(16, 16)), "top_k": 13}),
        422,
        "validation_error",
    )
    assert error["message"] == "top_k: must be at most 12 for model 'imagenet'"


# --- summarization --------------------------------------------------------------------------

TEXT = "The cat sat. It was a very long and sunny afternoon in June. Then it rained hard."


def test_extractive_summaries_are_slices_of_the_input(api, fake):
    response = api.post(url("summarize"), json={"inputs": [TEXT], "max_sentences": 2})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["task"] == "summarization"
    [summary] = body["predictions"]
    assert summary["method"] == "extractive" and summary["source_chars"] == len(TEXT)
    assert summary["source_sentences"] == 3 and summary["chunks"] == 1
    assert [s["index"] for s in summary["sentences"]] == [1, 2]
    for sentence in summary["sentences"]:
        assert sentence["text"] == TEXT[sentence["start"] : sentence["end"]]
    assert summary["summary"] == " ".join(s["text"] for s in summary["sentences"])
    assert body["usage"] == {"input_tokens": len(TEXT.split())}
    sent = fake.received[0][1]
    assert sent["METHOD"].tolist() == [[b"extractive"]]
    assert sent["MAX_SENTENCES"].tolist() == [[2]] and sent["MAX_TOKENS"].tolist() == [[128]]


def test_abstractive_summaries_get_the_generation_deadline(api, fake):
    response = api.post(
        url("summarize"),
        json={"inputs": [TEXT, "One two three."], "method": "abstractive", "max_tokens": 4},
    )
    assert response.status_code == 200, response.text
    first, second = response.json()["predictions"]
    assert first["summary"] == "The cat sat. It" and first["sentences"] == []
    assert second["method"] == "abstractive"
    assert fake.received[0][1]["MAX_TOKENS"].tolist() == [[4], [4]]
    assert 290 < fake.infer_kwargs[-1]["client_timeout"] <= 300  # generation.timeout_s
    api.post(url("summarize"), json={"inputs": "Short one."})
    assert fake.infer_kwargs[-1]["client_timeout"] <= 10  # extractive: the usual deadline


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"inputs": TEXT, "max_sentences": 0}, "body.max_sentences"),
        ({"inputs": TEXT, "max_sentences": 51}, "body.max_sentences"),
        ({"inputs": TEXT, "max_tokens": 1025}, "body.max_tokens"),
        ({"inputs": TEXT, "method": "poem"}, "body.method"),
        ({"inputs": [TEXT] * 4}, "inputs"),
    ],
)
def test_summary_options_are_checked(api, fake, body, where):
    error = assert_envelope(api.post(url("summarize"), json=body), 422, "validation_error")
    assert error["message"].startswith(where), error["message"]
    assert fake.calls == []


def test_a_text_chat_refuses_is_named_as_the_requests_item(api, fake):
    assert api.post(url("summarize"), json={"inputs": [TEXT]}).status_code == 200
    body = {"inputs": [TEXT, "Short one.", f"{REFUSE} this. Twice."]}
    error = assert_envelope(api.post(url("summarize"), json=body), 422, "validation_error")
    reason = f"summarizing it failed: {CHAT_SAYS['invalid']}"  # no "invalid:" kind tag
    assert error["message"] == f"inputs.2: {reason}"
    assert error["param"] == "inputs.2"
    assert error["details"] == [{"loc": ["body", "inputs", 2], "msg": reason}]
    assert fake.calls[-1] == ("summarize", "1", 2)  # TEXT was a hit: TEXT[1] is inputs.2
    one = api.post(url("summarize"), json={"inputs": f"{REFUSE} it."})
    error = assert_envelope(one, 422, "validation_error")
    assert error["message"] == f"inputs: {reason}" and error["param"] == "inputs"


def test_a_full_chat_behind_summarize_is_503_overloaded(api, fake):
    body = {"inputs": ["Short one.", f"{BUSY} now."], "method": "abstractive"}
    response = api.post(url("summarize"), json=body)
    error = assert_envelope(response, 503, "overloaded")
    assert response.headers["Retry-After"] == "1"
    # As the chat routes answer a full model: not chat's counts of who runs and waits.
    assert error["message"] == "model 'summarize' is at capacity; retry shortly"


@pytest.mark.parametrize(
    ("message", "status", "kind", "text"),
    [
        # chat's failure passed on by summarize, under the status it chose or another.
        ("TEXT[1]: summarizing it failed: overloaded: 4 wait", "UNAVAILABLE", Overloaded, None),
        ("TEXT[1]: summarizing it failed: overloaded: 4 wait", "INTERNAL", Overloaded, None),
        ("overloaded: 4 sequences wait", "UNAVAILABLE", Overloaded, None),
        (
            "invalid: the prompt is too long",
            "INVALID_ARGUMENT",
            InputInvalid,
            "the prompt is too long",
        ),
        (
            "TEXT[0]: summarizing it failed: invalid: too long",
            "INVALID_ARGUMENT",
            InputInvalid,
            "TEXT[0]: summarizing it failed: too long",
        ),
        # A refusal's own text after its kind is not a kind.
        (
            "TEXT[0]: summarizing it failed: invalid: text says: overloaded: x",
            "INVALID_ARGUMENT",
            InputInvalid,
            "TEXT[0]: summarizing it failed: text says: overloaded: x",
        ),
        ("IMAGE[0]: not a PNG", "INVALID_ARGUMENT", InputInvalid, "IMAGE[0]: not a PNG"),
    ],
)
def test_a_runners_kind_decides_the_error(message, status, kind, text):
    exc = InferenceServerException(msg=f"[request id: r1] {message}", status=f"StatusCode.{status}")
    error = map_error(exc, "summarize", "1", 5)
    assert type(error) is kind
    if text is not None:
        assert error.message == text


# --- every task -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "body", "field"),
    [
        ("intent", {"inputs": "x", "method": "extractive"}, "method"),
        ("ner", {"inputs": "x", "top_k": 2}, "top_k"),
        ("pii", {"inputs": "x", "return_all_scores": True}, "return_all_scores"),
        ("imagenet", {"inputs": "aGk=", "max_sentences": 2}, "max_sentences"),
        ("summarize", {"inputs": "x", "top_k": 1}, "top_k"),
    ],
)
def test_another_tasks_field_is_refused_naming_it(api, fake, model, body, field):
    error = assert_envelope(api.post(url(model), json=body), 422, "validation_error")
    assert error["message"] == f"body.{field}: Extra inputs are not permitted"
    assert error["param"] == field
    assert fake.calls == []


@pytest.mark.parametrize(
    ("model", "body"),
    [
        ("ner", {"inputs": "Ada"}),
        ("pii", {"inputs": "a@b.io"}),
        ("imagenet", {"inputs": b64(png(16, 16))}),
        ("summarize", {"inputs": "One. Two."}),
    ],
)
def test_versions_route_for_every_task(api, fake, model, body):
    default = api.post(url(model), json=body)
    explicit = api.post(url(model), json=body, headers={"X-Model-Version": "1"})
    path = api.post(f"/v1/models/{model}/versions/1/predict", json=body)
    assert default.status_code == explicit.status_code == path.status_code == 200
    expected_default = "2" if model == "ner" else "1"
    assert default.headers["X-Model-Version"] == default.json()["version"] == expected_default
    assert explicit.headers["X-Model-Version"] == path.headers["X-Model-Version"] == "1"
    assert fake.calls[0] == (model, expected_default, 1)
    error = assert_envelope(
        api.post(url(model), json=body, headers={"X-Model-Version": "7"}), 404, "version_not_found"
    )
    assert error["details"]["available_versions"] == (["1", "2"] if model == "ner" else ["1"])


def test_unknown_and_other_route_models(api, fake):
    error = assert_envelope(api.post(url("nope"), json={"inputs": "x"}), 404, "model_not_found")
    assert "imagenet" in error["details"]["available"]
    error = assert_envelope(api.post(url("embed"), json={"inputs": "x"}), 404, "model_not_found")
    assert "use /v1/embeddings" in error["message"]
    assert error["details"]["available"] == ["imagenet", "intent", "ner", "pii", "summarize"]
    assert fake.calls == []


def test_models_lists_every_kind_with_its_task(api):
    listed = {m["id"]: m for m in api.get("/v1/models").json()["data"]}
    assert {k: m["task"] for k, m in listed.items()} == {
        "embed": "feature-extraction",
        "intent": "text-classification",
        "ner": "token-classification",
        "pii": "token-classification",
        "imagenet": "image-classification",
        "summarize": "summarization",
    }
    imagenet = api.get("/v1/models/imagenet").json()
    assert imagenet["labels"] == IMAGE_LABELS and imagenet["image_size"] == 224
    assert imagenet["max_image_bytes"] == 20 << 20
    assert listed["summarize"]["methods"] == ["extractive", "abstractive"]
    assert listed["ner"]["default_version"] == "2" and listed["intent"]["methods"] is None


def test_the_openapi_documents_every_body_and_answer(api):
    schema = api.get("/openapi.json").json()
    for path in ("/v1/models/{model}/predict", "/v1/models/{model}/versions/{version}/predict"):
        operation = schema["paths"][path]["post"]
        content = operation["requestBody"]["content"]
        bodies = content["application/json"]["schema"]["anyOf"]
        assert [b["title"] for b in bodies] == [
            "PredictRequest",
            "EntitiesRequest",
            "ImageRequest",
            "SummarizeRequest",
        ]
        assert all(b["additionalProperties"] is False for b in bodies)
        examples = content["application/json"]["examples"]
        assert set(examples) == {
            "text-classification",
            "token-classification",
            "image-classification",
            "summarization",
        }
        upload = content["multipart/form-data"]["schema"]
        assert upload["properties"]["file"]["items"] == {"type": "string", "format": "binary"}
        answer = operation["responses"]["200"]["content"]["application/json"]
        refs = [branch["$ref"].rsplit("/", 1)[-1] for branch in answer["schema"]["anyOf"]]
        assert refs == [
            "PredictResponse",
            "EntitiesResponse",
            "ImagesResponse",
            "SummariesResponse",
        ]
        assert set(answer["examples"]) == set(examples)
        assert "413" in operation["responses"] and "422" in operation["responses"]
    # Each example is a body its task's model accepts.
    models = {
        "text-classification": "intent",
        "token-classification": "ner",
        "image-classification": "imagenet",
        "summarization": "summarize",
    }
    for task, example in examples.items():
        assert api.post(url(models[task]), json=example["value"]).status_code == 200, task


def test_the_image_answer_example_names_imagenets_own_classes():
    """The labels a client would see: the exported labels.json's names (no "tabby, tabby
    cat": the model gives each class its first WordNet name)."""
    classes = set(image_export.class_names())
    example = ANSWER_EXAMPLES["image-classification"]["value"]
    for prediction in example["predictions"]:
        ranked = prediction["top_k"]
        assert {r["label"] for r in ranked} <= classes
        assert ranked[0] == {"label": prediction["label"], "score": prediction["score"]}
        assert [r["score"] for r in ranked] == sorted((r["score"] for r in ranked), reverse=True)
    assert example["usage"] == {"images": len(example["predictions"])}


# --- the card of each kind --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "partial", "needs"),
    [
        ("token-classification", {"labels": [], "num_labels": 0}, "labels: a token-classification"),
        ("image-classification", {"image_size": None}, "image_size: an image-classification"),
        ("summarization", {"methods": None}, "methods: a summarization model needs them"),
    ],
)
def test_a_card_fits_its_new_task(task, partial, needs):
    fields = {
        "token-classification": {"labels": ["PERSON"], "num_labels": 1},
        "image-classification": {
            "labels": ["cat"],
            "num_labels": 1,
            "image_size": 224,
            "max_image_pixels": 10,
            "max_image_bytes": 10,
        },
        "summarization": {"methods": ["extractive"]},
    }[task]
    card = complete_card({"model": "m", "task": task, **fields})
    assert set(card["triton_io"]["inputs"]) == EXPECTED_IO[task][0]
    ModelCard.model_validate(card)
    with pytest.raises(ValidationError, match=needs):
        ModelCard.model_validate({**card, **partial})
