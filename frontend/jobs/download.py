"""A job's results or errors as one download: the committed chunks' files, in chunk order,
streamed back to back (design §6 "Results").

The body is a list of segments: for CSV the header line (`results/header.csv`, written at
planning), then each `done` chunk's winning file, named by the token SQL recorded and
sized by SQL (never by listing the folder: a losing attempt's file is referenced by
nobody). A running or cancelled job serves what is done so far; its ETag changes with
every commit, since it hashes the (idx, token, size) of every segment.

HTTP (RFC 9110): `If-None-Match` (weak comparison) → 304; one `Range` → 206 with
`Content-Range`, several → 200 with the whole body (RFC 9110 14.2 lets a server ignore
Range, and multipart/byteranges over segments buys nobody anything); a range starting
beyond the end → 416 with `Content-Range: bytes */<size>`; `If-Range` with another (or a
weak) ETag or a date → 200 whole (we keep no Last-Modified, so no date matches).
A syntactically invalid Range or another unit is ignored (200), as 14.2 allows.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO, Final, Literal

import anyio
import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ..context import context
from ..db.jobs import DoneChunk, JobRow
from ..errors import JobExpired, NotAcceptable, RangeNotSatisfiable
from ..storage import Storage
from .outputs import chunk_key, header_key

log = logging.getLogger("infergate.jobs.download")

Fmt = Literal["jsonl", "csv", "errors"]
READ_BYTES: Final = 64 << 10  # one thread hop per 64 KiB, however small the chunk files
JSONL_TYPES: Final = ("application/x-ndjson", "application/jsonl")
MEDIA_TYPES: Final[dict[Fmt, str]] = {
    "jsonl": "application/x-ndjson",
    "csv": "text/csv",  # Starlette adds "; charset=utf-8"
    "errors": "application/x-ndjson",
}
_RANGE_SPEC: Final = re.compile(r"(\d*)-(\d*)")


@dataclass(frozen=True, slots=True)
class Segment:
    key: str
    size: int


# -- content negotiation ------------------------------------------------------------


def _media_ranges(accept: str) -> list[tuple[str, float]]:
    """(media range, q) of each element of an Accept header; malformed q counts as 0."""
    found: list[tuple[str, float]] = []
    for element in accept.split(","):
        kind, *params = (part.strip() for part in element.split(";"))
        if not kind:
            continue
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = 0.0
        found.append((kind.lower(), q))
    return found


def _quality(ranges: list[tuple[str, float]], media_type: str) -> tuple[float, int]:
    """The q the most specific matching range gives `media_type`, and that specificity
    (2 exact, 1 type/*, 0 */*); (0, -1) when nothing matches."""
    major = media_type.split("/")[0]
    best = (0.0, -1)
    for kind, q in ranges:
        if kind == media_type:
            rank = 2
        elif kind == f"{major}/*":
            rank = 1
        elif kind == "*/*":
            rank = 0
        else:
            continue
        if rank > best[1]:
            best = (q, rank)
    return best


def pick_format(accept: str | None, what: Literal["results", "errors"]) -> Fmt:
    """The representation an Accept header asks for: JSONL (`application/x-ndjson`,
    `application/jsonl`, `*/*`, no header) or, for results, CSV (`text/csv`); the higher q
    wins, then the more specific range, then JSONL. Nothing acceptable → 406."""
    offered: list[tuple[Fmt, str]] = [
        ("errors" if what == "errors" else "jsonl", t) for t in JSONL_TYPES
    ]
    if what == "results":
        offered.append(("csv", "text/csv"))
    if accept is None or not accept.strip():
        return offered[0][0]
    ranges = _media_ranges(accept)
    best: tuple[float, int] = (0.0, -1)
    chosen: Fmt | None = None
    for fmt, media_type in offered:  # offered in our order of preference: ties keep it
        q, rank = _quality(ranges, media_type)
        if q > 0 and (q, rank) > best:
            best, chosen = (q, rank), fmt
    if chosen is None:
        kinds = ", ".join(t for _, t in offered)
        raise NotAcceptable(f"the {what} are served as {kinds}; Accept names none of them")
    return chosen


# -- the body -------------------------------------------------------------------------


def segments(
    job: JobRow, chunks: Sequence[DoneChunk], fmt: Fmt, *, header_size: int | None = None
) -> list[Segment]:
    """The download's files in order. For CSV, `header_size` is the size of the header
    file (None: not written yet, the job is not planned: no header segment). Empty files
    (a chunk without errors) are left out: nothing to read."""
    parts: list[Segment] = []
    if fmt == "csv" and header_size:
        parts.append(Segment(header_key(job.id), header_size))
    for chunk in chunks:
        size = _size_of(chunk, fmt)
        if size > 0:
            parts.append(Segment(chunk_key(job.id, chunk.idx, chunk.output_token, fmt), size))
    return parts


def _size_of(chunk: DoneChunk, fmt: Fmt) -> int:
    if fmt == "csv":
        return chunk.csv_bytes
    return chunk.errors_bytes if fmt == "errors" else chunk.results_bytes


def etag(
    job_id: str, fmt: Fmt, chunks: Sequence[DoneChunk], *, header_size: int | None = None
) -> str:
    """A strong ETag of exactly these bytes: the job, the format and every chunk's (idx,
    token, size); for CSV the header's size too (absent before planning)."""
    parts = [(c.idx, c.output_token, _size_of(c, fmt)) for c in chunks]
    blob = orjson.dumps([job_id, fmt, header_size if fmt == "csv" else None, parts])
    return '"' + hashlib.sha256(blob).hexdigest()[:32] + '"'


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The one byte range a Range header asks for, as [start, end) within `size`; None to
    send the whole body (no header, another unit, invalid syntax, several ranges, a
    suffix range of an empty body). RangeNotSatisfiable (416) when no range asked for
    starts within the body (RFC 9110 14.1.2: `a-` with a >= size, `-0`)."""
    if header is None:
        return None
    unit, eq, spec = header.partition("=")
    if not eq or unit.strip().lower() != "bytes":
        return None
    wanted: list[tuple[int, int] | None] = []  # None: that range is unsatisfiable
    for element in spec.split(","):
        element = element.strip()
        if not element:
            continue  # empty list elements are allowed (RFC 9110 5.6.1)
        match = _RANGE_SPEC.fullmatch(element)
        if match is None or match.group(0) == "-":
            return None
        first, last = match.groups()
        if first:
            start = int(first)
            if last and int(last) < start:
                return None  # invalid: the whole header is ignored
            end = min(int(last) + 1, size) if last else size
            wanted.append((start, end) if start < size else None)
        else:
            suffix = int(last)
            wanted.append((max(size - suffix, 0), size) if suffix > 0 else None)
    if not wanted:
        return None
    if all(item is None for item in wanted):
        raise RangeNotSatisfiable(size)
    if len(wanted) > 1:
        return None
    chosen = wanted[0]
    assert chosen is not None
    return None if chosen[0] >= chosen[1] else chosen  # an empty body's suffix range


class _Cursor:
    """Blocking reads of bytes [start, end) of the segments laid end to end, opening each
    file when the read reaches it (called through anyio.to_thread, one call at a time)."""

    def __init__(self, storage: Storage, parts: Sequence[Segment], start: int, end: int) -> None:
        self._storage = storage
        self._windows: list[tuple[str, int, int]] = []  # (key, from, to) within each file
        offset = 0
        for part in parts:
            lo, hi = max(start - offset, 0), min(end - offset, part.size)
            if lo < hi:
                self._windows.append((part.key, lo, hi))
            offset += part.size
        self._next = 0
        self._file: BinaryIO | None = None

    def read(self, limit: int) -> bytes:
        """Up to `limit` bytes, across file boundaries; b"" at the end."""
        out = bytearray()
        while len(out) < limit:
            if self._file is None:
                if self._next >= len(self._windows):
                    break
                key, lo, hi = self._windows[self._next]
                self._next += 1
                self._file = self._storage.open_range(key, lo, hi)
            data = self._file.read(limit - len(out))
            if data:
                out += data
            else:
                self.close()
        return bytes(out)

    def close(self) -> None:
        if self._file is not None:
            file, self._file = self._file, None
            file.close()


class SegmentsResponse(StreamingResponse):
    """Bytes [start, end) of the segments, read 64 KiB at a time off the event loop.
    A file that vanished or is shorter than SQL says (retention ran meanwhile) ends the
    body early: the client sees fewer bytes than Content-Length said, as it should."""

    def __init__(
        self,
        storage: Storage,
        parts: Sequence[Segment],
        start: int,
        end: int,
        *,
        status_code: int,
        headers: dict[str, str],
        media_type: str,
    ) -> None:
        headers = {**headers, "Content-Length": str(end - start)}
        body = _read_all(_Cursor(storage, parts, start, end))
        super().__init__(body, status_code=status_code, headers=headers, media_type=media_type)


async def _read_all(cursor: _Cursor) -> AsyncIterator[bytes]:
    try:
        while True:
            data = await anyio.to_thread.run_sync(cursor.read, READ_BYTES)
            if not data:
                return
            yield data
    except (OSError, ValueError):
        log.warning("a job download ended early: a file is missing or short", exc_info=True)
        raise
    finally:
        with anyio.CancelScope(shield=True):  # a client gone mid-body still closes the file
            await anyio.to_thread.run_sync(cursor.close)


# -- the response ---------------------------------------------------------------------


def _etags(header: str) -> list[str]:
    return [tag.strip() for tag in header.split(",") if tag.strip()]


def _weak_match(header: str, tag: str) -> bool:
    """If-None-Match's weak comparison (RFC 9110 8.8.3.2): W/ prefixes do not count."""
    return any(t == "*" or t.removeprefix("W/") == tag for t in _etags(header))


