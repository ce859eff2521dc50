"""Webhooks and job notifications through the real app (tests/unit/job_app.py: fake
Triton, SQLite file) delivering to a real HTTP receiver on loopback and a real SMTP
server (aiosmtpd): registration and its SSRF check, signed deliveries verified with the
published verifier, retries on the schedule, rotation, redelivery, disabling, a job's
own callback and e-mail, the address verification, and no address in the logs."""

from __future__ import annotations

import itertools
import logging
import re
import time

import orjson
import pytest

from tests.notify_support import Receiver, SmtpServer, verifier

from .job_app import JobApp, job_app
from .test_frontend_errors import ADMIN_KEY

PASSWORD = "correct horse battery"
ENDS = ["job.succeeded", "job.failed", "job.cancelled"]


@pytest.fixture
def receiver():
    started = Receiver().start()
    yield started
    started.stop()


@pytest.fixture
def smtp():
    started = SmtpServer().start()
    yield started
    started.stop()


def hook(app: JobApp, url: str, key: str = ADMIN_KEY, **body) -> dict:
    r = app.client.post("/v1/webhooks", json={"url": url, **body}, headers=app.as_key(key))
    assert r.status_code == 201, r.text
    return r.json()


def queued_job(app: JobApp, key: str = ADMIN_KEY, **body) -> dict:
    r = app.submit({"model": "intent", "inputs": ["a", "b"], **body}, key=key)
    assert r.status_code == 201, r.text
    return r.json()


def cancel(app: JobApp, job_id: str, key: str = ADMIN_KEY) -> None:
    r = app.client.delete(f"/v1/jobs/{job_id}", headers=app.as_key(key))
    assert r.status_code in (200, 202), r.text


def deliveries(app: JobApp, webhook_id: str) -> list[dict]:
    r = app.client.get(f"/v1/webhooks/{webhook_id}/deliveries")
    assert r.status_code == 200, r.text
    return r.json()["data"]


def wait_until(check, timeout_s: float = 20.0):
    deadline = time.monotonic() + timeout_s
    while not (found := check()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)
    return found


def test_a_webhook_is_created_with_its_secret_once_listed_changed_and_deleted(tmp_path, receiver):
    with job_app(tmp_path, executor="off") as app:
        created = hook(app, receiver.url(), description="ops")
        assert created["secret"].startswith("whsec_") and len(created["secret"]) > 40
        assert created["events"] == ENDS and created["enabled"] is True
        shown = app.client.get(f"/v1/webhooks/{created['id']}").json()
        assert "secret" not in shown and shown["url"] == receiver.url()
        listed = app.client.get("/v1/webhooks").json()
        assert [h["id"] for h in listed["data"]] == [created["id"]]
        assert "secret" not in listed["data"][0]

        patched = app.client.patch(
            f"/v1/webhooks/{created['id']}", json={"events": ["job.failed"], "enabled": False}
        )
        assert patched.status_code == 200 and patched.json()["events"] == ["job.failed"]
        assert patched.json()["enabled"] is False

        other = app.key("other")
        for method, path in (
            ("GET", f"/v1/webhooks/{created['id']}"),
            ("PATCH", f"/v1/webhooks/{created['id']}"),
            ("DELETE", f"/v1/webhooks/{created['id']}"),
            ("POST", f"/v1/webhooks/{created['id']}/rotate-secret"),
            ("GET", f"/v1/webhooks/{created['id']}/deliveries"),
        ):
            body = {"enabled": True} if method == "PATCH" else None
            r = app.client.request(method, path, json=body, headers=app.as_key(other))
            assert r.status_code == 404, (method, path, r.text)
        assert app.client.get("/v1/webhooks", headers=app.as_key(other)).json()["data"] == []

        assert app.client.delete(f"/v1/webhooks/{created['id']}").status_code == 204
        assert app.client.get(f"/v1/webhooks/{created['id']}").status_code == 404
        audit = app.client.get("/v1/admin/audit", params={"target": created["id"]}).json()
        actions = sorted(entry["action"] for entry in audit["data"])
        assert actions == ["webhook.create", "webhook.delete", "webhook.update"]


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://example.com/hook", "http or https"),
        ("http://user:pw@example.com/hook", "credentials"),
        ("http://10.0.0.1/hook", "private"),
        ("http://169.254.169.254/latest", "link-local"),
        ("http://2130706433/hook", "numeric"),
        ("http://0x7f.0.0.1/hook", "numeric"),
        ("http://[::ffff:127.0.0.1]/hook", "ipv4-mapped"),
        ("http://internal.example.test/hook", "private"),  # resolves to 10.1.2.3
    ],
)
def test_unsafe_urls_are_refused_at_registration_naming_why(tmp_path, url, reason):
    hosts = {"internal.example.test": "10.1.2.3"}
    with job_app(tmp_path, executor="off", notify={"hosts": hosts}) as app:
        r = app.client.post("/v1/webhooks", json={"url": url})
        assert r.status_code == 422, r.text
        error = r.json()["error"]
        assert error["param"] == "url" and reason in error["message"].lower(), error


