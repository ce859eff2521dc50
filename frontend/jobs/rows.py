"""A job file's rows, read at exact byte offsets (pure and blocking: run it in a thread).

records.py reads the file's records (JSONL lines, CSV records) with their byte offsets, so
a chunk's [start, end) can be read again on its own, by any worker, to the same rows; this
module makes each record a row, or a row error.

- Each row is decoded strictly; one that is not UTF-8 is a row error naming the byte, not
  a failed job.
- JSONL: blank lines are skipped (they get no row number). An object gives `text_field`
  and the carried columns; a bare JSON string is the text itself.
- CSV: the first record is the header (csv_header checks it at submission). A record the
  csv module refuses (a field over its limit) becomes a row error.
- Errors count as rows: they have row numbers, so planning and reading always agree.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO, Final

from ..errors import (
    DuplicateJsonKey,
    InfergateError,
    InputInvalid,
    JsonTooDeep,
    UnsupportedEncoding,
)
from ..middleware.body_guard import check_json
from ..services.texts import check_texts
from .records import CsvRecords, CsvScan, Lines, read_records
from .sniff import Format

if TYPE_CHECKING:
    from ..settings import LimitSettings


@dataclass(frozen=True, slots=True)
class Row:
    number: int
    text: str
    columns: dict[str, Any]


@dataclass(frozen=True, slots=True)
class RowError:
    """`code`: invalid_utf8, invalid_json, not_an_object, missing_text, field_too_large,
    field_count, invalid_csv, row_too_large, invalid_text (model_refused: at run time)."""

    number: int
    code: str
    reason: str


def row_spans(
    f: BinaryIO, fmt: Format, start: int, end: int, header: list[str] | None
) -> Iterator[tuple[int, int]]:
    """(start, end) offsets of each row in [start, end), content unchecked: planning."""
    for row_start, row_end, _, _ in read_records(f, fmt, start, end, header):
        yield row_start, row_end


def read_rows(
    f: BinaryIO,
    fmt: Format,
    start: int,
    end: int,
    first_row: int,
    header: list[str] | None,
    text_field: str,
    columns: list[str] | None,
    *,
    limits: LimitSettings,
) -> Iterator[tuple[int, Row | RowError]]:
    """(offset after the row, the row or its error) for each row in [start, end), which
    begins on a row boundary; numbers count from `first_row`. `columns`: the carried
    columns (None: every one but the text)."""
    records = read_records(f, fmt, start, end, header)
    if fmt == "jsonl":
        for number, (_, stop, line, problem) in enumerate(records, first_row):
            if problem is not None:
                yield stop, RowError(number, *problem)
            else:
                yield stop, _jsonl_row(number, line, text_field, columns, limits)
        return
    assert header is not None  # read_records checked it
    where = {name: i for i, name in enumerate(header)}
    if text_field not in where or not set(columns or ()) <= where.keys():
        raise ValueError("text_field and columns must be in the header (csv_header checks)")
    carried = (
        [(name, i) for name, i in where.items() if name != text_field]
        if columns is None
        else [(name, where[name]) for name in columns]
    )
    for number, (_, stop, fields, problem) in enumerate(records, first_row):
        if problem is not None:
            yield stop, RowError(number, *problem)
        elif len(fields) != len(header):
            found = f"expected {len(header)} fields, found {len(fields)}"
            yield stop, RowError(number, "field_count", found)
        else:
            text = fields[where[text_field]]
            cells = {name: fields[i] for name, i in carried}
            yield stop, _checked(number, text, cells, text_field, limits)


def _jsonl_row(
    number: int, line: bytes, text_field: str, columns: list[str] | None, limits: LimitSettings
) -> Row | RowError:
    try:
        value = check_json(line.rstrip(b"\r\n"), limits.max_json_depth)
    except InfergateError as exc:
        return RowError(number, "invalid_json", _json_reason(exc))
    if isinstance(value, str):
        return _checked(number, value, dict.fromkeys(columns or ()), text_field, limits)
    if not isinstance(value, dict):
        why = f"the row is a JSON {_json_type(value)}, not an object (or a string)"
        return RowError(number, "not_an_object", why)
    if text_field not in value:
        return RowError(number, "missing_text", f"the row has no '{text_field}' field")
    text = value[text_field]
    if not isinstance(text, str):
        why = f"{text_field}: must be a string, found {_json_type(text)}"
        return RowError(number, "invalid_text", why)
    if columns is None:
        cells = {key: item for key, item in value.items() if key != text_field}
    else:
        cells = {name: value.get(name) for name in columns}
    return _checked(number, text, cells, text_field, limits)


def _checked(
    number: int, text: str, cells: dict[str, Any], text_field: str, limits: LimitSettings
) -> Row | RowError:
    try:
        check_texts(text, limits, text_field)
    except InputInvalid as exc:
        return RowError(number, "invalid_text", exc.message)
    return Row(number, text, cells)


def _json_reason(exc: InfergateError) -> str:
    if isinstance(exc, DuplicateJsonKey):
        return "an object in the row has the same key twice"
    if isinstance(exc, JsonTooDeep):
        return exc.message
    if isinstance(exc, UnsupportedEncoding):  # the row is UTF-8: a BOM or NULs remain
        return "the row is not valid JSON: it starts with a byte order mark or NUL bytes"
    return exc.message.replace("body is not", "the row is not", 1)


_JSON_TYPES: Final = {bool: "boolean", int: "number", float: "number", list: "array"}


def _json_type(value: Any) -> str:
    return "null" if value is None else _JSON_TYPES.get(type(value), "object")


def csv_header(
    head: bytes, text_field: str, columns: list[str] | None, *, complete: bool = True
) -> list[str]:
    """The column names in a CSV file's first record, checked against `text_field` and
    the carried `columns`; InputInvalid (422) listing the header otherwise. `complete`:
    `head` is the whole file (else the header must end within it)."""
    first = next(iter(CsvRecords(Lines(io.BytesIO(head), 0, len(head)))), None)
    if first is None:
        raise _header_error("file", "the CSV file has no header (its first record)", [])
    start, end, fields, problem = first
    if problem is not None:
        raise _header_error("file", f"the CSV header cannot be read: {problem[1]}", [])
    if not complete and end == len(head) and not CsvScan().feed(head[start:end]):
        why = f"the CSV header does not end within the first {len(head)} bytes"
        raise _header_error("file", why, [])
    for name in fields:
        if fields.count(name) > 1:
            raise _header_error("file", f"the CSV header names '{name}' twice", fields)
    for field, name in [("text_field", text_field)] + [("columns", c) for c in columns or ()]:
        if name not in fields:
            raise _header_error(field, f"column '{name}' is not in the header", fields)
    return list(fields)


def _header_error(field: str, why: str, header: list[str]) -> InputInvalid:
    found = f": found {header!r}" if header else ""
    return InputInvalid(
        f"{field}: {why}{found}",
        details=[{"loc": ["body", field], "msg": f"{why}{found}", "header": header}],
    )
