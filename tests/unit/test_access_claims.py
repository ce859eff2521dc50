"""The access-control promises of the README, docs/access-control.md and the api.md error
table that docs/claims.md listed without a test: each asserted at its documented figure.
The real app over a fake Triton and the in-process store (as tests/unit/test_access.py);
the Redis script's own all-or-nothing and the TTLs as Redis holds them are in
tests/integration/test_access_claims.py."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import re
import time
import types
from collections.abc import Iterator, Sequence

import argon2
import jwt
import pytest
import sqlalchemy
import uvicorn
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from pydantic import ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError

from frontend import __main__ as cli
from frontend import breaker as breaker_module
from frontend.access import Access
from frontend.app import create_app
from frontend.auth.jwt_keys import SigningKeys
from frontend.auth.login_throttle import LoginThrottle
from frontend.auth.password_policy import MAX_CHARS, common_passwords, weakness
from frontend.auth.passwords import Passwords
from frontend.auth.principal import Principal
from frontend.container import ServiceOverrides, open_services, services_of
from frontend.db.startup import open_database
from frontend.db.tables import ApiKeyRow, UserRow
from frontend.errors import Overloaded, QuotaExceeded, RateLimited, StateUnavailable, Unauthorized
from frontend.observability.metrics import Metrics
from frontend.ratelimit.limiter import RateLimiter
from frontend.ratelimit.quota import TokenQuota
from frontend.settings import (
    AuthSettings,
    DatabaseSettings,
    JwtSettings,
    Settings,
    Tier,
    TritonSettings,
)
from frontend.state.memory import MemoryStore
from frontend.state.store import Window, WindowHit
from frontend.triton.client import TritonClient

from .cards import write_cards
from .clock import fake_monotonic
from .test_access import PASSWORD, _break, _claims, as_key, bearer, login, new_key, new_user
from .test_frontend_errors import ADMIN_KEY, FakeTriton, _client, over_fake
from .test_passwords import GatedHasher, _until
from .test_request_hardening import CHAT, USER, CountingTriton, _app

SECRET = "unit-test-server-secret-0123456789-abcdef"
OTHER_SECRET = "another-server-secret-9876543210-zyxwvu"
ONE_MESSAGE = Unauthorized().message  # "missing or invalid credentials"
CHALLENGE = 'Bearer realm="infergate"'


def _tiers(**extra: Tier) -> dict[str, Tier]:
    tiers = AuthSettings().tiers
    tiers.update(extra)
    return tiers


@pytest.fixture
def gateway(tmp_path) -> Iterator[TestClient]:
    client = _client(
        tmp_path,
        FakeTriton(),
        secret_key=SECRET,
        auth=AuthSettings(bootstrap_admin_key=ADMIN_KEY, last_used_interval_s=0),
    )
    yield client
    client.__exit__(None, None, None)


def _access(client: TestClient) -> Access:
    services = services_of(client.app)
    assert services is not None
    return services.access


def _unverified(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


# --- README: the bootstrap admin key ------------------------------------------------------


def test_bootstrap_admin_key_needs_32_characters(tmp_path, monkeypatch):
    for name in [n for n in os.environ if n.startswith("INFERGATE_")]:
        monkeypatch.delenv(name)
    with pytest.raises(ValidationError, match="at least 32 characters"):
        AuthSettings(bootstrap_admin_key="k" * 31)
    assert AuthSettings(bootstrap_admin_key="k" * 32).bootstrap_admin_key is not None
    # As the README sets it: from the environment.
    monkeypatch.setenv("INFERGATE_AUTH__BOOTSTRAP_ADMIN_KEY", "0123456789abcdefghijklmnopqrstu")
    with pytest.raises(ValidationError, match="at least 32 characters"):
        Settings(environment="test")
    key = "0123456789abcdefghijklmnopqrstuv"
    assert len(key) == 32
    monkeypatch.setenv("INFERGATE_AUTH__BOOTSTRAP_ADMIN_KEY", key)
    configured = Settings(environment="test").auth.bootstrap_admin_key
    assert configured is not None and configured.get_secret_value() == key
    # ... and a 32-character key is the admin's credential.
    client = _client(tmp_path, FakeTriton(), auth=AuthSettings(bootstrap_admin_key=key))
    try:
        assert client.get("/v1/admin/tiers", headers={"X-API-Key": key}).status_code == 200
        assert client.get("/v1/admin/tiers", headers={"X-API-Key": key[:-1]}).status_code == 401
    finally:
        client.__exit__(None, None, None)


# --- README / api.md: token lifetimes -----------------------------------------------------


def _issued_ago(client: TestClient, monkeypatch, user_id: str, seconds: int):
    """A token pair the app issues as if `seconds` ago (its clock moved back meanwhile)."""
    access = _access(client)
    record = client.portal.call(access.users.get, user_id)
    assert record is not None
    issued_at = time.time() - seconds
    with monkeypatch.context() as m:
        m.setattr(time, "time", lambda: issued_at)
        return access.tokens.issue(record)


def test_access_token_lives_15_minutes_and_refresh_token_7_days(gateway, monkeypatch):
    defaults = JwtSettings()
    assert (defaults.access_ttl_s, defaults.refresh_ttl_s) == (15 * 60, 7 * 86_400)
    leeway = defaults.leeway_s
    user = new_user(gateway, "tess")
    pair = login(gateway, "tess")
    assert (pair["expires_in"], pair["refresh_expires_in"]) == (900, 604_800)
    access_claims = _unverified(pair["access_token"])
    refresh_claims = _unverified(pair["refresh_token"])
    assert access_claims["exp"] - access_claims["iat"] == 900
    assert refresh_claims["exp"] - refresh_claims["iat"] == 604_800

    # An access token still works just inside its 15 minutes, and not after them.
    young = _issued_ago(gateway, monkeypatch, user["id"], 900 - 30)
    old = _issued_ago(gateway, monkeypatch, user["id"], 900 + leeway + 2)
    assert gateway.get("/v1/usage", headers=bearer(young.access_token)).status_code == 200
    assert gateway.get("/v1/usage", headers=bearer(old.access_token)).status_code == 401
    # A refresh token rotates just inside its 7 days, and not after them.
    young = _issued_ago(gateway, monkeypatch, user["id"], 604_800 - 30)
    old = _issued_ago(gateway, monkeypatch, user["id"], 604_800 + leeway + 2)
    refreshed = gateway.post("/v1/auth/refresh", json={"refresh_token": young.refresh_token})
    assert refreshed.status_code == 200
    stale = gateway.post("/v1/auth/refresh", json={"refresh_token": old.refresh_token})
    assert stale.status_code == 401


# --- api.md error table: 401 and 409 ------------------------------------------------------


def _assert_401(response, message: str | None = ONE_MESSAGE) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["WWW-Authenticate"] == CHALLENGE
    error = response.json()["error"]
    assert error["code"] == "unauthorized"
    if message is not None:
        assert error["message"] == message


def test_every_bad_credential_gets_one_message_and_www_authenticate(gateway, monkeypatch):
    """Whatever is wrong with a credential presented (unknown, malformed, tampered,
    revoked, expired, of a disabled user...), the 401 reads the same: a caller cannot tell
    a revoked key from one that never existed."""
    access = _access(gateway)
    user = new_user(gateway, "uma")
    revoked = new_key(gateway)
    gateway.delete(f"/v1/admin/keys/{revoked['id']}")
    real = new_key(gateway)["key"]
    tampered = real[:-1] + ("A" if real[-1] != "A" else "B")
    parent = new_key(gateway)
    child = gateway.post("/v1/keys", json={"name": "c"}, headers=as_key(parent["key"])).json()
    gateway.delete(f"/v1/admin/keys/{parent['id']}")  # the child dies with it
    pair = login(gateway, "uma")
    users_key = gateway.post(
        "/v1/keys", json={"name": "k"}, headers=bearer(pair["access_token"])
    ).json()["key"]
    logged_out = login(gateway, "uma")
    gateway.post("/v1/auth/logout", headers=bearer(logged_out["access_token"]), json={})
    expired = _issued_ago(gateway, monkeypatch, user["id"], 3600)
    kid, private = access.tokens._keys.signer()
    foreign = jwt.encode(
        _claims(user["id"]), Ed25519PrivateKey.generate(), algorithm="EdDSA", headers={"kid": kid}
    )
    unknown_user = jwt.encode(
        _claims("0000000000000000"), private, algorithm="EdDSA", headers={"kid": kid}
    )
    disabled = new_user(gateway, "vic")
    disabled_pair = login(gateway, "vic")
    disabled_key = gateway.post(
        "/v1/keys", json={"name": "k"}, headers=bearer(disabled_pair["access_token"])
    ).json()["key"]
    gateway.patch(f"/v1/admin/users/{disabled['id']}", json={"disabled": True})

    presented = {
        "well-formed unknown key": as_key("ig_live_0000000000000000_" + "A" * 43),
        "not a key at all": as_key("nonsense"),
        "tampered secret": as_key(tampered),
        "revoked key": as_key(revoked["key"]),
        "revoked key as Bearer": bearer(revoked["key"]),
        "child of a revoked key": as_key(child["key"]),
        "disabled user's key": as_key(disabled_key),
        "disabled user's token": bearer(disabled_pair["access_token"]),
        "not a JWT": bearer("not.a.jwt"),
        "expired token": bearer(expired.access_token),
        "logged-out token": bearer(logged_out["access_token"]),
        "refresh token as access": bearer(pair["refresh_token"]),
        "signed by another key": bearer(foreign),
        "unknown user": bearer(unknown_user),
    }
    for name, headers in presented.items():
        r = gateway.get("/v1/models", headers={"X-API-Key": "", **headers})
        assert r.status_code == 401, name
        _assert_401(r)
    # The good ones still work: the refusals were about the credential, not the route.
    assert gateway.get("/v1/models", headers=as_key(real)).status_code == 200
    assert gateway.get("/v1/models", headers=as_key(users_key)).status_code == 200


def test_every_401_carries_www_authenticate(gateway):
    """No credential and a non-Bearer Authorization say what is expected (they reveal
    nothing about any key); every other 401, the login and refresh routes' too, reads as
    one message. Every one carries the challenge."""
    new_user(gateway, "walt")
    pair = login(gateway, "walt")
    missing = gateway.get("/v1/models", headers={"X-API-Key": ""})
    _assert_401(missing, message=None)
    assert "X-API-Key" in missing.json()["error"]["message"]
    for authorization in ("Basic dXNlcjpwYXNz", "Bearer ", "Token abc"):
        r = gateway.get("/v1/models", headers={"X-API-Key": "", "Authorization": authorization})
        _assert_401(r, message=None)
    wrong = gateway.post("/v1/auth/token", json={"username": "walt", "password": "x" * 12})
    nobody = gateway.post("/v1/auth/token", json={"username": "nobody", "password": "x" * 12})
    _assert_401(wrong, message="wrong username or password")
    _assert_401(nobody, message="wrong username or password")
    _assert_401(gateway.post("/v1/auth/refresh", json={"refresh_token": "not.a.jwt"}))
    _assert_401(gateway.post("/v1/auth/refresh", json={"refresh_token": pair["access_token"]}))
    rotated = gateway.post("/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert rotated.status_code == 200
    _assert_401(gateway.post("/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]}))
    _assert_401(gateway.post("/v1/auth/logout", headers={"X-API-Key": "", **bearer("x.y.z")}))


def test_a_taken_username_is_409_conflict(gateway):
    new_user(gateway, "xena")
    for name in ("xena", "XENA"):  # the index is case-insensitive
        r = gateway.post("/v1/admin/users", json={"username": name, "password": PASSWORD})
        assert r.status_code == 409
        error = r.json()["error"]
        assert error["code"] == "conflict" and error["request_id"] == r.headers["X-Request-ID"]


# --- api.md error table: a token-quota 429 ------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_token_quota_429_carries_the_rate_limit_headers(tmp_path, stream):
    fake = CountingTriton()
    client = _app(
        tmp_path,
        fake,
        auth=AuthSettings(
            bootstrap_admin_key=ADMIN_KEY,
            tiers=_tiers(sip=Tier(rate=["5/minute", "50/day"], tokens_per_day=50)),
        ),
    )
    try:
        key = new_key(client, tier="sip")["key"]
        body = {"model": "chat", "messages": USER, "stream": stream}
        # Within the budget: 3 prompt tokens + 10 at most.
        ok = client.post(CHAT, json={**body, "max_tokens": 10}, headers=as_key(key))
        assert ok.status_code == 200, ok.text
        # The default 256 tokens do not fit in what is left of 50.
        r = client.post(CHAT, json=body, headers=as_key(key))
        assert r.status_code == 429, r.text
        assert r.json()["error"]["code"] == "token_quota_exceeded"
        assert int(r.headers["Retry-After"]) >= 1
        assert r.headers["RateLimit-Policy"] == '"sip.minute";q=5;w=60, "sip.day";q=50;w=86400'
        assert re.fullmatch(
            r'"sip\.minute";r=3;t=\d+, "sip\.day";r=48;t=\d+', r.headers["RateLimit"]
        )
        assert r.headers["X-RateLimit-Limit"] == "5"
        assert r.headers["X-RateLimit-Remaining"] == "3"
        assert 1 <= int(r.headers["X-RateLimit-Reset"]) <= 60
        assert r.headers["X-Quota-Limit"] == "50"
    finally:
        client.__exit__(None, None, None)


# --- access-control › API keys ------------------------------------------------------------


def _row(client: TestClient, table: type, row_id: str):
    """One row of the app's database (the system of record), read as the app reads it."""
    services = services_of(client.app)
    assert services is not None
    return client.portal.call(services.database.run, "test.read", lambda s: s.get(table, row_id))


