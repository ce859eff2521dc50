"""A job's input files, streamed from a multipart/form-data body into job storage.

As services/uploads.py, python-multipart's callbacks check each limit the moment it is
crossed; unlike it, nothing is held whole: an image is 20 MiB, a job file 500 MB. Each
file part goes to its own `Sink`: the callbacks only append (and look at the first
bytes), and after each slice of the body the coroutine hands what is pending (≥ 1 MiB) to
a worker thread that hashes, counts and writes it. Memory per request: one slice of the
body, ≤ 1 MiB + a slice pending per file, the 64 KiB head of each file.

Order of the checks: the plain fields come first (`on_fields` resolves the model, scopes,
limits and the text field before a byte of a file is stored), then per file: its size
(413 naming it), its content from the head (415, sniff.py), a CSV header (422, rows.py),
free space before its first byte is written (507). Any failure, a client gone and a
cancel included, aborts every writer and removes what was committed, shielded from the
cancel. On success the caller owns the committed files (and removes them if the job is
not inserted after all).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, TypeVar

import anyio.to_thread
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from ..errors import (
    BadRequest,
    InfergateError,
    InsufficientStorage,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from ..job_settings import JobSettings
from ..observability.metrics import Metrics
from ..storage.base import BlobWriter, Storage
from . import sniff
from .retention import job_prefix
from .upload_parts import FILE_FIELD, FieldsOk, Parts, Sink, StoredFile, invalid

if TYPE_CHECKING:
    from ..settings import Settings

# Re-exported: what the job service takes from an upload.
__all__ = ["FieldsOk", "JobForm", "StoredFile", "body_cap", "read_job_form", "write_inline"]

log = logging.getLogger(__name__)

JOBS_PATH: Final = "/v1/jobs"
FLUSH_BYTES: Final = 1 << 20  # pending bytes handed to the writer thread at once
FEED_BYTES: Final = 64 << 10  # the parser is fed in slices of this, settled after each
FORM_SLACK: Final = 1 << 20  # multipart framing and fields, over the files' own bytes
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class JobForm:
    fields: dict[str, str]  # the plain fields, as sent
    files: list[StoredFile]  # at least one


def input_key(job_id: str, index: int, fmt: sniff.Format) -> str:
    return f"{job_prefix(job_id)}inputs/{index}.{fmt}"


def rows_estimate(fmt: sniff.Format, newlines: int, size: int, ends_with_newline: bool) -> int:
    """Rows by the newlines (a last line without one counts); a CSV's header is not a row."""
    if size == 0:
        return 0
    lines = newlines + (0 if ends_with_newline else 1)
    return max(lines - 1, 0) if fmt == "csv" else lines


def body_cap(method: str, path: str, content_type: str | None, settings: Settings) -> int | None:
    """The body guard's cap for a job submission (None: not one, the usual cap applies)."""
    if method != "POST" or path != JOBS_PATH:
        return None
    jobs = settings.jobs
    kind, _ = parse_options_header(content_type or "")
    if kind.lower() == b"multipart/form-data":
        return jobs.max_files * jobs.max_file_bytes + FORM_SLACK
    return jobs.max_inline_body_bytes


async def _unstoppable(work: Callable[[], T]) -> T:
    """`work` in a worker thread, always run to its end: a cancel that comes meanwhile is
    raised after it, so a writer is never left half-created or half-cleaned behind us."""
    task = asyncio.ensure_future(anyio.to_thread.run_sync(work))
    cancelled = False
    while not task.done():
        try:
            await asyncio.wait([task])  # a cancelled wait leaves the task running
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    return task.result()


def _not_enough_space(storage: Storage, needed: int, settings: JobSettings) -> None:
    free = storage.free_bytes()
    if free < settings.min_free_bytes + needed:
        raise InsufficientStorage(
            "not enough free space to store the job's input files; retry later",
            details={"free_bytes": free, "needed_bytes": settings.min_free_bytes + needed},
        )


class _Upload:
    """The coroutine side: resolves the fields, flushes and commits the files."""

    def __init__(
        self,
        storage: Storage,
        job_id: str,
        settings: JobSettings,
        metrics: Metrics,
        on_fields: Callable[[dict[str, str]], Awaitable[FieldsOk]],
    ) -> None:
        self.storage, self.job_id, self.settings = storage, job_id, settings
        self.metrics, self.on_fields = metrics, on_fields
        self.parts = Parts(settings)

    async def resolve_fields(self) -> FieldsOk:
        if self.parts.ok is None:
            self.parts.ok = await self.on_fields(dict(self.parts.fields))
        return self.parts.ok

    async def settle(self) -> None:
        """After each slice: fields resolved at the first file, then each file checked,
        flushed when enough is pending, committed once it ended."""
        if not self.parts.sinks:
            return
        ok = await self.resolve_fields()
        for sink in self.parts.sinks:
            if sink.stored is not None:
                continue
            sink.inspect(ok)
            if sink.pending_bytes >= FLUSH_BYTES or (sink.ended and sink.pending):
                await self._flush(sink)
            if sink.ended:
                await self._commit(sink)

    def _open_writer(self, sink: Sink) -> BlobWriter:
        assert sink.format is not None  # inspected before any flush
        _not_enough_space(self.storage, self.settings.max_file_bytes, self.settings)
        return self.storage.writer(input_key(self.job_id, sink.index, sink.format))

    async def _flush(self, sink: Sink) -> None:
        pieces = sink.take()
        await _unstoppable(lambda: sink.write(pieces, lambda: self._open_writer(sink)))
        self.metrics.job_upload_bytes.inc(sum(map(len, pieces)))

    async def _commit(self, sink: Sink) -> None:
        writer, fmt = sink.writer, sink.format
        assert writer is not None and fmt is not None  # an empty file is refused by sniff
        size = await _unstoppable(writer.commit)
        sink.stored = StoredFile(
            index=sink.index,
            name=sink.name,
            format=fmt,
            bytes=size,
            sha256=sink.sha256.hexdigest(),
            storage_key=input_key(self.job_id, sink.index, fmt),
            rows_estimate=rows_estimate(fmt, sink.newlines, size, sink.ends_with_newline),
            header=sink.header,
        )

    def discard(self) -> None:
        """Blocking: aborts every writer and removes what was committed."""
        for sink in self.parts.sinks:
            if sink.writer is not None:
                try:
                    sink.writer.abort()
                except OSError:
                    log.warning("job %s: aborting an upload's writer failed", self.job_id)
        self.storage.delete_prefix(job_prefix(self.job_id))


