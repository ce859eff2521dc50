"""Usage counted per worker and written to the database behind the hot path.

`add` sums into a dict in this process (one lookup and six integer additions; no I/O on
the request's path). `run` writes the sums every `interval_s`, and the container calls
`flush` once more at shutdown (SIGTERM), after the loop has stopped and before the
database closes: a worker that is stopped loses nothing.

What a SIGKILL (or a crash) loses is what this worker counted and had not yet committed:
the requests that ended since the last write began (at most `interval_s` of them, one
second by default) plus those of the write in flight, which commits whole or not at all
(one transaction, bounded by the database deadline). With the database down, counts are
kept for the next write, so a kill during an outage loses everything pending, and that is
bounded too: at most `max_rows` rows are kept (MAX_PENDING_ROWS). Over that, the oldest
minutes are dropped, counted in `infergate_usage_ledger_dropped_rows` and logged once per
outage. Nothing is ever counted twice: a write that fails rolls back whole, and a write
is never cancelled half-way (its commit could be in doubt), only waited for.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable

from ..db.database import Database
from ..db.usage import FIELDS, Key, add_counts
from ..errors import DatabaseUnavailable
from ..observability.metrics import Metrics

log = logging.getLogger("infergate.usage")

# A pending row is one (subject, model, version, minute) with its six counts: about 400
# bytes in CPython, so 100 000 rows hold ~40 MB at most. Rows grow by one per active
# subject and model version per minute: 1 000 callers on two models keep a 50-minute
# outage; a worker with more callers keeps a shorter one.
MAX_PENDING_ROWS = 100_000


class UsageLedger:
    def __init__(
        self,
        db: Database,
        interval_s: float,
        metrics: Metrics,
        max_rows: int = MAX_PENDING_ROWS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = db
        self._interval_s = interval_s
        self._metrics = metrics
        self._max_rows = max_rows
        self._clock = clock
        # Counts in FIELDS order per key: a list, added to in place (no dict per request).
        self._pending: dict[Key, list[int]] = {}
        self._writing = asyncio.Lock()  # one write at a time (the loop's, the last one)
        self._failing = False  # the last write failed: say so once, not every second
        self._dropping = False  # rows were dropped in this outage (logged once)

    @property
    def pending_rows(self) -> int:
        return len(self._pending)

    def add(
        self,
        subject: str,
        account: str,
        model: str,
        version: str,
        *,
        requests: int = 1,
        items: int = 0,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        cache_hits: int = 0,
        errors: int = 0,
        at: float | None = None,
    ) -> None:
        """Count one request (or `requests` of them) in the minute it ended."""
        minute = int(self._clock() if at is None else at) // 60 * 60
        key = (subject, account, model, version, minute)
        row = self._pending.get(key)
        if row is None:
            row = self._pending[key] = [0, 0, 0, 0, 0, 0]
            self._metrics.ledger_pending.set(len(self._pending))
        row[0] += requests
        row[1] += items
        row[2] += prompt_tokens
        row[3] += completion_tokens
        row[4] += cache_hits
        row[5] += errors

    def counted(self) -> dict[Key, dict[str, int]]:
        """What is pending, by field name (for tests and diagnostics)."""
        return {key: dict(zip(FIELDS, row, strict=True)) for key, row in self._pending.items()}

    async def flush(self) -> int:
        """Writes what was counted in one transaction; returns the rows written. On
        failure the counts stay pending (within the bound) and the error is raised."""
        async with self._writing:
            pending, self._pending = self._pending, {}
            if not pending:
                return 0
            try:
                await self._db.run("usage", lambda session: add_counts(session, pending))
            except BaseException:
                self._keep(pending)
                raise
            finally:
                self._metrics.ledger_pending.set(len(self._pending))
            if self._failing:
                log.info("usage ledger written again", extra={"rows": len(pending)})
            self._failing = self._dropping = False
            return len(pending)

    async def run(self) -> None:
        """Writes every `interval_s` until cancelled. A write in flight when cancelled is
        finished first (within the database deadline): cancelling it could leave its
        commit in doubt, counted or lost without knowing which."""
        while True:
            await asyncio.sleep(self._interval_s)
            write = asyncio.ensure_future(self._write())
            try:
                await asyncio.shield(write)
            except asyncio.CancelledError:
                await write
                raise

    async def _write(self) -> None:
        try:
            await self.flush()
        except Exception as exc:  # the counts are kept; the next interval tries again
            if not self._failing:
                self._failing = True
                # The class only: a driver's message may quote the rows' values.
                log.warning(
                    "usage ledger not written; kept for the next write",
                    extra={"error": type(exc).__name__, "pending_rows": len(self._pending)},
                )
            if not isinstance(exc, DatabaseUnavailable):
                self._metrics.database_errors.labels("usage", type(exc).__name__).inc()

    def _keep(self, failed: dict[Key, list[int]]) -> None:
        """Puts a failed write's rows back (adding what was counted meanwhile), then
        holds the pending rows to the bound by dropping the oldest minutes."""
        for key, counts in failed.items():
            row = self._pending.get(key)
            if row is None:
                self._pending[key] = counts
            else:
                for i, n in enumerate(counts):
                    row[i] += n
        if len(self._pending) > self._max_rows:
            self._drop_oldest()

    def _drop_oldest(self) -> None:
        per_minute = Counter(key[4] for key in self._pending)
        over = len(self._pending) - self._max_rows
        dropped_minutes: set[int] = set()
        dropped = 0
        for minute in sorted(per_minute):
            if dropped >= over:
                break
            dropped_minutes.add(minute)
            dropped += per_minute[minute]
        self._pending = {k: v for k, v in self._pending.items() if k[4] not in dropped_minutes}
        self._metrics.ledger_dropped.inc(dropped)
        if self._dropping:
            return
        self._dropping = True
        log.error(
            "usage ledger over its bound while the database is unreachable: oldest "
            "minutes dropped unwritten",
            extra={"dropped_rows": dropped, "kept_rows": len(self._pending)},
        )
