"""The usage ledger (frontend/usage/ledger.py) and its reports (frontend/usage/report.py,
frontend/api/usage.py): sums in memory, written exactly once, kept through a failed write
within a bound; and the routes over the real app (a fake Triton, in-memory SQLite):
what gets counted, grouping, paging, CSV and the 422s."""

from __future__ import annotations

import asyncio
import base64
import csv
import io
import json
import logging
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import Any, TypeVar

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from frontend.container import services_of
from frontend.db.database import MEMORY_URL, Database
from frontend.db.migrate import create_all
from frontend.db.tables import UsageRow
from frontend.errors import DatabaseUnavailable
from frontend.observability.metrics import Metrics
from frontend.settings import DatabaseSettings
from frontend.usage.ledger import UsageLedger
from frontend.usage.report import MAX_RANGE_DAYS

from .test_access import as_key, new_key
from .test_request_hardening import CHAT, USER, CountingTriton, _app

T = TypeVar("T")
MAY_1 = int(datetime(2024, 5, 1, tzinfo=UTC).timestamp())
DAY = 86_400


class FlakyDatabase(Database):
    """The real database, whose next `fail` writes raise as an outage does; `during`
    runs inside a failing write (a request counted while the write is in flight)."""

    def __init__(self, metrics: Metrics) -> None:
        super().__init__(MEMORY_URL, DatabaseSettings(), metrics)
        self.fail = 0
        self.during: Callable[[], None] | None = None
        self.gate: asyncio.Event | None = None
        self.waiting = False

    async def run(self, operation: str, work: Callable[[Any], Awaitable[T]]) -> T:
        if self.gate is not None:
            self.waiting = True
            await self.gate.wait()
        if self.fail:
            self.fail -= 1
            if self.during is not None:
                self.during()
            raise DatabaseUnavailable("the database is unreachable")
        return await super().run(operation, work)


async def _db(metrics: Metrics) -> FlakyDatabase:
    db = FlakyDatabase(metrics)
    await create_all(db.engine)
    return db


async def _rows(db: Database) -> dict[tuple, dict[str, int]]:
    async def read(session: Any) -> list[UsageRow]:
        return list((await session.execute(select(UsageRow))).scalars())

    fields = ("requests", "items", "prompt_tokens", "completion_tokens", "cache_hits", "errors")
    return {
        (r.subject, r.account, r.model, r.version, r.minute): {f: getattr(r, f) for f in fields}
        for r in await Database.run(db, "read", read)
    }


def _counts(**counts: int) -> dict[str, int]:
    fields = ("requests", "items", "prompt_tokens", "completion_tokens", "cache_hits", "errors")
    return {f: counts.get(f, 0) for f in fields}


# --- the ledger ------------------------------------------------------------------------


def test_add_sums_per_subject_model_version_and_minute():
    async def scenario() -> None:
        metrics = Metrics()
        ledger = UsageLedger(await _db(metrics), 1.0, metrics)
        ledger.add("key:a", "user:u", "intent", "1", items=2, cache_hits=1, at=MAY_1 + 5)
        ledger.add("key:a", "user:u", "intent", "1", items=3, errors=1, at=MAY_1 + 59)
        ledger.add("key:a", "user:u", "intent", "2", items=1, at=MAY_1 + 59)  # other version
        ledger.add("key:a", "user:u", "intent", "1", items=1, at=MAY_1 + 60)  # next minute
        ledger.add("user:u", "user:u", "chat", "1", items=1, prompt_tokens=7,
                   completion_tokens=9, at=MAY_1 + 61)  # fmt: skip
        assert ledger.counted() == {
            ("key:a", "user:u", "intent", "1", MAY_1): _counts(
                requests=2, items=5, cache_hits=1, errors=1
            ),
            ("key:a", "user:u", "intent", "2", MAY_1): _counts(requests=1, items=1),
            ("key:a", "user:u", "intent", "1", MAY_1 + 60): _counts(requests=1, items=1),
            ("user:u", "user:u", "chat", "1", MAY_1 + 60): _counts(
                requests=1, items=1, prompt_tokens=7, completion_tokens=9
            ),
        }
        assert metrics.ledger_pending._value.get() == 4

    asyncio.run(scenario())


