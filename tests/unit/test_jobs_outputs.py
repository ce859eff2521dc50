"""A chunk's files as bytes (frontend/jobs/outputs.py): the JSONL, CSV and error lines, the
carried columns, where the files live; and the adapters' batching helpers
(frontend/jobs/adapters.py): sub-batches, and refusals that name items."""

from __future__ import annotations

import asyncio
import csv
import io
from typing import Any

import numpy as np
import orjson
import pytest

from frontend.db.jobs import JobFileRow, JobRow
from frontend.errors import InputInvalid, Overloaded
from frontend.jobs.adapters import predict_in_batches, refused_items, sub_batches
from frontend.jobs.outputs import (
    Predicted,
    carried_columns,
    cell,
    chunk_files,
    chunk_key,
    csv_header,
    header_key,
    merge,
)
from frontend.jobs.pacing import Pacer
from frontend.jobs.rows import Row, RowError


def job(**fields: Any) -> JobRow:
    return JobRow(
        id="job_1",
        owner="o",
        account="o",
        subject="s",
        tier="free",
        model="m",
        version="1",
        task="text-classification",
        created_at=0.0,
        updated_at=0.0,
        **fields,
    )


def file(idx: int, fmt: str, header: list[str] | None = None) -> JobFileRow:
    return JobFileRow(idx, f"f{idx}.{fmt}", fmt, 1, "0" * 64, f"k/{idx}", header)


def values(p: dict[str, Any]) -> list[Any]:
    return [p.get("label"), p.get("score"), p.get("top_k")]


def test_keys() -> None:
    assert chunk_key("job_1", 7, "ab12cd34", "jsonl") == "jobs/job_1/results/000007-ab12cd34.jsonl"
    assert chunk_key("job_1", 7, "ab12cd34", "csv") == "jobs/job_1/results/000007-ab12cd34.csv"
    assert chunk_key("job_1", 7, "ab12cd34", "errors") == "jobs/job_1/errors/000007-ab12cd34.jsonl"
    assert header_key("job_1") == "jobs/job_1/results/header.csv"


def test_lines_of_each_file() -> None:
    top = [{"label": "a", "score": 0.5}]
    outcomes = [
        Predicted(Row(3, "x", {"id": "7", "n": 2}), {"label": "a", "score": 0.5, "top_k": top}),
        RowError(4, "invalid_json", "the row is not valid JSON"),
        Predicted(Row(5, "y", {"id": "8"}), {"label": "b", "score": 1, "top_k": []}),
    ]
    files = chunk_files(outcomes, ["id", "n"], values)
    assert (files.rows_ok, files.rows_failed) == (2, 1)
    assert [orjson.loads(line) for line in files.results.splitlines()] == [
        {"row": 3, "columns": {"id": "7", "n": 2}, "prediction": outcomes[0].prediction},
        {"row": 5, "columns": {"id": "8"}, "prediction": outcomes[2].prediction},
    ]
    assert files.errors == b'{"row":4,"code":"invalid_json","reason":"the row is not valid JSON"}\n'
    assert files.csv == (b'3,7,2,a,0.5,"[{""label"":""a"",""score"":0.5}]"\r\n5,8,,b,1,[]\r\n')
    rows = list(csv.reader(io.StringIO(files.csv.decode())))
    assert rows[0][5] == '[{"label":"a","score":0.5}]'  # nested values: JSON text


def test_numpy_values_serialize_as_the_api_does() -> None:
    vector = np.asarray([0.1, 0.25], dtype="<f4")
    outcome = Predicted(Row(1, "t", {}), {"embedding": vector})
    files = chunk_files([outcome], [], lambda p: [p["embedding"]])
    assert orjson.loads(files.results)["prediction"]["embedding"] == pytest.approx([0.1, 0.25])
    assert files.results == b'{"row":1,"columns":{},"prediction":{"embedding":[0.1,0.25]}}\n'
    assert files.csv == b'1,"[0.1,0.25]"\r\n'


def test_cells() -> None:
    assert [cell(v) for v in (None, "a,b", 3, 1.5, True, {"k": [1]})] == [
        "",
        "a,b",
        "3",
        "1.5",
        "true",
        '{"k":[1]}',
    ]
    assert csv_header(["id", "a b"], ("label",)) == b"row,id,a b,label\r\n"


def test_an_empty_chunk_has_empty_files() -> None:
    files = chunk_files([], [], values)
    assert (files.results, files.csv, files.errors, files.rows_ok, files.rows_failed) == (
        b"",
        b"",
        b"",
        0,
        0,
    )


