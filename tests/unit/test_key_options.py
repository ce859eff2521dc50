"""API key options through the real app over a fake Triton: expiry, scopes (models and
routes), the narrowing of keys minted by keys, rotation with a grace period, admin
changes applied on the next request, the audit row of every admin write, concurrent
creation, and what a database outage leaves working."""

from __future__ import annotations

import asyncio
import json
import time
import types
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from frontend.app import create_app
from frontend.auth import keys as keys_module
from frontend.container import Services, services_of
from frontend.db.tables import ApiKeyRow, AuditRow
from frontend.settings import AuthSettings, DatabaseSettings, Settings, TritonSettings

from .cards import WITH_CHAT, write_cards
from .test_access import PASSWORD, as_key, bearer, login, new_key, new_user
from .test_api_claims import GenerationTriton
from .test_frontend_errors import ADMIN_KEY, assert_envelope, over_fake
from .test_held_records import break_database

PREDICT = "/v1/models/intent/predict"
EMBED = {"model": "embed", "input": "x"}
CHAT = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}


def _start(tmp_path, **sections: Any) -> TestClient:
    """A started app over a fake Triton serving a classifier, an embedder and a chat
    model; the test client sends the bootstrap admin key unless told otherwise."""
    sections.setdefault("auth", AuthSettings(bootstrap_admin_key=ADMIN_KEY))
    settings = Settings(
        environment="test",
        triton=TritonSettings(model_repository=write_cards(tmp_path / "repo", WITH_CHAT)),
        **sections,
    )
    app = create_app(settings, over_fake(settings, GenerationTriton()))
    client = TestClient(app, raise_server_exceptions=False, headers={"X-API-Key": ADMIN_KEY})
    client.__enter__()
    return client


@pytest.fixture
def gateway(tmp_path) -> Iterator[TestClient]:
    client = _start(tmp_path)
    yield client
    client.__exit__(None, None, None)


def _services(client: TestClient) -> Services:
    services = services_of(client.app)
    assert services is not None
    return services