def test_flush_writes_exactly_the_sums_and_a_second_flush_adds_to_them():
    async def scenario() -> None:
        metrics = Metrics()
        db = await _db(metrics)
        ledger = UsageLedger(db, 1.0, metrics)
        for _ in range(3):
            ledger.add("key:a", "user:u", "intent", "1", items=2, cache_hits=1, at=MAY_1)
        ledger.add("key:b", "key:b", "embed", "1", items=4, at=MAY_1)
        assert await ledger.flush() == 2
        assert ledger.pending_rows == 0 and metrics.ledger_pending._value.get() == 0
        assert await _rows(db) == {
            ("key:a", "user:u", "intent", "1", MAY_1): _counts(requests=3, items=6, cache_hits=3),
            ("key:b", "key:b", "embed", "1", MAY_1): _counts(requests=1, items=4),
        }
        assert await ledger.flush() == 0  # nothing new: nothing written
        ledger.add("key:a", "user:u", "intent", "1", items=1, errors=1, at=MAY_1 + 30)
        await ledger.flush()
        rows = await _rows(db)
        assert rows[("key:a", "user:u", "intent", "1", MAY_1)] == _counts(
            requests=4, items=7, cache_hits=3, errors=1
        )
        await db.close()

    asyncio.run(scenario())


def test_a_failed_flush_keeps_the_counts_and_what_came_meanwhile_for_the_next_write():
    async def scenario() -> None:
        metrics = Metrics()
        db = await _db(metrics)
        ledger = UsageLedger(db, 1.0, metrics)
        ledger.add("key:a", "key:a", "intent", "1", items=2, at=MAY_1)
        db.fail = 1

        # A request that ends while the failing write is in flight: same row, and a new one.
        def meanwhile() -> None:
            ledger.add("key:a", "key:a", "intent", "1", items=5, at=MAY_1)
            ledger.add("key:c", "key:c", "intent", "1", items=1, at=MAY_1)

        db.during = meanwhile
        with pytest.raises(DatabaseUnavailable):
            await ledger.flush()
        assert await _rows(db) == {}  # nothing half-written
        assert ledger.counted() == {
            ("key:a", "key:a", "intent", "1", MAY_1): _counts(requests=2, items=7),
            ("key:c", "key:c", "intent", "1", MAY_1): _counts(requests=1, items=1),
        }
        assert metrics.ledger_pending._value.get() == 2
        await ledger.flush()
        assert await _rows(db) == {
            ("key:a", "key:a", "intent", "1", MAY_1): _counts(requests=2, items=7),
            ("key:c", "key:c", "intent", "1", MAY_1): _counts(requests=1, items=1),
        }
        await db.close()

    asyncio.run(scenario())


