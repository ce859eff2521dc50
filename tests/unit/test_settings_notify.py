"""Notification settings: the defaults docs/webhooks.md and docs/operations.md state, the
INFERGATE_NOTIFY__… names, and the combinations refused at start."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from frontend.notify_settings import NotifySettings
from frontend.settings import Settings

DOCUMENTED = {
    "dispatcher": "on",
    "poll_s": 0.5,
    "lease_s": 60.0,
    "connect_timeout_s": 3.0,
    "timeout_s": 10.0,
    "max_response_bytes": 4096,
    "retry_base_s": 30.0,
    "retry_max_s": 3600.0,
    "retry_window_s": 86400.0,
    "disable_after": 20,
    "progress_interval_s": 60.0,
    "rotation_grace_s": 86400.0,
    "max_webhooks": 16,
    "allow_loopback": False,
    "require_https": None,
    "backlog_degraded": 10_000,
    "oldest_degraded_s": 600.0,
    "retention_s": 14 * 86400.0,
}


def test_the_defaults_are_the_documented_ones():
    settings = NotifySettings()
    assert {name: getattr(settings, name) for name in DOCUMENTED} == DOCUMENTED
    assert settings.mail.enabled is False and settings.mail.security == "starttls"
    assert settings.mail.port == 587


def test_the_environment_names(monkeypatch):
    monkeypatch.setenv("INFERGATE_NOTIFY__DISPATCHER", "off")
    monkeypatch.setenv("INFERGATE_NOTIFY__RETRY_BASE_S", "5")
    monkeypatch.setenv("INFERGATE_NOTIFY__MAIL__HOST", "smtp.example.com")
    monkeypatch.setenv("INFERGATE_NOTIFY__MAIL__SECURITY", "tls")
    monkeypatch.setenv("INFERGATE_NOTIFY__HOSTS", '{"hooks.internal": "203.0.113.7"}')
    notify = Settings().notify
    assert notify.dispatcher == "off" and notify.retry_base_s == 5.0
    assert notify.mail.host == "smtp.example.com" and notify.mail.security == "tls"
    assert notify.hosts == {"hooks.internal": "203.0.113.7"}


@pytest.mark.parametrize(
    "values",
    [
        {"lease_s": 10.0, "timeout_s": 10.0},  # a lease must outlast one attempt
        {"lease_s": 20.0, "mail": {"host": "smtp.example.com", "timeout_s": 30.0}},
        {"retry_base_s": 60.0, "retry_max_s": 30.0},
        {"connect_timeout_s": 20.0, "timeout_s": 10.0},
        {"dispatcher": "maybe"},
        {"disable_after": 0},
    ],
)
def test_nonsense_is_refused(values):
    with pytest.raises(ValidationError):
        NotifySettings.model_validate(values)