def _later(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """The keys' clock (expiry, rotation grace) `seconds` ahead of the real one."""
    real = time.time
    monkeypatch.setattr(keys_module, "time", types.SimpleNamespace(time=lambda: real() + seconds))


def _predict(client: TestClient, key: str) -> httpx.Response:
    return client.post(PREDICT, json={"inputs": "hi"}, headers=as_key(key))


def _models(client: TestClient, key: str) -> int:
    return client.get("/v1/models", headers=as_key(key)).status_code


def _audit(client: TestClient) -> list[AuditRow]:
    async def read(session) -> list[AuditRow]:
        return list((await session.execute(select(AuditRow).order_by(AuditRow.id))).scalars())

    return client.portal.call(_services(client).database.run, "test.audit", read)


# --- expiry -------------------------------------------------------------------------------


def test_a_key_works_until_it_expires_and_expiry_can_be_changed(gateway, monkeypatch):
    created = new_key(gateway, expires_in_s=60)
    key = created["key"]
    assert created["expires_at"] == pytest.approx(time.time() + 60, abs=30)
    assert _models(gateway, key) == 200
    with monkeypatch.context() as m:
        _later(m, 30)  # half its life (however slow this machine is)
        assert _models(gateway, key) == 200
        _later(m, 65)
        refused = gateway.get("/v1/models", headers=as_key(key))
        assert_envelope(refused, 401, "unauthorized")
        # Cleared by an admin: it works again on the next request, however late.
        cleared = gateway.patch(f"/v1/admin/keys/{created['id']}", json={"expires_at": None})
        assert cleared.status_code == 200 and cleared.json()["expires_at"] is None
        assert _models(gateway, key) == 200
    # An expiry set in the past ends it at once.
    past = gateway.patch(f"/v1/admin/keys/{created['id']}", json={"expires_at": time.time() - 1})
    assert past.status_code == 200
    assert _models(gateway, key) == 401
    # Fewer than 60 s, or more than ten years, is refused.
    for seconds in (59, 10 * 366 * 86_400 + 1):
        r = gateway.post("/v1/admin/keys", json={"name": "k", "expires_in_s": seconds})
        assert_envelope(r, 422, "validation_error")


# --- scopes -------------------------------------------------------------------------------


def test_a_key_scoped_to_one_model_is_403_out_of_scope_on_any_other(gateway):
    key = new_key(gateway, tier="pro", scopes={"models": ["intent"]})["key"]
    assert _predict(gateway, key).status_code == 200
    r = gateway.post("/v1/embeddings", json=EMBED, headers=as_key(key))
    error = assert_envelope(r, 403, "out_of_scope")
    assert "'embed'" in error["message"]
    assert error["details"] == {"scope": "models", "needed": "embed", "allowed": ["intent"]}
    # /v1/models lists only what the key may use; another model is 403, an unknown 404.
    listed = gateway.get("/v1/models", headers=as_key(key)).json()
    assert [m["id"] for m in listed["data"]] == ["intent"]
    assert gateway.get("/v1/models/intent", headers=as_key(key)).status_code == 200
    assert_envelope(gateway.get("/v1/models/embed", headers=as_key(key)), 403, "out_of_scope")
    assert_envelope(gateway.get("/v1/models/nope", headers=as_key(key)), 404, "model_not_found")
    # The same request with an unscoped key is served: the refusal was the scope.
    other = new_key(gateway, tier="pro")["key"]
    assert gateway.post("/v1/embeddings", json=EMBED, headers=as_key(other)).status_code == 200


def test_a_key_scoped_to_a_route_is_403_on_the_others(gateway):
    key = new_key(gateway, tier="pro", scopes={"routes": ["predict"]})["key"]
    assert _predict(gateway, key).status_code == 200
    r = gateway.post("/v1/embeddings", json=EMBED, headers=as_key(key))
    error = assert_envelope(r, 403, "out_of_scope")
    assert error["details"] == {"scope": "routes", "needed": "embeddings", "allowed": ["predict"]}
    assert gateway.get("/v1/models", headers=as_key(key)).status_code == 200  # not inference


@pytest.mark.parametrize(
    ("scopes", "route", "body"),
    [
        ({"routes": ["predict"]}, "/v1/chat/completions", CHAT),
        ({"routes": ["predict"]}, "/v1/completions", {"model": "chat", "prompt": "hi"}),
        ({"models": ["intent"]}, "/v1/chat/completions", CHAT),
    ],
)
def test_the_generation_routes_hold_the_scopes_too(gateway, scopes, route, body):
    key = new_key(gateway, tier="pro", scopes=scopes)["key"]
    assert_envelope(gateway.post(route, json=body, headers=as_key(key)), 403, "out_of_scope")
    within = {"models": ["chat"], "routes": ["chat", "completions"]}
    allowed = new_key(gateway, tier="pro", scopes=within)["key"]
    assert gateway.post(route, json=body, headers=as_key(allowed)).status_code == 200


def test_scopes_naming_an_unknown_model_or_route_are_refused(gateway):
    for scopes in ({"models": ["intent", "nope"]}, {"routes": ["predict", "admin"]}):
        r = gateway.post("/v1/admin/keys", json={"name": "k", "scopes": scopes})
        assert_envelope(r, 422, "validation_error")
    r = gateway.post("/v1/admin/keys", json={"name": "k", "scopes": {"models": ["nope"]}})
    assert "nope" in r.json()["error"]["message"]
    assert gateway.get("/v1/admin/keys").json()["data"] == []  # nothing was made


def test_labels_are_bounded(gateway):
    twenty = {f"k{i}": "v" for i in range(20)}
    made = new_key(gateway, labels=twenty)
    assert made["labels"] == twenty
    for labels in ({**twenty, "k20": "v"}, {"k" * 65: "v"}, {"": "v"}, {"k": "v" * 257}):
        r = gateway.post("/v1/admin/keys", json={"name": "k", "labels": labels})
        assert_envelope(r, 422, "validation_error")
    longest = {"k" * 64: "v" * 256}
    assert new_key(gateway, labels=longest)["labels"] == longest


# --- keys minted by keys: never more than their maker -------------------------------------


def _mint(client: TestClient, maker: str, **body: Any) -> httpx.Response:
    return client.post("/v1/keys", json={"name": "minted", **body}, headers=as_key(maker))


def test_a_minted_key_gets_at_most_its_makers_scopes(gateway):
    maker = new_key(
        gateway, tier="pro", scopes={"models": ["intent", "embed"], "routes": ["predict"]}
    )["key"]
    inherited = _mint(gateway, maker)
    assert inherited.status_code == 201
    assert inherited.json()["scopes"] == {"models": ["embed", "intent"], "routes": ["predict"]}
    narrower = _mint(gateway, maker, scopes={"models": ["intent"]})
    assert narrower.json()["scopes"] == {"models": ["intent"], "routes": ["predict"]}
    wider = _mint(gateway, maker, scopes={"models": ["intent", "chat"]})
    error = assert_envelope(wider, 403, "forbidden")
    assert "chat" in error["message"] and error["details"]["allowed"] == ["embed", "intent"]
    wider_route = _mint(gateway, maker, scopes={"routes": ["predict", "embeddings"]})
    assert_envelope(wider_route, 403, "forbidden")
    # What it was given holds: the narrower key cannot use the embedder.
    minted = narrower.json()["key"]
    assert _predict(gateway, minted).status_code == 200
    r = gateway.post("/v1/models/embed/predict", json={"inputs": "hi"}, headers=as_key(minted))
    assert_envelope(r, 403, "out_of_scope")


def test_a_minted_key_has_limits_no_looser_and_expiry_no_later(gateway):
    maker = new_key(gateway, tier="pro", expires_in_s=3600, limits={"requests_per_minute": 50})
    looser = _mint(gateway, maker["key"], limits={"requests_per_minute": 500, "max_concurrent": 2})
    assert looser.status_code == 201
    assert looser.json()["limits"] == {"requests_per_minute": 50, "max_concurrent": 2}
    tighter = _mint(gateway, maker["key"], limits={"requests_per_minute": 5})
    assert tighter.json()["limits"] == {"requests_per_minute": 5}
    # Expiry: never later than the maker's, sooner when asked.
    assert looser.json()["expires_at"] == maker["expires_at"]  # none asked: the maker's
    later = _mint(gateway, maker["key"], expires_in_s=7200)
    assert later.json()["expires_at"] == maker["expires_at"]
    sooner = _mint(gateway, maker["key"], expires_in_s=120)
    assert sooner.json()["expires_at"] == pytest.approx(time.time() + 120, abs=60)
    # A key without limits or expiry mints keys without them.
    free = new_key(gateway, tier="pro")["key"]
    plain = _mint(gateway, free).json()
    assert plain["limits"] is None and plain["expires_at"] is None and plain["scopes"] is None


def test_a_minted_key_ends_with_its_maker_expiring(gateway, monkeypatch):
    maker = new_key(gateway, tier="pro", expires_in_s=60)
    child = _mint(gateway, maker["key"]).json()
    assert _models(gateway, child["key"]) == 200
    # The child's own expiry cleared by an admin: its maker's still ends it.
    gateway.patch(f"/v1/admin/keys/{child['id']}", json={"expires_at": None})
    _later(monkeypatch, 65)
    assert _models(gateway, maker["key"]) == 401
    assert _models(gateway, child["key"]) == 401


# --- rotation -----------------------------------------------------------------------------


def _rotate(client: TestClient, key_id: str, **body: Any) -> httpx.Response:
    return client.post(f"/v1/admin/keys/{key_id}/rotate", json=body or None)


def test_rotation_without_grace_refuses_the_old_secret_at_once(gateway):
    created = new_key(gateway, tier="pro")
    old = created["key"]
    assert _models(gateway, old) == 200  # held by this worker
    rotated = _rotate(gateway, created["id"], grace_s=0)
    assert rotated.status_code == 200, rotated.text
    body = rotated.json()
    new = body["key"]
    assert new != old and new.startswith(f"ig_live_{created['id']}_")  # same id, new secret
    assert body["previous_valid_until"] is None and body["rotated_at"] is not None
    assert _models(gateway, new) == 200
    assert _models(gateway, old) == 401


def test_the_old_secret_works_for_the_grace_period_only(gateway, monkeypatch):
    assert AuthSettings().rotation_grace_s == 3600
    created = new_key(gateway, tier="pro")
    old = created["key"]
    rotated = _rotate(gateway, created["id"]).json()  # the default grace: an hour
    new = rotated["key"]
    assert rotated["previous_valid_until"] == pytest.approx(rotated["rotated_at"] + 3600)
    assert _models(gateway, old) == 200 and _models(gateway, new) == 200
    _later(monkeypatch, 3000)
    assert _models(gateway, old) == 200
    _later(monkeypatch, 3610)
    assert _models(gateway, old) == 401
    assert _models(gateway, new) == 200
    # A grace of its own.
    shorter = _rotate(gateway, created["id"], grace_s=60).json()
    assert shorter["previous_valid_until"] == pytest.approx(shorter["rotated_at"] + 60)
    for grace in (-1, 30 * 86_400 + 1):  # 0 to 30 days
        assert_envelope(_rotate(gateway, created["id"], grace_s=grace), 422, "validation_error")
    longest = _rotate(gateway, created["id"], grace_s=30 * 86_400).json()
    assert longest["previous_valid_until"] == pytest.approx(longest["rotated_at"] + 30 * 86_400)


def test_a_second_rotation_ends_the_oldest_secret_at_once(gateway):
    created = new_key(gateway, tier="pro")
    first = created["key"]
    second = _rotate(gateway, created["id"]).json()["key"]
    assert _models(gateway, first) == 200  # within the first rotation's grace
    third = _rotate(gateway, created["id"]).json()["key"]
    assert _models(gateway, first) == 401  # two rotations back: gone
    assert _models(gateway, second) == 200  # the one before: in its grace
    assert _models(gateway, third) == 200


def test_owners_rotate_their_own_keys_and_nobody_elses(gateway):
    new_user(gateway, "rosa")
    new_user(gateway, "theo")
    rosa = bearer(login(gateway, "rosa")["access_token"])
    theo = bearer(login(gateway, "theo")["access_token"])
    own = gateway.post("/v1/keys", json={"name": "laptop"}, headers=rosa).json()
    assert gateway.post(f"/v1/keys/{own['id']}/rotate", headers=theo).status_code == 404
    rotated = gateway.post(f"/v1/keys/{own['id']}/rotate", json={"grace_s": 0}, headers=rosa)
    assert rotated.status_code == 200
    assert _models(gateway, rotated.json()["key"]) == 200
    assert _models(gateway, own["key"]) == 401
    # A revoked key cannot be brought back by rotating it.
    gateway.delete(f"/v1/keys/{own['id']}", headers=rosa)
    assert gateway.post(f"/v1/keys/{own['id']}/rotate", headers=rosa).status_code == 404


# --- admin changes apply on the next request ----------------------------------------------


def test_a_patch_of_tier_scopes_limits_or_labels_applies_on_the_next_request(gateway):
    created = new_key(gateway, tier="free")
    key, url = created["key"], f"/v1/admin/keys/{created['id']}"
    r = _predict(gateway, key)
    assert r.status_code == 200 and r.headers["X-RateLimit-Limit"] == "10"  # held now
    assert gateway.patch(url, json={"tier": "pro"}).json()["tier"] == "pro"
    assert _predict(gateway, key).headers["X-RateLimit-Limit"] == "100"
    scoped = gateway.patch(url, json={"scopes": {"models": ["embed"]}})
    assert scoped.json()["scopes"] == {"models": ["embed"], "routes": None}
    assert_envelope(_predict(gateway, key), 403, "out_of_scope")
    assert gateway.patch(url, json={"scopes": None}).json()["scopes"] is None
    assert _predict(gateway, key).status_code == 200
    limited = gateway.patch(url, json={"limits": {"requests_per_minute": 1}})
    assert limited.json()["limits"] == {"requests_per_minute": 1}
    assert _predict(gateway, key).status_code == 200
    assert_envelope(_predict(gateway, key), 429, "rate_limited")
    assert gateway.patch(url, json={"limits": None}).json()["limits"] is None
    assert _predict(gateway, key).status_code == 200  # the tier's 100 a minute again
    labels = gateway.patch(url, json={"labels": {"team": "search"}})
    assert labels.json()["labels"] == {"team": "search"}
    assert gateway.get(url).json()["labels"] == {"team": "search"}
    # Nothing to change (or a null tier: a key always has one): the key as it is; an
    # unknown tier, a key that is not there.
    before = gateway.get(url).json()
    assert gateway.patch(url, json={}).json() == before
    assert gateway.patch(url, json={"tier": None}).json()["tier"] == before["tier"]
    assert_envelope(gateway.patch(url, json={"tier": "gold"}), 422, "validation_error")
    missing = gateway.patch("/v1/admin/keys/0000000000000000", json={"tier": "pro"})
    assert_envelope(missing, 404, "not_found")


def test_revoking_a_key_ends_the_keys_it_minted_at_once(gateway):
    parent = new_key(gateway, tier="pro")
    children = [_mint(gateway, parent["key"]).json() for _ in range(2)]
    grandchild = _mint(gateway, children[0]["key"]).json()  # the group stays flat
    assert grandchild["owner"] == f"key:{parent['id']}"
    for minted in (*children, grandchild):
        assert _models(gateway, minted["key"]) == 200  # each held by this worker
    assert gateway.delete(f"/v1/admin/keys/{parent['id']}").status_code == 200
    for minted in (*children, grandchild):
        assert _models(gateway, minted["key"]) == 401
    # Their records say nothing changed: it is the parent that ended them.
    record = gateway.get(f"/v1/admin/keys/{children[1]['id']}").json()
    assert record["revoked_at"] is None


def test_keys_the_bootstrap_admin_mints_are_its_own(gateway):
    """Minted through /v1/keys by the bootstrap key (owner `key:<id>`, made by
    `bootstrap`): listed, read, rotated and revoked there like any owner's keys."""
    made = gateway.post("/v1/keys", json={"name": "ops"})
    assert made.status_code == 201
    key_id = made.json()["id"]
    assert gateway.get(f"/v1/keys/{key_id}").status_code == 200
    assert key_id in {k["id"] for k in gateway.get("/v1/keys").json()["data"]}
    assert gateway.post(f"/v1/keys/{key_id}/rotate", json={"grace_s": 0}).status_code == 200
    assert gateway.delete(f"/v1/keys/{key_id}").json()["revoked_at"] is not None
    # Another owner's key is not: a user's key is 404 there.
    new_user(gateway, "bert")
    theirs = gateway.post(
        "/v1/keys", json={"name": "k"}, headers=bearer(login(gateway, "bert")["access_token"])
    ).json()["id"]
    assert gateway.get(f"/v1/keys/{theirs}").status_code == 404


def test_keys_made_through_the_admin_routes_are_not_the_bootstrap_keys_own(gateway):
    for i in range(20):
        new_key(gateway, name=f"k{i}")
    assert gateway.get("/v1/keys").json()["data"] == []
    assert gateway.post("/v1/keys", json={"name": "own"}).status_code == 201


# --- the audit log ------------------------------------------------------------------------


def test_every_admin_write_leaves_one_audit_row_in_its_transaction(gateway):
    expected: list[tuple[str, str, str]] = []

    def done(action: str, target: str, response: httpx.Response, status: int = 200) -> None:
        assert response.status_code == status, response.text
        expected.append((action, target, response.headers["X-Request-ID"]))

    made = gateway.post("/v1/admin/keys", json={"name": "audited", "tier": "free"})
    key_id = made.json()["id"]
    key_url, key = f"/v1/admin/keys/{key_id}", f"key:{key_id}"
    done("key.create", key, made, 201)
    user = gateway.post("/v1/admin/users", json={"username": "audrey", "password": PASSWORD})
    user_url, who = f"/v1/admin/users/{user.json()['id']}", f"user:{user.json()['id']}"
    done("user.create", who, user, 201)
    done("key.update", key, gateway.patch(key_url, json={"tier": "pro"}))
    done("key.rotate", key, _rotate(gateway, key_id, grace_s=0))
    done("key.revoke", key, gateway.delete(key_url))
    done("user.update", who, gateway.patch(user_url, json={"tier": "pro"}))
    done("user.disable", who, gateway.patch(user_url, json={"disabled": True}))
    # Refused writes leave nothing: a taken name, an unknown key, a change of nothing.
    taken = gateway.post("/v1/admin/users", json={"username": "AUDREY", "password": PASSWORD})
    assert taken.status_code == 409
    assert gateway.delete("/v1/admin/keys/0000000000000000").status_code == 404
    assert gateway.patch(user_url, json={"tier": "pro"}).status_code == 200

    rows = _audit(gateway)
    assert [(r.action, r.target, r.request_id) for r in rows] == expected
    assert {r.actor for r in rows} == {"bootstrap"}
    by_action = {r.action: r for r in rows}
    assert by_action["key.update"].details == {"tier": ["free", "pro"]}
    assert by_action["user.update"].details == {"tier": ["free", "pro"]}
    assert by_action["user.disable"].details == {"disabled": [False, True]}
    assert by_action["key.create"].details["tier"] == "free"
    assert by_action["user.create"].details["username"] == "audrey"
    # No secret in any entry: neither a key, a digest nor a password (or its hash).
    stored = gateway.portal.call(
        _services(gateway).database.run, "test", lambda s: s.get(ApiKeyRow, key_id)
    )
    details = json.dumps([r.details for r in rows])
    for secret in (made.json()["key"], stored.digest, PASSWORD, "$argon2"):
        assert secret not in details
    assert "digest" not in details


def test_self_service_key_writes_are_audited_under_their_actor(gateway):
    new_user(gateway, "sami")
    token = bearer(login(gateway, "sami")["access_token"])
    own = gateway.post("/v1/keys", json={"name": "k"}, headers=token).json()
    gateway.post(f"/v1/keys/{own['id']}/rotate", json={"grace_s": 0}, headers=token)
    gateway.delete(f"/v1/keys/{own['id']}", headers=token)
    rows = [r for r in _audit(gateway) if r.target == f"key:{own['id']}"]
    assert [r.action for r in rows] == ["key.create", "key.rotate", "key.revoke"]
    assert {r.actor for r in rows} == {own["owner"]}  # "user:<id>"


# --- concurrency --------------------------------------------------------------------------


def _concurrently(client: TestClient, method: str, url: str, bodies: list[dict]) -> list:
    """The requests all at once, on the app's own event loop (the app is started)."""

    async def send() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=client.app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://testserver", headers={"X-API-Key": ADMIN_KEY}
        ) as http:
            return await asyncio.gather(*(http.request(method, url, json=b) for b in bodies))

    return client.portal.call(send)