def _shared_database(tmp_path) -> DatabaseSettings:
    """One database file for several apps (several workers or replicas of one install)."""
    return DatabaseSettings(url=f"sqlite+aiosqlite:///{tmp_path}/shared.db")


def test_key_hash_is_hmac_sha256_under_a_key_derived_from_the_secret(tmp_path):
    store, database = MemoryStore(), _shared_database(tmp_path)
    ours = _client(tmp_path / "a", FakeTriton(), store=store, database=database, secret_key=SECRET)
    theirs = _client(
        tmp_path / "b", FakeTriton(), store=store, database=database, secret_key=OTHER_SECRET
    )
    try:
        created = new_key(ours)
        key = created["key"]
        row = _row(ours, ApiKeyRow, created["id"])
        assert row is not None
        stored = json.dumps({c.name: getattr(row, c.name) for c in ApiKeyRow.__table__.columns})
        assert key not in stored and key[-43:] not in stored
        digest = row.digest
        # Computed here from the documented recipe, not with the product's helpers.
        hash_key = hmac.new(SECRET.encode(), b"infergate:api-key-hash", hashlib.sha256).digest()
        assert digest == hmac.new(hash_key, key.encode(), hashlib.sha256).hexdigest()
        # Keyed by a derived key: neither a plain hash nor an HMAC under the secret itself.
        assert digest != hashlib.sha256(key.encode()).hexdigest()
        assert digest != hmac.new(SECRET.encode(), key.encode(), hashlib.sha256).hexdigest()
        # So the same row is no use under another server secret (the other app reads it).
        assert ours.get("/v1/models", headers=as_key(key)).status_code == 200
        assert _row(theirs, ApiKeyRow, created["id"]) is not None
        assert theirs.get("/v1/models", headers=as_key(key)).status_code == 401
    finally:
        ours.__exit__(None, None, None)
        theirs.__exit__(None, None, None)