def test_an_outage_keeps_at_most_the_bound_dropping_the_oldest_minutes_logged_once(caplog):
    async def scenario() -> None:
        metrics = Metrics()
        db = await _db(metrics)
        ledger = UsageLedger(db, 1.0, metrics, max_rows=3)
        for minute in range(4):  # four rows, one per minute
            ledger.add("key:a", "key:a", "intent", "1", items=1, at=MAY_1 + 60 * minute)
        db.fail = 2
        with caplog.at_level(logging.ERROR, "infergate.usage"):
            with pytest.raises(DatabaseUnavailable):
                await ledger.flush()
            assert [k[4] for k in ledger.counted()] == [MAY_1 + 60, MAY_1 + 120, MAY_1 + 180]
            assert metrics.ledger_dropped._value.get() == 1
            ledger.add("key:a", "key:a", "intent", "1", items=1, at=MAY_1 + 240)
            ledger.add("key:b", "key:b", "intent", "1", items=1, at=MAY_1 + 240)
            with pytest.raises(DatabaseUnavailable):
                await ledger.flush()
        # Two more rows: the two oldest minutes go, and the log says so only once.
        assert sorted({k[4] for k in ledger.counted()}) == [MAY_1 + 180, MAY_1 + 240]
        assert ledger.pending_rows == 3 and metrics.ledger_dropped._value.get() == 3
        dropped = [r for r in caplog.records if "dropped" in r.getMessage()]
        assert len(dropped) == 1 and dropped[0].dropped_rows == 1
        await ledger.flush()  # the database is back: what was kept is written
        assert sum(r["requests"] for r in (await _rows(db)).values()) == 3
        await db.close()

    asyncio.run(scenario())


def test_run_writes_each_interval_through_failures_and_a_cancel_waits_for_the_write():
    async def scenario() -> None:
        metrics = Metrics()
        db = await _db(metrics)
        ledger = UsageLedger(db, 0.001, metrics)
        db.fail = 2  # the first two writes fail: the loop goes on
        task = asyncio.create_task(ledger.run())
        ledger.add("key:a", "key:a", "intent", "1", items=1, at=MAY_1)
        for _ in range(2000):
            if not ledger.pending_rows:
                break
            await asyncio.sleep(0.005)
        assert db.fail == 0 and await _rows(db) != {}
        # A write in flight when the loop is cancelled (shutdown) is finished, not cut.
        db.gate = asyncio.Event()
        ledger.add("key:b", "key:b", "intent", "1", items=1, at=MAY_1)
        while not db.waiting:
            await asyncio.sleep(0.001)
        task.cancel()
        for _ in range(50):  # turns of the loop: the cancel reaches the task, which waits
            await asyncio.sleep(0)
        assert not task.done()
        db.gate.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert ledger.pending_rows == 0
        assert set(await _rows(db)) == {
            ("key:a", "key:a", "intent", "1", MAY_1),
            ("key:b", "key:b", "intent", "1", MAY_1),
        }
        await db.close()

    asyncio.run(scenario())


# --- counting through the app ----------------------------------------------------------


PREDICT = "/v1/models/intent/predict"


@pytest.fixture
def api(tmp_path) -> Iterator[TestClient]:
    client = _app(tmp_path, CountingTriton())
    yield client
    client.__exit__(None, None, None)


def _ledger(client: TestClient) -> UsageLedger:
    services = services_of(client.app)  # type: ignore[arg-type]
    assert services is not None
    return services.ledger


def _flush(client: TestClient) -> None:
    """The ledger's write, on the app's own event loop (as its loop would do it)."""
    assert client.portal is not None
    client.portal.call(_ledger(client).flush)


def _by_subject(client: TestClient, **params: Any) -> dict[str, dict[str, Any]]:
    r = client.get("/v1/admin/usage", params={"group_by": "subject", **params})
    assert r.status_code == 200, r.text
    return {g["subject"]: g for g in r.json()["data"]}


def test_predict_embeddings_and_errors_are_counted_against_the_caller(api):
    key = new_key(api, tier="unlimited")
    caller = as_key(key["key"])
    texts = {"inputs": ["hello there", "bye now"]}
    for _ in range(3):  # the second and third are answered from the cache
        assert api.post(PREDICT, json=texts, headers=caller).status_code == 200
    assert api.post("/v1/embeddings", json={"model": "embed", "input": ["a", "b", "c"]},
                    headers=caller).status_code == 200  # fmt: skip
    # A precondition that fails once the model answered: counted, as an error.
    failed = api.post(PREDICT, json=texts, headers={**caller, "If-None-Match": "*"})
    assert failed.status_code == 412
    # Never reached a model: not counted.
    assert api.post("/v1/models/nope/predict", json=texts, headers=caller).status_code == 404
    assert api.get("/v1/models", headers=caller).status_code == 200
    _flush(api)
    mine = _by_subject(api)[f"key:{key['id']}"]
    assert mine == {
        "subject": f"key:{key['id']}",
        "account": f"key:{key['id']}",
        "requests": 5,
        "items": 2 * 4 + 3,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "cache_hits": 2 * 3,
        "errors": 1,
    }
    per_model = api.get("/v1/admin/usage", params={"group_by": "model", "key": key["id"]})
    assert {(g["model"], g["version"]): g["requests"] for g in per_model.json()["data"]} == {
        ("intent", "2"): 4,
        ("embed", "1"): 1,
    }


