"""Claims about the other model kinds (ner, pii, imagenet, summarize) that no behaviour
test pins: documented defaults, the summarizer's built config, its export check refusing a
wrong splitter, and NOTICE naming every source the built cards name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from export import summarize_export
from export.served_catalog import SUMMARIZE
from frontend.settings import LimitSettings

ROOT = Path(__file__).resolve().parents[2]
REPOSITORY = ROOT / "model_repository"
MIB = 1024 * 1024


def test_the_input_limits_defaults_are_the_documented_ones():
    limits = LimitSettings()
    assert limits.max_entity_items == 64
    assert limits.max_summary_items == 8
    assert limits.max_images == 16
    assert limits.max_image_bytes == 20 * MIB
    assert limits.max_image_body_bytes == 32 * MIB


def test_the_summarizer_config_two_instances_batches_of_eight_one_stream_at_a_time():
    facts = {"document": summarize_export.document(SUMMARIZE)}  # what build() records
    written = summarize_export.config(SUMMARIZE, "cpu", facts)
    config = text_format.Parse(text_format.MessageToString(written), mc.ModelConfig())
    assert config.backend == "python" and config.max_batch_size == 8
    assert [(g.kind, g.count) for g in config.instance_group] == [
        (mc.ModelInstanceGroup.KIND_CPU, 2)
    ]
    params = {k: v.string_value for k, v in config.parameters.items()}
    assert params["concurrency"] == "1"  # interleaved streams crashed the stub (2.51)
    assert params["max_chars"] == "20000"
    optional = {i.name for i in config.input if i.optional}
    assert optional == {"METHOD", "MAX_SENTENCES", "MAX_TOKENS"}


def test_the_summarizer_export_check_refuses_a_wrong_splitter(monkeypatch):
    assert summarize_export.splitter_check()["splitter_exact"] == 1.0
    text = "One sentence. Another one."
    monkeypatch.setattr(summarize_export, "SPLITTER_CASES", ((text, [text]),))
    with pytest.raises(RuntimeError, match="sentence splitter"):
        summarize_export.splitter_check()


def _cards() -> list[Path]:
    return sorted(REPOSITORY.glob("*/*/card.json"))


@pytest.mark.skipif(not _cards(), reason="model_repository is not built (make models)")
def test_notice_names_every_source_of_every_built_card():
    notice = (ROOT / "NOTICE").read_text().lower()
    for path in _cards():
        for source in json.loads(path.read_text())["sources"]:
            if source["package"] == "huggingface-directory":
                continue  # a user's own model: its licence is in its directory
            names = {source["package"].lower(), source["package"].lower().replace("_", "-")}
            assert any(name in notice for name in names), (path, source["package"])
