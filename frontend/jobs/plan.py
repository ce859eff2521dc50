"""Cutting a job's file into chunks of rows, each a byte range on row boundaries.

Planning reads the file once with the same record reader as execution (rows.row_spans,
content unchecked), so that a chunk's [start_offset, end_offset) read again by
rows.read_rows gives exactly its `rows` rows, numbered from `first_row`. It is
deterministic: a job planned twice (a planner killed half way) gets identical chunks,
which the database inserts once (ON CONFLICT DO NOTHING).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import BinaryIO

from .rows import row_spans
from .sniff import Format


@dataclass(frozen=True, slots=True)
class ChunkPlan:
    """`idx`: the chunk's index in the job (0-based, across files); `first_row`: the
    job-wide 1-based number of its first row."""

    file_idx: int
    idx: int
    start_offset: int
    end_offset: int
    first_row: int
    rows: int


def plan_file(
    f: BinaryIO,
    fmt: Format,
    header: list[str] | None,
    file_idx: int,
    first_row: int,
    first_chunk_idx: int,
    chunk_rows: int,
    text_field: str,
    columns: list[str] | None,
) -> tuple[list[ChunkPlan], int]:
    """The file's chunks, a new one every `chunk_rows` rows (row errors count: they are
    rows too), and its number of rows. The next file's rows number from `first_row +
    rows`, its chunks from `first_chunk_idx + len(chunks)`. `text_field` and `columns`
    do not change the plan; for CSV they are checked against the header again, so that a
    job whose checks were skipped fails here rather than in every chunk."""
    if chunk_rows < 1 or first_row < 1 or first_chunk_idx < 0:
        raise ValueError("chunk_rows and first_row must be >= 1, first_chunk_idx >= 0")
    if fmt == "csv" and (
        header is None or text_field not in header or not set(columns or ()) <= set(header)
    ):
        raise ValueError(f"text_field {text_field!r} and columns must be in the CSV header")
    size = f.seek(0, io.SEEK_END)
    chunks: list[ChunkPlan] = []
    rows = count = start = stop = 0
    for row_start, row_end in row_spans(f, fmt, 0, size, header):
        if count == 0:
            start = row_start
        rows, count, stop = rows + 1, count + 1, row_end
        if count == chunk_rows:
            idx = first_chunk_idx + len(chunks)
            chunks.append(ChunkPlan(file_idx, idx, start, stop, first_row + rows - count, count))
            count = 0
    if count:
        idx = first_chunk_idx + len(chunks)
        chunks.append(ChunkPlan(file_idx, idx, start, stop, first_row + rows - count, count))
    return chunks, rows
