"""Access control through the real app with the in-process store (no Redis, no Triton:
a fake Triton answers the few inference calls). The Redis-backed behaviour across worker
processes is in tests/integration/test_access_redis.py."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import io
import json
import logging
import re
import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from frontend.auth.jwt_keys import SigningKeys
from frontend.auth.principal import Principal
from frontend.auth.tokens import canonical_jws
from frontend.container import services_of
from frontend.errors import QuotaExceeded
from frontend.observability.logging import JsonFormatter
from frontend.observability.metrics import Metrics
from frontend.ratelimit.quota import TokenQuota
from frontend.settings import AuthSettings, DatabaseSettings, JwtSettings, Tier
from frontend.state.memory import MemoryStore
from frontend.state.store import Window

from .test_frontend_errors import ADMIN_KEY, FakeTriton, _client

PREDICT = "/v1/models/intent/predict"
KEY_RE = re.compile(r"^ig_live_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$")
PASSWORD = "correct horse battery"


def _tiers(**extra: Tier) -> dict[str, Tier]:
    tiers = AuthSettings().tiers
    tiers.update(extra)
    return tiers


@pytest.fixture
def app_client(tmp_path):
    client = _client(
        tmp_path,
        FakeTriton(),
        auth=AuthSettings(
            bootstrap_admin_key=ADMIN_KEY,
            tiers=_tiers(tiny=Tier(rate=["3/minute"], tokens_per_day=100)),
            last_used_interval_s=0,
        ),
    )
    yield client
    client.__exit__(None, None, None)


def new_key(client, **body) -> dict:
    r = client.post("/v1/admin/keys", json={"name": "test", **body})
    assert r.status_code == 201, r.text
    return r.json()


def new_user(client, name: str, **body) -> dict:
    r = client.post("/v1/admin/users", json={"username": name, "password": PASSWORD, **body})
    assert r.status_code == 201, r.text
    return r.json()


def login(client, name: str) -> dict:
    r = client.post("/v1/auth/token", json={"username": name, "password": PASSWORD}, headers={})
    assert r.status_code == 200, r.text
    return r.json()


def as_key(key: str) -> dict[str, str]:
    # Replaces the admin key the test client sends by default.
    return {"X-API-Key": key}


def bearer(token: str) -> dict[str, str]:
    return {"X-API-Key": "", "Authorization": f"Bearer {token}"}


# --- keys ------------------------------------------------------------------------------


def test_key_is_shown_once_works_both_ways_and_revocation_is_immediate(app_client):
    created = new_key(app_client, tier="pro")
    key = created["key"]
    assert KEY_RE.match(key) and created["id"] in key and created["tier"] == "pro"
    assert app_client.get("/v1/models", headers=as_key(key)).status_code == 200
    assert app_client.get("/v1/models", headers=bearer(key)).status_code == 200
    info = app_client.get(f"/v1/admin/keys/{created['id']}").json()
    assert "key" not in info and "digest" not in info and info["last_used_at"] is not None
    listed = app_client.get("/v1/admin/keys").json()["data"]
    assert [k["id"] for k in listed] == [created["id"]] and key not in json.dumps(listed)

    assert app_client.delete(f"/v1/admin/keys/{created['id']}").json()["revoked_at"]
    r = app_client.get("/v1/models", headers=as_key(key))
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-API-Key": "ig_live_0000000000000000_" + "A" * 43},  # well-formed, unknown
        {"X-API-Key": "nonsense"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer "},
        {"Authorization": "Bearer not.a.jwt"},
    ],
)
def test_missing_or_bad_credentials_are_401_with_one_message(app_client, headers):
    r = app_client.get("/v1/models", headers={"X-API-Key": "", **headers})
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "unauthorized"


def test_a_key_with_a_tampered_secret_is_refused(app_client):
    key = new_key(app_client)["key"]
    tampered = key[:-1] + ("A" if key[-1] != "A" else "B")
    assert app_client.get("/v1/models", headers=as_key(tampered)).status_code == 401
    assert app_client.get("/v1/models", headers=as_key(key)).status_code == 200


def operations(client, prefix: str) -> list[tuple[str, str, dict]]:
    """(method, url with placeholders filled, operation) for every documented route."""
    paths = client.get("/openapi.json").json()["paths"]
    return [
        (method.upper(), re.sub(r"\{[^}]+\}", "x", path), op)
        for path, item in paths.items()
        if path.startswith(prefix)
        for method, op in item.items()
    ]


def test_every_v1_route_needs_credentials_and_probes_do_not(app_client):
    open_routes = {"/v1/auth/token", "/v1/auth/refresh"}
    checked = 0
    for method, url, op in operations(app_client, "/v1"):
        if url in open_routes:
            assert "security" not in op
            continue
        # /docs shows both schemes on every protected route ...
        assert {"ApiKeyAuth", "BearerAuth"} <= {k for s in op["security"] for k in s}, url
        # ... and the route does refuse a caller without credentials.
        r = app_client.request(method, url, headers={"X-API-Key": ""}, json={})
        assert r.status_code == 401, (method, url, r.status_code)
        checked += 1
    assert checked >= 18
    for probe in ("/health/live", "/health/startup", "/metrics"):
        assert app_client.get(probe, headers={"X-API-Key": ""}).status_code == 200


def test_user_gets_403_on_every_admin_route(app_client):
    user_key = new_key(app_client, role="user", tier="pro")["key"]  # free: 10/minute
    admin_routes = operations(app_client, "/v1/admin")
    assert len(admin_routes) >= 10
    for method, url, op in admin_routes:
        assert "role: admin" in op["summary"] or "(admin)" in op["summary"], url
        r = app_client.request(method, url, headers=as_key(user_key), json={})
        assert r.status_code == 403, (method, url, r.status_code)
        assert r.json()["error"]["code"] == "forbidden"


def test_objects_of_another_principal_are_404(app_client):
    new_user(app_client, "alice")
    new_user(app_client, "bob")
    alice, bob = login(app_client, "alice"), login(app_client, "bob")
    own = app_client.post(
        "/v1/keys", json={"name": "laptop"}, headers=bearer(alice["access_token"])
    )
    assert own.status_code == 201 and own.json()["role"] == "user"
    key_id = own.json()["id"]
    for method in ("GET", "DELETE"):
        r = app_client.request(method, f"/v1/keys/{key_id}", headers=bearer(bob["access_token"]))
        assert r.status_code == 404, method
        assert r.json()["error"]["code"] == "not_found"
    assert app_client.get("/v1/keys", headers=bearer(bob["access_token"])).json()["data"] == []
    mine = app_client.get(f"/v1/keys/{key_id}", headers=bearer(alice["access_token"]))
    assert mine.status_code == 200
    # Alice's key acts as Alice: same account, so the same limits.
    usage = app_client.get("/v1/usage", headers=as_key(own.json()["key"])).json()
    assert usage["account"].startswith("user:") and usage["subject"] == f"key:{key_id}"
    # The admin sees every key.
    assert key_id in {k["id"] for k in app_client.get("/v1/admin/keys").json()["data"]}


def test_keys_minted_by_a_standalone_key_share_its_account(app_client):
    """Issue 11 item 3: each child used to get its own account, counters and token budget
    (3 children: 30 extra requests a minute). Now a child acts as the key that minted it:
    its account, its tier (followed at once) and its life (revoked with it)."""
    parent = new_key(app_client, tier="free")  # 10/minute
    children = []
    for i in range(3):  # 3 of the parent's 10 requests
        r = app_client.post("/v1/keys", json={"name": f"child{i}"}, headers=as_key(parent["key"]))
        assert r.status_code == 201, r.text
        children.append(r.json())
    # A child's child joins the same group (flat), not a new account.
    r = app_client.post("/v1/keys", json={"name": "g"}, headers=as_key(children[0]["key"]))
    assert r.status_code == 201 and r.json()["owner"] == f"key:{parent['id']}"
    children.append(r.json())
    keys = [parent["key"]] + [c["key"] for c in children]
    for child in children:
        usage = app_client.get("/v1/usage", headers=as_key(child["key"])).json()
        assert (
            usage["account"] == f"key:{parent['id']}" and usage["subject"] == f"key:{child['id']}"
        )
        assert usage["tokens"]["limit"] == 20_000  # the parent's one budget
    served = 0
    for i in range(60):
        r = app_client.get("/v1/models", headers=as_key(keys[i % len(keys)]))
        assert r.status_code in (200, 429), r.text
        served += r.status_code == 200
    assert served == 10 - 4  # 0 extra requests through the children in this window
    # The parent's tier applies to its children at once ...
    app_client.patch(f"/v1/admin/keys/{parent['id']}", json={"tier": "pro"})
    r = app_client.get("/v1/models", headers=as_key(children[1]["key"]))
    assert r.status_code == 200 and r.headers["X-RateLimit-Limit"] == "100"
    # ... and revoking the parent ends them: a leaked key cannot outlive itself in children.
    app_client.delete(f"/v1/admin/keys/{parent['id']}")
    for key in keys:
        assert app_client.get("/v1/models", headers=as_key(key)).status_code == 401


def test_admin_cannot_be_made_through_self_service(app_client):
    user_key = new_key(app_client, role="user")["key"]
    r = app_client.post("/v1/keys", json={"name": "x", "role": "admin"}, headers=as_key(user_key))
    assert r.status_code == 422


# --- rate limits -----------------------------------------------------------------------


def test_tier_window_headers_and_429(app_client):
    key = new_key(app_client, tier="tiny")["key"]
    for remaining in (2, 1, 0):
        r = app_client.get("/v1/models", headers=as_key(key))
        assert r.status_code == 200
        assert r.headers["X-RateLimit-Limit"] == "3"
        assert r.headers["X-RateLimit-Remaining"] == str(remaining)
        assert r.headers["RateLimit-Policy"] == '"tiny.minute";q=3;w=60'
        assert r.headers["RateLimit"].startswith(f'"tiny.minute";r={remaining};t=')
    r = app_client.get("/v1/models", headers=as_key(key))
    error = r.json()["error"]
    assert r.status_code == 429 and error["code"] == "rate_limited"
    assert 55 <= int(r.headers["Retry-After"]) <= 60
    assert r.headers["X-RateLimit-Remaining"] == "0"
    assert error["details"]["retry_after_s"] == int(r.headers["Retry-After"])
    usage = app_client.get("/v1/usage", headers=as_key(key)).json()  # not counted itself
    assert usage["tier"] == "tiny"
    assert usage["requests"] == [
        {
            "name": "tiny.minute",
            "limit": 3,
            "used": 3,
            "remaining": 0,
            "window_s": 60,
            "reset_s": usage["requests"][0]["reset_s"],
        }
    ]
    assert usage["tokens"]["limit"] == 100


def test_admin_changes_a_keys_tier_and_it_applies_at_once(app_client):
    created = new_key(app_client, tier="tiny")
    for _ in range(3):
        app_client.get("/v1/models", headers=as_key(created["key"]))
    assert app_client.get("/v1/models", headers=as_key(created["key"])).status_code == 429
    r = app_client.patch(f"/v1/admin/keys/{created['id']}", json={"tier": "pro"})
    assert r.status_code == 200 and r.json()["tier"] == "pro"
    assert app_client.get("/v1/models", headers=as_key(created["key"])).status_code == 200
    bad = app_client.patch(f"/v1/admin/keys/{created['id']}", json={"tier": "platinum"})
    assert bad.status_code == 422 and "tiers" in bad.json()["error"]["details"]


def test_windows_are_all_or_nothing_and_reset():
    async def run() -> None:
        store = MemoryStore()
        minute, day = Window("m", 2, 1), Window("d", 3, 3600)
        assert (await store.hit_windows([minute, day])).allowed
        assert (await store.hit_windows([minute, day])).allowed
        refused = await store.hit_windows([minute, day])
        assert not refused.allowed and refused.counts == (2, 2)  # day not charged
        await asyncio.sleep(1.05)  # a duration: past the 1 s window
        again = await store.hit_windows([minute, day])
        assert again.allowed and again.counts == (1, 3)
        assert not (await store.hit_windows([minute, day])).allowed  # day now full

    asyncio.run(run())


def test_login_attempts_are_throttled_per_user_and_client(tmp_path):
    # The other budgets, and the owner from another client: tests/unit/test_login_throttle.py
    client = _client(
        tmp_path,
        FakeTriton(),
        auth=AuthSettings(bootstrap_admin_key=ADMIN_KEY, login_attempts_per_minute=3),
    )
    new_user(client, "carol")
    codes = [
        client.post("/v1/auth/token", json={"username": "carol", "password": "wrong"}).status_code
        for _ in range(4)
    ]
    assert codes == [401, 401, 401, 429]
    client.__exit__(None, None, None)


# --- JWT -------------------------------------------------------------------------------


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _claims(subject: str, **over) -> dict:
    now = int(time.time())
    claims = {
        "iss": "infergate",
        "aud": "infergate-api",
        "sub": subject,
        "iat": now,
        "exp": now + 300,
        "jti": f"j{now}{len(over)}",
        "typ": "access",
        "fam": "f1",
        "role": "admin",
    }
    claims.update(over)
    return {k: v for k, v in claims.items() if v is not None}


def test_jwt_attack_matrix_is_refused_with_401(app_client):
    user = new_user(app_client, "dave")
    pair = login(app_client, "dave")
    assert app_client.get("/v1/models", headers=bearer(pair["access_token"])).status_code == 200
    services = services_of(app_client.app)
    assert services is not None
    settings = services.settings
    keys = SigningKeys(settings.auth.jwt, settings.secret)
    kid, private = keys.signer()
    public_pem = keys.public_pem(kid)
    header, payload, signature = pair["access_token"].split(".")
    tampered = {**json.loads(base64.urlsafe_b64decode(payload + "==")), "role": "admin"}
    other = Ed25519PrivateKey.generate()  # a valid signature, but not by our key

    def sign(claims: dict, key=private, alg="EdDSA", kid_=kid) -> str:
        return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid_})

    sub = user["id"]
    # Key confusion: HS256 with our public key (which is public) as the HMAC secret.
    forged_hs256 = _b64({"alg": "HS256", "typ": "JWT", "kid": kid}) + "." + _b64(_claims(sub))
    mac = hmac.new(public_pem, forged_hs256.encode(), hashlib.sha256).digest()
    forged_hs256 += "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
    attacks = {
        "alg none": _b64({"alg": "none", "kid": kid}) + "." + _b64(_claims(sub)) + ".",
        "HS256 with the public key": forged_hs256,
        "expired": sign(_claims(sub, iat=int(time.time()) - 4000, exp=int(time.time()) - 3600)),
        "missing exp": sign(_claims(sub, exp=None)),
        "missing jti": sign(_claims(sub, jti=None)),
        "missing sub": sign(_claims(sub, sub=None)),
        "wrong aud": sign(_claims(sub, aud="someone-else")),
        "wrong iss": sign(_claims(sub, iss="evil")),
        "unknown kid": sign(_claims(sub), kid_="k-unknown"),
        "signed by another key": sign(_claims(sub), key=other),
        "tampered payload": f"{header}.{_b64(tampered)}.{signature}",
        "refresh token used as access": pair["refresh_token"],
        "unknown user": sign(_claims("0000000000000000")),
    }
    for name, token in attacks.items():
        r = app_client.get("/v1/models", headers=bearer(token))
        assert r.status_code == 401, (name, r.status_code)
    # The legit token still works after all that.
    assert app_client.get("/v1/models", headers=bearer(pair["access_token"])).status_code == 200


def _sibling(char: str) -> str:
    """Another base64url character with the same top 2 bits: as the last character of an
    86-character segment (64 bytes) it decodes to the same bytes."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    i = alphabet.index(char)
    return alphabet[(i & ~15) | ((i + 1) & 15)]


