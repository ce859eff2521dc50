"""The shared state in Redis. Counters live in Lua scripts so that each decision is one
atomic round trip timed by the Redis server's clock (PTTL, TIME), never a worker's."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import redis.asyncio as redis

from .guard import RedisGuard
from .store import DailyReservation, SlotClaim, Window, WindowHit, WindowReservation

PREFIX = "ig:"

# KEYS: one counter per window. ARGV: cost, then limit and window length (ms) per window,
# then a flag: 1 = count the hit, 0 = only read.
# A window absent or without expiry counts as new. Nothing is counted unless every window
# has room, so a request refused by the daily window does not use up the minute window.
_WINDOWS = """
local cost = tonumber(ARGV[1])
local commit = tonumber(ARGV[#ARGV])
local counts, resets = {}, {}
local allowed = 1
for i = 1, #KEYS do
  local limit = tonumber(ARGV[2 * i])
  local window = tonumber(ARGV[2 * i + 1])
  local ttl = redis.call('PTTL', KEYS[i])
  local count = 0
  if ttl > 0 then
    count = tonumber(redis.call('GET', KEYS[i]) or '0')
  else
    ttl = window
  end
  counts[i] = count
  resets[i] = ttl
  if count + cost > limit then allowed = 0 end
end
if allowed == 1 and commit == 1 then
  for i = 1, #KEYS do
    local window = tonumber(ARGV[2 * i + 1])
    if counts[i] == 0 then
      redis.call('SET', KEYS[i], cost, 'PX', window)
      counts[i] = cost
      resets[i] = window
    else
      counts[i] = redis.call('INCRBY', KEYS[i], cost)
    end
  end
end
return {allowed, counts, resets}
"""

# KEYS[1]: counter prefix. ARGV: amount, limit (-1: none), commit flag.
# The day is the Redis server's UTC day, so every worker and replica agrees on it.
_DAILY = """
local now = tonumber(redis.call('TIME')[1])
local day = math.floor(now / 86400)
local key = KEYS[1] .. ':' .. day
local reset = (day + 1) * 86400 - now
local used = tonumber(redis.call('GET', key) or '0')
local amount = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
if tonumber(ARGV[3]) == 0 then return {1, used, reset, key} end
if limit >= 0 and used + amount > limit then return {0, used, reset, key} end
used = redis.call('INCRBY', key, amount)
redis.call('EXPIRE', key, reset + 3600)
return {1, used, reset, key}
"""

# The milliseconds of the Redis server's clock, for the scripts below (Lua numbers are
# doubles: exact for millisecond timestamps).
_NOW_MS = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
"""

# KEYS[1]: counter prefix. ARGV: amount, limit (-1: none), window seconds, commit flag.
# Windows are aligned on the server's clock (minute n is [n*60 s, (n+1)*60 s)) and named
# by their index, so a settle after the window has ended finds no key (see _ADJUST_WINDOW)
# instead of charging the next window. The key expires when its window ends.
_TOKEN_WINDOW = (
    _NOW_MS
    + """
local window = tonumber(ARGV[3]) * 1000
local index = math.floor(now / window)
local key = KEYS[1] .. ':' .. ARGV[3] .. ':' .. index
local reset = (index + 1) * window - now
local used = tonumber(redis.call('GET', key) or '0')
local amount = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
if tonumber(ARGV[4]) == 0 then return {1, used, reset, key} end
if limit >= 0 and used + amount > limit then return {0, used, reset, key} end
used = redis.call('INCRBY', key, amount)
redis.call('PEXPIRE', key, reset)
return {1, used, reset, key}
"""
)

# KEYS[1]: one window's key. ARGV[1]: delta. Only while the window lasts; never below 0.
_ADJUST_WINDOW = """
local ttl = redis.call('PTTL', KEYS[1])
if ttl <= 0 then return 0 end
local used = tonumber(redis.call('GET', KEYS[1]) or '0') + tonumber(ARGV[1])
if used < 0 then used = 0 end
redis.call('SET', KEYS[1], used, 'PX', ttl)
return used
"""

# Concurrency slots: KEYS[1] is a sorted set of holder -> lease end (server ms). Leases
# past their end are dropped before counting, so a crashed worker's slots come back once
# their lease runs out; the set itself expires with its last lease.
_EXPIRE_WITH_LAST_LEASE = """
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if last[2] then redis.call('PEXPIREAT', KEYS[1], last[2]) end
"""

# ARGV: holder, limit, lease ms.
_ACQUIRE_SLOT = (
    _NOW_MS
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local held = redis.call('ZCARD', KEYS[1])
if held >= tonumber(ARGV[2]) then return {0, held} end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
"""
    + _EXPIRE_WITH_LAST_LEASE
    + """
return {1, held + 1}
"""
)

# ARGV: holder, lease ms. A lease already dropped is not taken again (XX): a renewal
# that lands after the release must not resurrect the slot.
_RENEW_SLOT = (
    _NOW_MS
    + """
local ends = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not ends or tonumber(ends) <= now then return 0 end
redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[2]), ARGV[1])
"""
    + _EXPIRE_WITH_LAST_LEASE
    + """
return 1
"""
)


class RedisStore:
    def __init__(self, client: redis.Redis, guard: RedisGuard) -> None:
        self._client = client
        self._guard = guard
        self._windows = client.register_script(_WINDOWS)
        self._daily = client.register_script(_DAILY)
        self._token_window = client.register_script(_TOKEN_WINDOW)
        self._adjust_window = client.register_script(_ADJUST_WINDOW)
        self._acquire_slot = client.register_script(_ACQUIRE_SLOT)
        self._renew_slot = client.register_script(_RENEW_SLOT)

    async def ping(self) -> None:
        await self._guard.run("ping", self._client.ping)

    async def get(self, key: str) -> bytes | None:
        raw = await self._guard.run("get", lambda: self._client.get(PREFIX + key))
        return cast(bytes | None, raw)

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        raw = await self._guard.run("mget", lambda: self._client.mget([PREFIX + k for k in keys]))
        return cast(list[bytes | None], raw)

    async def put(
        self, key: str, value: bytes, ttl_s: int | None = None, only_if_absent: bool = False
    ) -> bool:
        done = await self._guard.run(
            "set", lambda: self._client.set(PREFIX + key, value, ex=ttl_s, nx=only_if_absent)
        )
        return bool(done)

    async def add_member(self, key: str, member: str) -> None:
        await self._guard.run("sadd", lambda: self._client.sadd(PREFIX + key, member))

    async def members(self, key: str) -> set[str]:
        raw = await self._guard.run("smembers", lambda: self._client.smembers(PREFIX + key))
        return {m.decode() if isinstance(m, bytes) else str(m) for m in raw}

    async def _run_windows(self, windows: Sequence[Window], cost: int, commit: int) -> WindowHit:
        args: list[Any] = [cost]
        for w in windows:
            args += [w.limit, w.seconds * 1000]
        args.append(commit)
        keys = [PREFIX + w.key for w in windows]
        allowed, counts, resets = await self._guard.run(
            "ratelimit", lambda: self._windows(keys=keys, args=args)
        )
        return WindowHit(
            bool(allowed), tuple(int(c) for c in counts), tuple(int(r) for r in resets)
        )

    async def hit_windows(self, windows: Sequence[Window], cost: int = 1) -> WindowHit:
        return await self._run_windows(windows, cost, 1)

    async def peek_windows(self, windows: Sequence[Window]) -> WindowHit:
        return await self._run_windows(windows, 0, 0)

    async def _run_daily(
        self, key: str, amount: int, limit: int | None, commit: int
    ) -> DailyReservation:
        allowed, used, reset, day_key = await self._guard.run(
            "quota",
            lambda: self._daily(
                keys=[PREFIX + key], args=[amount, -1 if limit is None else limit, commit]
            ),
        )
        day = day_key.decode() if isinstance(day_key, bytes) else str(day_key)
        return DailyReservation(bool(allowed), int(used), int(reset), day.removeprefix(PREFIX))

    async def reserve_daily(self, key: str, amount: int, limit: int | None) -> DailyReservation:
        return await self._run_daily(key, amount, limit, 1)

    async def adjust(self, day_key: str, delta: int) -> None:
        if delta:
            await self._guard.run("quota", lambda: self._client.incrby(PREFIX + day_key, delta))

    async def daily_used(self, key: str) -> tuple[int, int]:
        reservation = await self._run_daily(key, 0, None, 0)
        return reservation.used, reservation.reset_s

    async def _run_window(
        self, key: str, amount: int, limit: int | None, seconds: int, commit: int
    ) -> WindowReservation:
        allowed, used, reset, window_key = await self._guard.run(
            "token_window",
            lambda: self._token_window(
                keys=[PREFIX + key],
                args=[amount, -1 if limit is None else limit, seconds, commit],
            ),
        )
        name = window_key.decode() if isinstance(window_key, bytes) else str(window_key)
        return WindowReservation(bool(allowed), int(used), int(reset), name.removeprefix(PREFIX))

    async def reserve_window(
        self, key: str, amount: int, limit: int | None, seconds: int
    ) -> WindowReservation:
        return await self._run_window(key, amount, limit, seconds, 1)

    async def adjust_window(self, window_key: str, delta: int) -> None:
        if delta:
            await self._guard.run(
                "token_window",
                lambda: self._adjust_window(keys=[PREFIX + window_key], args=[delta]),
            )

    async def window_used(self, key: str, seconds: int) -> tuple[int, int]:
        reservation = await self._run_window(key, 0, None, seconds, 0)
        return reservation.used, reservation.reset_ms

    async def acquire_slot(self, key: str, holder: str, limit: int, lease_ms: int) -> SlotClaim:
        allowed, held = await self._guard.run(
            "slot",
            lambda: self._acquire_slot(keys=[PREFIX + key], args=[holder, limit, lease_ms]),
        )
        return SlotClaim(bool(allowed), int(held))

    async def renew_slot(self, key: str, holder: str, lease_ms: int) -> bool:
        renewed = await self._guard.run(
            "slot", lambda: self._renew_slot(keys=[PREFIX + key], args=[holder, lease_ms])
        )
        return bool(renewed)

    async def release_slot(self, key: str, holder: str) -> None:
        await self._guard.run("slot", lambda: self._client.zrem(PREFIX + key, holder))

    async def add_fields(self, key: str, increments: dict[str, int]) -> None:
        async def write() -> None:
            async with self._client.pipeline(transaction=False) as pipe:
                for name, amount in increments.items():
                    pipe.hincrby(PREFIX + key, name, amount)
                await pipe.execute()

        await self._guard.run("hincrby", write)

    async def fields(self, key: str) -> dict[str, int]:
        raw = await self._guard.run("hgetall", lambda: self._client.hgetall(PREFIX + key))
        return {(k.decode() if isinstance(k, bytes) else str(k)): int(v) for k, v in raw.items()}

    async def close(self) -> None:
        await self._client.aclose()