class CountingStore(MemoryStore):
    """The in-process store, noting every read."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[tuple[str, object]] = []

    async def get(self, key: str) -> bytes | None:
        self.reads.append(("get", key))
        return await super().get(key)

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        self.reads.append(("get_many", tuple(keys)))
        return await super().get_many(keys)

    async def members(self, key: str) -> set[str]:
        self.reads.append(("members", key))
        return await super().members(key)


# Reads the background loops make on their own (the routing watch polls its marker).
BACKGROUND_READS = {("get", "routing:changed")}
BACKGROUND_TABLES = ("routing", "usage_ledger")


def test_a_key_is_looked_up_by_id_in_one_read(tmp_path):
    """A key this worker holds costs one state-store read (its generation marker, by id)
    and no SQL at all: never a listing or a scan of the other keys, never a database
    round trip on the hot path."""
    store = CountingStore()
    client = _client(tmp_path, FakeTriton(), store=store)  # last-used: once a minute
    services = services_of(client.app)
    assert services is not None
    statements: list[str] = []

    def noted(_conn, _cursor, statement, _params, _context, _many) -> None:
        statements.append(statement)

    engine = services.database.engine.sync_engine
    sqlalchemy.event.listen(engine, "before_cursor_execute", noted)
    try:
        keys = [new_key(client, tier="pro") for _ in range(25)]
        chosen = keys[12]
        statements.clear()
        # The first use loads the key from SQL, by its id ...
        assert client.get("/v1/models", headers=as_key(chosen["key"])).status_code == 200
        loads = [s for s in statements if "FROM api_keys" in s]
        assert len(loads) == 1 and "WHERE api_keys.id = " in loads[0], loads
        client.portal.call(services.access.keys.write_last_used)  # its last use, written
        for _ in range(3):
            store.reads.clear()
            statements.clear()
            r = client.get("/v1/models", headers=as_key(chosen["key"]))
            assert r.status_code == 200
            # ... then it is held: one read of its marker, and not one SQL statement.
            reads = [read for read in store.reads if read not in BACKGROUND_READS]
            assert reads == [("get_many", (f"gen:key:{chosen['id']}", "gen:epoch"))]
            ours = [s for s in statements if not any(t in s for t in BACKGROUND_TABLES)]
            assert ours == [], ours
    finally:
        sqlalchemy.event.remove(engine, "before_cursor_execute", noted)
        client.__exit__(None, None, None)


# --- access-control › Keys that mint keys -------------------------------------------------


def test_a_change_of_a_childs_own_tier_has_no_effect(gateway):
    parent = new_key(gateway, tier="free")  # 10/minute
    child = gateway.post("/v1/keys", json={"name": "c"}, headers=as_key(parent["key"])).json()
    changed = gateway.patch(f"/v1/admin/keys/{child['id']}", json={"tier": "enterprise"})
    assert changed.status_code == 200 and changed.json()["tier"] == "enterprise"  # recorded ...
    r = gateway.get("/v1/models", headers=as_key(child["key"]))
    assert r.status_code == 200
    assert r.headers["X-RateLimit-Limit"] == "10"  # ... but the parent's tier applies
    assert r.headers["RateLimit-Policy"].startswith('"free.minute";q=10;w=60')
    usage = gateway.get("/v1/usage", headers=as_key(child["key"])).json()
    assert usage["tier"] == "free" and usage["tokens"]["limit"] == 20_000


def test_at_most_20_keys_per_owner(gateway):
    new_user(gateway, "yuri", tier="enterprise")  # 21 requests: past free's minute
    token = bearer(login(gateway, "yuri")["access_token"])
    codes = [
        gateway.post("/v1/keys", json={"name": f"k{i}"}, headers=token).status_code
        for i in range(21)
    ]
    assert codes == [201] * 20 + [422]
    refused = gateway.post("/v1/keys", json={"name": "one more"}, headers=token)
    assert refused.json()["error"]["code"] == "validation_error"
    assert "at most 20 live keys per owner" in refused.json()["error"]["message"]
    keys = gateway.get("/v1/keys", headers=token).json()["data"]
    assert len(keys) == 20
    # Revoking one makes room for one (a revoked key is not counted), and only one.
    assert gateway.delete(f"/v1/keys/{keys[0]['id']}", headers=token).status_code in (200, 204)
    again = [
        gateway.post("/v1/keys", json={"name": f"r{i}"}, headers=token).status_code
        for i in range(2)
    ]
    assert again == [201, 422]
    # A standalone key owns itself and its children: 20 keys in all.
    parent = new_key(gateway, tier="enterprise")
    minted = [
        gateway.post("/v1/keys", json={"name": f"c{i}"}, headers=as_key(parent["key"])).status_code
        for i in range(20)
    ]
    assert minted == [201] * 19 + [422]
    owned = gateway.get("/v1/admin/keys", params={"owner": f"key:{parent['id']}"}).json()["data"]
    assert len(owned) == 20


# --- access-control › JWT -----------------------------------------------------------------


@pytest.mark.parametrize("claim", ["iat", "aud", "iss", "exp", "sub", "jti"])
def test_a_jwt_missing_a_required_claim_is_refused(gateway, claim):
    user = new_user(gateway, "zoe")
    kid, private = _access(gateway).tokens._keys.signer()

    def sign(claims: dict) -> str:
        return jwt.encode(claims, private, algorithm="EdDSA", headers={"kid": kid})

    whole = sign(_claims(user["id"], role="user"))
    assert gateway.get("/v1/usage", headers=bearer(whole)).status_code == 200  # signed right
    without = sign({k: v for k, v in _claims(user["id"], role="user").items() if k != claim})
    _assert_401(gateway.get("/v1/usage", headers=bearer(without)))


def test_the_derived_jwt_key_is_the_same_in_every_worker(tmp_path):
    """No signing keys configured: two apps (two workers, or two replicas) with the same
    server secret, shared state and one database accept each other's tokens; another
    secret does not."""
    shared = {"store": MemoryStore(), "database": _shared_database(tmp_path)}
    first = _client(tmp_path / "1", FakeTriton(), secret_key=SECRET, **shared)
    second = _client(tmp_path / "2", FakeTriton(), secret_key=SECRET, **shared)
    stranger = _client(tmp_path / "3", FakeTriton(), secret_key=OTHER_SECRET, **shared)
    try:
        new_user(first, "ada")
        from_first = login(first, "ada")
        from_second = login(second, "ada")
        for client in (first, second):
            for pair in (from_first, from_second):
                r = client.get("/v1/usage", headers=bearer(pair["access_token"]))
                assert r.status_code == 200, r.text
        kids = {
            jwt.get_unverified_header(p["access_token"])["kid"] for p in (from_first, from_second)
        }
        assert len(kids) == 1
        rotated = second.post(
            "/v1/auth/refresh", json={"refresh_token": from_first["refresh_token"]}
        )
        assert rotated.status_code == 200
        assert (
            stranger.get("/v1/usage", headers=bearer(from_first["access_token"])).status_code == 401
        )
    finally:
        for client in (first, second, stranger):
            client.__exit__(None, None, None)
    keys = [SigningKeys(JwtSettings(), SECRET) for _ in range(2)]
    assert keys[0].active_kid == keys[1].active_kid
    assert keys[0].public_pem(keys[0].active_kid) == keys[1].public_pem(keys[1].active_kid)


class RecordingStore(MemoryStore):
    """The in-process store, noting the TTL of every value written."""

    def __init__(self) -> None:
        super().__init__()
        self.ttls: dict[str, int | None] = {}

    async def put(
        self, key: str, value: bytes, ttl_s: int | None = None, only_if_absent: bool = False
    ) -> bool:
        self.ttls[key] = ttl_s
        return await super().put(key, value, ttl_s, only_if_absent)


def test_revocations_live_as_long_as_the_tokens_they_can_affect(tmp_path, monkeypatch):
    store = RecordingStore()
    client = _client(tmp_path, FakeTriton(), store=store, secret_key=SECRET)
    try:
        jwt_settings = JwtSettings()
        access_life, refresh_life = jwt_settings.access_ttl_s, jwt_settings.refresh_ttl_s
        leeway = jwt_settings.leeway_s
        user = new_user(client, "bea")
        # A used refresh token's marker: that token's remaining life (and the leeway, for
        # which it is still accepted). Issued 100 s ago, so 100 s less than a full life.
        access = _access(client)
        older = _issued_ago(client, monkeypatch, user["id"], 100)
        used_jti = _unverified(older.refresh_token)["jti"]
        now = int(time.time())
        with monkeypatch.context() as m:
            m.setattr(time, "time", lambda: now)
            rotated = client.portal.call(access.tokens.refresh, older.refresh_token)
        assert store.ttls[f"refresh_used:{used_jti}"] == refresh_life - 100 + leeway
        # Logout: the access token's jti for an access life, the login for a refresh life.
        claims = _unverified(rotated.access_token)
        r = client.post("/v1/auth/logout", headers=bearer(rotated.access_token), json={})
        assert r.status_code == 204
        assert store.ttls[f"revoked:{claims['jti']}"] == access_life + leeway == 905
        assert store.ttls[f"family_revoked:{claims['fam']}"] == refresh_life + leeway == 604_805
        # Refresh-token reuse revokes the login for as long.
        other = login(client, "bea")
        family = _unverified(other["refresh_token"])["fam"]
        for _ in range(2):
            client.post("/v1/auth/refresh", json={"refresh_token": other["refresh_token"]})
        assert store.ttls[f"family_revoked:{family}"] == refresh_life + leeway
    finally:
        client.__exit__(None, None, None)


# --- access-control › Tiers ---------------------------------------------------------------


def test_default_tiers_are_the_documented_ones():
    auth = AuthSettings()
    assert auth.default_tier == "free" and auth.bootstrap_admin_tier == "unlimited"
    assert {name: tier.model_dump() for name, tier in auth.tiers.items()} == {
        "free": {
            "rate": ["10/minute", "100/day"],
            "tokens_per_day": 20_000,
            "job_rows_per_day": 10_000,
            "max_concurrent_jobs": 1,
        },
        "pro": {
            "rate": ["100/minute", "10000/day"],
            "tokens_per_day": 2_000_000,
            "job_rows_per_day": 1_000_000,
            "max_concurrent_jobs": 4,
        },
        "enterprise": {
            "rate": ["1000/minute"],
            "tokens_per_day": 50_000_000,
            "job_rows_per_day": 50_000_000,
            "max_concurrent_jobs": 16,
        },
        "unlimited": {
            "rate": [],
            "tokens_per_day": None,
            "job_rows_per_day": None,
            "max_concurrent_jobs": None,
        },
    }


def _who(tier: str) -> Principal:
    return Principal(f"key:{tier}", "api_key", "user", tier, f"key:{tier}")


def test_free_tier_is_10_a_minute_and_100_a_day(monkeypatch):
    clock = fake_monotonic(monkeypatch)

    async def run() -> None:
        limiter = RateLimiter(AuthSettings().tiers, MemoryStore(), True, Metrics())
        who = _who("free")
        for _ in range(10):  # ten minutes, ten requests each
            for _ in range(10):
                await limiter.check(who)
            with pytest.raises(RateLimited, match=r"\(free\.minute"):
                await limiter.check(who)
            clock.now += 60
        with pytest.raises(RateLimited, match=r"\(free\.day\)") as refused:
            await limiter.check(who)  # the 101st of the day, in a fresh minute
        assert refused.value.retry_after == 86_400 - 600

    asyncio.run(run())


def test_enterprise_is_1000_a_minute_with_no_daily_cap(monkeypatch):
    clock = fake_monotonic(monkeypatch)

    async def run() -> None:
        limiter = RateLimiter(AuthSettings().tiers, MemoryStore(), True, Metrics())
        who = _who("enterprise")
        assert [(s.name, s.limit, s.seconds) for s in limiter.specs("enterprise")] == [
            ("enterprise.minute", 1000, 60)
        ]
        for _ in range(11):  # 11 000 requests: past any daily cap of the other tiers
            for _ in range(1000):
                headers = await limiter.check(who)
            assert headers["RateLimit-Policy"] == '"enterprise.minute";q=1000;w=60'
            with pytest.raises(RateLimited, match=r"\(enterprise\.minute\)"):
                await limiter.check(who)
            clock.now += 60

    asyncio.run(run())


def test_a_fixed_window_admits_up_to_twice_its_limit_across_a_boundary(monkeypatch):
    """The stated price of an exact one-round-trip count: the window starts at the first
    request, so 9 requests just before it ends and 10 just after are all admitted."""
    clock = fake_monotonic(monkeypatch, start=100.0)

    async def run() -> None:
        limiter = RateLimiter(AuthSettings().tiers, MemoryStore(), True, Metrics())
        who = _who("free")  # 10 a minute
        await limiter.check(who)  # t = 100 s: the minute window runs to 160 s
        clock.now = 159.9
        for _ in range(9):
            await limiter.check(who)
        with pytest.raises(RateLimited):
            await limiter.check(who)
        clock.now = 160.0  # a new window
        for _ in range(10):
            await limiter.check(who)
        with pytest.raises(RateLimited):
            await limiter.check(who)

    asyncio.run(run())  # 19 admitted within 0.1 s, 20 within one minute: twice the limit


@pytest.mark.parametrize(
    ("tier", "budget"), [("free", 20_000), ("pro", 2_000_000), ("enterprise", 50_000_000)]
)
def test_daily_token_budgets_per_tier(tier, budget):
    async def run() -> None:
        quota = TokenQuota(AuthSettings().tiers, MemoryStore(), True, Metrics())
        who = _who(tier)
        with pytest.raises(QuotaExceeded):
            await quota.reserve(who, budget + 1)  # one more than the day's budget
        await quota.reserve(who, budget)  # the whole budget, exactly
        with pytest.raises(QuotaExceeded) as refused:
            await quota.reserve(who, 1)
        assert refused.value.extra_headers["X-Quota-Limit"] == str(budget)
        assert (await quota.usage(who)).limit == budget

    asyncio.run(run())


def test_the_bootstrap_admin_key_is_unlimited(gateway):
    usage = gateway.get("/v1/usage").json()  # the test client sends the bootstrap key
    assert usage["kind"] == "bootstrap" and usage["tier"] == "unlimited"
    assert usage["requests"] == [] and usage["tokens"]["limit"] is None
    for _ in range(120):  # past the free and pro minute windows
        r = gateway.get("/v1/models")
        assert r.status_code == 200 and "X-RateLimit-Limit" not in r.headers

    async def budget() -> None:
        quota = TokenQuota(AuthSettings().tiers, MemoryStore(), True, Metrics())
        await quota.reserve(_who("unlimited"), 10**12)  # no daily token cap either

    asyncio.run(budget())


def test_admin_tiers_lists_the_configured_tiers(tmp_path):
    tiers = _tiers(gold=Tier(rate=["5 per 2 seconds", "50/hour"], tokens_per_day=7))
    client = _client(
        tmp_path, FakeTriton(), auth=AuthSettings(bootstrap_admin_key=ADMIN_KEY, tiers=tiers)
    )
    try:
        r = client.get("/v1/admin/tiers")
        assert r.status_code == 200
        assert r.json() == {
            "default_tier": "free",
            "tiers": {
                "free": {"rate": ["10/minute", "100/day"], "tokens_per_day": 20_000},
                "pro": {"rate": ["100/minute", "10000/day"], "tokens_per_day": 2_000_000},
                "enterprise": {"rate": ["1000/minute"], "tokens_per_day": 50_000_000},
                "unlimited": {"rate": [], "tokens_per_day": None},
                "gold": {"rate": ["5 per 2 seconds", "50/hour"], "tokens_per_day": 7},
            },
        }
    finally:
        client.__exit__(None, None, None)


# --- access-control › Redis down ----------------------------------------------------------


class FlakyRedis:
    """The little of redis.asyncio.Redis that start-up uses; `ping` fails `failures`
    times, then answers."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.pings = 0

    async def ping(self) -> bool:
        self.pings += 1
        if self.pings <= self.failures:
            raise RedisConnectionError("refused")
        return True

    async def aclose(self) -> None: ...


