"""The "hf-seq2seq" kind without Triton (export/hf_seq2seq_export.py,
export/runtime/seq2seq_pipeline.py): a tiny random T5 and a tokenizer trained here,
exported once per module through optimum (seconds), its runner against PyTorch (encoder
states, first-step logits, greedy ids batched and one at a time), the stops, the limits,
the refusals, cancellation, the build with its fidelity check, the configs and the card."""

from __future__ import annotations

import json
import shutil
import types
from pathlib import Path

import numpy as np
import pytest
from tqdm import tqdm

from export import cards, hf_seq2seq_export
from export.runtime.batch_model import BatchCancelled, ItemError
from export.runtime.seq2seq_pipeline import Options, Seq2SeqPipeline
from export.served import ServedSpec
from tests.tiny_hf import tiny_t5, torch_greedy, wordpiece_tokenizer

MAX_LENGTH = 32
# Different lengths, one word to over MAX_LENGTH tokens, so the batch is padded.
TEXTS = [
    "hello",
    "the quick brown fox",
    "a tiny random model speaks nonsense but it speaks fast",
    "summaries of long texts",
    "plants turn light water and air into sugar and the city voted",
    "world",
    "the lazy dog jumps over the brown fox this is a test",
    "bus network council",
    "the " * 40,
]
NEW_TOKENS = 12


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("tiny_t5")
    tiny_t5(directory)
    return directory


@pytest.fixture(scope="module")
def exported(tmp_path_factory, model_dir) -> Path:
    out = tmp_path_factory.mktemp("tiny_t5_onnx")
    graphs = hf_seq2seq_export.export(str(model_dir), out)
    assert set(graphs) == {"encoder_model.onnx", "decoder_model_merged.onnx"}
    assert not (out / "_optimum").exists()
    return out


@pytest.fixture(scope="module")
def torch_model(model_dir):
    from transformers import AutoModelForSeq2SeqLM

    return AutoModelForSeq2SeqLM.from_pretrained(model_dir).eval()