def test_loopback_is_refused_unless_the_setting_allows_it(tmp_path, receiver):
    with job_app(tmp_path, executor="off", notify={"allow_loopback": False}) as app:
        r = app.client.post("/v1/webhooks", json={"url": receiver.url()})
        assert r.status_code == 422 and "loopback" in r.json()["error"]["message"]


def test_an_end_event_reaches_the_webhook_signed_and_the_job_shows_it(tmp_path, receiver):
    verify = verifier()
    with job_app(tmp_path, executor="off") as app:
        created = hook(app, receiver.url())
        job = queued_job(app)
        cancel(app, job["id"])
        (got,) = receiver.wait_for(1)
        assert verify(created["secret"], got.headers, got.body)
        assert not verify(created["secret"], got.headers, got.body + b" ")
        assert not verify("whsec_" + "x" * 43, got.headers, got.body)
        event = orjson.loads(got.body)
        assert event["type"] == "job.cancelled" and event["id"] == got.headers["Webhook-Id"]
        assert event["data"]["job"]["id"] == job["id"]
        assert event["data"]["job"]["state"] == "cancelled"

        def delivered():
            shown = app.job(job["id"])["notifications"]
            return shown if shown and shown[0]["state"] == "delivered" else None

        (note,) = wait_until(delivered)
        assert note == {
            "event": "job.cancelled",
            "channel": "webhook",
            "webhook_id": created["id"],
            "state": "delivered",
            "attempts": 1,
            "last_error": None,
        }
        (logged,) = deliveries(app, created["id"])
        assert logged["event_id"] == event["id"] and logged["log"][0]["status"] == 200
        metrics = app.client.get("/metrics").text
        assert 'infergate_notify_deliveries_total{channel="webhook",outcome="delivered"} 1.0' in (
            metrics
        )
        assert 'infergate_notify_attempts_total{channel="webhook",result="ok"} 1.0' in metrics
        assert 'infergate_notify_delivery_seconds_count{channel="webhook"} 1.0' in metrics


def test_500_three_times_then_200_is_four_attempts_on_the_schedule(tmp_path, receiver):
    receiver.statuses = [500, 500, 500]
    with job_app(tmp_path, executor="off") as app:
        created = hook(app, receiver.url())
        cancel(app, queued_job(app)["id"])
        got = receiver.wait_for(4)
        assert len({r.headers["Webhook-Id"] for r in got}) == 1

        def done():
            found = deliveries(app, created["id"])
            return found if found and found[0]["state"] == "delivered" else None

        (logged,) = wait_until(done)
        log = logged["log"]
        assert [a["status"] for a in log] == [500, 500, 500, 200] and logged["attempts"] == 4
        # Full jitter: each retry comes no later than its ceiling (0.1 s, 0.2 s, 0.4 s
        # here) after the attempt before it, plus a poll (0.05 s) and slack.
        for n, (before, after) in enumerate(itertools.pairwise(log), start=1):
            ceiling = min(0.4, 0.1 * 2 ** (n - 1))
            assert before["at"] <= before["next_attempt_at"] <= before["at"] + ceiling + 0.05
            assert after["at"] >= before["next_attempt_at"] - 0.01
        assert log[-1]["next_attempt_at"] is None


