"""Webhook signatures: frontend/notify/signing.py against the verifier docs/webhooks.md
publishes, run exactly as written there, so the page and the signer cannot drift apart."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from frontend.notify import signing

DOC = Path(__file__).resolve().parents[2] / "docs" / "webhooks.md"
MARKER = "<!-- verifier: tests/unit/test_notify_signing.py runs this block as written -->"
NOW = 1_700_000_000
BODY = json.dumps({"type": "job.succeeded", "data": {"id": "job_abc"}}).encode()

Verify = Callable[..., bool]


def published_verifier() -> Verify:
    text = DOC.read_text(encoding="utf-8")
    assert MARKER in text, "the verifier marker is missing from docs/webhooks.md"
    after = text[text.index(MARKER) + len(MARKER) :]
    match = re.search(r"^```python\n(.*?)^```", after, flags=re.S | re.M)
    assert match, "no ```python block after the verifier marker"
    namespace: dict[str, Any] = {}
    exec(compile(match.group(1), str(DOC), "exec"), namespace)
    return namespace["verify"]


@pytest.fixture(scope="module")
def verify() -> Verify:
    return published_verifier()


def headers(secrets: list[str], timestamp: int = NOW, body: bytes = BODY) -> dict[str, str]:
    return signing.delivery_headers("evt_1", timestamp, body, secrets)


def test_the_block_sits_right_after_the_marker_and_is_short() -> None:
    text = DOC.read_text(encoding="utf-8")
    after = text[text.index(MARKER) + len(MARKER) :]
    assert after.lstrip("\n").startswith("```python\n")
    block = re.search(r"^```python\n(.*?)^```", after, flags=re.S | re.M)
    assert block is not None
    assert len(block.group(1).splitlines()) <= 40
    # Standard library only: what a receiver can paste without installing anything.
    imports = re.findall(r"^(?:from|import) (\w+)", block.group(1), flags=re.M)
    assert set(imports) <= {"hashlib", "hmac", "time", "collections", "typing"}


def test_signature_known_answer() -> None:
    secret = "whsec_" + "k" * 43
    expected = hmac.new(secret.encode(), b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert signing.signature(secret, NOW, BODY) == expected
    # The key is the whole string, prefix included: without it the HMAC differs.
    bare = hmac.new(b"k" * 43, b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert expected != bare


def test_new_secret() -> None:
    a, b = signing.new_secret(), signing.new_secret()
    assert a.startswith(signing.SECRET_PREFIX) and a != b
    assert len(a) == len("whsec_") + 43
    assert re.fullmatch(r"whsec_[A-Za-z0-9_-]{43}", a)


def test_headers_and_header_format() -> None:
    h = headers(["whsec_new", "whsec_old"])
    assert h["Webhook-Id"] == "evt_1"
    assert h["Webhook-Timestamp"] == "1700000000"
    assert h["Content-Type"] == "application/json"
    new = signing.signature("whsec_new", NOW, BODY)
    old = signing.signature("whsec_old", NOW, BODY)
    assert h["Webhook-Signature"] == f"t=1700000000,v1={new},v1={old}"
    assert set(h) == {"Webhook-Id", "Webhook-Timestamp", "Webhook-Signature", "Content-Type"}


@pytest.mark.parametrize(
    "call",
    [
        lambda: signing.signature_header([], NOW, BODY),
        lambda: signing.signature("", NOW, BODY),
        lambda: signing.signature("whsec_x", 1.5, BODY),  # type: ignore[arg-type]
        lambda: signing.signature("whsec_x", True, BODY),
        lambda: signing.signature("whsec_x", -1, BODY),
        lambda: signing.delivery_headers("evt\r\nX-Evil: 1", NOW, BODY, ["whsec_x"]),
        lambda: signing.delivery_headers("", NOW, BODY, ["whsec_x"]),
    ],
    ids=["no-secrets", "empty-secret", "float-t", "bool-t", "negative-t", "crlf-id", "empty-id"],
)
def test_signer_refuses_what_no_receiver_could_verify(call: Callable[[], object]) -> None:
    with pytest.raises(ValueError):
        call()


def test_one_string_is_not_a_list_of_secrets() -> None:
    with pytest.raises(TypeError):
        signing.signature_header("whsec_x", NOW, BODY)


def test_a_valid_delivery_verifies(verify: Verify) -> None:
    secret = signing.new_secret()
    assert verify(secret, headers([secret]), BODY, now=NOW) is True


def test_tampered_body_fails(verify: Verify) -> None:
    secret = signing.new_secret()
    assert verify(secret, headers([secret]), BODY + b" ", now=NOW) is False
    assert verify(secret, headers([secret]), BODY.replace(b"job_abc", b"job_abd"), now=NOW) is False


def test_re_serialised_json_fails(verify: Verify) -> None:
    secret = signing.new_secret()
    reserialised = json.dumps(json.loads(BODY), separators=(",", ":")).encode()
    assert reserialised != BODY
    assert verify(secret, headers([secret]), reserialised, now=NOW) is False


def test_wrong_secret_fails(verify: Verify) -> None:
    assert verify(signing.new_secret(), headers([signing.new_secret()]), BODY, now=NOW) is False


def test_secret_without_its_prefix_fails(verify: Verify) -> None:
    secret = signing.new_secret()
    bare = secret.removeprefix("whsec_")
    assert verify(bare, headers([secret]), BODY, now=NOW) is False


@pytest.mark.parametrize(
    ("age", "ok"),
    [(0, True), (300, True), (301, False), (-300, True), (-301, False), (10_000, False)],
)
def test_tolerance_is_300_seconds_both_ways(verify: Verify, age: int, ok: bool) -> None:
    secret = signing.new_secret()
    h = headers([secret], timestamp=NOW - age)
    assert verify(secret, h, BODY, now=NOW) is ok


def test_tolerance_is_a_parameter(verify: Verify) -> None:
    secret = signing.new_secret()
    h = headers([secret], timestamp=NOW - 600)
    assert verify(secret, h, BODY, now=NOW) is False
    assert verify(secret, h, BODY, now=NOW, tolerance_s=600) is True


def test_now_defaults_to_the_clock(verify: Verify) -> None:
    secret = signing.new_secret()
    assert verify(secret, headers([secret]), BODY) is False  # 2023 is long past
    import time

    fresh = headers([secret], timestamp=int(time.time()))
    assert verify(secret, fresh, BODY) is True


def test_signature_t_must_equal_the_timestamp_header(verify: Verify) -> None:
    secret = signing.new_secret()
    h = headers([secret])
    # Signed for NOW + 1 and announced in the signature, but Webhook-Timestamp says NOW.
    h["Webhook-Signature"] = signing.signature_header([secret], NOW + 1, BODY)
    assert verify(secret, h, BODY, now=NOW) is False
    # And the other way: a replayed old signature under a fresh Webhook-Timestamp.
    old = headers([secret], timestamp=NOW - 3600)
    old["Webhook-Timestamp"] = str(NOW)
    assert verify(secret, old, BODY, now=NOW) is False
    # A v1 valid for Webhook-Timestamp, under a different t=: the check itself, not the HMAC.
    h = headers([secret])
    h["Webhook-Signature"] = f"t={NOW + 1},v1={signing.signature(secret, NOW, BODY)}"
    assert verify(secret, h, BODY, now=NOW) is False


def test_rotation_both_secrets_verify_a_third_does_not(verify: Verify) -> None:
    new, old, other = signing.new_secret(), signing.new_secret(), signing.new_secret()
    h = headers([new, old])
    assert h["Webhook-Signature"].count("v1=") == 2
    assert verify(new, h, BODY, now=NOW) is True
    assert verify(old, h, BODY, now=NOW) is True
    assert verify(other, h, BODY, now=NOW) is False


def test_unknown_schemes_are_ignored(verify: Verify) -> None:
    secret = signing.new_secret()
    h = headers([secret])
    h["Webhook-Signature"] = h["Webhook-Signature"].replace("t=", "v0=zzz, t=", 1) + ",v2=abc"
    assert verify(secret, h, BODY, now=NOW) is True


def test_header_lookup_is_case_insensitive(verify: Verify) -> None:
    secret = signing.new_secret()
    for transform in (str.lower, str.upper, lambda name: name):
        h = {transform(k): v for k, v in headers([secret]).items()}
        assert verify(secret, h, BODY, now=NOW) is True


class _Headers:
    """A read-only mapping that is no dict, as frameworks' header objects are."""

    def __init__(self, items: dict[str, str]) -> None:
        self._items = items

    def items(self) -> list[tuple[str, str]]:
        return list(self._items.items())

    def __getitem__(self, key: str) -> str:
        return self._items[key]

    def __iter__(self) -> Any:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