@pytest.fixture(scope="module")
def hf_tokenizer(model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


def params(**extra: str) -> dict[str, str]:
    return {"max_length": str(MAX_LENGTH), "ort_intra_op_threads": "2", **extra}


@pytest.fixture(scope="module")
def pipeline(exported) -> Seq2SeqPipeline:
    return Seq2SeqPipeline(exported, params())


def column(values: list, dtype=np.object_) -> np.ndarray:
    return np.array([[v] for v in values], dtype=dtype)


# --- (a) the graphs against PyTorch ---------------------------------------------------


def test_encoder_and_first_step_logits_match_pytorch(pipeline, torch_model):
    import torch

    rows = pipeline.tokenize(TEXTS)
    hidden, mask = pipeline.encode(rows)
    start = np.zeros((len(rows), 1), dtype=np.int64)
    logits, _ = pipeline.step(start, hidden, mask, None)
    ids, _ = pipeline.pad(rows)
    with torch.no_grad():
        ids_t, mask_t = torch.from_numpy(ids), torch.from_numpy(mask)
        reference = torch_model.get_encoder()(input_ids=ids_t, attention_mask=mask_t)
        first = torch_model(
            input_ids=ids_t, attention_mask=mask_t, decoder_input_ids=torch.from_numpy(start)
        ).logits[:, -1, :]
    valid = mask[..., None].astype(bool)
    assert np.abs(np.where(valid, hidden - reference.last_hidden_state.numpy(), 0)).max() < 1e-4
    assert np.abs(logits - first.numpy()).max() < 1e-4
    assert logits.shape == (len(TEXTS), 200)


def test_tokens_match_the_hugging_face_tokenizer(pipeline, hf_tokenizer, exported):
    rows = pipeline.tokenize(TEXTS)
    expected = [hf_tokenizer(t, truncation=True, max_length=MAX_LENGTH).input_ids for t in TEXTS]
    assert rows == expected
    assert all(row[-1] == 1 for row in rows)  # "</s>" kept when truncated
    prefixed = Seq2SeqPipeline(exported, params(prefix="summarize: ")).tokenize(TEXTS[:3])
    assert prefixed == [hf_tokenizer("summarize: " + t).input_ids for t in TEXTS[:3]]


# --- (b) greedy ids -----------------------------------------------------------------------


def test_greedy_ids_match_pytorch_batched_and_one_at_a_time(pipeline, torch_model):
    rows = pipeline.tokenize(TEXTS)
    expected = torch_greedy(torch_model, rows, NEW_TOKENS)
    assert len({len(r) for r in rows}) >= 6
    assert len({tuple(e) for e in expected}) >= 6  # the check is not vacuous
    never = lambda: False  # noqa: E731
    assert pipeline.generate(rows, [NEW_TOKENS] * len(rows), never) == expected
    assert [pipeline.generate([r], [NEW_TOKENS], never)[0] for r in rows] == expected


def test_run_serves_the_summarize_outputs(exported, torch_model, hf_tokenizer):
    # chunk_rows 3: the sorted rows go through in three chunks.
    pipeline = Seq2SeqPipeline(exported, params(chunk_rows="3", default_max_tokens=str(NEW_TOKENS)))
    rows = pipeline.tokenize(TEXTS)
    expected = torch_greedy(torch_model, rows, NEW_TOKENS)
    out = pipeline.run(TEXTS, lambda: False)
    assert set(out) == {
        "SUMMARY",
        "METHOD",
        "SENTENCES",
        "SOURCE_SENTENCES",
        "CHUNKS",
        "NUM_TOKENS",
    }
    summaries = [s.decode("utf-8") for s in out["SUMMARY"][:, 0]]
    assert summaries == [
        hf_tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in expected
    ]
    assert all(out[k].shape == (len(TEXTS), 1) for k in out)
    assert set(out["METHOD"][:, 0]) == {b"abstractive"}
    assert set(out["SENTENCES"][:, 0]) == {b"[]"}
    assert out["SOURCE_SENTENCES"].tolist() == [[0]] * len(TEXTS)
    assert out["CHUNKS"].tolist() == [[1]] * len(TEXTS)
    assert out["NUM_TOKENS"][:, 0].tolist() == [len(r) for r in rows]
    assert out["NUM_TOKENS"].dtype == np.int32


# --- (c) stops, limits, truncation, refusals, cancellation ------------------------------


def test_eos_stops_a_row_and_the_others_run_on(exported, tmp_path, pipeline, torch_model):
    rows = pipeline.tokenize(TEXTS)
    free = pipeline.generate(rows, [NEW_TOKENS] * len(rows), lambda: False)
    # An eos id the model emits for the third text at a later step, and not before.
    step = next(k for k in range(1, len(free[2])) if free[2][k] not in free[2][:k])
    eos = free[2][step]
    folder = tmp_path / "eos"
    shutil.copytree(exported, folder)
    generation = json.loads((folder / "generation_config.json").read_text())
    (folder / "generation_config.json").write_text(json.dumps({**generation, "eos_token_id": eos}))
    stopping = Seq2SeqPipeline(folder, params())
    ours = stopping.generate(rows, [NEW_TOKENS] * len(rows), lambda: False)
    assert ours[2] == free[2][: step + 1]
    assert ours == torch_greedy(torch_model, rows, NEW_TOKENS, eos_token_id=eos)
    assert any(len(r) == NEW_TOKENS for r in ours)  # rows without that id ran to the limit


def test_bart_forced_first_and_last_tokens_match_pytorch(tmp_path):
    """BART's layout (decoder start = eos, a forced BOS first, eos forced at the limit)."""
    import torch
    from transformers import BartConfig, BartForConditionalGeneration

    torch.manual_seed(0)
    config = BartConfig(
        vocab_size=200,
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=64,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=1,
        decoder_start_token_id=1,
        forced_bos_token_id=2,
        forced_eos_token_id=1,
    )
    model = BartForConditionalGeneration(config).eval()
    model.save_pretrained(tmp_path / "bart")
    wordpiece_tokenizer(tmp_path / "bart")
    hf_seq2seq_export.export(str(tmp_path / "bart"), tmp_path / "onnx")
    pipeline = Seq2SeqPipeline(tmp_path / "onnx", params())
    ids = pipeline.ids
    assert (ids.decoder_start, ids.forced_bos, ids.forced_eos) == (1, 2, 1)
    rows = pipeline.tokenize(TEXTS)
    forced = {"decoder_start_token_id": 1, "forced_bos_token_id": 2, "forced_eos_token_id": 1}
    expected = torch_greedy(model, rows, 6, **forced)
    assert all(e[0] == 2 and e[-1] == 1 for e in expected)
    assert pipeline.generate(rows, [6] * len(rows), lambda: False) == expected


def test_max_tokens_is_honoured_per_row(pipeline, torch_model):
    rows = pipeline.tokenize(TEXTS[:4])
    options = pipeline.options({"MAX_TOKENS": column([1, 3, 7, 3], np.int32)}, 4)
    assert [o.max_new_tokens for o in options] == [1, 3, 7, 3]
    ours = pipeline.generate(rows, [o.max_new_tokens for o in options], lambda: False)
    assert [len(r) for r in ours] == [1, 3, 7, 3]
    full = torch_greedy(torch_model, rows, 7)
    assert ours == [f[: o.max_new_tokens] for f, o in zip(full, options, strict=True)]
    out = pipeline.run(list(zip(TEXTS[:4], options, strict=True)), lambda: False)
    assert out["SUMMARY"].shape == (4, 1)
    # The defaults: absent options, an empty METHOD, MAX_SENTENCES read and ignored.
    defaults = pipeline.options({"METHOD": column([b"", b"abstractive"])}, 2)
    assert defaults == [Options(128), Options(128)]
    assert pipeline.options({"MAX_SENTENCES": column([99], np.int32)}, 1) == [Options(128)]


def test_truncation_shows_in_num_tokens(pipeline, hf_tokenizer):
    long_text, short_text = "the quick brown fox " * 30, "hello world"
    out = pipeline.run([(long_text, Options(2)), (short_text, Options(2))], lambda: False)
    assert len(hf_tokenizer(long_text).input_ids) > MAX_LENGTH
    assert out["NUM_TOKENS"][:, 0].tolist() == [MAX_LENGTH, len(hf_tokenizer(short_text).input_ids)]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"METHOD": column([b"abstractive", b"extractive"])}, "METHOD[1]: 'extractive'"),
        ({"METHOD": column([b"\xff", b"abstractive"])}, "METHOD[0]: is not valid UTF-8"),
        ({"MAX_TOKENS": column([0, 5], np.int32)}, "MAX_TOKENS[0]: 0 is out of range; use 1..512"),
        ({"MAX_TOKENS": column([5, 513], np.int32)}, "MAX_TOKENS[1]: 513 is out of range"),
        ({"MAX_TOKENS": column([5.0, 1.0], np.float32)}, "MAX_TOKENS: must be integers"),
        ({"MAX_TOKENS": column([5], np.int32)}, "MAX_TOKENS: 1 values for 2 texts"),
    ],
)
def test_bad_options_are_item_errors(pipeline, extra, message):
    with pytest.raises(ItemError, match=message.replace("[", r"\[").replace("]", r"\]")):
        pipeline.options(extra, 2)


