"""One chunk's results as the bytes of its three files, and where those files live (pure:
the runner calls `chunk_files` in a thread).

- results JSONL: `{"row", "columns", "prediction"}` per row with a prediction, the
  prediction exactly as the synchronous API gives it (numpy arrays as their values);
- results CSV: `row, <carried columns>, <the adapter's csv columns>`; nested values
  (lists, objects) and numbers as JSON text, strings as they are, null as an empty cell;
- errors JSONL: `{"row", "code", "reason"}` per row error.

Each attempt writes its own files, named by its token (`<idx:06d>-<token>`): the one the
chunk's commit names in SQL is the chunk's result, any other is referenced by nobody.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import orjson

from ..db.jobs import JobFileRow, JobRow
from .rows import Row, RowError

OPTIONS: Final = orjson.OPT_SERIALIZE_NUMPY  # the API's own (responses.OrjsonResponse)
FileKind = Literal["jsonl", "csv", "errors"]


@dataclass(frozen=True, slots=True)
class Predicted:
    row: Row
    prediction: dict[str, Any]


Outcome = Predicted | RowError


@dataclass(frozen=True, slots=True)
class ChunkFiles:
    results: bytes  # JSONL
    csv: bytes
    errors: bytes
    rows_ok: int
    rows_failed: int


def chunk_key(job_id: str, idx: int, token: str, kind: FileKind) -> str:
    """A chunk attempt's file: results/<idx>-<token>.jsonl | .csv, errors/<idx>-<token>.jsonl."""
    folder, ext = ("errors", "jsonl") if kind == "errors" else ("results", kind)
    return f"jobs/{job_id}/{folder}/{idx:06d}-{token}.{ext}"


def header_key(job_id: str) -> str:
    """The CSV results' header line, written once at planning (the first CSV segment)."""
    return f"jobs/{job_id}/results/header.csv"


def carried_columns(job: JobRow, files: Sequence[JobFileRow]) -> list[str]:
    """The carried columns of the CSV results: the job's `columns` if given, else the CSV
    files' header columns but the text (their union, in file order). JSONL inputs carry
    nothing in CSV unless `columns` names it: their keys vary from row to row."""
    if job.columns is not None:
        return list(job.columns)
    names: dict[str, None] = {}
    for file in files:
        if file.format == "csv" and file.header:
            names.update((name, None) for name in file.header if name != job.text_field)
    return list(names)


def cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return orjson.dumps(value, option=OPTIONS).decode()


def _csv_line(values: Sequence[Any]) -> bytes:
    out = io.StringIO()
    csv.writer(out).writerow([cell(v) for v in values])
    return out.getvalue().encode("utf-8")


def csv_header(carried: Sequence[str], csv_columns: Sequence[str]) -> bytes:
    return _csv_line(["row", *carried, *csv_columns])


def chunk_files(
    outcomes: Sequence[Outcome],
    carried: Sequence[str],
    csv_values: Callable[[dict[str, Any]], Sequence[Any]],
) -> ChunkFiles:
    """The three files of one chunk, rows in the order given (the chunk's row order)."""
    results, rows, errors = bytearray(), io.StringIO(), bytearray()
    writer = csv.writer(rows)
    ok = failed = 0
    for outcome in outcomes:
        if isinstance(outcome, RowError):
            line = {"row": outcome.number, "code": outcome.code, "reason": outcome.reason}
            errors += orjson.dumps(line) + b"\n"
            failed += 1
            continue
        row, prediction = outcome.row, outcome.prediction
        line = {"row": row.number, "columns": row.columns, "prediction": prediction}
        results += orjson.dumps(line, option=OPTIONS) + b"\n"
        values = [row.number, *(row.columns.get(name) for name in carried)]
        writer.writerow([cell(v) for v in [*values, *csv_values(prediction)]])
        ok += 1
    return ChunkFiles(bytes(results), rows.getvalue().encode("utf-8"), bytes(errors), ok, failed)


def merge(
    items: Sequence[Row | RowError], predictions: Sequence[dict[str, Any] | RowError]
) -> list[Outcome]:
    """The chunk's rows in order with their predictions, `predictions` holding one per
    Row of `items` (a RowError where the model refused the row)."""
    rows = sum(isinstance(item, Row) for item in items)
    if len(predictions) != rows:
        raise ValueError(f"{len(predictions)} predictions for {rows} rows")
    given = iter(predictions)
    outcomes: list[Outcome] = []
    for item in items:
        if isinstance(item, RowError):
            outcomes.append(item)
            continue
        prediction = next(given)
        outcomes.append(
            prediction if isinstance(prediction, RowError) else Predicted(item, prediction)
        )
    return outcomes
