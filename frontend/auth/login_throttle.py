"""Budgets for POST /v1/auth/token, counted before the password is hashed.

Every attempt is counted, all or nothing, in fixed windows in the state store (so the
budgets hold across workers and replicas):

    per username + client address   login_attempts_per_minute        a guesser is slowed
    per client address              login_client_attempts_per_minute spraying many names
    per username                    login_user_attempts_per_hour     many addresses, one name
    all logins                      login_global_attempts_per_minute a flood

The last two apply only to clients not *known* for that username: a client address
from which that user logged in successfully within `login_known_client_days`. So a
guesser from elsewhere, however many addresses they have, cannot lock the owner out, and
an attempt from a known client also gets the priority lane for the hash (passwords.py).
An attempt over any budget is refused with 429 + Retry-After and is not counted.

The client address is the server's view of the peer (behind a reverse proxy, configure
the server to take it from the proxy's forwarded header, or every caller shares one
client budget). Store keys hold keyed hashes of names and addresses, never the values."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

from ..errors import RateLimited, StateUnavailable
from ..settings import AuthSettings
from ..state.store import StateStore, Window
from .secrets import derive, keyed_hash


@dataclass(frozen=True, slots=True)
class LoginPass:
    """An attempt within budget."""

    known: bool  # this client logged in as this user recently: hash in the priority lane
    pair: str  # the (username, client) fingerprint, to remember a success under


class LoginThrottle:
    def __init__(self, settings: AuthSettings, store: StateStore, secret_key: str) -> None:
        self._settings = settings
        self._store = store
        self._key = derive(secret_key, "login-throttle")

    def _fp(self, *parts: str) -> str:
        return keyed_hash(self._key, "\x00".join(parts))[:32]

    async def admit(self, username: str, client: str) -> LoginPass:
        s = self._settings
        name = username.lower()  # the username index is case-insensitive
        pair, by_client, by_user = (
            self._fp("pair", name, client),
            self._fp("client", client),
            self._fp("user", name),
        )
        known = s.login_known_client_days > 0 and bool(await self._store.get(f"login_known:{pair}"))
        windows = [
            Window(f"login:pair:{pair}", s.login_attempts_per_minute, 60),
            Window(f"login:client:{by_client}", s.login_client_attempts_per_minute, 60),
        ]
        if not known:
            windows += [
                Window(f"login:user:{by_user}", s.login_user_attempts_per_hour, 3600),
                Window("login:all", s.login_global_attempts_per_minute, 60),
            ]
        hit = await self._store.hit_windows(windows)
        if not hit.allowed:
            full = [
                reset
                for w, used, reset in zip(windows, hit.counts, hit.reset_ms, strict=True)
                if used + 1 > w.limit
            ]
            retry = max(1, math.ceil(max(full, default=1000) / 1000))
            # One message whichever budget is spent: it does not tell which names exist.
            raise RateLimited("too many login attempts; retry later", retry)
        return LoginPass(known, pair)

    async def succeeded(self, admitted: LoginPass) -> None:
        """The password was right: this client is known for this user (for the next
        `login_known_client_days`, counted again from each success)."""
        days = self._settings.login_known_client_days
        if days > 0:
            # Best effort: a state hiccup now must not fail a login whose password was right.
            with contextlib.suppress(StateUnavailable):
                await self._store.put(f"login_known:{admitted.pair}", b"1", ttl_s=days * 86_400)