def test_rotation_signs_with_both_secrets_during_the_grace_period(tmp_path, receiver):
    verify = verifier()
    with job_app(tmp_path, executor="off") as app:
        created = hook(app, receiver.url())
        rotated = app.client.post(f"/v1/webhooks/{created['id']}/rotate-secret")
        assert rotated.status_code == 200, rotated.text
        new = rotated.json()["secret"]
        assert new != created["secret"] and rotated.json()["previous_secret_valid_until"]
        cancel(app, queued_job(app)["id"])
        (got,) = receiver.wait_for(1)
        assert got.headers["Webhook-Signature"].count("v1=") == 2
        assert verify(new, got.headers, got.body) and verify(
            created["secret"], got.headers, got.body
        )

        ended = app.client.post(
            f"/v1/webhooks/{created['id']}/rotate-secret", json={"grace_s": 0}
        ).json()
        cancel(app, queued_job(app)["id"])
        second = receiver.wait_for(2)[1]
        assert second.headers["Webhook-Signature"].count("v1=") == 1
        assert verify(ended["secret"], second.headers, second.body)
        assert not verify(new, second.headers, second.body)


def test_redeliver_sends_the_same_event_id_again(tmp_path, receiver):
    with job_app(tmp_path, executor="off") as app:
        created = hook(app, receiver.url())
        cancel(app, queued_job(app)["id"])
        first = receiver.wait_for(1)[0]
        (logged,) = wait_until(lambda: deliveries(app, created["id"]))
        r = app.client.post(f"/v1/webhooks/{created['id']}/deliveries/{logged['id']}/redeliver")
        assert r.status_code == 202, r.text
        again = receiver.wait_for(2)[1]
        assert again.headers["Webhook-Id"] == first.headers["Webhook-Id"]
        missing = app.client.post(f"/v1/webhooks/{created['id']}/deliveries/dlv_x/redeliver")
        assert missing.status_code == 404


def test_a_webhook_is_disabled_after_consecutive_failed_events(tmp_path, receiver):
    receiver.default = 503
    notify = {"disable_after": 2, "retry_window_s": 0.3}
    with job_app(tmp_path, executor="off", notify=notify) as app:
        created = hook(app, receiver.url())
        for _ in range(2):
            cancel(app, queued_job(app)["id"])

        def disabled():
            shown = app.client.get(f"/v1/webhooks/{created['id']}").json()
            return shown if not shown["enabled"] else None

        shown = wait_until(disabled)
        assert shown["consecutive_failures"] == 2 and "2 events" in shown["disabled_reason"]
        states = {d["state"] for d in deliveries(app, created["id"])}
        assert states == {"failed"}
        arrived = len(receiver.received)
        cancel(app, queued_job(app)["id"])  # a disabled webhook is not sent to
        time.sleep(0.5)  # ten polls of the outbox
        assert len(receiver.received) == arrived
        again = app.client.patch(f"/v1/webhooks/{created['id']}", json={"enabled": True})
        assert again.json()["consecutive_failures"] == 0 and again.json()["enabled"]


def test_a_name_that_resolves_to_a_private_address_later_is_refused_at_delivery(tmp_path):
    table = {"hooks.example.test": "93.184.216.34"}

    async def resolver(host, port):
        return [table[host]]

    with job_app(
        tmp_path, executor="off", resolver=resolver, notify={"retry_window_s": 0.2}
    ) as app:
        created = hook(app, "http://hooks.example.test/hook")
        table["hooks.example.test"] = "10.0.0.5"  # DNS rebinding after the check
        cancel(app, queued_job(app)["id"])

        def ended():
            found = deliveries(app, created["id"])
            return found if found and found[0]["state"] == "failed" else None

        (logged,) = wait_until(ended)
        assert all(a["status"] is None for a in logged["log"])
        # The category, not the address: refusals do not map internal DNS for the caller.
        assert "resolves to a private address" in logged["last_error"]
        assert "10.0.0.5" not in logged["last_error"]


def test_a_jobs_own_callback_is_signed_with_its_secret_shown_at_submission(tmp_path, receiver):
    verify = verifier()
    with job_app(tmp_path, executor="off") as app:
        job = queued_job(app, notify={"callback_url": receiver.url("/cb")})
        secret = job["notify"]["callback_secret"]
        assert secret.startswith("whsec_") and job["notify"]["callback_url"] == receiver.url("/cb")
        assert app.job(job["id"])["notify"]["callback_secret"] is None  # shown once
        cancel(app, job["id"])
        (got,) = receiver.wait_for(1)
        assert got.path == "/cb" and verify(secret, got.headers, got.body)
        refused = app.submit(
            {"model": "intent", "inputs": ["a"], "notify": {"callback_url": "http://10.0.0.1/"}}
        )
        assert refused.status_code == 422
        assert refused.json()["error"]["param"] == "notify.callback_url"