def test_jwt_in_non_canonical_base64url_is_refused(app_client):
    """Issue 11 item 14: `==` appended was accepted (PyJWT allows padding). Only the exact
    text that was signed is accepted now; the other variants are refused by PyJWT 2.15
    too, and by our own check whatever a PyJWT version allows."""
    new_user(app_client, "dan")
    pair = login(app_client, "dan")
    token = pair["access_token"]
    header, payload, signature = token.split(".")
    assert len(signature) == 86
    variants = {
        "padding after the signature": f"{token}==",
        "one = after the signature": f"{token}=",
        "padding after the header": f"{header}==.{payload}.{signature}",
        "padding after the payload": f"{header}.{payload}==.{signature}",
        "same bytes, other last character": f"{header}.{payload}.{signature[:-1]}"
        + _sibling(signature[-1]),
        "a character outside base64url": f"{header}.{payload}.{signature[:40]}+{signature[41:]}",
        "a space inside": f"{header}.{payload}.{signature[:40]} {signature[41:]}",
    }
    assert canonical_jws(token)
    for name, variant in variants.items():
        assert not canonical_jws(variant), name  # refused by our check, before PyJWT
        r = app_client.get("/v1/models", headers=bearer(variant))
        assert r.status_code == 401, (name, r.status_code)
    # The refresh token is held to the same rule (and the refused try does not use it up).
    r = app_client.post("/v1/auth/refresh", json={"refresh_token": pair["refresh_token"] + "=="})
    assert r.status_code == 401
    r = app_client.post("/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert r.status_code == 200
    assert app_client.get("/v1/models", headers=bearer(token)).status_code == 200


def test_refresh_rotates_and_reuse_revokes_the_family(app_client):
    new_user(app_client, "erin")
    first = login(app_client, "erin")
    second = app_client.post("/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert second.status_code == 200
    second = second.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert app_client.get("/v1/models", headers=bearer(second["access_token"])).status_code == 200
    # The old refresh token again: theft. Refused, and the whole login is revoked.
    reuse = app_client.post("/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert reuse.status_code == 401
    assert app_client.get("/v1/models", headers=bearer(second["access_token"])).status_code == 401
    again = app_client.post("/v1/auth/refresh", json={"refresh_token": second["refresh_token"]})
    assert again.status_code == 401
    # A fresh login is a new family and works.
    third = login(app_client, "erin")
    assert app_client.get("/v1/models", headers=bearer(third["access_token"])).status_code == 200


def test_logout_revokes_access_and_refresh(app_client):
    new_user(app_client, "frank")
    pair = login(app_client, "frank")
    r = app_client.post("/v1/auth/logout", headers=bearer(pair["access_token"]), json={})
    assert r.status_code == 204
    assert app_client.get("/v1/models", headers=bearer(pair["access_token"])).status_code == 401
    r = app_client.post("/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert r.status_code == 401


def test_disabled_user_and_tier_change_apply_at_once(app_client):
    user = new_user(app_client, "gina", tier="tiny")
    pair = login(app_client, "gina")
    assert (
        app_client.get("/v1/usage", headers=bearer(pair["access_token"])).json()["tier"] == "tiny"
    )
    app_client.patch(f"/v1/admin/users/{user['id']}", json={"tier": "pro"})
    assert app_client.get("/v1/usage", headers=bearer(pair["access_token"])).json()["tier"] == "pro"
    app_client.patch(f"/v1/admin/users/{user['id']}", json={"disabled": True})
    assert app_client.get("/v1/usage", headers=bearer(pair["access_token"])).status_code == 401
    r = app_client.post("/v1/auth/token", json={"username": "gina", "password": PASSWORD})
    assert r.status_code == 401


def test_wrong_password_and_unknown_user_look_the_same(app_client):
    new_user(app_client, "hank")
    a = app_client.post("/v1/auth/token", json={"username": "hank", "password": "x" * 12})
    b = app_client.post("/v1/auth/token", json={"username": "nobody", "password": "x" * 12})
    assert a.status_code == b.status_code == 401
    assert a.json()["error"]["message"] == b.json()["error"]["message"]
    dup = app_client.post("/v1/admin/users", json={"username": "HANK", "password": PASSWORD})
    assert dup.status_code == 409


def test_no_secret_reaches_the_logs(app_client):
    # The app's own formatter on a second handler: exactly what goes to stderr.
    sink = io.StringIO()
    handler = logging.StreamHandler(sink)
    handler.setFormatter(JsonFormatter())
    # Not the test client's own request log (httpx logs every URL it calls).
    handler.addFilter(lambda record: not record.name.startswith("httpx"))
    logging.getLogger().addHandler(handler)
    created = new_key(app_client)
    user = new_user(app_client, "ivan")
    pair = login(app_client, "ivan")
    app_client.get("/v1/models", headers=as_key(created["key"]))
    app_client.get("/v1/models", headers=bearer(pair["access_token"]))
    app_client.delete(f"/v1/admin/keys/{created['id']}")
    app_client.get("/v1/models", headers=as_key(created["key"]))
    # The user's id in a path and in a security warning (refresh token reuse).
    app_client.get(f"/v1/admin/users/{user['id']}")
    app_client.post("/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    app_client.post("/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    logging.getLogger().removeHandler(handler)
    logs = sink.getvalue()
    assert created["id"] in logs  # the key id is logged (created / revoked) ...
    for secret in (
        created["key"],
        created["key"][-43:],  # the secret (it may itself hold "_")
        pair["access_token"],
        pair["refresh_token"],
        PASSWORD,
        ADMIN_KEY,
    ):
        assert secret not in logs  # ... its secret, tokens and passwords never
    assert "refresh token reuse" in logs and "/v1/admin/users/fp_" in logs
    assert user["id"] not in logs  # a user's id only as its fingerprint


# --- token quotas ----------------------------------------------------------------------


def test_quota_reserve_settle_and_refuse():
    async def run() -> None:
        quota = TokenQuota({"t": Tier(rate=[], tokens_per_day=100)}, MemoryStore(), True, Metrics())
        who = Principal("key:a", "api_key", "user", "t", "key:a")
        async with quota.hold(who, estimate=60) as held:
            assert (await quota.usage(who)).used == 60  # the estimate is held meanwhile
            held.used = 25
        assert (await quota.usage(who)).used == 25  # settled to the real count
        with pytest.raises(QuotaExceeded) as refused:
            await quota.reserve(who, 80)
        assert refused.value.status == 429 and refused.value.retry_after >= 1
        assert (await quota.usage(who)).remaining == 75

    asyncio.run(run())


def test_quota_settles_when_the_stream_is_cancelled():
    async def run() -> None:
        quota = TokenQuota({"t": Tier(tokens_per_day=1000)}, MemoryStore(), True, Metrics())
        who = Principal("key:b", "api_key", "user", "t", "key:b")
        produced = asyncio.Event()

        async def stream() -> None:
            async with quota.hold(who, estimate=500) as held:
                for _ in range(1000):
                    held.used += 1
                    if held.used == 7:
                        produced.set()
                    await asyncio.sleep(0.01)

        task = asyncio.create_task(stream())
        await produced.wait()
        task.cancel()  # what a client disconnect does to the request task
        with pytest.raises(asyncio.CancelledError):
            await task
        used = (await quota.usage(who)).used
        assert 7 <= used <= 8  # charged for what was generated, not the 500 held

    asyncio.run(run())


# --- settings --------------------------------------------------------------------------


def test_settings_refuse_weak_or_inconsistent_auth():
    with pytest.raises(ValueError):
        AuthSettings(bootstrap_admin_key="short")
    with pytest.raises(ValueError):
        AuthSettings(default_tier="gold")
    with pytest.raises(ValueError):
        Tier(rate=["ten per fortnight"])
    with pytest.raises(ValueError):
        JwtSettings(active_kid="nope")


def test_signing_keys_rotate_by_kid(tmp_path):
    """Tokens signed by a key still listed keep working after the active kid moves on; once
    the old key is removed from the ring, its tokens are refused."""
    from cryptography.hazmat.primitives import serialization

    def pem() -> str:
        return (
            Ed25519PrivateKey.generate()
            .private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            .decode()
        )

    old, new = (
        {"kid": "2026-10", "private_key_pem": pem()},
        {"kid": "2026-11", "private_key_pem": pem()},
    )

    # One store and one database for every app: the later apps must find the user the
    # first one made (and its token's revocation state).
    store = MemoryStore()
    database = DatabaseSettings(url=f"sqlite+aiosqlite:///{tmp_path}/shared.db")

    def client_with(keys: list[dict], active: str):
        return _client(
            tmp_path / active / str(len(keys)),
            FakeTriton(),
            store=store,
            database=database,
            auth=AuthSettings(
                bootstrap_admin_key=ADMIN_KEY,
                jwt=JwtSettings(signing_keys=keys, active_kid=active),
            ),
        )

    first = client_with([old], "2026-10")
    user = new_user(first, "rot")
    token = login(first, "rot")["access_token"]
    assert jwt.get_unverified_header(token)["kid"] == "2026-10"
    first.__exit__(None, None, None)

    for keys, active, expected in (([old, new], "2026-11", 200), ([new], "2026-11", 401)):
        c = client_with(keys, active)
        assert c.get("/v1/usage", headers=bearer(token)).status_code == expected
        if expected == 200:
            assert (
                c.get("/v1/usage", headers=bearer(token)).json()["subject"] == f"user:{user['id']}"
            )
        c.__exit__(None, None, None)


def _break(store) -> None:
    """Every state call now fails as an unreachable Redis would (through the guard)."""
    from frontend.errors import StateUnavailable

    async def down(*args, **kwargs):
        raise StateUnavailable("shared state is unreachable")

    for name in (
        "get",
        "get_many",
        "put",
        "delete",
        "add_member",
        "members",
        "hit_windows",
        "peek_windows",
        "reserve_daily",
        "adjust",
        "daily_used",
    ):
        setattr(store, name, down)


@pytest.mark.parametrize("policy", ["open", "closed"])
def test_outage_policy_for_jwt_users_and_their_keys(tmp_path, policy):
    store = MemoryStore()
    client = _client(
        tmp_path,
        FakeTriton(),
        store=store,
        auth=AuthSettings(bootstrap_admin_key=ADMIN_KEY, redis_failure_policy=policy),
    )
    new_user(client, "olga", tier="pro")
    token = login(client, "olga")["access_token"]
    own_key = client.post("/v1/keys", json={"name": "k"}, headers=bearer(token)).json()["key"]
    other_key = new_key(client)["key"]  # never used: this worker does not hold it
    assert client.get("/v1/usage", headers=bearer(token)).status_code == 200
    assert client.get("/v1/models", headers=as_key(own_key)).status_code == 200
    _break(store)
    jwt_call = client.get("/v1/models", headers=bearer(token))
    key_call = client.get("/v1/models", headers=as_key(own_key))
    unseen = client.get("/v1/models", headers=as_key(other_key))
    if policy == "open":
        assert jwt_call.status_code == key_call.status_code == 200
        assert jwt_call.headers["X-RateLimit-Limit"] == "100"  # pro, from the local bucket
    else:
        assert jwt_call.status_code == key_call.status_code == 503
        assert jwt_call.json()["error"]["code"] == "state_unavailable"
    # A key this worker does not hold is read from the database (the system of record):
    # served under "open" (local bucket), refused by the limiter under "closed".
    if policy == "open":
        assert unseen.status_code == 200
    else:
        assert unseen.status_code == 503 and unseen.headers["Retry-After"] == "1"
    client.__exit__(None, None, None)
