"""benchmarks.model_kinds' pure parts: Triton's counter deltas -> average batch, the
summary of the rounds, the report's tables and the arguments (no servers here)."""

from __future__ import annotations

import math

import pytest

from benchmarks.model_kinds import (
    MODELS,
    average_batch,
    finite,
    markdown,
    parse_args,
    path_order,
    summarize,
)


def row(model: str, path: str, round_: int, rps: float, p99: float | None, batch=None, **kw):
    return {
        "model": model,
        "path": path,
        "round": round_,
        "rps": rps,
        "p50_ms": kw.get("p50", 10.0),
        "p99_ms": p99,
        "avg_batch": batch,
        "errors": kw.get("errors", 0),
        "first_error": kw.get("first_error"),
    }


def test_average_batch_is_requests_per_execution_between_two_reads():
    # 640 requests in 80 executions between the reads: 8 per batch.
    assert average_batch((1000.0, 300.0), (1640.0, 380.0)) == 8.0
    assert average_batch((0.0, 0.0), (100.0, 30.0)) == 3.33


def test_average_batch_is_none_when_triton_ran_nothing():
    assert average_batch((50.0, 10.0), (50.0, 10.0)) is None


def test_finite_turns_an_empty_scenario_s_nan_into_none():
    assert finite(float("nan")) is None
    assert finite(12) == 12.0
    assert finite(None) is None


def test_summary_takes_medians_and_pairs_ratios_within_a_round():
    rows = [
        row("ner", "frontend", 0, 90.0, 40.0, 4.0),
        row("ner", "direct", 0, 100.0, 20.0, 5.0),
        row("ner", "direct", 1, 200.0, 30.0, 6.0),
        row("ner", "frontend", 1, 100.0, 60.0, 5.0),
        row("ner", "frontend", 2, 160.0, 50.0, None, errors=2),
        row("ner", "direct", 2, 200.0, 25.0, 7.0),
    ]
    entry = summarize(rows, ["ner"])["ner"]
    assert entry["unit"] == "texts/s"
    assert entry["frontend"]["rps_median"] == 100.0
    assert entry["direct"]["rps_median"] == 200.0
    assert entry["frontend"]["p99_ms_median"] == 50.0
    # a round whose batch could not be read does not count as zero
    assert entry["frontend"]["avg_batch_median"] == 4.5
    assert entry["frontend"]["errors"] == 2 and entry["direct"]["errors"] == 0
    # per-round ratios 0.9, 0.5, 0.8: the median of those, not 100 / 200
    assert entry["rps_ratio_rounds"] == [0.9, 0.5, 0.8]
    assert entry["rps_ratio_median"] == 0.8
    assert entry["p99_ratio_median"] == 2.0  # 2.0, 2.0, 2.0


def test_summary_survives_a_round_with_one_path_and_a_dead_direct_path():
    rows = [
        row("imagenet", "frontend", 0, 30.0, 900.0, 8.0),
        row("imagenet", "direct", 0, 0.0, None, None, errors=5),
        row("imagenet", "frontend", 1, 31.0, 950.0, 8.0),  # its direct row never ran
    ]
    entry = summarize(rows, ["imagenet"])["imagenet"]
    assert entry["unit"] == "images/s"
    assert entry["rps_ratio_rounds"] == [None]
    assert entry["rps_ratio_median"] is None and entry["p99_ratio_median"] is None
    assert entry["direct"]["p99_ms_median"] is None
    assert entry["frontend"]["rps_median"] == 30.5


def test_markdown_has_a_table_per_model_and_the_first_errors():
    rows = [
        row("pii", "frontend", 0, 80.0, 40.0, 3.0),
        row("pii", "direct", 0, 100.0, 20.0, 3.5, errors=1, first_error="RuntimeError: boom"),
    ]
    results = {
        "config": {"concurrency": 32, "seconds": 3.0, "rounds": 1},
        "summary": summarize(rows, ["pii"]),
        "rows": rows,
    }
    text = "\n".join(markdown(results))
    assert "## pii" in text
    assert "| frontend | 80.0 | 10.0 | 40.0 | 3.0 | 0 | 0.8 |" in text
    assert "| direct | 100.0 | 10.0 | 20.0 | 3.5 | 1 | 1.0 |" in text
    assert "pii direct round 0: `RuntimeError: boom`" in text


def test_arguments_defaults_and_quick():
    args = parse_args([])
    assert (args.seconds, args.rounds, args.concurrency) == (15.0, 3, 32)
    assert args.models == list(MODELS)
    quick = parse_args(["--quick", "--seconds", "20", "--rounds", "5"])
    assert (quick.seconds, quick.rounds) == (3.0, 1)  # --quick wins: a smoke run
    assert quick.warmup < args.warmup
    assert parse_args(["--models", "ner, pii"]).models == ["ner", "pii"]


@pytest.mark.parametrize("argv", [["--models", "chat"], ["--rounds", "0"], ["--seconds", "-1"]])
def test_arguments_refused(argv):
    with pytest.raises(SystemExit):
        parse_args(argv)


def test_paths_alternate_which_goes_first():
    assert path_order(0) == ("frontend", "direct")
    assert path_order(1) == ("direct", "frontend")
    assert path_order(2) == path_order(0)


def test_ratios_are_finite_numbers_in_json_terms():
    rows = [row("ner", "frontend", 0, 1.0, 3.0), row("ner", "direct", 0, 3.0, 1.0)]
    entry = summarize(rows, ["ner"])["ner"]
    assert not math.isnan(entry["rps_ratio_median"])
    assert entry["rps_ratio_median"] == 0.333
