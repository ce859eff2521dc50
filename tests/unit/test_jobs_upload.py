"""The streaming upload of job files (frontend/jobs/upload.py): what is stored, the
refusals (413/415/422/507, each naming its file or field), that nothing is left behind
after any of them, a client gone or a cancel, and that memory stays bounded.

A Starlette app built here has one route calling `read_job_form`; the tests that cut the
body mid-way call it directly with a `receive` of their own."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from frontend.errors import InfergateError, ModelNotFound
from frontend.job_settings import JobSettings
from frontend.jobs import upload, upload_parts
from frontend.jobs.upload import FieldsOk, StoredFile, body_cap, read_job_form, write_inline
from frontend.observability.metrics import Metrics
from frontend.responses import error_response
from frontend.settings import Settings
from frontend.storage.local import LocalStorage

T = TypeVar("T")
JOB = "job0123456789"
BOUNDARY = "test-boundary-42"
FORM = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
MiB = 1 << 20


def part(name: str, data: bytes, filename: str | None = None, ctype: str | None = None) -> bytes:
    disposition = f'form-data; name="{name}"'
    if filename is not None:
        disposition += f'; filename="{filename}"'
    head = f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n"
    if ctype is not None:
        head += f"Content-Type: {ctype}\r\n"
    return head.encode() + b"\r\n" + data + b"\r\n"


def file_head(filename: str) -> bytes:
    """The start of a file part, its data to follow (a body sent in pieces)."""
    disposition = f'form-data; name="file"; filename="{filename}"'
    return f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()


def body(*parts: bytes) -> bytes:
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def jsonl(rows: int, text: str = "book a table for two") -> bytes:
    return b"".join(json.dumps({"text": f"{text} {i}"}).encode() + b"\n" for i in range(rows))


def stored_files(root: Path) -> list[Path]:
    """Every file under the storage root, temporary ones included."""
    return sorted(p for p in root.rglob("*") if p.is_file())


class Harness:
    def __init__(self, tmp_path: Path, **settings: Any) -> None:
        self.root = tmp_path / "store"
        self.storage = LocalStorage(self.root, fsync=False)
        self.settings = JobSettings(**{"min_free_bytes": 0, **settings})
        self.metrics = Metrics()
        self.calls: list[dict[str, str]] = []
        self.stored_at_call: list[list[Path]] = []
        self.refuse: InfergateError | None = None

    async def on_fields(self, fields: dict[str, str]) -> FieldsOk:
        self.calls.append(fields)
        self.stored_at_call.append(stored_files(self.root))
        if self.refuse is not None:
            raise self.refuse
        columns = json.loads(fields["columns"]) if "columns" in fields else None
        return FieldsOk(fields.get("text_field", "text"), columns)

    async def read(self, request: Request) -> upload.JobForm:
        return await read_job_form(
            request,
            storage=self.storage,
            job_id=JOB,
            settings=self.settings,
            metrics=self.metrics,
            on_fields=self.on_fields,
        )

    def client(self) -> TestClient:
        async def route(request: Request) -> Response:
            form = await self.read(request)
            return JSONResponse({"fields": form.fields, "files": [asdict(f) for f in form.files]})

        async def on_error(request: Request, exc: Exception) -> Response:
            assert isinstance(exc, InfergateError)
            return error_response(exc, None)

        app = Starlette(
            routes=[Route("/v1/jobs", route, methods=["POST"])],
            exception_handlers={InfergateError: on_error},
        )
        return TestClient(app)

    def post(self, content: bytes, headers: dict[str, str] | None = None) -> Any:
        with self.client() as client:
            return client.post("/v1/jobs", content=content, headers=headers or FORM)

    def outcomes(self) -> dict[str, float]:
        return {
            s.labels["outcome"]: s.value
            for metric in self.metrics.job_uploads.collect()
            for s in metric.samples
            if s.name.endswith("_total")
        }


def refused(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    return error


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    return Harness(tmp_path)


# --- what is stored ----------------------------------------------------------------------
def test_files_are_stored_with_their_hash_size_rows_and_header(h: Harness) -> None:
    first = jsonl(3 * MiB // 40)  # several flushes
    second = b'id,text,lang\r\n1,hello,en\r\n2,"a, quoted\nline",fr\r\n3,last,de'
    r = h.post(
        body(
            part("model", b"intent"),
            part("columns", b'["lang"]'),
            part("file", first, "C:\\Users\\me\\rows.jsonl", "application/x-ndjson"),
            part("file", second, "more.csv", "text/csv"),
        )
    )
    assert r.status_code == 200, r.text
    assert r.json()["fields"] == {"model": "intent", "columns": '["lang"]'}
    files = [StoredFile(**f) for f in r.json()["files"]]
    assert [(f.index, f.name, f.format) for f in files] == [
        (0, "rows.jsonl", "jsonl"),
        (1, "more.csv", "csv"),
    ]
    for f, data in zip(files, (first, second), strict=True):
        assert (f.bytes, f.sha256) == (len(data), hashlib.sha256(data).hexdigest())
        assert (h.root / f.storage_key).read_bytes() == data
    assert files[0].storage_key == f"jobs/{JOB}/inputs/0.jsonl"
    assert files[0].rows_estimate == first.count(b"\n")
    # 4 newlines + a last line without one - the header: an estimate (3 rows, one quoted
    # field holds a newline), settled by planning.
    assert files[1].rows_estimate == 4
    assert (files[0].header, files[1].header) == (None, ["id", "text", "lang"])
    assert h.calls == [{"model": "intent", "columns": '["lang"]'}]
    assert h.stored_at_call == [[]]  # on_fields answered before any byte of a file
    assert not list((h.root / ".tmp").iterdir())
    row = files[1].as_row()
    assert (row.idx, row.storage_key, row.header, row.rows) == (
        1,
        files[1].storage_key,
        files[1].header,
        None,
    )
    assert h.outcomes()["accepted"] == 1
    assert h.metrics.job_upload_bytes._value.get() == len(first) + len(second)


def test_rows_estimate_counts_a_last_line_without_newline() -> None:
    assert upload.rows_estimate("jsonl", 2, 20, True) == 2
    assert upload.rows_estimate("jsonl", 2, 20, False) == 3
    assert upload.rows_estimate("csv", 3, 20, True) == 2
    assert upload.rows_estimate("csv", 0, 8, False) == 0  # a header alone
    assert upload.rows_estimate("jsonl", 0, 0, False) == 0


def test_file_names_are_their_printable_basename() -> None:
    assert upload_parts.file_name(b"../../etc/passwd", 0) == "passwd"
    assert upload_parts.file_name(b"a\x00b\x1b[31mc.csv", 1) == "ab[31mc.csv"
    assert upload_parts.file_name(b"x" * 400 + b".csv", 0) == "x" * 255
    assert upload_parts.file_name(b"", 3) == "file.3"


def test_memory_stays_bounded_while_a_large_file_streams(h: Harness) -> None:
    """The bytes handed to the writer never lag the bytes received by more than what may
    be pending (1 MiB), one slice of the body and one receive chunk."""
    written = {"n": 0}
    real_writer = h.storage.writer

    def writer(key: str) -> Any:
        inner = real_writer(key)
        original = inner.write

        def write(data: bytes) -> None:
            written["n"] += len(data)
            original(data)

        inner.write = write  # type: ignore[method-assign]
        return inner

    h.storage.writer = writer  # type: ignore[method-assign]
    total, chunk = 20 * MiB, 256 << 10
    block = jsonl(1000)
    data = (block * (total // len(block) + 1))[:total]
    pieces = [data[i : i + chunk] for i in range(0, total, chunk)]
    pieces = [part("model", b"intent") + file_head("big.jsonl"), *pieces]
    pieces.append(f"\r\n--{BOUNDARY}--\r\n".encode())
    received = {"file": -len(pieces[0])}  # the file's bytes handed to the reader so far
    lags: list[int] = []

    async def receive() -> dict[str, Any]:
        # Called when the reader wants more: all it was given is written but the lag.
        lags.append(max(received["file"], 0) - written["n"])
        piece = pieces.pop(0)
        received["file"] += len(piece) if pieces else 0
        return {"type": "http.request", "body": piece, "more_body": bool(pieces)}

    form = run(lambda: h.read(request(receive)))
    assert (form.files[0].bytes, form.files[0].sha256) == (total, hashlib.sha256(data).hexdigest())
    bound = upload.FLUSH_BYTES + upload.FEED_BYTES + chunk
    print(f"largest lag between bytes received and written: {max(lags) / MiB:.2f} MiB")
    # Pending bytes build up to a flush (batched, not a thread per slice), and no further.
    assert upload.FLUSH_BYTES // 2 < max(lags) <= bound


# --- refusals ----------------------------------------------------------------------------
def test_a_streamed_file_over_max_file_bytes_is_413_naming_it_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    h = Harness(tmp_path, max_file_bytes=2 * MiB)
    big = jsonl(4 * MiB // 40)  # past the cap after a flush: a temp file exists by then
    created: list[Path] = []
    real_writer = h.storage.writer

    def writer(key: str) -> Any:
        w = real_writer(key)
        created.append(w.temp_path)
        return w

    h.storage.writer = writer  # type: ignore[method-assign]
    r = h.post(
        body(
            part("model", b"intent"),
            part("file", jsonl(10), "ok.jsonl"),
            part("file", big, "huge.jsonl"),
        )
    )
    error = refused(r, 413, "payload_too_large")
    assert "file.1" in error["message"] and "'huge.jsonl'" in error["message"]
    assert error["details"] == {"item": "file.1", "file": "huge.jsonl", "limit_bytes": 2 * MiB}
    assert len(created) == 2  # the first was committed, the second was being written
    assert stored_files(h.root) == []  # no temp file, no committed input
    assert not (h.root / "jobs" / JOB).exists()
    assert h.outcomes()["too_large"] == 1


def test_a_zip_named_csv_is_415(h: Harness) -> None:
    zipped = b"PK\x03\x04" + b"\x14\x00" * 40
    r = h.post(body(part("model", b"intent"), part("file", zipped, "rows.csv")))
    error = refused(r, 415, "unsupported_media_type")
    assert (
        error["message"]
        == "file 'rows.csv' is a ZIP archive (or a DOCX/XLSX document), not CSV or JSONL"
    )
    assert stored_files(h.root) == []
    assert h.outcomes()["unsupported"] == 1


@pytest.mark.parametrize(
    ("data", "name", "ctype", "message"),
    [
        (jsonl(3), "rows.csv", None, "file 'rows.csv' is named as CSV but holds JSONL"),
        ("a,b\n1,2\n".encode("utf-16"), "rows.csv", None, "UTF-16"),
        (b"text\nhello\n", "rows.csv", "application/x-ndjson", "sent as jsonl"),
        (b"[" + b'{"text": "a"},' * 1000 + b"]", "rows.jsonl", None, "a JSON array"),
    ],
)
def test_content_that_is_not_what_it_claims_is_415(
    h: Harness, data: bytes, name: str, ctype: str | None, message: str
) -> None:
    r = h.post(body(part("model", b"intent"), part("file", data, name, ctype)))
    assert message in refused(r, 415, "unsupported_media_type")["message"]
    assert stored_files(h.root) == []


def test_a_csv_header_without_the_text_field_is_422(h: Harness) -> None:
    csv = b"id,body\n" + b"1,hello\n" * 20_000  # longer than the head: checked from it
    r = h.post(body(part("model", b"intent"), part("file", csv, "rows.csv")))
    error = refused(r, 422, "validation_error")
    assert (
        error["message"] == "text_field: column 'text' is not in the header: found ['id', 'body']"
    )
    assert stored_files(h.root) == []
    assert h.outcomes()["invalid"] == 1


def test_a_missing_carried_column_is_422(h: Harness) -> None:
    parts = (part("columns", b'["lang"]'), part("file", b"id,text\n1,hi\n", "rows.csv"))
    r = h.post(body(*parts))
    assert "column 'lang' is not in the header" in refused(r, 422, "validation_error")["message"]
    assert stored_files(h.root) == []


def test_fields_after_a_file_are_422(h: Harness) -> None:
    r = h.post(body(part("file", jsonl(2), "a.jsonl"), part("model", b"intent")))
    error = refused(r, 422, "validation_error")
    assert "fields must come before files" in error["message"]
    assert error["details"][0]["loc"] == ["body", "model"]
    assert stored_files(h.root) == []


@pytest.mark.parametrize(
    ("parts", "message"),
    [
        ((part("model", b"intent"),), "file: no file"),
        ((part("modle", b"intent"), part("file", b"{}", "a.jsonl")), "body.modle: Extra inputs"),
        ((part("model", b"x" * 9000), part("file", b"{}", "a.jsonl")), "model: longer than 8192"),
        ((part("model", b"a"), part("model", b"b")), "model: is given twice"),
        ((part("model", b"a", "m.txt"),), "model: must be a plain field"),
        ((part("file", b"{}"),), "file: a file part must be a file"),
        ((part("file", b"", "empty.jsonl"),), "file 'empty.jsonl' is empty"),
        ((part("model", b"\xff"),), "model: not UTF-8"),
    ],
)
def test_malformed_forms_are_422(h: Harness, parts: tuple[bytes, ...], message: str) -> None:
    assert message in refused(h.post(body(*parts)), 422, "validation_error")["message"]
    assert stored_files(h.root) == []


def test_more_files_than_max_files_is_422_and_removes_the_committed_ones(tmp_path: Path) -> None:
    h = Harness(tmp_path, max_files=2)
    files = [part("file", jsonl(5), f"{i}.jsonl") for i in range(3)]
    error = refused(h.post(body(*files)), 422, "validation_error")
    assert error["message"] == "file: more than 2 files; the limit is 2 per job"
    assert stored_files(h.root) == []


def test_not_multipart_is_415_and_a_broken_body_400(h: Harness) -> None:
    r = h.post(b'{"model": "intent"}', {"Content-Type": "application/json"})
    refused(r, 415, "unsupported_media_type")
    r = h.post(b"no boundary", {"Content-Type": "multipart/form-data"})
    assert "boundary" in refused(r, 400, "bad_request")["message"]
    cut = body(part("model", b"intent"), part("file", jsonl(3), "a.jsonl"))[:-12]
    assert "closing boundary" in refused(h.post(cut), 400, "bad_request")["message"]
    assert stored_files(h.root) == []


def test_a_refusal_from_on_fields_comes_before_any_file_byte(h: Harness) -> None:
    h.refuse = ModelNotFound("no model 'nope'")
    zipped = b"PK\x03\x04" + b"\x00" * 100  # would be 415: the fields are answered first
    r = h.post(body(part("model", b"nope"), part("file", zipped, "a.csv")))
    refused(r, 404, "model_not_found")
    assert h.stored_at_call == [[]] and stored_files(h.root) == []


def test_too_little_free_space_is_507_before_any_byte(h: Harness) -> None:
    h.settings = JobSettings(min_free_bytes=1 << 50)  # more than any disk
    r = h.post(body(part("model", b"intent"), part("file", jsonl(10), "a.jsonl")))
    error = refused(r, 507, "insufficient_storage")
    assert r.headers["retry-after"] == "60" and "free space" in error["message"]
    assert stored_files(h.root) == []


# --- a client gone, a cancel --------------------------------------------------------------
def run(body: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(asyncio.wait_for(body(), 30))


def request(receive: Callable[[], Awaitable[dict[str, Any]]]) -> Request:
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/jobs",
        "query_string": b"",
        "headers": [(b"content-type", FORM["Content-Type"].encode())],
    }
    return Request(scope, receive)


def _cut_receive(h: Harness, gone: asyncio.Event) -> Callable[[], Awaitable[dict[str, Any]]]:
    """3 MiB of a file (a temp file is being written by then), then waits for `gone`."""
    head = part("model", b"intent") + file_head("cut.jsonl")
    pieces = [head, *([jsonl(MiB // 40)] * 3)]

    async def receive() -> dict[str, Any]:
        if pieces:
            return {"type": "http.request", "body": pieces.pop(0), "more_body": True}
        await gone.wait()
        return {"type": "http.disconnect"}

    return receive


async def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.01)


def test_a_client_disconnect_mid_file_leaves_nothing(h: Harness) -> None:
    async def scenario() -> InfergateError:
        gone = asyncio.Event()
        task = asyncio.ensure_future(h.read(request(_cut_receive(h, gone))))
        await _until(lambda: bool(stored_files(h.root)), "a temp file being written")
        gone.set()
        with pytest.raises(InfergateError) as caught:
            await task
        return caught.value

    error = run(scenario)
    assert (error.status, error.message) == (400, "client disconnected while sending the body")
    assert stored_files(h.root) == []
    assert h.outcomes()["aborted"] == 1


def test_a_cancel_mid_file_leaves_nothing(h: Harness) -> None:
    async def scenario() -> None:
        task = asyncio.ensure_future(h.read(request(_cut_receive(h, asyncio.Event()))))
        await _until(lambda: bool(stored_files(h.root)), "a temp file being written")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(scenario)
    assert stored_files(h.root) == []  # removed before the cancel went on
    assert h.outcomes()["aborted"] == 1


def test_a_cancel_during_a_flush_waits_for_it_then_cleans_up(h: Harness) -> None:
    """A cancel arriving while a worker thread writes: the thread finishes, then the
    writers are aborted (no temp file created behind the cleanup's back)."""
    import threading

    release = threading.Event()
    entered = threading.Event()
    real_writer = h.storage.writer

    def slow_writer(key: str) -> Any:
        entered.set()
        assert release.wait(10)
        return real_writer(key)

    h.storage.writer = slow_writer  # type: ignore[method-assign]

    async def scenario() -> None:
        task = asyncio.ensure_future(h.read(request(_cut_receive(h, asyncio.Event()))))
        await _until(entered.is_set, "the first flush opening its writer")
        task.cancel()
        # 50 ms for the cancel to land: the claim is that the task is still not done
        # after it (held by the unfinished flush); no event can say "nothing happened".
        await asyncio.sleep(0.05)
        assert not task.done()  # held by the unfinished flush
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(scenario)
    assert stored_files(h.root) == []


# --- inline inputs, the body cap ---------------------------------------------------------
def test_write_inline_stores_the_lines_as_jsonl(h: Harness) -> None:
    lines = [json.dumps({"text": f"row {i}"}).encode() for i in range(5)]
    f = run(lambda: write_inline(h.storage, JOB, lines, settings=h.settings))
    data = b"".join(line + b"\n" for line in lines)
    assert (f.index, f.name, f.format, f.storage_key) == (
        0,
        "inline.jsonl",
        "jsonl",
        f"jobs/{JOB}/inputs/0.jsonl",
    )
    assert (f.bytes, f.sha256, f.rows_estimate, f.header) == (
        len(data),
        hashlib.sha256(data).hexdigest(),
        5,
        None,
    )
    assert (h.root / f.storage_key).read_bytes() == data
    with pytest.raises(ValueError, match="newline"):
        run(lambda: write_inline(h.storage, "job2", [b'{"a":\n1}'], settings=h.settings))
    assert not (h.root / "jobs" / "job2").exists()
    full = JobSettings(min_free_bytes=1 << 50)
    with pytest.raises(InfergateError) as caught:
        run(lambda: write_inline(h.storage, "job3", lines, settings=full))
    assert caught.value.status == 507 and stored_files(h.root / "jobs" / "job3") == []
    assert list((h.root / ".tmp").iterdir()) == []


def test_body_cap_covers_every_file_of_a_multipart_job() -> None:
    s = Settings(
        jobs=JobSettings(max_files=3, max_file_bytes=10 * MiB, max_inline_body_bytes=2 * MiB)
    )
    multipart = "multipart/form-data; boundary=x"
    assert body_cap("POST", "/v1/jobs", multipart, s) == 30 * MiB + MiB
    assert body_cap("POST", "/v1/jobs", "Multipart/Form-Data; boundary=x", s) == 31 * MiB
    assert body_cap("POST", "/v1/jobs", "application/json", s) == 2 * MiB
    assert body_cap("POST", "/v1/jobs", None, s) == 2 * MiB
    assert body_cap("GET", "/v1/jobs", None, s) is None
    assert body_cap("POST", "/v1/models/intent/predict", multipart, s) is None