class LogLines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_a_hung_redis_is_probed_every_quarter_second_and_the_outage_logged_once(
    tmp_path, monkeypatch
):
    """The guard as the container builds it from the default settings: the request that
    finds Redis hung waits out the deadline; the next ones never call Redis; a background
    ping every 0.25 s (the default `redis_probe_s`) finds it back; each transition is
    logged once however many calls failed."""
    settings = Settings(
        environment="test", triton=TritonSettings(model_repository=write_cards(tmp_path / "r"))
    )
    assert settings.auth.redis_probe_s == 0.25
    redis = FlakyRedis(failures=3)
    parts = ServiceOverrides(
        triton=TritonClient(settings.triton, FakeTriton()),
        redis=redis,  # type: ignore[arg-type]
        store=MemoryStore(),
    )
    # The prober's pauses, recorded (and not waited: the guard's own asyncio only).
    slept: list[float] = []
    real_sleep = asyncio.sleep

    async def recorded_sleep(delay: float, result: object = None) -> object:
        slept.append(delay)
        await real_sleep(0.01)
        return result

    fake_asyncio = types.SimpleNamespace(
        **{name: getattr(asyncio, name) for name in dir(asyncio) if not name.startswith("__")}
    )
    fake_asyncio.sleep = recorded_sleep
    monkeypatch.setattr(breaker_module, "asyncio", fake_asyncio)  # the guard's breaker
    lines = LogLines()
    logger = logging.getLogger("infergate.redis")
    logger.addHandler(lines)
    calls = 0

    async def hung() -> None:
        nonlocal calls
        calls += 1
        await asyncio.Event().wait()  # a SIGSTOPped Redis: connected, never answering

    metrics = Metrics(redis_configured=True)

    def exported(line: str) -> bool:
        return line in metrics.render().decode().splitlines()

    async def scenario() -> None:
        async with open_services(settings, metrics, parts) as services:
            guard = services.redis_guard
            assert guard is not None
            with pytest.raises(StateUnavailable):
                await guard.run("get", hung)  # this one waits the 0.5 s deadline
            assert calls == 1 and not guard.up
            for _ in range(20):  # ... the others are refused without calling Redis
                with pytest.raises(StateUnavailable):
                    await guard.run("get", hung)
            assert calls == 1
            # Exported: down, the one failure by its class, the 20 calls not made.
            assert exported("infergate_redis_up 0.0")
            assert exported(
                'infergate_redis_errors_total{error="TimeoutError",operation="get"} 1.0'
            )
            assert exported('infergate_redis_errors_total{error="skipped",operation="get"} 20.0')
            await _until(lambda: guard.up, "the probe to find Redis back")
            assert exported("infergate_redis_up 1.0")
            assert redis.pings == 4  # three failed pings, then one answer
            assert await guard.run("get", lambda: real_sleep(0, "answer")) == "answer"

    try:
        asyncio.run(scenario())
    finally:
        logger.removeHandler(lines)
    assert slept == [0.25] * 4
    assert lines.messages == ["redis unreachable", "redis reachable again"]


