"""The usage report beneath GET /v1/usage (a caller's own account) and GET
/v1/admin/usage (anyone's): the ledger's sums over a bounded time range, grouped by day,
model version or subject, a page at a time.

The range is [from, to) in UTC, over the ledger's minutes (a minute counts when it starts
in the range); `from` defaults to 24 h before `to`, `to` to now. A date alone is midnight
UTC, and as `to` it includes that whole day (`from=2024-05-01&to=2024-05-31` is May).
Longer than MAX_RANGE_DAYS, `from` after `to`, or a date that does not parse: 422.

Pages come in key order (day; model then version; subject then account) and the cursor
is opaque to the caller: the last key of its page, plus the range and the filters of the
first page, so that every page of one listing covers the same range, however late it is
asked for (a default `to` of "now" would otherwise move). A cursor that does not belong
to the query it comes with is a 422.
"""

from __future__ import annotations

import base64
import binascii
import csv
import hashlib
import io
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson

from ..db.database import Database
from ..db.usage import DAY_S, FIELDS, GroupBy, UsageQuery, grouped
from ..errors import InputInvalid

MAX_RANGE_DAYS = 93  # a quarter: the longest range one query sums
DEFAULT_RANGE_S = DAY_S
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
# The names of each grouping's key columns, as the rows and the CSV header show them.
KEY_NAMES: dict[GroupBy, tuple[str, ...]] = {
    "day": ("day",),
    "model": ("model", "version"),
    "subject": ("subject", "account"),
}


@dataclass(frozen=True, slots=True)
class ReportAsk:
    """What a caller asked for, as the route received it (strings unparsed). `account`
    and `subject` are the filters: for a caller's own report the route sets `account`
    from the credentials, never from the query."""

    start: str | None = None
    end: str | None = None
    group_by: GroupBy | None = None
    limit: int | None = None
    cursor: str | None = None
    account: str | None = None
    subject: str | None = None
    # The groupings this route offers (a caller's own report: day and model).
    groupings: frozenset[str] = frozenset(KEY_NAMES)


async def report(db: Database, ask: ReportAsk, now: float | None = None) -> dict[str, Any]:
    """One page: {"from", "to", "group_by", "data": [...], "next_cursor"}."""
    query = _query(ask, time.time() if now is None else now)
    rows = await db.run("usage_report", lambda session: grouped(session, query))
    more = len(rows) == query.limit  # one more than asked for was fetched
    names = KEY_NAMES[query.group_by]
    page = rows[: query.limit - 1]
    data = [_group(query.group_by, names, row) for row in page]
    next_cursor = None
    if more and page:
        next_cursor = _encode_cursor(query, _filters(ask), tuple(page[-1][: len(names)]))
    return {
        "from": _iso(query.start),
        "to": _iso(query.end),
        "group_by": query.group_by,
        "data": data,
        "next_cursor": next_cursor,
    }


def to_csv(page: dict[str, Any]) -> str:
    """The page's groups as CSV: a header row, then one row per group."""
    names = [*KEY_NAMES[page["group_by"]], *FIELDS]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(names)
    for group in page["data"]:
        writer.writerow([_cell(group[name]) for name in names])
    return out.getvalue()


def _cell(value: Any) -> Any:
    # A spreadsheet runs a cell that starts with = + - @ as a formula: quote it as text.
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@"):
        return "'" + value
    return value


def _group(group_by: GroupBy, names: tuple[str, ...], row: tuple[Any, ...]) -> dict[str, Any]:
    keys = dict(zip(names, row, strict=False))
    if group_by == "day":
        keys["day"] = datetime.fromtimestamp(int(keys["day"]), UTC).date().isoformat()
    counts = row[len(names) :]
    return {**keys, **{f: int(n or 0) for f, n in zip(FIELDS, counts, strict=True)}}