def _read_header_size(storage: Storage, job_id: str) -> int | None:
    try:
        return storage.size(header_key(job_id))
    except FileNotFoundError:
        return None


def _filename(job_id: str, fmt: Fmt) -> str:
    return f"{job_id}-errors.jsonl" if fmt == "errors" else f"{job_id}-results.{fmt}"


async def download(
    request: Request,
    job: JobRow,
    chunks: Sequence[DoneChunk],
    storage: Storage,
    fmt: Fmt,
    *,
    now: float,
) -> Response:
    """The results (fmt jsonl/csv, chosen by `pick_format`) or errors of `job` as its done
    `chunks` give them: 200, 206, 304; raises JobExpired (410) after expires_at and
    RangeNotSatisfiable (416)."""
    if job.expires_at is not None and now >= job.expires_at:
        raise JobExpired(f"job {job.id} expired; its results are deleted")
    header_size = None
    if fmt == "csv":
        header_size = await anyio.to_thread.run_sync(_read_header_size, storage, job.id)
    parts = segments(job, chunks, fmt, header_size=header_size)
    size = sum(part.size for part in parts)
    tag = etag(job.id, fmt, chunks, header_size=header_size)
    headers = {
        "ETag": tag,
        "Cache-Control": "private, no-cache",
        "X-Job-State": job.state,
        "Accept-Ranges": "bytes",
        "Content-Disposition": f'attachment; filename="{_filename(job.id, fmt)}"',
    }
    if fmt != "errors":
        headers["Vary"] = "Accept"  # the results' representation depends on it
    media_type = MEDIA_TYPES[fmt]
    if_none_match = request.headers.get("if-none-match")
    if if_none_match is not None and _weak_match(if_none_match, tag):
        kept = ("ETag", "Cache-Control", "X-Job-State", "Vary")
        return Response(status_code=304, headers={k: v for k, v in headers.items() if k in kept})
    wanted = None
    if_range = request.headers.get("if-range")
    if if_range is None or if_range.strip() == tag:  # strong comparison; a date never matches
        wanted = byte_range(request.headers.get("range"), size)
    status, (start, end) = (200, (0, size)) if wanted is None else (206, wanted)
    if wanted is not None:
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    if context(request).head_as_get:  # HEAD: the headers alone, no file is opened
        headers["Content-Length"] = str(end - start)
        return Response(status_code=status, headers=headers, media_type=media_type)
    return SegmentsResponse(
        storage, parts, start, end, status_code=status, headers=headers, media_type=media_type
    )
