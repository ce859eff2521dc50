"""Job downloads (frontend/jobs/download.py): the done chunks' winning files in chunk
order, Accept negotiation, and RFC 9110's conditional and range requests: ETag and
If-None-Match (304), one range (206, across segment boundaries, suffix ranges), several
(200 whole), unsatisfiable (416 with `bytes */size`), If-Range, HEAD, 410 after expiry."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO

import pytest
from fastapi import FastAPI, Request
from starlette.responses import Response
from starlette.testclient import TestClient

from frontend import handlers
from frontend.db.jobs import DoneChunk, JobRow
from frontend.errors import NotAcceptable, RangeNotSatisfiable
from frontend.jobs import download as dl
from frontend.jobs.outputs import chunk_key, header_key
from frontend.middleware.head import HeadAsGetMiddleware
from frontend.storage import LocalStorage, Storage

NOW = 1_800_000_000.0
JOB_ID = "job_00000000000000000000000001"
# Three chunks of unequal sizes (1 byte in the middle) so that ranges cross boundaries.
RESULTS = [b'{"row":1}\n{"row":2}\n', b"x", b'{"row":3}\n{"row":4}\n{"row":5}\n']
CSVS = [b"1,a\n2,b\n", b"3,c\n", b"4,d\n5,e\n"]
ERRORS = [b"", b'{"row":3,"code":"x","reason":"y"}\n', b""]
HEADER = b"row,label\n"


def put(storage: Storage, key: str, data: bytes) -> None:
    writer = storage.writer(key)
    writer.write(data)
    writer.commit()


def a_job(**changes: Any) -> JobRow:
    job = JobRow(
        id=JOB_ID,
        owner="alice",
        account="acct",
        subject="alice",
        tier="free",
        model="intent",
        version="1",
        task="classification",
        created_at=NOW - 60,
        updated_at=NOW - 1,
        state="succeeded",
        planned=True,
        expires_at=NOW + 3600,
    )
    return replace(job, **changes)


def committed(storage: Storage, count: int = 3) -> list[DoneChunk]:
    """The first `count` chunks committed: their winning files, plus a losing attempt's
    file for every chunk that nobody references (it must never show up)."""
    chunks = []
    for idx in range(count):
        token = f"win{idx}"
        for kind, data in (("jsonl", RESULTS), ("csv", CSVS), ("errors", ERRORS)):
            put(storage, chunk_key(JOB_ID, idx, token, kind), data[idx])  # type: ignore[arg-type]
            put(storage, chunk_key(JOB_ID, idx, "lost", kind), b"LOSER\n")  # type: ignore[arg-type]
        chunks.append(
            DoneChunk(
                idx=idx,
                first_row=idx * 2 + 1,
                rows=2,
                output_token=token,
                rows_ok=2,
                rows_failed=0,
                results_bytes=len(RESULTS[idx]),
                csv_bytes=len(CSVS[idx]),
                errors_bytes=len(ERRORS[idx]),
            )
        )
    return chunks


class CountingStorage:
    """A LocalStorage that counts the files opened and the largest read asked for."""

    def __init__(self, inner: LocalStorage) -> None:
        self.inner = inner
        self.opened: list[str] = []
        self.largest_read = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def open_range(self, key: str, start: int, end: int) -> BinaryIO:
        self.opened.append(key)
        file = self.inner.open_range(key, start, end)
        read = file.read

        def counted(n: int = -1) -> bytes:
            self.largest_read = max(self.largest_read, n)
            return read(n)

        file.read = counted  # type: ignore[method-assign]
        return file


@dataclass
class World:
    storage: CountingStorage
    job: JobRow
    chunks: list[DoneChunk]
    now: float = NOW
    client: TestClient = field(init=False)

    def get(self, path: str = "/results", **headers: str) -> Any:
        return self.client.get(path, headers=headers)


def app_for(world: World) -> Any:
    app = FastAPI()
    handlers.install(app)

    async def serve(request: Request, what: str) -> Response:
        fmt = dl.pick_format(request.headers.get("accept"), what)  # type: ignore[arg-type]
        return await dl.download(
            request, world.job, world.chunks, world.storage, fmt, now=world.now
        )

    @app.get("/results")
    async def results(request: Request) -> Response:
        return await serve(request, "results")

    @app.get("/errors")
    async def errors(request: Request) -> Response:
        return await serve(request, "errors")

    return HeadAsGetMiddleware(app)


@pytest.fixture
def world(tmp_path: Path) -> World:
    storage = LocalStorage(tmp_path / "store", fsync=False)
    put(storage, header_key(JOB_ID), HEADER)
    built = World(CountingStorage(storage), a_job(), committed(storage))
    built.client = TestClient(app_for(built))
    return built


WHOLE = b"".join(RESULTS)


def test_the_body_is_the_winning_files_in_chunk_order(world: World):
    answer = world.get()
    assert answer.status_code == 200
    assert answer.content == WHOLE and b"LOSER" not in answer.content
    h = answer.headers
    assert h["content-type"] == "application/x-ndjson"
    assert h["content-length"] == str(len(WHOLE))
    assert h["accept-ranges"] == "bytes"
    assert h["cache-control"] == "private, no-cache"
    assert h["x-job-state"] == "succeeded"
    assert h["content-disposition"] == f'attachment; filename="{JOB_ID}-results.jsonl"'
    assert h["etag"].startswith('"') and len(h["etag"]) == 34
    assert h["vary"] == "Accept"


def test_csv_starts_with_the_header_file(world: World):
    answer = world.get(accept="text/csv")
    assert answer.status_code == 200
    assert answer.content == HEADER + b"".join(CSVS)
    assert answer.headers["content-type"] == "text/csv; charset=utf-8"
    assert answer.headers["content-disposition"].endswith(f'"{JOB_ID}-results.csv"')


def test_errors_skip_empty_files(world: World):
    answer = world.get("/errors")
    assert answer.status_code == 200 and answer.content == ERRORS[1]
    assert answer.headers["content-disposition"].endswith(f'"{JOB_ID}-errors.jsonl"')
    assert "vary" not in answer.headers
    assert world.storage.opened == [chunk_key(JOB_ID, 1, "win1", "errors")]


def test_a_running_job_serves_what_is_done_and_its_etag_moves(world: World):
    done, world.chunks = world.chunks, world.chunks[:1]
    world.job = a_job(state="running")
    first = world.get()
    assert first.content == RESULTS[0] and first.headers["x-job-state"] == "running"
    world.chunks = done[:2]
    second = world.get()
    assert second.content == RESULTS[0] + RESULTS[1]
    assert second.headers["etag"] != first.headers["etag"]
    assert world.get().headers["etag"] == second.headers["etag"]  # stable while unchanged


def test_nothing_done_yet_is_an_empty_body(world: World):
    world.chunks, world.job = [], a_job(state="queued", planned=False)
    answer = world.get()
    assert answer.status_code == 200 and answer.content == b""
    assert answer.headers["content-length"] == "0"


def test_csv_before_planning_has_no_header_and_another_etag(tmp_path: Path):
    storage = LocalStorage(tmp_path / "s", fsync=False)
    unplanned = World(CountingStorage(storage), a_job(state="queued", planned=False), [])
    unplanned.client = TestClient(app_for(unplanned))
    before = unplanned.get(accept="text/csv")
    assert before.status_code == 200 and before.content == b""
    put(storage, header_key(JOB_ID), HEADER)
    after = unplanned.get(accept="text/csv")
    assert after.content == HEADER and after.headers["etag"] != before.headers["etag"]


def test_etags_differ_by_format_job_and_token(world: World):
    tags = {
        dl.etag(JOB_ID, fmt, world.chunks, header_size=10) for fmt in ("jsonl", "csv", "errors")
    }
    assert len(tags) == 3
    assert dl.etag("job_other", "jsonl", world.chunks) != dl.etag(JOB_ID, "jsonl", world.chunks)
    other_token = [replace(world.chunks[0], output_token="again"), *world.chunks[1:]]
    assert dl.etag(JOB_ID, "jsonl", other_token) != dl.etag(JOB_ID, "jsonl", world.chunks)
    assert dl.etag(JOB_ID, "csv", world.chunks, header_size=10) != dl.etag(
        JOB_ID, "csv", world.chunks, header_size=11
    )


@pytest.mark.parametrize(
    ("accept", "what", "fmt"),
    [
        (None, "results", "jsonl"),
        ("", "results", "jsonl"),
        ("*/*", "results", "jsonl"),
        ("application/x-ndjson", "results", "jsonl"),
        ("application/jsonl", "results", "jsonl"),
        ("application/*", "results", "jsonl"),
        ("text/csv", "results", "csv"),
        ("TEXT/CSV; charset=utf-8", "results", "csv"),
        ("text/*", "results", "csv"),
        ("text/csv, */*", "results", "csv"),  # the more specific range wins a tie
        ("text/csv;q=0.5, application/x-ndjson", "results", "jsonl"),
        ("text/csv, application/x-ndjson;q=0.2", "results", "csv"),
        ("text/csv;q=0, */*", "results", "jsonl"),  # q=0: not acceptable
        ("application/json, */*;q=0.1", "results", "jsonl"),
        (None, "errors", "errors"),
        ("application/x-ndjson", "errors", "errors"),
        ("*/*", "errors", "errors"),
    ],
)
def test_pick_format(accept: str | None, what: Any, fmt: str):
    assert dl.pick_format(accept, what) == fmt


@pytest.mark.parametrize(
    ("accept", "what"),
    [
        ("application/json", "results"),
        ("text/html, image/*", "results"),
        ("text/csv;q=0, application/x-ndjson;q=0, application/jsonl;q=0", "results"),
        ("*/*;q=0", "results"),
        ("text/csv", "errors"),
        ("text/*", "errors"),
    ],
)
def test_pick_format_refuses_what_it_cannot_serve(accept: str, what: Any):
    with pytest.raises(NotAcceptable):
        dl.pick_format(accept, what)


def test_not_acceptable_is_a_406_envelope(world: World):
    answer = world.get(accept="application/json")
    assert answer.status_code == 406
    assert answer.json()["error"]["code"] == "not_acceptable"
    assert world.get("/errors", accept="text/csv").status_code == 406


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        (None, 10, None),
        ("bytes=0-0", 10, (0, 1)),
        ("bytes=0-9", 10, (0, 10)),
        ("bytes=0-", 10, (0, 10)),
        ("bytes=3-5", 10, (3, 6)),
        ("bytes=9-20", 10, (9, 10)),  # last-pos beyond the end is cut to the end
        ("bytes=5-", 10, (5, 10)),
        ("bytes=-3", 10, (7, 10)),
        ("bytes=-10", 10, (0, 10)),
        ("bytes=-100", 10, (0, 10)),  # a suffix longer than the body: all of it
        ("BYTES=1-2", 10, (1, 3)),  # the unit is case-insensitive
        ("bytes= 1-2 ,", 10, (1, 3)),  # whitespace and empty list elements
        ("bytes=0-1,3-4", 10, None),  # several ranges: the whole body
        ("bytes=0-1,50-60", 10, None),  # several, one satisfiable: still the whole
        ("bytes=3-1", 10, None),  # last < first: invalid, ignored
        ("bytes=-", 10, None),
        ("bytes=", 10, None),
        ("bytes=a-b", 10, None),
        ("bytes=+1-2", 10, None),
        ("bytes=1 - 2", 10, None),
        ("bytes 0-1", 10, None),
        ("items=0-1", 10, None),  # another unit
        ("bytes=-5", 0, None),  # an empty body: the whole (empty) body
    ],
)
def test_byte_range(header: str | None, size: int, expected: tuple[int, int] | None):
    assert dl.byte_range(header, size) == expected


@pytest.mark.parametrize(
    ("header", "size"),
    [
        ("bytes=10-", 10),
        ("bytes=10-20", 10),
        ("bytes=1000-", 10),
        ("bytes=-0", 10),  # a zero-length suffix
        ("bytes=0-", 0),
        ("bytes=0-0", 0),
        ("bytes=10-11, 20-", 10),  # none of several is satisfiable
    ],
)
def test_byte_range_unsatisfiable(header: str, size: int):
    with pytest.raises(RangeNotSatisfiable) as raised:
        dl.byte_range(header, size)
    assert raised.value.headers() == {"Content-Range": f"bytes */{size}"}


def test_ranges_across_segment_boundaries(world: World):
    """Every first-last pair among the bytes around each boundary of the segments (20, 1
    and 30 bytes): each 206 is exactly the slice, opening only the files it overlaps."""
    size = len(WHOLE)
    bounds = [0, len(RESULTS[0]), len(RESULTS[0]) + 1, size]
    points = sorted({p for b in bounds for p in (b - 1, b, b + 1) if 0 <= p < size})
    for first in points:
        for last in (p for p in points if p >= first):
            world.storage.opened.clear()
            answer = world.get(range=f"bytes={first}-{last}")
            assert answer.status_code == 206, (first, last)
            assert answer.content == WHOLE[first : last + 1], (first, last)
            assert answer.headers["content-range"] == f"bytes {first}-{last}/{size}"
            assert answer.headers["content-length"] == str(last - first + 1)
            overlapping = [i for i in range(3) if bounds[i] <= last and first < bounds[i + 1]]
            assert world.storage.opened == [
                chunk_key(JOB_ID, i, f"win{i}", "jsonl") for i in overlapping
            ], (first, last)


def test_suffix_and_open_ranges(world: World):
    size = len(WHOLE)
    tail = world.get(range="bytes=-31")
    assert tail.status_code == 206 and tail.content == WHOLE[-31:]
    assert tail.headers["content-range"] == f"bytes {size - 31}-{size - 1}/{size}"
    beyond = world.get(range="bytes=-1000")
    assert beyond.status_code == 206 and beyond.content == WHOLE
    assert beyond.headers["content-range"] == f"bytes 0-{size - 1}/{size}"
    rest = world.get(range="bytes=20-")
    assert rest.status_code == 206 and rest.content == WHOLE[20:]


def test_csv_ranges_include_the_header_segment(world: World):
    body = HEADER + b"".join(CSVS)
    answer = world.get(accept="text/csv", range="bytes=5-13")
    assert answer.status_code == 206 and answer.content == body[5:14]


def test_several_ranges_or_an_invalid_one_send_the_whole_body(world: World):
    for header in ("bytes=0-1,5-6", "bytes=5-2", "pages=1-2"):
        answer = world.get(range=header)
        assert answer.status_code == 200 and answer.content == WHOLE, header
        assert "content-range" not in answer.headers


def test_unsatisfiable_range_is_416_with_the_size(world: World):
    answer = world.get(range=f"bytes={len(WHOLE)}-")
    assert answer.status_code == 416
    assert answer.headers["content-range"] == f"bytes */{len(WHOLE)}"
    assert answer.json()["error"]["code"] == "range_not_satisfiable"
    assert world.storage.opened == []


def test_if_range(world: World):
    tag = world.get().headers["etag"]
    matching = world.get(range="bytes=0-4", **{"if-range": tag})
    assert matching.status_code == 206 and matching.content == WHOLE[:5]
    for other in ('"0123"', f"W/{tag}", "Thu, 01 Jan 2026 00:00:00 GMT"):
        answer = world.get(range="bytes=0-4", **{"if-range": other})
        assert answer.status_code == 200 and answer.content == WHOLE, other
    # A stale If-Range also keeps an unsatisfiable Range from being a 416.
    stale = world.get(range="bytes=5000-", **{"if-range": '"0123"'})
    assert stale.status_code == 200


def test_if_none_match_is_304(world: World):
    tag = world.get().headers["etag"]
    for header in (tag, f'"other", {tag}', f"W/{tag}", "*"):
        answer = world.get(**{"if-none-match": header})
        assert answer.status_code == 304, header
        assert answer.content == b""
        assert answer.headers["etag"] == tag
        assert answer.headers["cache-control"] == "private, no-cache"
        assert "content-length" not in answer.headers
    # It is checked before Range, and opens nothing.
    world.storage.opened.clear()
    assert world.get(range="bytes=0-1", **{"if-none-match": tag}).status_code == 304
    assert world.storage.opened == []
    assert world.get(**{"if-none-match": '"other"'}).status_code == 200


def test_a_new_commit_makes_the_old_etag_fail(world: World):
    done, world.chunks = world.chunks, world.chunks[:2]
    tag = world.get().headers["etag"]
    world.chunks = done
    answer = world.get(**{"if-none-match": tag})
    assert answer.status_code == 200 and answer.content == WHOLE


def test_expired_job_is_410(world: World):
    world.now = NOW + 3600  # expires_at itself
    answer = world.get()
    assert answer.status_code == 410 and answer.json()["error"]["code"] == "job_expired"
    world.now = NOW + 3599
    assert world.get().status_code == 200


def test_head_gives_get_headers_without_reading(world: World):
    get = world.get(range="bytes=2-9")
    world.storage.opened.clear()
    head = world.client.head("/results", headers={"range": "bytes=2-9"})
    assert head.status_code == 206 and head.content == b""
    for name in ("etag", "content-length", "content-range", "content-type", "x-job-state"):
        assert head.headers[name] == get.headers[name], name
    assert world.storage.opened == []


def test_large_files_are_read_64_kib_at_a_time(tmp_path: Path):
    storage = LocalStorage(tmp_path / "big", fsync=False)
    blobs = [os.urandom(200_000), os.urandom(70_000), os.urandom(3)]
    chunks = []
    for idx, blob in enumerate(blobs):
        put(storage, chunk_key(JOB_ID, idx, "t", "jsonl"), blob)
        chunks.append(DoneChunk(idx, 1, 1, "t", 1, 0, len(blob), 0, 0))
    big = World(CountingStorage(storage), a_job(), chunks)
    big.client = TestClient(app_for(big))
    whole = b"".join(blobs)
    assert big.get().content == whole
    middle = big.get(range="bytes=150000-270001")
    assert middle.status_code == 206 and middle.content == whole[150_000:270_002]
    assert big.storage.largest_read == dl.READ_BYTES


def test_a_file_gone_mid_download_ends_the_body(world: World):
    os.unlink(world.storage.inner.root / chunk_key(JOB_ID, 2, "win2", "jsonl"))
    with pytest.raises(FileNotFoundError):
        world.get()


def test_segments_use_sql_sizes_and_tokens(world: World):
    parts = dl.segments(world.job, world.chunks, "csv", header_size=len(HEADER))
    assert [p.key for p in parts] == [header_key(JOB_ID)] + [
        chunk_key(JOB_ID, i, f"win{i}", "csv") for i in range(3)
    ]
    assert [p.size for p in parts] == [len(HEADER), *map(len, CSVS)]
    assert dl.segments(world.job, world.chunks, "csv") == parts[1:]
    errors = dl.segments(world.job, world.chunks, "errors")
    assert errors == [dl.Segment(chunk_key(JOB_ID, 1, "win1", "errors"), len(ERRORS[1]))]
