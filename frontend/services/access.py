"""What the access-control routes do, beneath the routes: tier checks, login, ownership,
usage reports."""

from __future__ import annotations

from ..access import Access
from ..auth.principal import Principal, Role
from ..auth.tokens import TokenPair
from ..errors import InputInvalid, Unauthorized
from ..settings import AuthSettings

MAX_OWN_KEYS = 20


def check_tier(settings: AuthSettings, tier: str | None) -> str:
    tier = tier or settings.default_tier
    if tier not in settings.tiers:
        raise InputInvalid(f"unknown tier {tier!r}", {"tiers": sorted(settings.tiers)})
    return tier


async def create_key(
    access: Access,
    settings: AuthSettings,
    by: Principal,
    name: str,
    user_id: str | None,
    role: Role,
    tier: str | None,
) -> dict:
    tier = check_tier(settings, tier)
    owner = None
    if user_id is not None:
        user = await access.users.require(user_id)
        owner = f"user:{user.id}"
    record, key = await access.keys.create(name, owner, role, tier, by.subject)
    return {**record.public(), "key": key}


async def create_own_key(access: Access, by: Principal, name: str) -> dict:
    """A key for the caller itself: role user, same account (so the same limits and
    token budget). A user's keys act as the user; a key minted by a standalone key has
    owner `key:<that key>` and acts as that key (its tier; revoking it ends them too).
    Keys minted by such a child belong to the same standalone key: the group stays flat."""
    # Live keys only: a revoked key no longer counts (revoking one makes room).
    live = [k for k in await access.keys.listing(by.owner) if k["revoked_at"] is None]
    if len(live) >= MAX_OWN_KEYS:
        raise InputInvalid(
            f"at most {MAX_OWN_KEYS} live keys per owner (a standalone key counts as one of "
            "its own); revoke one first"
        )
    owner = by.owner if by.owner.startswith(("user:", "key:")) else None
    record, key = await access.keys.create(name, owner, "user", by.tier, by.subject)
    return {**record.public(), "key": key}


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