def test_a_generation_counts_the_tokens_its_usage_reports_streamed_or_not(api):
    key = new_key(api, tier="unlimited")
    caller = as_key(key["key"])
    whole = api.post(CHAT, json={"model": "chat", "messages": USER}, headers=caller)
    assert whole.status_code == 200
    usage = whole.json()["usage"]
    body = {"model": "chat", "messages": USER, "stream": True,
            "stream_options": {"include_usage": True}}  # fmt: skip
    with api.stream("POST", CHAT, json=body, headers=caller) as r:
        frames = [line[6:] for line in r.iter_lines() if line.startswith("data: {")]
    streamed = json.loads(frames[-1])["usage"]
    assert streamed == usage and usage["completion_tokens"] > 0
    _flush(api)
    mine = _by_subject(api)[f"key:{key['id']}"]
    assert (mine["requests"], mine["items"], mine["errors"]) == (2, 2, 0)
    assert mine["prompt_tokens"] == 2 * usage["prompt_tokens"]
    assert mine["completion_tokens"] == 2 * usage["completion_tokens"]


# --- reading ---------------------------------------------------------------------------


def _seed(client: TestClient, rows: list[tuple[str, str, str, int, int]]) -> None:
    """(subject, account, model, at, items) rows, one request each, written."""
    ledger = _ledger(client)
    for subject, account, model, at, items in rows:
        ledger.add(subject, account, model, "1", items=items, at=at)
    _flush(client)


SEED = [
    ("key:a", "user:u", "intent", MAY_1 + 10, 1),
    ("key:a", "user:u", "embed", MAY_1 + DAY + 10, 2),
    ("user:u", "user:u", "intent", MAY_1 + 2 * DAY + 10, 3),
    ("key:b", "key:b", "intent", MAY_1 + 3 * DAY + 10, 4),
    ("key:b", "key:b", "intent", MAY_1 + 3 * DAY + 70, 5),
]
MAY = {"from": "2024-05-01", "to": "2024-05-31"}


def _page(client: TestClient, path: str = "/v1/admin/usage", **params: Any) -> dict:
    r = client.get(path, params=params)
    assert r.status_code == 200, r.text
    return r.json()


