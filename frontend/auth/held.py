"""Key and user records held per worker, so that no request needs a database round trip.

An entry is used while it is younger than `ttl_s` AND its generation marker in the state
store (Redis, or in process) is the one it was loaded under. Every change to a key or
user (revoke, re-tier, scopes, disable, rotation...) is written to SQL first and then
gets a new marker (`bump`), so the next request in every worker sees the mismatch and
reloads: a change is effective at once everywhere, at the cost of one state-store read
per request (the same read the rate limiter already makes; no SQL). The marker is read
BEFORE the record is loaded, so a change racing a load can only cause an extra reload.

Markers are rebuildable. Each one is read together with an epoch (`gen:epoch`, a random
value made by the first worker that finds none): a flushed (or evicted) Redis loses the
epoch, the next reader makes a new one, and every held entry, loaded under the old epoch,
no longer matches: every worker reloads once, so no change is lost to a flush.

Outages: with the state store down the record is read from SQL on every request (exact,
and slower); with the database down a held entry keeps working for `outage_s` (new
credentials get 503). Both down: held entries within `outage_s`, else 503."""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from ..errors import DatabaseUnavailable
from ..state.store import StateStore

T = TypeVar("T")
MARKER_TTL_S = 86_400  # longer than any entry lives; an expired marker only forces a reload
UNKNOWN = b"?"  # loaded while the store was down: never matches a marker read later
EPOCH = "gen:epoch"


@dataclass(slots=True)
class Held(Generic[T]):
    record: T
    marker: bytes | None
    at: float  # monotonic


class HeldRecords(Generic[T]):
    def __init__(self, store: StateStore, kind: str, ttl_s: float, outage_s: float) -> None:
        self._store = store
        self._kind = kind
        self._ttl_s = ttl_s
        self._outage_s = outage_s
        self._held: dict[str, Held[T]] = {}

    def name(self, record_id: str) -> str:
        return f"gen:{self._kind}:{record_id}"

    def names(self, record_ids: list[str]) -> list[str]:
        """What to read for these records' markers: theirs and the epoch (last)."""
        return [*(self.name(i) for i in record_ids), EPOCH]

    async def combine(self, values: list[bytes | None]) -> list[bytes]:
        """The markers from what `names` read (the epoch made first if there is none)."""
        *markers, epoch = values
        if epoch is None:  # a new store, or one flushed: the first reader makes an epoch
            await self._store.put(EPOCH, secrets.token_hex(8).encode(), only_if_absent=True)
            epoch = await self._store.get(EPOCH) or b""
        return [(m or b"-") + b"@" + epoch for m in markers]

    async def markers(self, record_ids: list[str]) -> list[bytes]:
        """The current markers (one state-store round trip); StateUnavailable when down."""
        return await self.combine(await self._store.get_many(self.names(record_ids)))

    def get(self, record_id: str) -> Held[T] | None:
        return self._held.get(record_id)

    def fresh(self, held: Held[T] | None, marker: bytes | None) -> bool:
        return (
            held is not None and held.marker == marker and time.monotonic() - held.at < self._ttl_s
        )

    def usable_in_outage(self, held: Held[T] | None) -> bool:
        return held is not None and time.monotonic() - held.at < self._outage_s

    async def resolve(
        self, record_id: str, marker: bytes | None, load: Callable[[], Awaitable[T | None]]
    ) -> T | None:
        """The held record while fresh under `marker`; else `load()` (from SQL), held.
        With the database down, the held record within `outage_s` unless its marker moved
        (a change that cannot be read); else DatabaseUnavailable (503)."""
        held = self.get(record_id)
        if held is not None and marker != UNKNOWN and self.fresh(held, marker):
            return held.record
        try:
            record = await load()
        except DatabaseUnavailable:
            if (
                held is not None
                and self.usable_in_outage(held)
                and marker in (UNKNOWN, held.marker)
            ):
                return held.record
            raise
        if record is not None:
            self.keep(record_id, record, marker)
        return record

    def keep(self, record_id: str, record: T, marker: bytes | None) -> None:
        if self._ttl_s > 0 or self._outage_s > 0:
            self._held[record_id] = Held(record, marker, time.monotonic())

    def forget(self, record_id: str) -> None:
        self._held.pop(record_id, None)

    async def bump(self, record_ids: list[str]) -> None:
        """After a change is committed: every worker's held copy is stale from now on.
        Raises StateUnavailable when the store is down (this worker has forgotten them
        already; the others see the change within `ttl_s`)."""
        for record_id in record_ids:
            self.forget(record_id)
        for record_id in record_ids:
            await self._store.put(
                self.name(record_id), secrets.token_hex(8).encode(), ttl_s=MARKER_TTL_S
            )