def _query(ask: ReportAsk, now: float) -> UsageQuery:
    limit = DEFAULT_LIMIT if ask.limit is None else ask.limit
    if not 1 <= limit <= MAX_LIMIT:
        raise InputInvalid(f"limit must be 1 to {MAX_LIMIT}", {"max_limit": MAX_LIMIT})
    start = _instant(ask.start, "from", end=False)
    end = _instant(ask.end, "to", end=True)
    group_by: GroupBy = ask.group_by or "day"
    after = None
    if ask.cursor is not None:
        cursor = _decode_cursor(ask.cursor, ask.groupings)
        if (
            (ask.group_by is not None and ask.group_by != cursor["g"])
            or (start is not None and start != cursor["s"])
            or (end is not None and end != cursor["e"])
            or cursor["w"] != _filters(ask)
        ):
            raise InputInvalid("cursor belongs to another query (its range or filters)")
        group_by, start, end, after = cursor["g"], cursor["s"], cursor["e"], tuple(cursor["k"])
    if group_by not in ask.groupings:
        raise InputInvalid(f"group_by must be one of {sorted(ask.groupings)}")
    if end is None:
        end = int(now)
    if start is None:
        start = end - DEFAULT_RANGE_S
    if start > end:
        raise InputInvalid("from is after to", {"from": _iso(start), "to": _iso(end)})
    if end - start > MAX_RANGE_DAYS * DAY_S:
        raise InputInvalid(
            f"the range is longer than {MAX_RANGE_DAYS} days; ask for it in parts",
            {"max_days": MAX_RANGE_DAYS},
        )
    return UsageQuery(
        start=start,
        end=end,
        group_by=group_by,
        # One more than the page: whether there is a next page, without a count query.
        limit=limit + 1,
        account=ask.account,
        subject=ask.subject,
        after=after,
    )


def _instant(value: str | None, name: str, *, end: bool) -> int | None:
    """Epoch seconds of an ISO-8601 date or date-time (UTC unless it says otherwise)."""
    if value is None:
        return None
    text = value.strip()
    try:
        if "T" not in text and " " not in text and len(text) <= 10:
            day = date.fromisoformat(text)
            at = datetime(day.year, day.month, day.day, tzinfo=UTC)
            if end:  # the whole of that day
                at += timedelta(days=1)
        else:
            if "T" in text:
                # After a `T`, a space can only be a `+` the query string decoded (an
                # unescaped UTC offset, "T12:00:00+02:00"): read it as the `+` it was.
                text = text.replace(" ", "+")
            at = datetime.fromisoformat(text.replace("z", "Z"))
            if at.tzinfo is None:
                at = at.replace(tzinfo=UTC)
        return int(at.timestamp())
    except (ValueError, OverflowError):
        # The value is not echoed (a query string may carry anything).
        raise InputInvalid(
            f"{name} must be an ISO-8601 date (2024-05-01) or date-time "
            "(2024-05-01T12:00:00Z), UTC unless an offset is given",
            {"parameter": name},
        ) from None


def _iso(epoch_s: int) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _filters(ask: ReportAsk) -> str:
    """A short digest of the filters: a cursor is only good with the ones it came from."""
    joined = f"{ask.account or ''}\x00{ask.subject or ''}"
    return hashlib.sha256(joined.encode()).hexdigest()[:16]


def _encode_cursor(query: UsageQuery, filters: str, last: tuple[Any, ...]) -> str:
    payload = {"g": query.group_by, "s": query.start, "e": query.end, "w": filters, "k": last}
    return base64.urlsafe_b64encode(orjson.dumps(payload)).decode().rstrip("=")


def _decode_cursor(cursor: str, groupings: frozenset[str]) -> dict[str, Any]:
    invalid = InputInvalid("cursor is not one this server gave (pass next_cursor as is)")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        payload = orjson.loads(raw)
    except (binascii.Error, ValueError):
        raise invalid from None
    if not isinstance(payload, dict):
        raise invalid
    group_by, start, end, filters, key = (payload.get(k) for k in ("g", "s", "e", "w", "k"))
    if (
        group_by not in groupings
        or not isinstance(start, int)
        or not isinstance(end, int)
        or not isinstance(filters, str)
        or not isinstance(key, list)
        or len(key) != len(KEY_NAMES[group_by])
    ):
        raise invalid
    expected: type = int if group_by == "day" else str
    if not all(isinstance(part, expected) and not isinstance(part, bool) for part in key):
        raise invalid
    return payload
