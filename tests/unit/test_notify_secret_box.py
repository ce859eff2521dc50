"""Webhook secrets sealed at rest (frontend/notify/secret_box.py): they open only with the
same key and the same context (the webhook's id), and any damage is a SealedValueError."""

from __future__ import annotations

import base64
import os

import pytest

from frontend.auth.secrets import derive
from frontend.notify.secret_box import SealedValueError, SecretBox
from frontend.notify.signing import new_secret

KEY = derive("test-server-secret", "webhook-secrets")


def test_round_trip() -> None:
    box = SecretBox(KEY)
    secret = new_secret()
    sealed = box.seal(secret, context="wh_1")
    assert sealed.startswith("v1.")
    assert secret not in sealed
    assert box.open(sealed, context="wh_1") == secret
    # Another box with the same key (another process, after a restart) opens it too.
    assert SecretBox(bytes(bytearray(KEY))).open(sealed, context="wh_1") == secret


def test_unicode_and_empty_round_trip() -> None:
    box = SecretBox(KEY)
    for text in ("", "ключ-🔑", "x" * 10_000):
        assert box.open(box.seal(text, context="c"), context="c") == text


def test_layout_nonce_ciphertext_tag() -> None:
    sealed = SecretBox(KEY).seal("abc", context="wh_1")
    raw = base64.urlsafe_b64decode(sealed.removeprefix("v1."))
    assert len(raw) == 12 + 3 + 16


def test_a_fresh_nonce_each_time() -> None:
    box = SecretBox(KEY)
    seals = {box.seal("same secret", context="wh_1") for _ in range(20)}
    assert len(seals) == 20
    nonces = {base64.urlsafe_b64decode(s[3:])[:12] for s in seals}
    assert len(nonces) == 20


def test_wrong_key() -> None:
    sealed = SecretBox(KEY).seal("s", context="wh_1")
    other = SecretBox(derive("test-server-secret", "something-else"))
    with pytest.raises(SealedValueError):
        other.open(sealed, context="wh_1")


def test_wrong_context_a_value_copied_to_another_row() -> None:
    box = SecretBox(KEY)
    sealed = box.seal("s", context="wh_1")
    with pytest.raises(SealedValueError):
        box.open(sealed, context="wh_2")
    with pytest.raises(SealedValueError):
        box.open(sealed, context="")


def test_every_flipped_byte_is_detected() -> None:
    box = SecretBox(KEY)
    sealed = box.seal("a webhook secret", context="wh_1")
    raw = bytearray(base64.urlsafe_b64decode(sealed[3:]))
    for i in range(len(raw)):
        damaged = bytearray(raw)
        damaged[i] ^= 0x01
        tampered = "v1." + base64.urlsafe_b64encode(bytes(damaged)).decode()
        with pytest.raises(SealedValueError):
            box.open(tampered, context="wh_1")


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "v1.",
        "v1",
        "v2." + base64.urlsafe_b64encode(os.urandom(40)).decode(),
        "v1.!!!!",
        "v1.abc",  # bad padding
        "v1." + base64.urlsafe_b64encode(os.urandom(27)).decode(),  # shorter than nonce + tag
        "v1." + base64.urlsafe_b64encode(os.urandom(60)).decode(),
        "v1." + base64.urlsafe_b64encode(os.urandom(60)).decode() + "\n",
        "v1.ÿÿÿÿ",
        "whsec_not-sealed",
    ],
)
def test_garbage_is_a_sealed_value_error(garbage: str) -> None:
    with pytest.raises(SealedValueError) as info:
        SecretBox(KEY).open(garbage, context="wh_1")
    assert isinstance(info.value, ValueError)
    if len(garbage) > 8:
        assert garbage not in str(info.value)


def test_not_a_string_is_a_sealed_value_error() -> None:
    with pytest.raises(SealedValueError):
        SecretBox(KEY).open(None, context="wh_1")  # type: ignore[arg-type]


@pytest.mark.parametrize("key", [b"k" * 31, b"k" * 33, b"", b"k" * 16, "k" * 32])
def test_the_key_must_be_32_bytes(key: bytes) -> None:
    with pytest.raises(ValueError):
        SecretBox(key)
