"""`python -m frontend serve` prepares authentication before anything starts."""

from __future__ import annotations

import os
import stat

import pytest

from frontend import __main__ as cli


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
    assert "your INFERGATE_AUTH__BOOTSTRAP_ADMIN_KEY" in cli._prepare_auth(workers=1)
    monkeypatch.delenv("INFERGATE_AUTH__BOOTSTRAP_ADMIN_KEY")
    monkeypatch.setenv("INFERGATE_ENVIRONMENT", "prod")
    monkeypatch.setenv("INFERGATE_SECRET_KEY", "a-real-production-secret-value")
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