def test_bad_texts_are_item_errors(pipeline):
    with pytest.raises(ItemError, match=r"TEXT\[3\] is not valid UTF-8"):
        pipeline.decode(column([b"ok", b"\xc3\x28"]), 2)
    with pytest.raises(ItemError, match="holds no items"):
        pipeline.decode(np.empty((0, 1), dtype=np.object_), 0)
    with pytest.raises(ItemError, match=r"TEXT\[0\] is empty"):
        pipeline.decode(column([b"  "]), 0)
    assert pipeline.decode(column(["ünï".encode(), b"x"]), 0) == ["ünï", "x"]


def test_cancellation_stops_between_steps(exported):
    pipeline = Seq2SeqPipeline(exported, params(cancel_poll_s="0", default_max_tokens="20"))
    with pytest.raises(BatchCancelled, match="step 0"):
        pipeline.run(TEXTS, lambda: True)
    polls = [0]

    def after_three() -> bool:
        polls[0] += 1
        return polls[0] > 3

    with pytest.raises(BatchCancelled, match="step 3"):
        pipeline.run(TEXTS, after_three)


def test_providers_fall_back_to_the_cpu(exported):
    gpu = hf_seq2seq_export.runner_params(spec_for("x"), "gpu")["providers"]
    assert gpu == "CUDAExecutionProvider,CPUExecutionProvider"
    pipeline = Seq2SeqPipeline(exported, params(providers=gpu))
    assert pipeline.providers[-1] == "CPUExecutionProvider"


