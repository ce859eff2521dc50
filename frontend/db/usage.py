"""The usage ledger's table: counts added with one upsert per row (INSERT ... ON CONFLICT
DO UPDATE SET n = n + excluded.n), so concurrent writers never lose an increment; and the
one report query, sums grouped by day, model version or subject, paged by key."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import BigInteger, ColumnElement, and_, cast, func, literal_column, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from .tables import UsageRow

# The counted fields, in the order a pending row holds them (frontend/usage/ledger.py).
FIELDS = ("requests", "items", "prompt_tokens", "completion_tokens", "cache_hits", "errors")
Key = tuple[str, str, str, str, int]  # subject, account, model, version, minute
GroupBy = Literal["day", "model", "subject"]
DAY_S = 86_400


async def add_counts(session: AsyncSession, pending: Mapping[Key, Sequence[int]]) -> None:
    """Adds each row's counts (in FIELDS order) to what the table holds for its key."""
    insert: Any = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    table = UsageRow.__table__
    # Sorted: two workers writing overlapping rows take their row locks in one order
    # (no deadlock on PostgreSQL).
    for (subject, account, model, version, minute), counts in sorted(pending.items()):
        values = dict(zip(FIELDS, (int(n) for n in counts), strict=True))
        statement = insert(table).values(
            subject=subject, account=account, model=model, version=version, minute=minute, **values
        )
        statement = statement.on_conflict_do_update(
            index_elements=["subject", "model", "version", "minute"],
            set_={f: table.c[f] + statement.excluded[f] for f in FIELDS},
        )
        await session.execute(statement)


@dataclass(frozen=True, slots=True)
class UsageQuery:
    """Rows whose minute lies in [start, end) (epoch seconds), of `account` and `subject`
    when given, summed per group; groups after `after` (the last key of the previous
    page), in key order, at most `limit`."""

    start: int
    end: int
    group_by: GroupBy
    limit: int
    account: str | None = None
    subject: str | None = None
    after: tuple[Any, ...] | None = None


# Inline, not a bound parameter: PostgreSQL must see the SELECT's and the GROUP BY's
# expressions as one (two parameters of equal value are two expressions to it).
_DAY = literal_column(str(DAY_S), BigInteger)
_day = (UsageRow.minute - UsageRow.minute % _DAY).label("day")
GROUP_KEYS: dict[GroupBy, tuple[Any, ...]] = {
    "day": (_day,),
    "model": (UsageRow.model, UsageRow.version),
    "subject": (UsageRow.subject, UsageRow.account),
}


def _after(group_by: GroupBy, last: tuple[Any, ...]) -> ColumnElement[bool]:
    """Rows of the groups that sort after `last` (keyset paging: no OFFSET to rescan)."""
    if group_by == "day":
        return UsageRow.minute >= int(last[0]) + DAY_S  # the day after the last one
    first, second = GROUP_KEYS[group_by]
    return or_(first > last[0], and_(first == last[0], second > last[1]))


async def grouped(session: AsyncSession, query: UsageQuery) -> list[tuple[Any, ...]]:
    """One tuple per group: its key's values (GROUP_KEYS order), then the FIELDS' sums."""
    keys = GROUP_KEYS[query.group_by]
    sums = [cast(func.sum(getattr(UsageRow, f)), BigInteger).label(f) for f in FIELDS]
    conditions = [UsageRow.minute >= query.start, UsageRow.minute < query.end]
    if query.account is not None:
        conditions.append(UsageRow.account == query.account)
    if query.subject is not None:
        conditions.append(UsageRow.subject == query.subject)
    if query.after is not None:
        conditions.append(_after(query.group_by, query.after))
    statement = (
        select(*keys, *sums).where(*conditions).group_by(*keys).order_by(*keys).limit(query.limit)
    )
    result = await session.execute(statement)
    return [tuple(row) for row in result.all()]