def test_an_idempotent_replay_shows_the_same_callback_secret(tmp_path, receiver):
    with job_app(tmp_path, executor="off") as app:
        body = {"model": "intent", "inputs": ["a"], "notify": {"callback_url": receiver.url()}}
        first = app.submit(body, **{"Idempotency-Key": "k1"})
        again = app.submit(body, **{"Idempotency-Key": "k1"})
        assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
        assert again.json()["notify"] == first.json()["notify"]


def test_job_progress_goes_to_webhooks_that_subscribe(tmp_path, receiver):
    with job_app(tmp_path) as app:
        hook(app, receiver.url(), events=["job.progress", "job.succeeded"])
        job = app.submit({"model": "intent", "inputs": [f"t{n}" for n in range(12)]}).json()
        assert app.wait(job["id"])["state"] == "succeeded"
        got = receiver.wait_for(2)
        types = [orjson.loads(r.body)["type"] for r in got]
        # One progress event at most per progress_interval_s (60 s): the first chunk's.
        assert sorted(types) == ["job.progress", "job.succeeded"]


def user_app_key(app: JobApp, name: str) -> str:
    r = app.client.post("/v1/admin/users", json={"username": name, "password": PASSWORD})
    assert r.status_code == 201, r.text
    token = app.client.post(
        "/v1/auth/token", json={"username": name, "password": PASSWORD}, headers={}
    ).json()["access_token"]
    made = app.client.post(
        "/v1/keys",
        json={"name": "mine"},
        headers={"X-API-Key": "", "Authorization": f"Bearer {token}"},
    )
    assert made.status_code == 201, made.text
    return str(made.json()["key"])


def verify_address(app: JobApp, smtp: SmtpServer, key: str, address: str) -> None:
    r = app.client.put("/v1/me/email", json={"email": address}, headers=app.as_key(key))
    assert r.status_code == 202, r.text
    assert r.json()["pending"] == address and r.json()["email"] is None
    to, message = smtp.wait_for(1)[-1]
    assert to == [address]
    code = re.search(r"\b(\d{6})\b", message.get_body(("plain",)).get_content()).group(1)
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    bad = app.client.post("/v1/me/email/verify", json={"code": wrong}, headers=app.as_key(key))
    assert bad.status_code == 422 and bad.json()["error"]["param"] == "code"
    ok = app.client.post("/v1/me/email/verify", json={"code": code}, headers=app.as_key(key))
    assert ok.status_code == 200 and ok.json()["email"] == address, ok.text


def test_a_job_mails_its_end_to_the_verified_address_and_no_address_is_logged(
    tmp_path, smtp, caplog
):
    caplog.set_level(logging.DEBUG)
    with job_app(tmp_path, notify={"mail": smtp.mail_settings()}) as app:
        key = user_app_key(app, "mia")
        early = app.submit({"model": "intent", "inputs": ["a"], "notify": {"email": True}}, key=key)
        assert early.status_code == 422 and "verified" in early.json()["error"]["message"]
        verify_address(app, smtp, key, "mia@example.com")
        job = queued_job(app, key=key, notify={"email": True})
        assert app.wait(job["id"], key=key)["state"] == "succeeded"
        to, message = smtp.wait_for(2)[-1]
        assert to == ["mia@example.com"] and message["To"] == "mia@example.com"
        assert message["Subject"] == f"infergate: job {job['id']} succeeded (intent)"
        kinds = [part.get_content_type() for part in message.iter_parts()]
        assert kinds == ["text/plain", "text/html"]
        assert "2 done" in message.get_body(("plain",)).get_content().replace(" rows", "")
        wait_until(lambda: app.job(job["id"], key=key)["notifications"][0]["state"] == "delivered")
    assert "mia@example.com" not in caplog.text


def test_an_smtp_outage_is_retried_then_recorded_as_failed(tmp_path, smtp):
    notify = {"mail": smtp.mail_settings(), "retry_window_s": 0.5}
    with job_app(tmp_path, executor="off", notify=notify) as app:
        key = user_app_key(app, "noa")
        verify_address(app, smtp, key, "noa@example.com")
        smtp.down = True
        job = queued_job(app, key=key, notify={"email": True})
        cancel(app, job["id"], key=key)

        def failed():
            notes = app.job(job["id"], key=key)["notifications"]
            return notes if notes and notes[0]["state"] == "failed" else None

        (note,) = wait_until(failed)
        assert note["channel"] == "email" and note["attempts"] >= 2
        assert "451" in note["last_error"] and "noa@" not in note["last_error"]
        assert len(smtp.messages) == 1  # only the verification code got through