# --- the builder --------------------------------------------------------------------------


def spec_for(path: str, **options: str) -> ServedSpec:
    return ServedSpec(
        name="tiny_s2s",
        task="summarization",
        kind="hf-seq2seq",  # type: ignore[arg-type]  # added to Kind by the lead
        package="",
        description="a tiny random T5",
        licence="Apache-2.0",
        version_description=f"from {path}",
        max_length=MAX_LENGTH,
        options=tuple(sorted({"path": path, **options}.items())),
    )


def test_build_checks_fidelity_and_writes_facts(model_dir, tmp_path):
    spec = spec_for(str(model_dir), prefix="summarize: ", max_new_tokens="16")
    with tqdm(disable=True) as bar:
        facts = hf_seq2seq_export.build(spec, tmp_path, bar)
    for name in hf_seq2seq_export.ARTIFACT_FILES[:-1]:
        assert (tmp_path / name).is_file(), name
    quality = facts["quality"]
    assert quality["seq2seq_greedy_identical"] == "8/8"
    assert quality["seq2seq_tokenizer_identical"] == "8/8"
    assert quality["seq2seq_max_abs_logit_diff"] < 1e-4
    assert quality["seq2seq_max_abs_encoder_diff"] < 1e-4
    assert facts["generation"] == {
        "decoder_start_token_id": 0,
        "eos_token_ids": [1],
        "pad_token_id": 0,
        "forced_bos_token_id": None,
        "forced_eos_token_id": None,
    }
    assert facts["onnx_io"] == {"inputs": {}, "outputs": {}}
    assert "use_cache_branch" in facts["graphs"]["decoder_model_merged.onnx"]["inputs"]
    json.dumps(facts)  # facts.json

    for target in ("cpu", "gpu"):
        config = hf_seq2seq_export.config(spec, target, facts)
        assert config.backend == "python"
        assert [i.name for i in config.input] == ["TEXT", "METHOD", "MAX_SENTENCES", "MAX_TOKENS"]
        assert [i.optional for i in config.input] == [False, True, True, True]
        outputs = [o.name for o in config.output]
        assert outputs == [
            "SUMMARY",
            "METHOD",
            "SENTENCES",
            "SOURCE_SENTENCES",
            "CHUNKS",
            "NUM_TOKENS",
        ]
        params_ = {k: v.string_value for k, v in config.parameters.items()}
        assert params_["prefix"] == "summarize: "
        assert params_["default_max_tokens"] == "16"
        assert hf_seq2seq_export.extra_configs(spec, target, facts) == {}
    # The served runner reads what the config says.
    served = Seq2SeqPipeline(tmp_path, params_)
    assert served.options({}, 1) == [Options(16)]

    from frontend.catalog.card import ModelCard

    fields = hf_seq2seq_export.card_fields(spec, facts, "gpu")
    card = cards.served_card(spec, facts, "gpu", fields)
    ModelCard.model_validate_json(json.dumps(card))
    assert card["methods"] == ["abstractive"]
    assert "truncated to the first 32" in card["truncation"]
    assert set(card["triton_io"]["inputs"]) == {"TEXT", "METHOD", "MAX_SENTENCES", "MAX_TOKENS"}


def test_build_refuses_an_artifact_that_differs(model_dir, tmp_path, monkeypatch):
    spec = spec_for(str(model_dir), logit_atol="1e-12")
    with tqdm(disable=True) as bar, pytest.raises(hf_seq2seq_export.FidelityError, match="logits"):
        hf_seq2seq_export.build(spec, tmp_path, bar)
    with pytest.raises(ValueError, match="no model directory"):
        hf_seq2seq_export.build(spec_for(""), tmp_path, tqdm(disable=True))