def test_any_mapping_of_headers(verify: Verify) -> None:
    secret = signing.new_secret()
    h = {k.lower(): v for k, v in headers([secret]).items()}
    assert verify(secret, _Headers(h), BODY, now=NOW) is True


S = "whsec_fixed-secret-for-malformed-cases"
GOOD_T = str(NOW)
GOOD_SIG = f"t={NOW},v1={signing.signature(S, NOW, BODY)}"


@pytest.mark.parametrize(
    "h",
    [
        {},
        {"Webhook-Timestamp": GOOD_T},
        {"Webhook-Signature": GOOD_SIG},
        {"Webhook-Timestamp": "", "Webhook-Signature": ""},
        {"Webhook-Timestamp": GOOD_T, "Webhook-Signature": ""},
        {"Webhook-Timestamp": GOOD_T, "Webhook-Signature": "garbage"},
        {"Webhook-Timestamp": GOOD_T, "Webhook-Signature": ",,,===,"},
        {"Webhook-Timestamp": GOOD_T, "Webhook-Signature": f"t={NOW}"},
        {"Webhook-Timestamp": GOOD_T, "Webhook-Signature": f"t={NOW},v1="},
        {"Webhook-Timestamp": GOOD_T, "Webhook-Signature": f"v1={signing.signature(S, NOW, BODY)}"},
        {"Webhook-Timestamp": "soon", "Webhook-Signature": GOOD_SIG.replace(GOOD_T, "soon")},
        {"Webhook-Timestamp": "1.7e9", "Webhook-Signature": GOOD_SIG.replace(GOOD_T, "1.7e9")},
        {"Webhook-Timestamp": "-5", "Webhook-Signature": GOOD_SIG.replace(GOOD_T, "-5")},
        # Digits int() would take but the signer never writes.
        {"Webhook-Timestamp": "١٧٠٠٠٠٠٠٠٠", "Webhook-Signature": "t=١٧٠٠٠٠٠٠٠٠,v1=00"},
        {"Webhook-Timestamp": GOOD_T, "Webhook-Signature": GOOD_SIG + f",t={NOW}"},
        {"Webhook-Timestamp": GOOD_T, "Webhook-Signature": f"t={NOW},v1=é"},
        {"Webhook-Timestamp": GOOD_T, "Webhook-Signature": f"t={NOW},v1=" + "0" * 10_000},
    ],
    ids=lambda h: repr(h)[:40],
)
def test_malformed_headers_are_false_never_an_exception(verify: Verify, h: dict[str, str]) -> None:
    assert verify(S, h, BODY, now=NOW) is False


def test_the_malformed_cases_control_is_valid(verify: Verify) -> None:
    # Proves the malformed cases above fail for their defect, not for a wrong secret.
    assert verify(S, {"Webhook-Timestamp": GOOD_T, "Webhook-Signature": GOOD_SIG}, BODY, now=NOW)


@pytest.mark.parametrize("body", ["a str body", None, 12])
def test_a_body_that_is_not_bytes_is_false(verify: Verify, body: object) -> None:
    h = {"Webhook-Timestamp": GOOD_T, "Webhook-Signature": GOOD_SIG}
    assert verify(S, h, body, now=NOW) is False


def test_headers_that_are_not_a_mapping_are_false(verify: Verify) -> None:
    assert verify(S, None, BODY, now=NOW) is False
    assert verify(S, "Webhook-Timestamp: 1", BODY, now=NOW) is False
