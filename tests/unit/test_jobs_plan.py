"""Planning (frontend/jobs/plan.py): every row in exactly one chunk, chunk ranges that
read back to the same rows (multi-line CSV records and row errors included), and the
same plan every time."""

from __future__ import annotations

import csv
import io
import random
from pathlib import Path

import orjson
import pytest

from frontend.jobs.plan import ChunkPlan, plan_file
from frontend.jobs.rows import Row, RowError, read_rows
from frontend.jobs.sniff import Format
from frontend.settings import LimitSettings
from frontend.storage import LocalStorage

LIMITS = LimitSettings()
HEADER = ["id", "text", "lang"]
BIG = 131072 + 1


def random_csv(rng: random.Random, n: int) -> bytes:
    """A CSV with quoted multi-line fields, CRLF and LF, blank lines, and bad rows:
    oversized fields (quoted over lines too), invalid UTF-8, wrong field counts."""
    out = io.BytesIO()
    out.write(b"\xef\xbb\xbf" if rng.random() < 0.5 else b"")
    out.write(b"id,text,lang\r\n")
    words = ["plain", "a, comma", 'a "quote"', "two\nlines", "crlf\r\nlines", "café", " "]
    for i in range(n):
        kind = rng.random()
        if kind < 0.04:
            out.write(b"%d," % i + b"x" * BIG + b",en\n")
        elif kind < 0.08:
            out.write(b'%d,"big\n' % i + b"y" * BIG + b'\nand more",en\r\n')
        elif kind < 0.11:
            out.write(b"%d,caf\xe9,fr\n" % i)
        elif kind < 0.14:
            out.write(b"%d,too,many,fields\n" % i)
        else:
            text = " ".join(rng.choice(words) for _ in range(rng.randint(1, 4)))
            line = io.StringIO()
            csv.writer(line, lineterminator=rng.choice(["\n", "\r\n"])).writerow([i, text, "en"])
            out.write(line.getvalue().encode())
        if rng.random() < 0.05:
            out.write(b"\n")
    if rng.random() < 0.5:  # no trailing newline
        out.seek(out.tell() - 1)
        out.truncate()
    return out.getvalue()


def random_jsonl(rng: random.Random, n: int) -> bytes:
    lines = []
    for i in range(n):
        kind = rng.random()
        if kind < 0.05:
            lines.append(b'{"text": "broken')
        elif kind < 0.1:
            lines.append(b'{"text": "a", "text": "b"}')
        elif kind < 0.15:
            lines.append(b"[1, 2]")
        elif kind < 0.2:
            lines.append(b'"bare %d"' % i)
        else:
            lines.append(orjson.dumps({"id": i, "text": f"row {i}\nwith newline"}))
        if rng.random() < 0.05:
            lines.append(b"   ")
    return b"\r\n".join(lines) + rng.choice([b"", b"\n", b"\n\n"])


def read_all(data: bytes, fmt: Format) -> list[tuple[int, Row | RowError]]:
    header = HEADER if fmt == "csv" else None
    f = io.BytesIO(data)
    return list(read_rows(f, fmt, 0, len(data), 1, header, "text", None, limits=LIMITS))


def plan(data: bytes, fmt: Format, chunk_rows: int, **kw) -> tuple[list[ChunkPlan], int]:
    header = HEADER if fmt == "csv" else None
    args = {"file_idx": 0, "first_row": 1, "first_chunk_idx": 0} | kw
    return plan_file(
        io.BytesIO(data),
        fmt,
        header,
        chunk_rows=chunk_rows,
        text_field="text",
        columns=None,
        **args,
    )


def read_chunk(data: bytes, fmt: Format, chunk: ChunkPlan) -> list[tuple[int, Row | RowError]]:
    header = HEADER if fmt == "csv" else None
    f = io.BytesIO(data)
    return list(
        read_rows(
            f,
            fmt,
            chunk.start_offset,
            chunk.end_offset,
            chunk.first_row,
            header,
            "text",
            None,
            limits=LIMITS,
        )
    )


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_chunks_cover_every_row_once_and_read_back_identically(seed: int, fmt: Format):
    rng = random.Random(seed)
    data = random_csv(rng, 300) if fmt == "csv" else random_jsonl(rng, 300)
    everything = read_all(data, fmt)
    assert [item.number for _, item in everything] == list(range(1, len(everything) + 1))
    if fmt == "csv":
        assert len(everything) == 300
        assert {type(item) for _, item in everything} == {Row, RowError}
    for chunk_rows in (1, 7, 64, 1000):
        chunks, rows = plan(data, fmt, chunk_rows)
        assert rows == len(everything)
        assert [c.idx for c in chunks] == list(range(len(chunks)))
        numbers = [n for c in chunks for n in range(c.first_row, c.first_row + c.rows)]
        assert numbers == list(range(1, rows + 1))  # each exactly once, in order
        assert all(c.rows == chunk_rows for c in chunks[:-1]) and 0 < chunks[-1].rows <= chunk_rows
        again: list[tuple[int, Row | RowError]] = []
        for c in chunks:
            got = read_chunk(data, fmt, c)
            assert len(got) == c.rows and got[-1][0] == c.end_offset
            again += got
        assert again == everything
        assert plan(data, fmt, chunk_rows) == (chunks, rows)  # a re-plan is identical