def test_admin_report_groups_by_day_model_and_subject_over_the_range(api):
    _seed(api, SEED)
    by_day = _page(api, **MAY)
    assert (by_day["from"], by_day["to"]) == ("2024-05-01T00:00:00Z", "2024-06-01T00:00:00Z")
    assert by_day["group_by"] == "day" and by_day["next_cursor"] is None
    assert [(g["day"], g["requests"], g["items"]) for g in by_day["data"]] == [
        ("2024-05-01", 1, 1),
        ("2024-05-02", 1, 2),
        ("2024-05-03", 1, 3),
        ("2024-05-04", 2, 9),
    ]
    assert set(by_day["data"][0]) == {
        "day", "requests", "items", "prompt_tokens", "completion_tokens", "cache_hits", "errors"
    }  # fmt: skip
    by_model = _page(api, group_by="model", **MAY)["data"]
    assert [(g["model"], g["version"], g["requests"]) for g in by_model] == [
        ("embed", "1", 1),
        ("intent", "1", 4),
    ]
    by_subject = _page(api, group_by="subject", **MAY)["data"]
    assert [(g["subject"], g["account"], g["items"]) for g in by_subject] == [
        ("key:a", "user:u", 3),
        ("key:b", "key:b", 9),
        ("user:u", "user:u", 3),
    ]
    # Filters, and a range in date-times: the minutes that start in [from, to).
    assert _page(api, account="user:u", **MAY)["data"][-1]["day"] == "2024-05-03"
    assert [g["items"] for g in _page(api, subject="key:b", **MAY)["data"]] == [9]
    assert [g["items"] for g in _page(api, key="b", **MAY)["data"]] == [9]
    narrow = _page(api, **{"from": "2024-05-04T00:01:00Z", "to": "2024-05-04T00:02:00+00:00"})
    assert [(g["day"], g["items"]) for g in narrow["data"]] == [("2024-05-04", 5)]
    # An offset, its `+` unescaped in the query string (read as a space): still +02:00.
    r = api.get("/v1/admin/usage?from=2024-05-04T02:01:00+02:00&to=2024-05-05")
    assert r.json()["from"] == "2024-05-04T00:01:00Z"
    # The default range is the last 24 h: none of May 2024.
    assert _page(api)["data"] == []


def test_pages_follow_the_key_order_and_the_cursor_keeps_the_range_and_filters(api):
    _seed(api, SEED)
    for group_by, first in (("day", "day"), ("model", "model"), ("subject", "subject")):
        whole = _page(api, group_by=group_by, **MAY)["data"]
        pages, cursor = [], None
        while True:
            params: dict[str, Any] = {"group_by": group_by, "limit": 1, **MAY}
            if cursor is not None:
                params = {"cursor": cursor, "limit": 1}  # the cursor carries the rest
            page = _page(api, **params)
            pages += page["data"]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert pages == whole and len(whole) >= 2, group_by
        assert [g[first] for g in pages] == sorted(g[first] for g in pages)
    two = _page(api, limit=2, **MAY)
    assert len(two["data"]) == 2 and two["next_cursor"] is not None
    # The same cursor with another filter, range or grouping is refused.
    for other in ({"account": "key:b"}, {"from": "2024-05-02"}, {"group_by": "model"}):
        r = api.get("/v1/admin/usage", params={"cursor": two["next_cursor"], **other})
        assert r.status_code == 422, other
        assert "another query" in r.json()["error"]["message"]
    forged = base64.urlsafe_b64encode(b'{"g":"day","s":0,"e":1,"w":"x","k":["x"]}').decode()
    for bad in ("not a cursor", "e30", forged):
        r = api.get("/v1/admin/usage", params={"cursor": bad})
        assert r.status_code == 422 and "cursor" in r.json()["error"]["message"], bad