# --- model.py as Triton drives it -----------------------------------------------------------


class Tensor:
    def __init__(self, name: str, array: np.ndarray) -> None:
        self._name, self._array = name, array

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> np.ndarray:
        return self._array


class Request:
    def __init__(self, texts: list[str], **extra: np.ndarray) -> None:
        self.inputs = {"TEXT": Tensor("TEXT", column([t.encode() for t in texts]))}
        self.inputs.update({k: Tensor(k, v) for k, v in extra.items()})

    def is_cancelled(self) -> bool:
        return False


def fake_pb_utils(logged: list[str]) -> types.SimpleNamespace:
    """What BatchedModel uses of triton_python_backend_utils."""

    class TritonError:
        INTERNAL, INVALID_ARG, CANCELLED = range(3)

        def __init__(self, message: str, code: int = 0) -> None:
            self.message = lambda: message

    class InferenceResponse:
        def __init__(self, output_tensors=(), error=None) -> None:
            self.output_tensors = lambda: list(output_tensors)
            self.has_error = lambda: error is not None
            self.error = lambda: error

    class MetricFamily:
        COUNTER, GAUGE = range(2)

        def __init__(self, **kwargs: object) -> None:
            pass

        def Metric(self, labels: dict[str, str]) -> types.SimpleNamespace:  # Triton's name
            return types.SimpleNamespace(set=lambda v: None, increment=lambda v: None)

    return types.SimpleNamespace(
        Tensor=Tensor,
        TritonError=TritonError,
        InferenceResponse=InferenceResponse,
        MetricFamily=MetricFamily,
        get_input_tensor_by_name=lambda request, name: request.inputs.get(name),
        Logger=types.SimpleNamespace(log_info=logged.append),
    )


def test_model_py_serves_requests(exported, tmp_path, monkeypatch):
    """model.py loaded by path (its modules imported flat beside it), initialized with the
    built config and run on a dynamic batch over a stand-in for the python backend."""
    import importlib.util
    import sys

    from google.protobuf import json_format

    logged: list[str] = []
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", fake_pb_utils(logged))
    monkeypatch.setattr(sys, "path", list(sys.path))  # model.py prepends its folder
    runtime = Path(hf_seq2seq_export.__file__).parent / "runtime"
    shutil.copytree(exported, tmp_path / "tiny_s2s" / "1")
    flat = ("batch_model", "seq2seq_pipeline")
    before = {name: sys.modules.pop(name, None) for name in flat}
    try:
        spec = importlib.util.spec_from_file_location(
            "seq2seq_model_py", runtime / hf_seq2seq_export.RUNTIME
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:  # other tests must not find the flat copies
        for name, old in before.items():
            if old is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = old
    config = hf_seq2seq_export.config(spec_for("unused"), "gpu", {})
    runner = module.TritonPythonModel()
    runner.initialize(
        {
            "model_config": json.dumps(
                json_format.MessageToDict(config, preserving_proto_field_name=True)
            ),
            "model_version": "1",
            "model_repository": str(tmp_path / "tiny_s2s"),
            "model_name": "tiny_s2s",
            "model_instance_name": "tiny_s2s_0",
        }
    )
    assert "running on CPUExecutionProvider" in logged[0]
    tokens = column([4, 2], np.int32)
    responses = runner.execute(
        [
            Request(TEXTS[:2], MAX_TOKENS=tokens, METHOD=column([b"abstractive"] * 2)),
            Request(["hello"], METHOD=column([b"extractive"])),
            Request(TEXTS[2:5]),
        ]
    )
    first = {t.name(): t.as_numpy() for t in responses[0].output_tensors()}
    assert list(first) == [t.name for t in hf_seq2seq_export.SUMMARIZE_OUTPUTS]
    assert first["SUMMARY"].shape == (2, 1)
    assert responses[1].has_error()
    assert "METHOD[0]: 'extractive' is not offered" in responses[1].error().message()
    third = {t.name(): t.as_numpy() for t in responses[2].output_tensors()}
    assert third["NUM_TOKENS"].shape == (3, 1)
