"""What the access-control routes do, beneath the routes: tier checks, login throttling,
ownership, usage reports."""

from __future__ import annotations

from ..access import Access
from ..auth.principal import Principal, Role
from ..auth.tokens import TokenPair
from ..errors import InputInvalid, RateLimited, Unauthorized
from ..settings import AuthSettings
from ..state.store import Window

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
    """A key for the caller itself: role user, same account (so the same limits)."""
    if len(await access.keys.listing(by.owner)) >= MAX_OWN_KEYS:
        raise InputInvalid(f"at most {MAX_OWN_KEYS} keys per owner; revoke one first")
    owner = by.owner if by.owner.startswith(("user:", "key:")) else None
    record, key = await access.keys.create(name, owner, "user", by.tier, by.subject)
    return {**record.public(), "key": key}


async def login(access: Access, settings: AuthSettings, username: str, password: str) -> TokenPair:
    # Per-name throttle against password guessing, counted before the (costly) hash check.
    window = Window(f"login:{username.lower()}", settings.login_attempts_per_minute, 60)
    hit = await access.store.hit_windows([window])
    if not hit.allowed:
        retry = max(1, -(-hit.reset_ms[0] // 1000))
        raise RateLimited("too many login attempts for this user", retry)
    user = await access.users.check_password(username, password)
    if user is None:
        raise Unauthorized("wrong username or password")
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
