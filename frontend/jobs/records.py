"""The records of a job file (JSONL lines or CSV records), each with its exact byte offsets.

Physical lines are read in binary, so every offset is a byte offset in the file and a
chunk's [start, end) can be read again on its own, by any worker, to the same records;
rows.py turns the records into rows (or row errors).

- A UTF-8 BOM at offset 0 is skipped. A line that is not UTF-8 is a record with a problem
  naming the byte, not a failed job.
- JSONL: one JSON value per line; blank lines are no records.
- CSV: the first record is the header. csv.reader is fed a generator of decoded physical
  lines: it pulls a line only while its record is incomplete, so the offset after the last
  line pulled is the record's end. After a csv.Error (a field over the csv module's limit)
  the csv module does not say where the refused record ends, and a refused quoted field
  may go on for lines: CsvScan finds the end by the csv module's own rules, the record is
  stepped over with a problem, and a fresh reader goes on after it.
- No record is read into memory past MAX_ROW_BYTES.
- csv.field_size_limit is never changed: it is process-global.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from typing import Any, BinaryIO, Final

from .sniff import UTF8_BOM, Format

# One row's bytes at most (a line longer than this is not read into memory whole): far
# above any text a model takes (limits.max_input_chars is at most 1 000 000 characters).
MAX_ROW_BYTES: Final = 8 << 20
_BLOCK: Final = 1 << 20
_JSON_SPACE: Final = b" \t\r\n"
_FIELD_LIMIT: Final = re.compile(r"field larger than field limit \((\d+)\)")

Problem = tuple[str, str]  # (code, reason)
Record = tuple[int, int, Any, Problem | None]  # (start, end, bytes | fields, problem)


class _TooLarge(Exception):
    pass


class Lines:
    """The physical lines of [start, end), with the offset after the last one read."""

    def __init__(self, f: BinaryIO, start: int, end: int) -> None:
        if start == 0:
            f.seek(0)
            if f.read(min(3, end)) == UTF8_BOM:
                start = 3
        f.seek(start)
        self.f, self.pos, self.end = f, start, end

    def read(self, limit: int) -> bytes:
        n = min(limit, self.end - self.pos)
        if n <= 0:
            return b""
        line = self.f.readline(n)
        self.pos += len(line)
        return line


TOO_LARGE: Final = ("row_too_large", f"the row is larger than {MAX_ROW_BYTES} bytes")


def _bad_utf8(offset: int, byte: int) -> Problem:
    return "invalid_utf8", f"invalid UTF-8 at byte offset {offset} of the row (0x{byte:02x})"


def _jsonl(lines: Lines) -> Iterator[Record]:
    while True:
        start = lines.pos
        line = lines.read(MAX_ROW_BYTES + 1)
        if not line:
            return
        if len(line) > MAX_ROW_BYTES:
            while line and not line.endswith(b"\n"):
                line = lines.read(_BLOCK)
            yield start, lines.pos, None, TOO_LARGE
        elif line.strip(_JSON_SPACE):
            try:
                line.decode("utf-8")
                yield start, lines.pos, line, None
            except UnicodeDecodeError as exc:
                yield start, lines.pos, None, _bad_utf8(exc.start, line[exc.start])


_START, _FIELD, _QUOTED, _AFTER_QUOTE, _DONE = range(5)
_STOP: Final = re.compile(rb"[,\r\n]")


class CsvScan:
    """Where a CSV record ends, by the csv module's rules for its default dialect
    (`"` quotes, doubled inside quotes, no escape character, not strict). Only for the
    records the csv module refuses: it then does not say where they end, and a refused
    quoted field may go on for lines."""

    def __init__(self) -> None:
        self.state = _START

    def feed(self, data: bytes) -> bool:
        """Reads on; True when `data` ends a physical line that ends the record."""
        state, i, n = self.state, 0, len(data)
        while i < n and state != _DONE:
            if state == _QUOTED:
                j = data.find(b'"', i)
                if j < 0:
                    break
                state, i = _AFTER_QUOTE, j + 1
                continue
            c = data[i]
            if c == 0x22 and state in (_START, _AFTER_QUOTE):
                state, i = _QUOTED, i + 1
            elif c == 0x2C:
                state, i = _START, i + 1
            elif c in (0x0D, 0x0A):
                state = _DONE  # a record ends with the line its unquoted newline is on
            else:  # unquoted: a quote is a plain character up to the next comma
                stop = _STOP.search(data, i)
                state, i = _FIELD, stop.start() if stop else n
        ended = state == _DONE and data.endswith(b"\n")
        self.state = _START if ended else state
        return ended


class CsvRecords:
    def __init__(self, lines: Lines) -> None:
        self.lines = lines
        self.taken: list[bytes] = []  # the physical lines of the record being read
        self.size = 0
        self.bad: Problem | None = None

    def _feed(self) -> Iterator[str]:
        while True:
            line = self.lines.read(MAX_ROW_BYTES + 1 - self.size)
            if not line:
                return
            self.taken.append(line)
            if self.size + len(line) > MAX_ROW_BYTES:
                raise _TooLarge
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as exc:
                if self.bad is None:
                    self.bad = _bad_utf8(self.size + exc.start, line[exc.start])
                text = line.decode("utf-8", "replace")
            self.size += len(line)
            yield text

    def __iter__(self) -> Iterator[Record]:
        reader = csv.reader(self._feed())
        while True:
            start = self.lines.pos
            self.taken, self.size, self.bad = [], 0, None
            try:
                fields = next(reader)
            except StopIteration:
                return
            except (csv.Error, _TooLarge) as exc:
                problem = _refused(exc)
                self._step_over()
                reader = csv.reader(self._feed())  # a fresh one: nothing carried over
                yield start, self.lines.pos, None, problem
                continue
            if fields:  # [] is a blank line
                yield start, self.lines.pos, fields, self.bad

    def _step_over(self) -> None:
        scan, ended = CsvScan(), False
        for line in self.taken:
            ended = scan.feed(line)
        while not ended:
            block = self.lines.read(_BLOCK)
            if not block:
                return
            ended = scan.feed(block)


def _refused(exc: Exception) -> Problem:
    if isinstance(exc, _TooLarge):
        return TOO_LARGE
    limit = _FIELD_LIMIT.match(str(exc))
    if limit:
        return "field_too_large", f"a field is longer than the CSV limit of {limit[1]} characters"
    if str(exc).startswith("new-line character seen in unquoted field"):
        return "invalid_csv", "a carriage return inside an unquoted field (quote the field)"
    return "invalid_csv", str(exc)


def read_records(
    f: BinaryIO, fmt: Format, start: int, end: int, header: list[str] | None
) -> Iterator[Record]:
    """The records in [start, end), which begins on a record boundary; at offset 0 a CSV
    file's header record is checked against `header` and not yielded."""
    lines = Lines(f, start, end)
    if fmt == "jsonl":
        yield from _jsonl(lines)
        return
    if fmt != "csv" or header is None:
        raise ValueError(f"cannot read {fmt!r} rows (CSV needs its header)")
    records = iter(CsvRecords(lines))
    if start == 0:  # the header record is not a row
        first = next(records, None)
        if first is None or first[2] != header:
            raise ValueError("the file's CSV header is not the header it was checked with")
    yield from records