def test_an_api_key_account_has_no_address_to_set(tmp_path, smtp):
    with job_app(tmp_path, executor="off", notify={"mail": smtp.mail_settings()}) as app:
        key = app.key("standalone")
        r = app.client.put("/v1/me/email", json={"email": "x@example.com"}, headers=app.as_key(key))
        assert r.status_code == 422 and "user account" in r.json()["error"]["message"]


def test_the_accounts_default_mails_jobs_that_do_not_say(tmp_path, smtp):
    with job_app(tmp_path, executor="off", notify={"mail": smtp.mail_settings()}) as app:
        key = user_app_key(app, "ona")
        early = app.client.patch(
            "/v1/me/email", json={"notify_jobs": True}, headers=app.as_key(key)
        )
        assert early.status_code == 422 and early.json()["error"]["param"] == "notify_jobs"
        verify_address(app, smtp, key, "ona@example.com")
        on = app.client.patch("/v1/me/email", json={"notify_jobs": True}, headers=app.as_key(key))
        assert on.status_code == 200 and on.json()["notify_jobs"] is True
        job = queued_job(app, key=key)  # no `notify`: the default applies
        assert job["notify"]["email"] is True and job["notify"]["callback_url"] is None
        quiet = queued_job(app, key=key, notify={"email": False})  # its own choice wins
        assert quiet["notify"] is None
        cancel(app, job["id"], key=key)
        cancel(app, quiet["id"], key=key)
        to, message = smtp.wait_for(2)[-1]
        assert to == ["ona@example.com"] and job["id"] in message["Subject"]
        time.sleep(0.5)  # ten polls of the outbox: the quiet job's end sends nothing
        assert len(smtp.messages) == 2


def test_the_owner_is_mailed_when_their_webhook_is_disabled(tmp_path, receiver, smtp):
    receiver.default = 500
    notify = {"mail": smtp.mail_settings(), "disable_after": 1, "retry_window_s": 0.3}
    with job_app(tmp_path, executor="off", notify=notify) as app:
        key = user_app_key(app, "pia")
        verify_address(app, smtp, key, "pia@example.com")
        created = hook(app, receiver.url(), key=key)
        cancel(app, queued_job(app, key=key)["id"], key=key)
        to, message = smtp.wait_for(2)[-1]
        assert to == ["pia@example.com"]
        assert message["Subject"] == f"infergate: webhook {created['id']} was disabled"
        assert receiver.url() in message.get_body(("plain",)).get_content()
        shown = app.client.get(f"/v1/webhooks/{created['id']}", headers=app.as_key(key)).json()
        assert shown["enabled"] is False


def test_codes_are_mailed_at_most_once_a_minute_to_plain_addresses_only(tmp_path, smtp):
    with job_app(tmp_path, executor="off", notify={"mail": smtp.mail_settings()}) as app:
        key = user_app_key(app, "quin")
        for bad in ("=?utf-8?b?QQ==?=@x.com", "a\u0000b@x.com", "a b@x.com", "a@localhost"):
            r = app.client.put("/v1/me/email", json={"email": bad}, headers=app.as_key(key))
            assert r.status_code == 422, (bad, r.text)
        first = app.client.put("/v1/me/email", json={"email": "q@x.com"}, headers=app.as_key(key))
        assert first.status_code == 202
        again = app.client.put("/v1/me/email", json={"email": "q@y.com"}, headers=app.as_key(key))
        assert again.status_code == 429 and 1 <= int(again.headers["Retry-After"]) <= 60
        assert len(smtp.wait_for(1)) == 1


def test_a_multipart_job_with_an_unsafe_callback_is_refused_before_its_file(tmp_path):
    with job_app(tmp_path, executor="off") as app:
        r = app.client.post(
            "/v1/jobs",
            data={"model": "intent", "notify": '{"callback_url": "http://10.0.0.1/x"}'},
            files={"file": ("rows.jsonl", b'{"text": "a"}\n' * 1000, "application/x-ndjson")},
        )
        assert r.status_code == 422 and r.json()["error"]["param"] == "notify.callback_url"
        stored = [p for p in (tmp_path / "store").rglob("*") if p.is_file()]
        assert stored == []
