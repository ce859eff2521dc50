"""What the access-control routes do, beneath the routes: tier checks, key options and
their narrowing, ownership, login, usage reports."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

from ..access import Access
from ..auth.principal import KeyLimits, Principal
from ..auth.tokens import TokenPair
from ..errors import Forbidden, InputInvalid, Unauthorized
from ..schemas.access import KeyCreate, KeyUpdate, OwnKeyCreate, UserCreate, UserUpdate
from ..settings import AuthSettings

MAX_OWN_KEYS = 20


def check_tier(settings: AuthSettings, tier: str | None) -> str:
    tier = tier or settings.default_tier
    if tier not in settings.tiers:
        raise InputInvalid(f"unknown tier {tier!r}", {"tiers": sorted(settings.tiers)})
    return tier


def _scopes(scopes: Any, models: list[str]) -> dict[str, Any] | None:
    if scopes is None:
        return None
    unknown = sorted(set(scopes.models or ()) - set(models))
    if unknown:
        raise InputInvalid(f"unknown model(s) in scopes: {', '.join(unknown)}", {"models": models})
    data = scopes.model_dump()
    return {k: sorted(set(v)) if v is not None else None for k, v in data.items()}


def _limits(limits: Any) -> dict[str, Any] | None:
    if limits is None:
        return None
    data = {k: v for k, v in limits.model_dump().items() if v is not None}
    return data or None


async def create_key(
    access: Access,
    settings: AuthSettings,
    by: Principal,
    request_id: str | None,
    body: KeyCreate,
    models: list[str],
) -> dict[str, Any]:
    tier = check_tier(settings, body.tier)
    owner = None
    if body.user_id is not None:
        user = await access.users.require(body.user_id)
        owner = f"user:{user.id}"
    record, key = await access.keys.create(
        body.name,
        owner,
        body.role,
        tier,
        actor=by.subject,
        request_id=request_id,
        expires_at=time.time() + body.expires_in_s if body.expires_in_s else None,
        scopes=_scopes(body.scopes, models),
        limits=_limits(body.limits),
        labels=body.labels,
    )
    return {**record.public(), "key": key}


def _narrowed(mine: frozenset[str] | None, asked: list[str] | None, what: str) -> list[str] | None:
    """A key minted by a scoped key gets at most its maker's scope."""
    if mine is None:
        return sorted(set(asked)) if asked is not None else None
    if asked is None:
        return sorted(mine)
    beyond = sorted(set(asked) - mine)
    if beyond:
        raise Forbidden(
            f"this key's scopes do not include {what} {', '.join(beyond)}: a key cannot grant "
            "more than it has",
            {"scope": what, "allowed": sorted(mine)},
        )
    return sorted(set(asked))


def _tighter(mine: KeyLimits | None, asked: dict[str, Any] | None) -> dict[str, Any] | None:
    """Each limit the stricter of the maker's and the one asked for."""
    merged = {k: v for k, v in asdict(mine).items() if v is not None} if mine else {}
    for name, value in (asked or {}).items():
        merged[name] = min(value, merged.get(name, value))
    return merged or None


async def create_own_key(
    access: Access, by: Principal, request_id: str | None, body: OwnKeyCreate, models: list[str]
) -> dict[str, Any]:
    """A key for the caller itself: role user, same account (so the same limits and
    token budget). A user's keys act as the user; a key minted by a standalone key has
    owner `key:<that key>` and acts as that key (its tier; revoking it ends them too).
    Keys minted by such a child belong to the same standalone key: the group stays flat.
    A key never mints a key with more than it has: scopes within its own, limits no
    looser, expiry no later."""
    # Live keys only: a revoked key no longer counts (revoking one makes room).
    live = [k for k in await access.keys.listing(by.owner) if k["revoked_at"] is None]
    if len(live) >= MAX_OWN_KEYS:
        raise InputInvalid(
            f"at most {MAX_OWN_KEYS} live keys per owner (a standalone key counts as one of "
            "its own); revoke one first"
        )
    asked = _scopes(body.scopes, models) or {}
    scopes = {
        "models": _narrowed(by.models, asked.get("models"), "model"),
        "routes": _narrowed(by.routes, asked.get("routes"), "route"),
    }
    expires_at = time.time() + body.expires_in_s if body.expires_in_s else None
    if by.expires_at is not None:
        expires_at = min(expires_at or by.expires_at, by.expires_at)
    # The bootstrap admin's keys are owned by "bootstrap" (it lists and revokes them at
    # /v1/keys); an anonymous caller's (auth off) own themselves.
    owner = by.owner if by.owner.startswith(("user:", "key:")) or by.owner == "bootstrap" else None
    record, key = await access.keys.create(
        body.name,
        owner,
        "user",
        by.tier,
        actor=by.subject,
        request_id=request_id,
        expires_at=expires_at,
        scopes=scopes if any(v is not None for v in scopes.values()) else None,
        limits=_tighter(by.limits, _limits(body.limits)),
        labels=body.labels,
    )
    return {**record.public(), "key": key}