def test_fail_open_is_the_default_policy(tmp_path):
    assert AuthSettings().redis_failure_policy == "open"
    store = MemoryStore()
    client = _client(tmp_path, FakeTriton(), store=store)  # the policy left at its default
    try:
        key = new_key(client, tier="pro")["key"]
        assert client.get("/v1/models", headers=as_key(key)).status_code == 200
        _break(store)
        r = client.get("/v1/models", headers=as_key(key))
        assert r.status_code == 200  # kept serving, from the per-process bucket
        assert r.headers["X-RateLimit-Limit"] == "100"
    finally:
        client.__exit__(None, None, None)


# --- access-control › Logins --------------------------------------------------------------


class KeyRecorder(MemoryStore):
    """The in-process store, noting every key the throttle reads or counts under."""

    def __init__(self) -> None:
        super().__init__()
        self.keys: set[str] = set()
        self.ttls: dict[str, int | None] = {}

    async def get(self, key: str) -> bytes | None:
        self.keys.add(key)
        return await super().get(key)

    async def put(
        self, key: str, value: bytes, ttl_s: int | None = None, only_if_absent: bool = False
    ) -> bool:
        self.keys.add(key)
        self.ttls[key] = ttl_s
        return await super().put(key, value, ttl_s, only_if_absent)

    async def hit_windows(self, windows: Sequence[Window], cost: int = 1) -> WindowHit:
        self.keys.update(w.key for w in windows)
        return await super().hit_windows(windows, cost)


