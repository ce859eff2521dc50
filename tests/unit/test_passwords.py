"""Password rules for new passwords (frontend/auth/password_policy.py), through the admin
route too, and the argon2 pool's admission (frontend/auth/passwords.py): priority lane,
bounded waiting, and a slot kept until its hash has finished."""

from __future__ import annotations

import asyncio
import threading
import time
import tomllib
from pathlib import Path

import pytest

from frontend.auth.password_policy import common_passwords, weakness
from frontend.auth.passwords import Passwords
from frontend.errors import Overloaded

from .test_frontend_errors import FakeTriton, _client

ROOT = Path(__file__).resolve().parents[2]

WEAK = {
    "12 spaces": " " * 12,
    "12 NULs": "\x00" * 12,
    "ideographic spaces (NFKC: spaces)": "\u3000" * 12,
    "a line break inside": "correct horse\nbattery",
    "a tab inside": "correct\thorse battery",
    "password1234": "password1234",
    "padded and capitalised": "!!Password1234!",
    "fullwidth (NFKC: password1234)": "ｐａｓｓｗｏｒｄ１２３４",
    "common with spaces": "pass word 1234",
    "a long common one": "qwertyuiop123",
    "digits run": "123456789012",
    "alphabet run, reversed": "zyxwvutsrqpo",
    "keyboard row": "asdfghjklasd",
    "too few distinct": "abababababab",
    "16 code points, 10 after NFKC": "e\u0301" * 6 + "wxyz",
    "the username": "Quentin-Blake",
}
STRONG = [
    "correct horse battery",
    "a long passphrase",
    "x7#kQ9!mZ2&v",
    "tr0ub4dor&3 horse",
    "ünïcödé pässwörd ok",
    "\u00e9" * 6 + "wxyzabc",  # precomposed: 13 code points
]


@pytest.mark.parametrize("password", WEAK.values(), ids=WEAK.keys())
def test_weak_passwords_are_refused(password):
    assert weakness(password, "quentin-blake") is not None


@pytest.mark.parametrize("password", STRONG)
def test_reasonable_passwords_pass(password):
    assert weakness(password, "quentin-blake") is None


def test_the_bundled_list_is_loaded_and_packaged():
    common = common_passwords()
    assert len(common) > 5000 and {"password1234", "iloveyou", "dragon"} <= common
    assert not any(entry.startswith("#") for entry in common)  # the header is not a password
    text = (ROOT / "frontend/auth/common_passwords.txt").read_text("utf-8")
    assert "BSD" in text.split("\n\n", 1)[0] or "Redistribution" in text  # licence kept
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]
    assert "auth/common_passwords.txt" in package_data["frontend"]


def test_admin_route_refuses_weak_passwords_and_keeps_the_name_free(tmp_path):
    client = _client(tmp_path, FakeTriton())
    try:
        for password in (" " * 12, "\x00" * 12, "password1234", "ＰＡＳＳＷＯＲＤ１２３４"):
            r = client.post("/v1/admin/users", json={"username": "nina", "password": password})
            assert r.status_code == 422, (password, r.status_code)
            error = r.json()["error"]
            assert error["code"] == "validation_error" and password not in r.text
            assert error["message"].startswith("password refused: ")
        # None of the refusals claimed the name.
        r = client.post(
            "/v1/admin/users", json={"username": "nina", "password": "correct horse battery"}
        )
        assert r.status_code == 201, r.text
    finally:
        client.__exit__(None, None, None)


# --- the argon2 pool ----------------------------------------------------------------------


class GatedHasher:
    """Stands in for argon2's PasswordHasher: records each password verified, in order,
    and holds every call until the gate opens."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.seen: list[str] = []
        self._lock = threading.Lock()

    def hash(self, password: str) -> str:
        return "h"

    def verify(self, stored: str, password: str) -> bool:
        with self._lock:
            self.seen.append(password)
        assert self.gate.wait(30), "gate never opened"
        return True


def _gated(concurrency: int, max_waiting: int) -> tuple[Passwords, GatedHasher]:
    passwords = Passwords(concurrency, max_waiting)
    hasher = GatedHasher()
    passwords._hasher = hasher  # type: ignore[assignment]
    return passwords, hasher


async def _until(condition, what: str) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


def test_priority_lane_first_and_a_full_lane_refuses_before_hashing():
    async def run() -> None:
        passwords, hasher = _gated(concurrency=1, max_waiting=2)
        first = asyncio.create_task(passwords.verify("h", "a0"))
        await _until(lambda: hasher.seen == ["a0"], "the first hash to start")
        queued = [asyncio.create_task(passwords.verify("h", f"a{i}")) for i in (1, 2)]
        await _until(lambda: passwords.slots.waiting(1) == 2, "two waiting")
        with pytest.raises(Overloaded) as refused:
            await passwords.verify("h", "a3")  # the normal lane is full: refused now
        assert refused.value.status == 503 and refused.value.retry_after == 1
        assert "a3" not in hasher.seen and "2" not in refused.value.message
        known = asyncio.create_task(passwords.verify("h", "owner", priority=True))
        await _until(lambda: passwords.slots.waiting(0) == 1, "the owner waiting")
        hasher.gate.set()
        assert all(await asyncio.gather(first, *queued, known))
        # The owner, who came last, was served before the two who waited before him.
        assert hasher.seen == ["a0", "owner", "a1", "a2"]

    asyncio.run(run())


def test_a_cancelled_login_keeps_its_slot_until_its_hash_is_done():
    """A client that disconnects cancels its request; its hash runs on in a thread. The
    slot must stay taken meanwhile, or disconnecting clients run unbounded hashes."""

    async def run() -> None:
        passwords, hasher = _gated(concurrency=1, max_waiting=4)
        gone = asyncio.create_task(passwords.verify("h", "gone"))
        await _until(lambda: hasher.seen == ["gone"], "the hash to start")
        gone.cancel()
        await asyncio.wait([gone])
        assert gone.cancelled()
        nxt = asyncio.create_task(passwords.verify("h", "next"))
        await _until(lambda: passwords.slots.waiting(1) == 1, "the next to wait")
        assert hasher.seen == ["gone"]  # not started: the slot is still taken
        hasher.gate.set()
        assert await nxt
        assert hasher.seen == ["gone", "next"]

    asyncio.run(run())


def test_a_waiter_cancelled_in_the_queue_leaves_it():
    async def run() -> None:
        passwords, hasher = _gated(concurrency=1, max_waiting=1)
        first = asyncio.create_task(passwords.verify("h", "first"))
        await _until(lambda: hasher.seen == ["first"], "the hash to start")
        waiter = asyncio.create_task(passwords.verify("h", "waiter"))
        await _until(lambda: passwords.slots.waiting(1) == 1, "one waiting")
        waiter.cancel()
        await asyncio.wait([waiter])
        assert passwords.slots.waiting(1) == 0
        again = asyncio.create_task(passwords.verify("h", "again"))  # room again
        await _until(lambda: passwords.slots.waiting(1) == 1, "the new one waiting")
        hasher.gate.set()
        assert await first and await again
        assert hasher.seen == ["first", "again"]

    asyncio.run(run())