async def _read(request: Request, upload: _Upload) -> None:
    _, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if not boundary:
        raise BadRequest("a multipart/form-data body needs a boundary in its Content-Type")
    parts = upload.parts
    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": parts.on_part_begin,
            "on_part_data": parts.on_part_data,
            "on_part_end": parts.on_part_end,
            "on_header_field": parts.on_header_field,
            "on_header_value": parts.on_header_value,
            "on_header_end": parts.on_header_end,
            "on_headers_finished": parts.on_headers,
            "on_end": parts.on_end,
        },
    )
    async for chunk in request.stream():
        for start in range(0, len(chunk), FEED_BYTES):
            parser.write(chunk if len(chunk) <= FEED_BYTES else chunk[start : start + FEED_BYTES])
            await upload.settle()
    if not upload.parts.ended:
        raise BadRequest("the multipart/form-data body ends before its closing boundary")
    await upload.resolve_fields()
    if not upload.parts.sinks:
        raise invalid(
            FILE_FIELD,
            f"{FILE_FIELD}: no file; send each input file as a {FILE_FIELD} part",
            "no file",
        )


def _outcome(exc: BaseException) -> str:
    if isinstance(exc, PayloadTooLarge):
        return "too_large"
    if isinstance(exc, UnsupportedMediaType):
        return "unsupported"
    if isinstance(exc, InfergateError) and exc.status < 500:
        return "invalid"
    return "aborted"


async def read_job_form(
    request: Request,
    *,
    storage: Storage,
    job_id: str,
    settings: JobSettings,
    metrics: Metrics,
    on_fields: Callable[[dict[str, str]], Awaitable[FieldsOk]],
) -> JobForm:
    """The plain fields and the stored files of a multipart job submission. `on_fields` is
    awaited once, at the first file part (or at the end when there is none)."""
    kind, _ = parse_options_header(request.headers.get("content-type", ""))
    if kind.lower() != b"multipart/form-data":
        metrics.job_uploads.labels(outcome="unsupported").inc()
        raise UnsupportedMediaType(
            "a job upload is a multipart/form-data body (or send application/json with inputs)",
            details={"content_type": kind.decode("latin-1")[:200]},
        )
    upload = _Upload(storage, job_id, settings, metrics, on_fields)
    try:
        try:
            await _read(request, upload)
        except FormParserError:
            raise BadRequest("the body is not valid multipart/form-data") from None
    except BaseException as exc:
        outcome = "aborted" if isinstance(exc, ClientDisconnect) else _outcome(exc)
        metrics.job_uploads.labels(outcome=outcome).inc()
        await _unstoppable(upload.discard)
        if isinstance(exc, ClientDisconnect):
            raise BadRequest("client disconnected while sending the body") from None
        raise
    metrics.job_uploads.labels(outcome="accepted").inc()
    files = [sink.stored for sink in upload.parts.sinks if sink.stored is not None]
    return JobForm(dict(upload.parts.fields), files)


async def write_inline(
    storage: Storage, job_id: str, lines: Sequence[bytes], *, settings: JobSettings
) -> StoredFile:
    """`inputs/0.jsonl` from already-serialised JSON lines (one per row, no newline in
    them), hashed and sized as an upload is; committed whole or not at all."""
    key = input_key(job_id, 0, "jsonl")

    def write() -> StoredFile:
        if any(b"\n" in line for line in lines):
            raise ValueError("an inline row's JSON holds a newline")
        _not_enough_space(storage, sum(map(len, lines)) + len(lines), settings)
        digest = hashlib.sha256()
        writer = storage.writer(key)
        try:
            for line in lines:
                for piece in (line, b"\n"):
                    digest.update(piece)
                    writer.write(piece)
            size = writer.commit()
        except BaseException:
            writer.abort()
            raise
        rows = rows_estimate("jsonl", len(lines), size, True)
        return StoredFile(0, "inline.jsonl", "jsonl", size, digest.hexdigest(), key, rows, None)

    return await _unstoppable(write)