def test_the_five_login_budgets_default_to_the_documented_figures():
    auth = AuthSettings()
    assert (
        auth.login_attempts_per_minute,
        auth.login_client_attempts_per_minute,
        auth.login_user_attempts_per_hour,
        auth.login_global_attempts_per_minute,
        auth.login_known_client_days,
    ) == (10, 30, 100, 600, 30)

    async def refused(throttle: LoginThrottle, name: str, client: str) -> int:
        with pytest.raises(RateLimited) as error:
            await throttle.admit(name, client)
        return error.value.retry_after

    async def run() -> None:
        # Per username + client: 10 a minute.
        throttle = LoginThrottle(auth, MemoryStore(), SECRET)
        for _ in range(10):
            await throttle.admit("amy", "198.51.100.1")
        assert 1 <= await refused(throttle, "amy", "198.51.100.1") <= 60
        # Per client, whatever the name: 30 a minute.
        throttle = LoginThrottle(auth, MemoryStore(), SECRET)
        for i in range(30):
            await throttle.admit(f"name{i}", "198.51.100.2")
        assert 1 <= await refused(throttle, "name30", "198.51.100.2") <= 60
        # Per username from unknown clients: 100 an hour.
        throttle = LoginThrottle(auth, MemoryStore(), SECRET)
        for i in range(100):
            await throttle.admit("bo", f"203.0.113.{i}")
        assert 60 < await refused(throttle, "bo", "203.0.113.200") <= 3600
        # All logins from unknown clients: 600 a minute.
        throttle = LoginThrottle(auth, MemoryStore(), SECRET)
        for i in range(600):
            await throttle.admit(f"u{i}", f"10.0.{i // 200}.{i % 200}")
        assert 1 <= await refused(throttle, "u600", "10.9.9.9") <= 60
        # A success makes the client known for 30 days; a known client skips the last two.
        store = KeyRecorder()
        throttle = LoginThrottle(auth, store, SECRET)
        admitted = await throttle.admit("cy", "198.51.100.3")
        await throttle.succeeded(admitted)
        assert store.ttls[f"login_known:{admitted.pair}"] == 30 * 86_400
        for i in range(99):  # the first, not yet known, was the 100th
            await throttle.admit("cy", f"203.0.113.{i}")
        await refused(throttle, "cy", "203.0.113.200")
        assert (await throttle.admit("cy", "198.51.100.3")).known

    asyncio.run(run())