def test_error_free_csv_matches_the_csv_module():
    rng = random.Random(99)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(HEADER)
    expected = []
    for i in range(500):
        text = "".join(rng.choice('ab ,"\n\r\né') for _ in range(rng.randint(1, 12))) + "."
        expected.append([str(i), text, "en"])
        writer.writerow(expected[-1])
    data = out.getvalue().encode()
    got = read_all(data, "csv")
    found = [row for _, row in got if isinstance(row, Row)]
    assert [[r.columns["id"], r.text, r.columns["lang"]] for r in found] == expected
    parsed = list(csv.reader(io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", newline="")))
    assert parsed[1:] == expected


def test_chunk_boundaries_fall_between_multiline_records():
    data = (
        b'id,text,lang\n1,"one\ntwo\nthree",en\n2,"four\r\nfive",en\n'
        b'3,six,en\n4,"seven\n\neight",en\n'
    )
    chunks, rows = plan(data, "csv", 1)
    assert rows == 4
    assert [data[c.start_offset : c.end_offset] for c in chunks] == [
        b'1,"one\ntwo\nthree",en\n',
        b'2,"four\r\nfive",en\n',
        b"3,six,en\n",
        b'4,"seven\n\neight",en\n',
    ]
    assert [c.first_row for c in chunks] == [1, 2, 3, 4]


def test_files_chain_rows_and_chunk_indexes():
    first = b'{"text": "a"}\n{"text": "b"}\n{"text": "c"}\n'
    second = b"id,text,lang\n1,d,en\n2,e,en\n"
    chunks_a, rows_a = plan(first, "jsonl", 2)
    chunks_b, rows_b = plan(
        second, "csv", 2, file_idx=1, first_row=1 + rows_a, first_chunk_idx=len(chunks_a)
    )
    assert chunks_a + chunks_b == [
        ChunkPlan(0, 0, 0, 28, 1, 2),
        ChunkPlan(0, 1, 28, 42, 3, 1),
        ChunkPlan(1, 2, 13, 27, 4, 2),
    ]
    assert rows_b == 2
    assert [item.number for _, item in read_chunk(second, "csv", chunks_b[0])] == [4, 5]


def test_a_file_without_rows_plans_no_chunks():
    assert plan(b"id,text,lang\n\n", "csv", 10) == ([], 0)
    assert plan(b"\xef\xbb\xbf\n  \n", "jsonl", 10) == ([], 0)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError):
        plan(b'{"text": "a"}\n', "jsonl", 0)
    with pytest.raises(ValueError):
        plan_file(io.BytesIO(b"id,body\n"), "csv", ["id", "body"], 0, 1, 0, 10, "text", None)
    with pytest.raises(ValueError):  # the file's header is not the one given
        plan_file(io.BytesIO(b"id,body\n1,a\n"), "csv", ["id", "text"], 0, 1, 0, 10, "text", None)


def test_chunks_read_back_through_storage_ranges(tmp_path: Path):
    storage = LocalStorage(tmp_path, fsync=False)
    data = random_csv(random.Random(5), 400)
    writer = storage.writer("jobs/j/inputs/0.csv")
    for i in range(0, len(data), 65536):
        writer.write(data[i : i + 65536])
    writer.commit()
    with storage.open_range("jobs/j/inputs/0.csv", 0, storage.size("jobs/j/inputs/0.csv")) as f:
        chunks, rows = plan_file(f, "csv", HEADER, 0, 1, 0, 50, "text", None)
    again: list[tuple[int, Row | RowError]] = []
    for c in chunks:
        with storage.open_range("jobs/j/inputs/0.csv", c.start_offset, c.end_offset) as f:
            again += read_rows(
                f,
                "csv",
                c.start_offset,
                c.end_offset,
                c.first_row,
                HEADER,
                "text",
                None,
                limits=LIMITS,
            )
    assert again == read_all(data, "csv")
    assert rows == 400