def test_carried_columns() -> None:
    csv_files = [file(0, "csv", ["id", "text", "a"]), file(1, "csv", ["text", "b", "id"])]
    assert carried_columns(job(), csv_files) == ["id", "a", "b"]  # union, file order
    assert carried_columns(job(text_field="a"), csv_files[:1]) == ["id", "text"]
    assert carried_columns(job(), [file(0, "jsonl")]) == []  # JSONL keys vary per row
    assert carried_columns(job(columns=["z"]), csv_files) == ["z"]


def test_merge_puts_predictions_back_in_row_order() -> None:
    items = [Row(1, "a", {}), RowError(2, "missing_text", "x"), Row(3, "b", {})]
    refused = RowError(3, "model_refused", "no")
    assert merge(items, [{"p": 1}, refused]) == [Predicted(items[0], {"p": 1}), items[1], refused]
    with pytest.raises(ValueError, match="1 predictions for 2 rows"):
        merge(items, [{"p": 1}])


def rows(*texts: str) -> list[Row]:
    return [Row(i + 1, text, {}) for i, text in enumerate(texts)]


def test_sub_batches_by_rows_and_characters() -> None:
    batch = sub_batches(rows("aaaa", "bb", "cc", "d", "eeeee"), batch_rows=3, max_chars=6)
    assert [[r.text for r in b] for b in batch] == [["aaaa", "bb"], ["cc", "d"], ["eeeee"]]
    assert sub_batches([], 3, 6) == []


def test_refusals_that_name_items() -> None:
    texts = ["a", "b", "a", "c"]
    named = InputInvalid(
        "inputs.0: refused",
        details=[
            {"loc": ["body", "inputs", 0], "msg": "too odd"},
            {"loc": ["body", "inputs", 3], "msg": "too long"},
        ],
    )
    # The same text twice is refused twice: the model would refuse it again.
    assert refused_items(named, texts) == {0: "too odd", 2: "too odd", 3: "too long"}
    embed = InputInvalid("input.1: x", details=[{"loc": ["body", "input", 1], "msg": "x"}])
    assert refused_items(embed, texts) == {1: "x"}
    triton = InputInvalid("TEXT[1]: the text has no tokens")
    assert refused_items(triton, texts) == {1: "the text has no tokens"}
    whole = InputInvalid("inputs: too many", details=[{"loc": ["body", "inputs"], "msg": "x"}])
    assert refused_items(whole, texts) is None
    mixed = InputInvalid("x", details=[named.details[0], {"loc": ["body", "top_k"], "msg": "x"}])
    assert refused_items(mixed, texts) is None
    assert refused_items(InputInvalid("top_k: must be at most 3"), texts) is None


def test_refused_rows_become_row_errors_and_the_rest_is_sent_again() -> None:
    sent: list[list[str]] = []

    async def call(texts: list[str]) -> list[dict[str, Any]]:
        sent.append(texts)
        bad = [i for i, t in enumerate(texts) if t.startswith("bad")]
        if bad:
            details = [{"loc": ["body", "inputs", i], "msg": f"no {texts[i]}"} for i in bad]
            raise InputInvalid("refused", details=details)
        return [{"t": t} for t in texts]

    async def go() -> list[Any]:
        given = rows("ok1", "bad1", "ok2", "bad2", "ok3")
        return await predict_in_batches(
            given, call, batch_rows=10, max_chars=100, in_flight=Pacer(1)
        )

    assert asyncio.run(go()) == [
        {"t": "ok1"},
        RowError(2, "model_refused", "no bad1"),
        {"t": "ok2"},
        RowError(4, "model_refused", "no bad2"),
        {"t": "ok3"},
    ]
    assert sent == [["ok1", "bad1", "ok2", "bad2", "ok3"], ["ok1", "ok2", "ok3"]]


def test_a_failing_sub_batch_stops_the_others() -> None:
    started: list[str] = []

    async def call(texts: list[str]) -> list[dict[str, Any]]:
        started.append(texts[0])
        if texts[0] == "a":
            raise Overloaded("busy")
        await asyncio.Event().wait()  # never answers
        return []

    async def go() -> None:
        await predict_in_batches(
            rows("a", "b"), call, batch_rows=1, max_chars=100, in_flight=Pacer(2)
        )

    with pytest.raises(Overloaded):
        asyncio.run(go())
    assert sorted(started) == ["a", "b"]


def test_a_refusal_that_names_no_item_propagates() -> None:
    async def call(texts: list[str]) -> list[dict[str, Any]]:
        raise InputInvalid("top_k: must be at most 3")

    async def go() -> None:
        await predict_in_batches(rows("a"), call, batch_rows=1, max_chars=100, in_flight=Pacer(1))

    with pytest.raises(InputInvalid, match="top_k"):
        asyncio.run(go())