async def update_key(
    access: Access,
    settings: AuthSettings,
    by: Principal,
    request_id: str | None,
    key_id: str,
    body: KeyUpdate,
    models: list[str],
) -> dict[str, Any]:
    sent = body.model_fields_set
    values: dict[str, Any] = {}
    if body.tier is not None:  # a key always has a tier: null leaves it as it is
        values["tier"] = check_tier(settings, body.tier)
    if "scopes" in sent:
        values["scopes"] = _scopes(body.scopes, models)
    if "limits" in sent:
        values["limits"] = _limits(body.limits)
    if "labels" in sent:
        values["labels"] = body.labels or {}
    if "expires_at" in sent:
        values["expires_at"] = body.expires_at
    if not values:  # nothing asked: the key as it is (a PATCH of nothing changes nothing)
        return (await access.keys.get_owned(key_id, None)).public()
    record = await access.keys.update(key_id, values, actor=by.subject, request_id=request_id)
    return record.public()


async def rotate_key(
    access: Access,
    settings: AuthSettings,
    by: Principal,
    request_id: str | None,
    key_id: str,
    owner: str | None,
    grace_s: int | None,
) -> dict[str, Any]:
    grace = settings.rotation_grace_s if grace_s is None else grace_s
    record, key = await access.keys.rotate(
        key_id, owner, grace, actor=by.subject, request_id=request_id
    )
    return {**record.public(), "key": key}


async def revoke_key(
    access: Access, by: Principal, request_id: str | None, key_id: str, owner: str | None
) -> dict[str, Any]:
    record = await access.keys.revoke(key_id, owner, actor=by.subject, request_id=request_id)
    return record.public()


async def create_user(
    access: Access, settings: AuthSettings, by: Principal, request_id: str | None, body: UserCreate
) -> dict[str, Any]:
    tier = check_tier(settings, body.tier)
    record = await access.users.create(
        body.username, body.password, body.role, tier, actor=by.subject, request_id=request_id
    )
    return record.public()


async def update_user(
    access: Access,
    settings: AuthSettings,
    by: Principal,
    request_id: str | None,
    user_id: str,
    body: UserUpdate,
) -> dict[str, Any]:
    tier = check_tier(settings, body.tier) if body.tier is not None else None
    record, key_ids = await access.users.update(
        user_id, tier=tier, disabled=body.disabled, actor=by.subject, request_id=request_id
    )
    # The user's keys carry the user's tier and state in every worker's held copy.
    await access.keys.invalidate(key_ids)
    return record.public()


async def login(access: Access, username: str, password: str, client: str) -> TokenPair:
    # Budgets first (frontend/auth/login_throttle.py): an attempt over budget is refused
    # before the costly hash, and a known client hashes in the priority lane.
    admitted = await access.logins.admit(username, client)
    user = await access.users.check_password(username, password, priority=admitted.known)
    if user is None:
        raise Unauthorized("wrong username or password")
    await access.logins.succeeded(admitted)
    return access.tokens.issue(user)


async def usage(access: Access, principal: Principal) -> dict:
    windows = await access.limiter.usage(principal)
    tokens = await access.quota.usage(principal)
    return {
        "subject": principal.subject,
        "account": principal.account,
        "kind": principal.kind,
        "role": principal.role,
        "tier": principal.tier,
        "requests": [
            {
                "name": w.spec.name,
                "limit": w.spec.limit,
                "used": w.used,
                "remaining": w.remaining,
                "window_s": w.spec.seconds,
                "reset_s": w.reset_s,
            }
            for w in windows
        ],
        "tokens": {
            "used": tokens.used,
            "limit": tokens.limit,
            "remaining": tokens.remaining,
            "reset_s": tokens.reset_s,
        },
    }