def test_the_login_counters_hold_keyed_hashes_never_a_name_or_an_address():
    name, address = "Dora.Explorer", "203.0.113.77"

    async def keys_under(secret: str) -> set[str]:
        store = KeyRecorder()
        throttle = LoginThrottle(AuthSettings(), store, secret)
        await throttle.succeeded(await throttle.admit(name, address))
        await throttle.admit("other", "198.51.100.1")  # an unknown client: all four budgets
        return store.keys

    ours = asyncio.run(keys_under(SECRET))
    theirs = asyncio.run(keys_under(OTHER_SECRET))
    assert ours and all(
        re.fullmatch(r"login:(pair|client|user):[0-9a-f]{32}|login:all|login_known:[0-9a-f]{32}", k)
        for k in ours
    ), ours
    for key in ours:
        for value in (name, name.lower(), address, "other", "198.51.100.1"):
            assert value not in key
    # Keyed: computed here as HMAC-SHA256 under a key derived from the server secret, and
    # different under another secret (so a dump of Redis cannot be matched to names).
    hash_key = hmac.new(SECRET.encode(), b"infergate:login-throttle", hashlib.sha256).digest()
    by_user = hmac.new(hash_key, f"user\x00{name.lower()}".encode(), hashlib.sha256).hexdigest()
    assert f"login:user:{by_user[:32]}" in ours
    assert f"login:user:{hashlib.sha256(name.lower().encode()).hexdigest()[:32]}" not in ours
    assert ours - {"login:all"} and not (ours - {"login:all"}) & theirs


# --- access-control › Password hashing ----------------------------------------------------


def test_password_hashes_are_argon2id_with_64_mib(gateway):
    user = new_user(gateway, "eve")
    row = _row(gateway, UserRow, user["id"])  # the users table, the system of record
    assert row is not None
    stored = row.password_hash
    params = argon2.extract_parameters(stored)
    assert params.type is argon2.Type.ID
    assert params.memory_cost == 64 * 1024  # KiB: 64 MiB
    assert stored.startswith("$argon2id$") and "m=65536" in stored