def test_csv_export_has_a_header_and_one_row_per_group(api):
    _seed(api, [*SEED, ("=cmd", "=cmd", "intent", MAY_1, 1)])
    r = api.get(
        "/v1/admin/usage", params={"group_by": "subject", **MAY}, headers={"Accept": "text/csv"}
    )
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/csv")
    assert r.headers["content-disposition"].startswith("attachment")
    rows = list(csv.reader(io.StringIO(r.text)))
    assert rows[0] == [
        "subject", "account", "requests", "items", "prompt_tokens", "completion_tokens",
        "cache_hits", "errors",
    ]  # fmt: skip
    assert rows[1:] == [
        ["'=cmd", "'=cmd", "1", "1", "0", "0", "0", "0"],  # never a spreadsheet formula
        ["key:a", "user:u", "2", "3", "0", "0", "0", "0"],
        ["key:b", "key:b", "2", "9", "0", "0", "0", "0"],
        ["user:u", "user:u", "1", "3", "0", "0", "0", "0"],
    ]
    paged = api.get("/v1/admin/usage", params={"limit": 1, **MAY}, headers={"Accept": "text/csv"})
    assert len(list(csv.reader(io.StringIO(paged.text)))) == 2
    assert paged.headers["x-next-cursor"]


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"from": "2024-01-01", "to": "2024-06-01"}, f"longer than {MAX_RANGE_DAYS} days"),
        ({"from": "2024-05-02", "to": "2024-05-01T00:00:00Z"}, "from is after to"),
        ({"from": "yesterday"}, "from must be an ISO-8601"),
        ({"to": "2024-13-01"}, "to must be an ISO-8601"),
        ({"to": "9999-12-31"}, "to must be an ISO-8601"),
        ({"from": "2024-05-01T25:00"}, "from must be an ISO-8601"),
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"group_by": "week"}, "group_by"),
        ({"key": "a", "subject": "key:b"}, "not both"),
        ({"from": "x" * 41}, "from"),
    ],
)
def test_bad_ranges_and_parameters_are_422_never_500(api, params, says):
    r = api.get("/v1/admin/usage", params=params)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "validation_error" and says in error["message"]
    assert "yesterday" not in r.text  # the value is not echoed


def test_own_usage_keeps_its_fields_and_shows_only_its_accounts_ledger(api):
    _seed(api, SEED)
    mine = new_key(api, tier="unlimited")
    other = new_key(api, tier="unlimited")
    for key in (mine, other):  # one predict each: their ledgers differ
        assert api.post(PREDICT, json={"inputs": ["hi"]}, headers=as_key(key["key"])).is_success
    _flush(api)
    caller = as_key(mine["key"])
    plain = api.get("/v1/usage", headers=caller).json()
    assert set(plain) == {"subject", "account", "kind", "role", "tier", "requests", "tokens"}
    asked = api.get("/v1/usage", params={"ledger": "true"}, headers=caller).json()
    assert {k: v for k, v in asked.items() if k != "ledger"} == plain
    assert [(g["requests"], g["items"]) for g in asked["ledger"]["data"]] == [(1, 1)]
    assert set(asked["ledger"]) == {"from", "to", "group_by", "data", "next_cursor"}
    by_model = api.get("/v1/usage", params={"group_by": "model"}, headers=caller).json()
    assert [(g["model"], g["requests"]) for g in by_model["ledger"]["data"]] == [("intent", 1)]
    # Another key of the account filter: the other key is another account, so nothing.
    only = api.get("/v1/usage", params={"key": other["id"]}, headers=caller).json()
    assert only["ledger"]["data"] == []
    assert api.get("/v1/usage", params={"group_by": "subject"}, headers=caller).status_code == 422
    # The admin report is for admins only.
    assert api.get("/v1/admin/usage", headers=caller).status_code == 403


def test_a_users_keys_count_against_the_user(api):
    user = api.post(
        "/v1/admin/users",
        json={"username": "ana", "password": "correct horse battery staple", "tier": "unlimited"},
    )
    assert user.status_code == 201, user.text
    first = new_key(api, user_id=user.json()["id"])
    second = new_key(api, user_id=user.json()["id"])
    for key in (first, second, second):
        assert api.post(PREDICT, json={"inputs": ["hi"]}, headers=as_key(key["key"])).is_success
    _flush(api)
    account = f"user:{user.json()['id']}"
    seen = api.get("/v1/usage", params={"group_by": "day"}, headers=as_key(first["key"])).json()
    assert seen["account"] == account and seen["ledger"]["data"][0]["requests"] == 3
    one = api.get("/v1/usage", params={"key": second["id"]}, headers=as_key(first["key"]))
    assert one.json()["ledger"]["data"][0]["requests"] == 2
    admin = _by_subject(api, account=account)
    assert {s: g["requests"] for s, g in admin.items()} == {
        f"key:{first['id']}": 1,
        f"key:{second['id']}": 2,
    }