class CountingHasher:
    """argon2's PasswordHasher, counting the hashes it makes."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self.hashed = 0

    def hash(self, password: str) -> str:
        self.hashed += 1
        return self._real.hash(password)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


@pytest.mark.parametrize("where", ["memory", "file"])
def test_fifty_concurrent_creations_of_one_name_make_one_user(tmp_path, where):
    url = f"sqlite+aiosqlite:///{tmp_path}/x.db" if where == "file" else None
    client = _start(tmp_path, database=DatabaseSettings(url=url))
    passwords = _services(client).access.users._passwords
    hasher = CountingHasher(passwords._hasher)
    passwords._hasher = hasher  # type: ignore[assignment]
    try:
        bodies = [{"username": "Ula" if i % 2 else "ula", "password": PASSWORD} for i in range(50)]
        answers = _concurrently(client, "POST", "/v1/admin/users", bodies)
        assert Counter(r.status_code for r in answers) == {201: 1, 409: 49}
        assert {r.json()["error"]["code"] for r in answers if r.status_code == 409} == {"conflict"}
        users = client.get("/v1/admin/users").json()["data"]
        assert len(users) == 1 and users[0]["disabled"] is False
        assert login(client, "ula")["access_token"]
        assert [r.action for r in _audit(client)] == ["user.create"]
        assert hasher.hashed == 1  # the name is claimed before the password is hashed
    finally:
        client.__exit__(None, None, None)


def test_a_hundred_concurrent_key_creations_make_a_hundred_working_keys(gateway):
    answers = _concurrently(
        gateway, "POST", "/v1/admin/keys", [{"name": f"k{i}"} for i in range(100)]
    )
    assert [r.status_code for r in answers] == [201] * 100
    made = [r.json() for r in answers]
    assert len({k["id"] for k in made}) == len({k["key"] for k in made}) == 100
    assert all(_models(gateway, k["key"]) == 200 for k in made)
    assert len(gateway.get("/v1/admin/keys").json()["data"]) == 100


# --- the database down --------------------------------------------------------------------


def test_a_database_outage_keeps_held_credentials_and_refuses_new_ones(gateway, monkeypatch):
    services = _services(gateway)
    held = new_key(gateway, tier="pro")
    unseen = new_key(gateway, tier="pro")
    user = new_user(gateway, "olaf", tier="pro")
    token = bearer(login(gateway, "olaf")["access_token"])
    assert _models(gateway, held["key"]) == 200
    assert gateway.get("/v1/usage", headers=token).status_code == 200
    break_database(services, monkeypatch)

    # Held by this worker: served.
    assert _predict(gateway, held["key"]).status_code == 200
    assert gateway.get("/v1/usage", headers=token).status_code == 200
    # New credentials: 503 + Retry-After, whichever kind.
    refused = [
        gateway.get("/v1/models", headers=as_key(unseen["key"])),
        gateway.post("/v1/auth/token", json={"username": "olaf", "password": PASSWORD}, headers={}),
    ]
    # Admin writes (and reads of the records) too, and a held key minting one.
    url = f"/v1/admin/keys/{held['id']}"
    refused += [
        gateway.post("/v1/admin/keys", json={"name": "k"}),
        gateway.patch(url, json={"tier": "free"}),
        gateway.delete(url),
        _rotate(gateway, held["id"], grace_s=0),
        gateway.post("/v1/admin/users", json={"username": "nina", "password": PASSWORD}),
        gateway.patch(f"/v1/admin/users/{user['id']}", json={"disabled": True}),
        gateway.get("/v1/admin/keys"),
        _mint(gateway, held["key"]),
    ]
    for r in refused:
        assert_envelope(r, 503, "database_unavailable")
        assert r.headers["Retry-After"] == "1"
    # The held key was not changed: still served.
    assert _models(gateway, held["key"]) == 200
    # Readiness stays 200 (held keys are served) but says what is down.
    ready = gateway.get("/health/ready", headers={})
    assert ready.status_code == 200
    assert ready.json()["status"] == "degraded"
    database = ready.json()["components"]["database"]
    assert database["status"] == "down" and database["required"] is False
    assert "infergate_database_up 0.0" in gateway.get("/metrics").text.splitlines()