class GatedHashes(GatedHasher):
    """Also holds hashing (an admin creating a user) at the gate, noting it."""

    def hash(self, password: str) -> str:
        with self._lock:
            self.seen.append(f"hash:{password}")
        assert self.gate.wait(30), "gate never opened"
        return "h"


def test_hashing_runs_2_at_a_time_8_wait_per_lane_and_admin_work_goes_first(tmp_path):
    auth = AuthSettings()
    assert (auth.login_hash_concurrency, auth.login_max_waiting) == (2, 8)
    settings = Settings(
        environment="test", triton=TritonSettings(model_repository=tmp_path), auth=auth
    )

    async def run() -> None:
        metrics = Metrics()
        database = await open_database(settings, metrics)  # in memory: no URL configured
        access = Access.build(settings, MemoryStore(), database, metrics)  # as the app does
        passwords: Passwords = access.users._passwords
        hasher = GatedHashes()
        passwords._hasher = hasher  # type: ignore[assignment]
        try:
            await scenario(access, passwords, hasher)
        finally:
            await database.close()

    async def scenario(access: Access, passwords: Passwords, hasher: GatedHashes) -> None:
        running = [asyncio.create_task(passwords.verify("h", f"r{i}")) for i in range(2)]
        await _until(lambda: len(hasher.seen) == 2, "two hashes running")
        waiting = [asyncio.create_task(passwords.verify("h", f"w{i}")) for i in range(8)]
        await _until(lambda: passwords.slots.waiting(1) == 8, "eight waiting")
        assert len(hasher.seen) == 2  # two at a time
        with pytest.raises(Overloaded) as refused:
            await passwords.verify("h", "ninth")  # a ninth in the lane: 503 before hashing
        assert refused.value.status == 503 and refused.value.retry_after == 1
        # An admin creating a user (and an owner from a known client) queue in the other
        # lane, after all of them ...
        admin = asyncio.create_task(
            access.users.create(
                "newcomer", "correct horse battery", "user", "free", actor="test", request_id=None
            )
        )
        owner = asyncio.create_task(passwords.verify("h", "owner", priority=True))
        await _until(lambda: passwords.slots.waiting(0) == 2, "the priority lane")
        hasher.gate.set()
        await asyncio.gather(*running, *waiting, admin, owner)
        # ... and are served first.
        assert set(hasher.seen[2:4]) == {"hash:correct horse battery", "owner"}
        assert sorted(hasher.seen[4:]) == [f"w{i}" for i in range(8)]
        assert "ninth" not in hasher.seen

    asyncio.run(run())


def test_the_client_address_comes_from_a_trusted_proxy_only(tmp_path, monkeypatch):
    """The server `serve` runs (its uvicorn options) believes X-Forwarded-For from the
    trusted proxies only (default: loopback); the login budgets per client see that
    address. From anyone else the header is ignored: it cannot buy a fresh budget."""
    for name in [n for n in os.environ if n.startswith("INFERGATE_")]:
        monkeypatch.delenv(name)
    assert Settings().server.trusted_proxies == ["127.0.0.1", "::1"]

    def served(peer: str, where: str) -> TestClient:
        settings = Settings(
            environment="test",
            triton=TritonSettings(model_repository=write_cards(tmp_path / where)),
            auth=AuthSettings(bootstrap_admin_key=ADMIN_KEY, login_attempts_per_minute=2),
        )
        config = uvicorn.Config(
            create_app(settings, over_fake(settings, FakeTriton())),
            log_config=None,
            **cli._server_options(),
        )
        config.load()  # wraps the app as the server does
        client = TestClient(config.loaded_app, client=(peer, 50_000), raise_server_exceptions=False)
        client.__enter__()
        return client

    def attempt(client: TestClient, forwarded: str) -> int:
        body = {"username": "nobody", "password": "wrong password!"}
        return client.post(
            "/v1/auth/token", json=body, headers={"X-Forwarded-For": forwarded}
        ).status_code

    proxy = served("127.0.0.1", "proxied")
    stranger = served("198.51.100.20", "direct")
    try:
        # Through the trusted proxy: each forwarded client has its own budget.
        assert [attempt(proxy, "203.0.113.1") for _ in range(3)] == [401, 401, 429]
        assert attempt(proxy, "203.0.113.2") == 401
        # From an untrusted peer: a new forwarded address each time changes nothing.
        codes = [attempt(stranger, f"203.0.113.{i}") for i in range(10, 13)]
        assert codes == [401, 401, 429]
    finally:
        proxy.__exit__(None, None, None)
        stranger.__exit__(None, None, None)


# --- access-control › Passwords -----------------------------------------------------------


def test_passwords_are_at_most_256_code_points_after_nfkc(gateway):
    assert MAX_CHARS == 256
    words = "correct horse battery staple "
    longest = (words * 10)[:256]
    assert weakness(longest) is None
    assert weakness(longest + "x") == "it is longer than 256 characters"
    # Counted after NFKC: 200 typed ligatures "ﬁ" are 400 code points.
    ligatures = "\ufb01" * 100 + (words * 4)[:100]
    assert len(ligatures) == 200 and weakness(ligatures) == "it is longer than 256 characters"
    # Through the admin route: 256 accepted, 257 refused, the ligatures refused.
    r = gateway.post("/v1/admin/users", json={"username": "len256", "password": longest})
    assert r.status_code == 201, r.text
    for password in (longest + "x", ligatures):
        r = gateway.post("/v1/admin/users", json={"username": "len257", "password": password})
        assert r.status_code == 422 and r.json()["error"]["code"] == "validation_error"
        assert password not in r.text


def test_the_bundled_list_holds_9282_common_passwords():
    assert len(common_passwords()) == 9_282
