"""Bad input reaches a clear error, never a crashed instance or a hang; afterwards the
model still answers correctly."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from .conftest import infer, text_input

pytestmark = pytest.mark.integration

MODELS = ("intent", "sentiment", "embed")
PROBE = ["I want to cancel my order and get a refund"]


def _fingerprint(client, model):
    out = "EMBEDDING" if model == "embed" else "SCORES"
    return infer(client, model, PROBE, (out,))[out]


def _still_correct(client, model, before):
    np.testing.assert_allclose(_fingerprint(client, model), before, atol=1e-5)


def _raw_infer(client, model, tensor):
    return client.infer(model, [tensor], client_timeout=60)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize(
    ("texts", "message"),
    [
        ([""], "TEXT[0] is empty"),
        (["   \t\n "], "TEXT[0] is empty"),
        (["fine", b"\xff\xfe bad"], "TEXT[1] is not valid UTF-8"),
        ([b"\xc3\x28"], "TEXT[0] is not valid UTF-8"),
    ],
)
def test_refused_with_invalid_argument(client, model, texts, message):
    before = _fingerprint(client, model)
    with pytest.raises(InferenceServerException) as err:
        _raw_infer(client, model, text_input(texts))
    assert err.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert message in err.value.message()
    _still_correct(client, model, before)


@pytest.mark.parametrize("model", MODELS)
def test_long_text_is_truncated_to_max_length(client, model, repository):
    before = _fingerprint(client, model)
    long_text = "the service was slow but the staff were kind " * 2300  # > 100 000 chars
    assert len(long_text) > 100_000
    got = infer(client, model, [long_text, "short"], ("NUM_TOKENS", "TRUNCATED"))
    assert got["NUM_TOKENS"].reshape(-1).tolist() == [256, 3]
    assert got["TRUNCATED"].reshape(-1).tolist() == [True, False]
    _still_correct(client, model, before)


def test_long_text_equals_its_first_256_tokens(client):
    """Truncation keeps the head of the text: same result as the text cut by hand."""
    words = "terrible " * 300
    cut = " ".join(words.split()[:254])  # 254 words + [CLS] + [SEP] = 256 tokens
    a = infer(client, "sentiment", [words + "wonderful " * 3000], ("SCORES",))["SCORES"]
    b = infer(client, "sentiment", [cut], ("SCORES",))["SCORES"]
    np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("model", MODELS)
def test_zero_batch_wrong_dtype_wrong_shape(client, model):
    before = _fingerprint(client, model)
    empty = grpcclient.InferInput("TEXT", [0, 1], "BYTES")
    empty.set_data_from_numpy(np.zeros((0, 1), dtype=object))
    wrong_dtype = grpcclient.InferInput("TEXT", [1, 1], "FP32")
    wrong_dtype.set_data_from_numpy(np.zeros((1, 1), dtype=np.float32))
    wrong_shape = grpcclient.InferInput("TEXT", [1, 2], "BYTES")
    wrong_shape.set_data_from_numpy(np.array([["a", "b"]], dtype=object))
    too_big = text_input(["x"] * 257)  # max_batch_size is 256
    wrong_name = grpcclient.InferInput("TEXTS", [1, 1], "BYTES")
    wrong_name.set_data_from_numpy(np.array([["a"]], dtype=object))
    cases = [
        (empty, "got 0"),
        (wrong_dtype, "data-type is 'FP32'"),
        (wrong_shape, "unexpected shape"),
        (too_big, "batch-size must be <= 256"),
        (wrong_name, "TEXTS"),
    ]
    for tensor, message in cases:
        with pytest.raises(InferenceServerException) as err:
            _raw_infer(client, model, tensor)
        assert err.value.status() == "StatusCode.INVALID_ARGUMENT", err.value
        assert message in err.value.message()
    _still_correct(client, model, before)


def test_unicode_round_trips(client):
    texts = ["NUL\x00inside", "\u202eRTL override", "emoji 😀🎉 text", "ünïcödé façade"]
    got = infer(client, "sentiment", texts, ("LABEL", "NUM_TOKENS"))
    assert got["LABEL"].shape == (4, 1)
    assert all(n > 2 for n in got["NUM_TOKENS"].reshape(-1))


def test_invalid_request_in_a_batch_fails_alone(client):
    """A bad request merged into a dynamic batch must not fail its neighbours."""
    import concurrent.futures as cf

    def good(i):
        return infer(client, "sentiment", [f"what a lovely day number {i}"], ("LABEL",))

    def bad(_):
        with pytest.raises(InferenceServerException):
            _raw_infer(client, "sentiment", text_input([""]))
        return None

    with cf.ThreadPoolExecutor(16) as pool:
        futures = [pool.submit(bad if i % 4 == 0 else good, i) for i in range(64)]
        results = [f.result() for f in futures]
    goods = [r for r in results if r is not None]
    assert len(goods) == 48
    assert all(r["LABEL"][0, 0] == b"positive" for r in goods)
