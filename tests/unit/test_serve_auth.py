"""`python -m frontend serve` prepares authentication before anything starts."""

from __future__ import annotations

import os
import stat
import time

import jwt
import pytest

from frontend import __main__ as cli
from frontend.auth.jwt_keys import ALGORITHM, SigningKeys
from frontend.auth.passwords import Passwords
from frontend.auth.tokens import Tokens
from frontend.auth.users import Users
from frontend.db.database import MEMORY_URL, Database
from frontend.errors import Unauthorized
from frontend.observability.metrics import Metrics
from frontend.settings import KNOWN_WEAK_SECRETS, Settings, weak_secret_reason
from frontend.state.memory import MemoryStore

OLD_PUBLIC_DEFAULT = "dev-only-secret-change-me"  # what every install signed with before


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for name in list(os.environ):
        if name.startswith("INFERGATE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_dev_key_is_made_once_private_and_reused(clean_env, monkeypatch):
    hint = cli._prepare_auth(workers=1)
    key_file = clean_env / ".infergate" / "admin.key"
    key = key_file.read_text().strip()
    assert key.startswith("ig_admin_") and len(key) > 40
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700
    assert os.environ["INFERGATE_AUTH__BOOTSTRAP_ADMIN_KEY"] == key
    assert str(key_file) in hint and key not in hint  # the hint names the file, not the key
    monkeypatch.delenv("INFERGATE_AUTH__BOOTSTRAP_ADMIN_KEY")
    cli._prepare_auth(workers=1)
    assert os.environ["INFERGATE_AUTH__BOOTSTRAP_ADMIN_KEY"] == key  # same key after restart


def test_configured_key_and_prod_make_no_file(clean_env, monkeypatch):
    monkeypatch.setenv("INFERGATE_AUTH__BOOTSTRAP_ADMIN_KEY", "x" * 40)
    monkeypatch.setenv("INFERGATE_SECRET_KEY", "a-configured-secret-of-more-than-32-chars")
    assert "your INFERGATE_AUTH__BOOTSTRAP_ADMIN_KEY" in cli._prepare_auth(workers=1)
    assert not (clean_env / ".infergate").exists()  # both configured: nothing to keep
    monkeypatch.delenv("INFERGATE_AUTH__BOOTSTRAP_ADMIN_KEY")
    monkeypatch.setenv("INFERGATE_ENVIRONMENT", "prod")
    monkeypatch.setenv("INFERGATE_SECRET_KEY", "a-real-production-secret-value-of-48-characters")
    assert "no bootstrap admin key" in cli._prepare_auth(workers=1)
    assert not (clean_env / ".infergate").exists()


def test_several_workers_need_redis_and_bad_settings_stop_the_start(clean_env, monkeypatch):
    with pytest.raises(SystemExit, match="INFERGATE_REDIS__URL"):
        cli._prepare_auth(workers=2)
    monkeypatch.setenv("INFERGATE_REDIS__URL", "redis://127.0.0.1:1/0")
    cli._prepare_auth(workers=2)  # fine with Redis configured
    monkeypatch.setenv("INFERGATE_AUTH__DEFAULT_TIER", "gold")
    with pytest.raises(SystemExit, match="invalid settings"):
        cli._prepare_auth(workers=1)


def test_dev_secret_is_random_private_and_kept(clean_env, monkeypatch):
    cli._prepare_auth(workers=1)
    secret_file = clean_env / ".infergate" / "secret.key"
    secret = secret_file.read_text().strip()
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert os.environ["INFERGATE_SECRET_KEY"] == secret
    assert len(secret) >= 48 and weak_secret_reason(secret) is None
    settings = Settings()
    assert settings.secret == secret and not settings.secret_generated
    assert settings.secret_warning() is None
    monkeypatch.delenv("INFERGATE_SECRET_KEY")
    cli._prepare_auth(workers=1)
    assert os.environ["INFERGATE_SECRET_KEY"] == secret  # the same after a restart
    # Another install (another directory) gets another secret.
    other = clean_env / "other"
    other.mkdir()
    monkeypatch.chdir(other)
    monkeypatch.delenv("INFERGATE_SECRET_KEY")
    cli._prepare_auth(workers=1)
    assert os.environ["INFERGATE_SECRET_KEY"] != secret


def test_token_signed_with_the_old_public_default_is_refused(clean_env):
    cli._prepare_auth(workers=1)
    settings = Settings()
    jwt_settings = settings.auth.jwt
    store = MemoryStore()
    database = Database(MEMORY_URL, settings.database, Metrics())  # never reached: refused first
    users = Users(database, store, Passwords(), held_s=0, outage_s=0)
    server = Tokens(jwt_settings, SigningKeys(jwt_settings, settings.secret), store, users)
    attacker = SigningKeys(jwt_settings, OLD_PUBLIC_DEFAULT)
    now = int(time.time())
    claims = {
        "iss": jwt_settings.issuer,
        "aud": jwt_settings.audience,
        "sub": "0123456789abcdef",
        "iat": now,
        "exp": now + 10 * 365 * 86_400,
        "jti": "forged",
        "typ": "access",
        "fam": "f",
        "role": "admin",
    }
    kid, key = attacker.signer()
    server_kid, _ = SigningKeys(jwt_settings, settings.secret).signer()
    for header_kid in (kid, server_kid):  # the attacker's kid, and ours copied
        forged = jwt.encode(claims, key, algorithm=ALGORITHM, headers={"kid": header_kid})
        with pytest.raises(Unauthorized):
            server.decode(forged, "access")


def test_no_constant_secret_without_configuration(clean_env, monkeypatch):
    a, b = Settings(), Settings()
    assert a.secret_generated and b.secret_generated
    assert a.secret != b.secret and OLD_PUBLIC_DEFAULT not in (a.secret, b.secret)
    assert "not set" in (a.secret_warning() or "")
    monkeypatch.setenv("INFERGATE_ENVIRONMENT", "prod")
    with pytest.raises(ValueError, match="must be set in prod"):
        Settings()


@pytest.mark.parametrize(
    "weak",
    [OLD_PUBLIC_DEFAULT, "changeme12345678", "a" * 40, "0123456789abcdef", "password12345678"],
)
def test_weak_secret_warns_in_dev_and_is_refused_in_prod(clean_env, monkeypatch, weak):
    monkeypatch.setenv("INFERGATE_SECRET_KEY", weak)
    assert "weak" in (Settings().secret_warning() or "")
    hint = cli._prepare_auth(workers=1)
    assert hint  # dev still starts, with the warning printed
    monkeypatch.setenv("INFERGATE_ENVIRONMENT", "prod")
    with pytest.raises(ValueError, match="weak"):
        Settings()


def test_known_weak_list_holds_the_old_default():
    assert OLD_PUBLIC_DEFAULT in KNOWN_WEAK_SECRETS
