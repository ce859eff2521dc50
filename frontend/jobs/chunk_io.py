"""The job runner's blocking storage work (run each in a thread): planning a file, reading
a chunk's rows, publishing an attempt's three files, removing a losing attempt's.

An attempt's files carry its own token, so publishing them changes nothing anybody reads:
only the chunk's commit in SQL makes one token the chunk's results.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Final, cast

from ..db.jobs import ChunkClaim, ChunkOutcome, JobFileRow, JobRow
from ..errors import InfergateError
from ..settings import LimitSettings
from ..storage import Storage
from .outputs import FileKind, Outcome, chunk_files, chunk_key, csv_header, header_key
from .plan import ChunkPlan, plan_file
from .rows import Row, RowError, read_rows
from .sniff import Format

log = logging.getLogger("infergate.jobs")
KINDS: Final[tuple[FileKind, ...]] = ("errors", "csv", "jsonl")  # ChunkOutcome's size order


def plan_job_file(
    storage: Storage,
    job: JobRow,
    file: JobFileRow,
    first_row: int,
    first_idx: int,
    chunk_rows: int,
) -> tuple[list[ChunkPlan], int]:
    size = storage.size(file.storage_key)
    with storage.open_range(file.storage_key, 0, size) as f:
        return plan_file(
            f,
            cast(Format, file.format),
            file.header,
            file.idx,
            first_row,
            first_idx,
            chunk_rows,
            job.text_field,
            job.columns,
        )


def _publish(storage: Storage, key: str, data: bytes) -> int:
    writer = storage.writer(key)
    try:
        writer.write(data)
        return writer.commit()
    finally:
        writer.abort()  # a no-op after commit


def write_header(storage: Storage, job_id: str, carried: list[str], columns: Sequence[str]) -> None:
    """The CSV results' first line. Planned twice, it is written twice, the same."""
    _publish(storage, header_key(job_id), csv_header(carried, columns))


def read_chunk(
    storage: Storage, limits: LimitSettings, job: JobRow, file: JobFileRow, claim: ChunkClaim
) -> list[Row | RowError]:
    start, end = claim.start_offset, claim.end_offset
    with storage.open_range(file.storage_key, start, end) as f:
        found = read_rows(
            f,
            cast(Format, file.format),
            start,
            end,
            claim.first_row,
            file.header,
            job.text_field,
            job.columns,
            limits=limits,
        )
        items = [item for _, item in found]
    if len(items) != claim.rows:  # not the file that was planned
        raise InfergateError(
            f"chunk {claim.idx} of file {file.name!r} holds {len(items)} rows, "
            f"planned {claim.rows}: the input file changed"
        )
    return items


def write_chunk(
    storage: Storage,
    claim: ChunkClaim,
    token: str,
    outcomes: Sequence[Outcome],
    carried: Sequence[str],
    csv_values: Callable[[dict[str, Any]], Sequence[Any]],
) -> ChunkOutcome:
    """Serializes and publishes the attempt's three files. A failure removes the ones
    already published (no commit names this token yet, so nobody reads them)."""
    built = chunk_files(outcomes, carried, csv_values)
    sizes: list[int] = []
    published: list[str] = []
    try:
        for kind, data in zip(KINDS, (built.errors, built.csv, built.results), strict=True):
            key = chunk_key(claim.job_id, claim.idx, token, kind)
            sizes.append(_publish(storage, key, data))
            published.append(key)
    except BaseException:
        for key in published:
            storage.delete_prefix(key)
        raise
    errors_bytes, csv_bytes, results_bytes = sizes
    return ChunkOutcome(
        token, built.rows_ok, built.rows_failed, results_bytes, csv_bytes, errors_bytes
    )


def delete_chunk(storage: Storage, job_id: str, idx: int, token: str) -> None:
    """A losing attempt's files. A failure leaves them to the retention sweep, which
    removes the job's whole folder: nobody references them meanwhile."""
    try:
        for kind in KINDS:
            storage.delete_prefix(chunk_key(job_id, idx, token, kind))
    except OSError:
        log.warning("deleting chunk %s/%d's unused files failed", job_id, idx, exc_info=True)
