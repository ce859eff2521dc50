"""What the webhook and e-mail routes call: webhooks (create with a secret shown once,
list, change, delete, rotate with a grace period, the delivery log, redeliver), a job's
notification choices checked at submission, and the account's e-mail address proven by
a mailed code.

Every URL is checked against the SSRF policy here (syntax, then DNS: every address the
name has must be public) and again by the client at each delivery."""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import time
from collections.abc import Callable
from typing import Any

from ..auth.principal import Principal
from ..db import audit
from ..db import notifications as outbox
from ..db import webhooks as rows
from ..db.database import Database
from ..db.tables import UserRow, WebhookRecord
from ..errors import Conflict, InputInvalid, MailUnavailable, NotFound, RateLimited
from ..notify_settings import NotifySettings
from .mailer import Mailer, MailError, mask_address
from .messages import verification_email
from .secret_box import SealedValueError, SecretBox
from .signing import new_secret
from .ssrf import Resolver, UnsafeUrl, parse_url, resolve_checked

EVENT_TYPES = outbox.JOB_EVENT_TYPES
CODE_TTL_S = 900.0  # a mailed verification code
CODE_ATTEMPTS = 5  # wrong codes before a new one must be asked for
# Between two codes mailed to one account: bounds the mail one account can make the
# server send, and the guesses at codes (5 a minute).
CODE_COOLDOWN_S = 60.0


class NotificationsService:
    def __init__(
        self,
        database: Database,
        settings: NotifySettings,
        *,
        environment: str,
        box: SecretBox,
        mailer: Mailer,
        resolver: Resolver,
        code_key: bytes,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.database = database
        self.settings = settings
        self.box = box
        self.mailer = mailer
        self.resolver = resolver
        self.code_key = code_key
        self.clock = clock
        self.require_https = (
            settings.require_https if settings.require_https is not None else environment == "prod"
        )

    # --- URLs -----------------------------------------------------------------------

    async def check_url(self, url: str, param: str) -> str:
        """`url` if it may be delivered to now; 422 naming why not."""
        s = self.settings
        try:
            checked = parse_url(
                url,
                require_https=self.require_https,
                allow_loopback=s.allow_loopback,
                max_chars=s.max_url_chars,
            )
            await resolve_checked(
                checked,
                self.resolver,
                allow_loopback=s.allow_loopback,
                timeout_s=s.resolve_timeout_s,
            )
        except UnsafeUrl as exc:
            raise InputInvalid(
                f"{param}: {exc}",
                [{"loc": ["body", *param.split(".")], "msg": str(exc)}],
                param=param,
            ) from None
        return checked.url

    # --- webhooks -------------------------------------------------------------------

    async def create(
        self, caller: Principal, body: Any, request_id: str
    ) -> tuple[WebhookRecord, str]:
        url = await self.check_url(body.url, "url")
        now = self.clock()
        webhook_id = outbox.new_id("wh")
        secret = new_secret()
        record = WebhookRecord(
            id=webhook_id,
            owner=caller.owner,
            url=url,
            events=list(dict.fromkeys(body.events)),
            description=body.description,
            enabled=body.enabled,
            secret=self.box.seal(secret, context=webhook_id),
            consecutive_failures=0,
            created_at=now,
            updated_at=now,
        )

        async def work(s: Any) -> bool:
            if await rows.count(s, caller.owner) >= self.settings.max_webhooks:
                return False
            await rows.insert(s, record)
            _audit(s, caller, "webhook.create", webhook_id, request_id, {"events": record.events})
            return True

        if not await self.database.run("webhooks.create", work):
            raise Conflict(
                f"at most {self.settings.max_webhooks} webhooks per owner: delete one first"
            )
        return record, secret

    async def get(self, caller: Principal, webhook_id: str) -> WebhookRecord:
        found = await self.database.run(
            "webhooks.get", lambda s: rows.owned(s, webhook_id, caller.owner)
        )
        if found is None:
            raise NotFound(f"no webhook {webhook_id!r}")
        return found

    async def page(
        self, caller: Principal, after: tuple[float, str] | None, limit: int
    ) -> list[WebhookRecord]:
        return list(
            await self.database.run(
                "webhooks.list", lambda s: rows.page(s, caller.owner, after, limit)
            )
        )

    async def change(
        self, caller: Principal, webhook_id: str, body: Any, request_id: str
    ) -> WebhookRecord:
        given = body.model_dump(exclude_unset=True)
        values: dict[str, Any] = {"updated_at": self.clock()}
        if given.get("url") is not None:
            values["url"] = await self.check_url(given["url"], "url")
        if given.get("events") is not None:
            values["events"] = list(dict.fromkeys(given["events"]))
        if "description" in given:
            values["description"] = given["description"]
        if given.get("enabled") is not None:
            values["enabled"] = given["enabled"]
            if given["enabled"]:  # turned on again: a fresh start
                values |= {"consecutive_failures": 0, "disabled_reason": None}

        async def work(s: Any) -> WebhookRecord | None:
            changed = await rows.change(s, webhook_id, caller.owner, values)
            if changed is not None:
                shown = sorted(k for k in given if k != "url") + (["url"] if "url" in given else [])
                _audit(s, caller, "webhook.update", webhook_id, request_id, {"fields": shown})
            return changed

        found = await self.database.run("webhooks.update", work)
        if found is None:
            raise NotFound(f"no webhook {webhook_id!r}")
        return found

    async def delete(self, caller: Principal, webhook_id: str, request_id: str) -> None:
        now = self.clock()

        async def work(s: Any) -> bool:
            gone = await rows.remove(s, webhook_id, caller.owner, now)
            if gone:
                _audit(s, caller, "webhook.delete", webhook_id, request_id, {})
            return gone

        if not await self.database.run("webhooks.delete", work):
            raise NotFound(f"no webhook {webhook_id!r}")

    async def rotate(
        self, caller: Principal, webhook_id: str, grace_s: float | None, request_id: str
    ) -> tuple[WebhookRecord, str]:
        """A new secret; the old one keeps signing (beside it) for the grace period."""
        grace = self.settings.rotation_grace_s if grace_s is None else grace_s
        now = self.clock()
        secret = new_secret()
        sealed = self.box.seal(secret, context=webhook_id)

        async def work(s: Any) -> WebhookRecord | None:
            current = await rows.owned(s, webhook_id, caller.owner)
            if current is None:
                return None
            values = {
                "secret": sealed,
                "previous_secret": current.secret if grace > 0 else None,
                "previous_valid_until": now + grace if grace > 0 else None,
                "rotated_at": now,
                "updated_at": now,
            }
            changed = await rows.change(s, webhook_id, caller.owner, values)
            _audit(s, caller, "webhook.rotate", webhook_id, request_id, {"grace_s": grace})
            return changed

        found = await self.database.run("webhooks.rotate", work)
        if found is None:
            raise NotFound(f"no webhook {webhook_id!r}")
        return found, secret

    async def deliveries(
        self, caller: Principal, webhook_id: str, after: tuple[float, str] | None, limit: int
    ) -> list[dict[str, Any]]:
        await self.get(caller, webhook_id)  # 404 for another owner's
        return await self.database.run(
            "webhooks.deliveries",
            lambda s: outbox.webhook_deliveries(s, webhook_id, after, limit),
        )

    async def redeliver(
        self, caller: Principal, webhook_id: str, delivery_id: str, request_id: str
    ) -> str:
        await self.get(caller, webhook_id)
        now = self.clock()

        async def work(s: Any) -> str | None:
            new = await outbox.redeliver(s, webhook_id, delivery_id, now)
            if new is not None:
                details = {"delivery": delivery_id, "new": new}
                _audit(s, caller, "webhook.redeliver", webhook_id, request_id, details)
            return new

        new = await self.database.run("webhooks.redeliver", work)
        if new is None:
            raise NotFound(f"no delivery {delivery_id!r} of webhook {webhook_id!r}")
        return new

    # --- a job's choices ------------------------------------------------------------

    async def job_notify(
        self, caller: Principal, job_id: str, notify: Any
    ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """What the job row keeps (the callback secret sealed) and what the submission's
        answer shows (the secret in clear, this once); (None, None) without choices."""
        if notify is None:  # the account's default, when it has one
            default = await self.database.run(
                "notify.default", lambda s: outbox.mails_jobs_by_default(s, caller.account)
            )
            if not default or not self.mailer.enabled:
                return None, None
            return {"email": True}, {"email": True, "callback_url": None}
        if notify.callback_url is None and not notify.email:
            return None, None
        stored: dict[str, Any] = {"email": bool(notify.email)}
        shown: dict[str, Any] = {"email": bool(notify.email), "callback_url": None}
        if notify.email:
            await self._require_address(caller)
        if notify.callback_url is not None:
            url = await self.check_url(notify.callback_url, "notify.callback_url")
            secret = new_secret()
            stored |= {
                "callback_url": url,
                "callback_secret": self.box.seal(secret, context=job_id),
            }
            shown |= {"callback_url": url, "callback_secret": secret}
        return stored, shown

    def reveal(self, job_id: str, stored: dict[str, Any] | None) -> dict[str, Any] | None:
        """The choices as the submission's answer showed them: an Idempotency-Key replay
        answers exactly what the first submission did, the secret included."""
        if stored is None:
            return None
        shown: dict[str, Any] = {"email": bool(stored.get("email")), "callback_url": None}
        if stored.get("callback_url"):
            try:  # a server secret changed since: the secret cannot be shown again
                secret: str | None = self.box.open(stored["callback_secret"], context=job_id)
            except SealedValueError:
                secret = None
            shown |= {"callback_url": stored["callback_url"], "callback_secret": secret}
        return shown

    async def _require_address(self, caller: Principal) -> None:
        if not self.mailer.enabled:
            raise InputInvalid(
                "notify.email: e-mail is not configured on this server",
                [{"loc": ["body", "notify", "email"], "msg": "e-mail is not configured"}],
                param="notify.email",
            )
        found = await self.database.run(
            "notify.address", lambda s: outbox.verified_address(s, caller.account)
        )
        if found is None:
            raise InputInvalid(
                "notify.email: the account has no verified e-mail address "
                "(PUT /v1/me/email, then POST /v1/me/email/verify)",
                [{"loc": ["body", "notify", "email"], "msg": "no verified address"}],
                param="notify.email",
            )

    async def job_notifications(self, job_id: str) -> list[dict[str, Any]]:
        return await self.database.run("notify.job", lambda s: outbox.job_notifications(s, job_id))

    # --- the account's address ------------------------------------------------------

    def _user_id(self, caller: Principal) -> str:
        if not caller.account.startswith("user:"):
            raise InputInvalid(
                "only a user account has an e-mail address (sign in, or use one of its keys)",
                [{"loc": ["body", "email"], "msg": "not a user account"}],
                param="email",
            )
        return caller.account.removeprefix("user:")

    async def email_status(self, caller: Principal) -> dict[str, Any]:
        """The account's address; all null for an account that cannot have one (a
        standalone key): nothing to show is not an error."""
        if not caller.account.startswith("user:"):
            return _address(None)
        user_id = self._user_id(caller)
        user = await self.database.run("email.get", lambda s: s.get(UserRow, user_id))
        if user is None:
            raise NotFound("no such user")
        return _address(user)

    async def request_email(
        self, caller: Principal, address: str, request_id: str
    ) -> dict[str, Any]:
        """A code mailed to `address`; it becomes the account's once the code comes back."""
        user_id = self._user_id(caller)
        if not self.mailer.enabled:
            raise MailUnavailable("e-mail is not configured on this server")
        code = f"{secrets.randbelow(10**6):06d}"
        now = self.clock()

        async def work(s: Any) -> UserRow | float | None:
            user = await s.get(UserRow, user_id)
            if user is None:
                return None
            sent_at = (user.email_code_expires_at or 0.0) - CODE_TTL_S
            if user.email_code_digest is not None and now - sent_at < CODE_COOLDOWN_S:
                return CODE_COOLDOWN_S - (now - sent_at)  # wait this long
            user.email_pending = address
            user.email_code_digest = self._digest(user_id, address, code)
            user.email_code_expires_at = now + CODE_TTL_S
            user.email_code_attempts = 0
            user.updated_at = now
            details = {"address": mask_address(address)}
            _audit(s, caller, "email.request", f"user:{user_id}", request_id, details)
            return user

        user = await self.database.run("email.request", work)
        if user is None:
            raise NotFound("no such user")
        if isinstance(user, float):
            wait = max(1, math.ceil(user))
            raise RateLimited(f"a code was sent less than a minute ago: retry in {wait} s", wait)
        try:
            await self.mailer.send(verification_email(code, to=address, ttl_s=CODE_TTL_S))
        except MailError as exc:
            raise MailUnavailable(f"the code could not be sent: {exc}") from None
        return _address(user)

    async def set_default(self, caller: Principal, on: bool, request_id: str) -> dict[str, Any]:
        """Whether the account's jobs mail their end by default (a verified address first)."""
        user_id = self._user_id(caller)

        async def work(s: Any) -> tuple[str, UserRow | None]:
            user = await s.get(UserRow, user_id)
            if user is None:
                return "none", None
            if on and user.email_verified_at is None:
                return "unverified", user
            user.email_jobs = on
            user.updated_at = self.clock()
            _audit(s, caller, "email.default", f"user:{user_id}", request_id, {"on": on})
            return "ok", user

        outcome, user = await self.database.run("email.default", work)
        if user is None:
            raise NotFound("no such user")
        if outcome == "unverified":
            why = "verify an address first (PUT /v1/me/email, then POST /v1/me/email/verify)"
            raise InputInvalid(
                f"notify_jobs: {why}",
                [{"loc": ["body", "notify_jobs"], "msg": why}],
                param="notify_jobs",
            )
        return _address(user)

    async def verify_email(self, caller: Principal, code: str, request_id: str) -> dict[str, Any]:
        user_id = self._user_id(caller)
        now = self.clock()

        async def work(s: Any) -> tuple[str, UserRow | None]:
            user = await s.get(UserRow, user_id)
            if user is None or user.email_pending is None or user.email_code_digest is None:
                return "none", user
            if (user.email_code_expires_at or 0) < now or user.email_code_attempts >= CODE_ATTEMPTS:
                return "expired", user
            expected = self._digest(user_id, user.email_pending, code)
            if not hmac.compare_digest(expected, user.email_code_digest):
                user.email_code_attempts += 1
                return "wrong", user
            user.email, user.email_verified_at = user.email_pending, now
            user.email_pending = user.email_code_digest = user.email_code_expires_at = None
            user.email_code_attempts = 0
            user.updated_at = now
            details = {"address": mask_address(user.email)}
            _audit(s, caller, "email.verify", f"user:{user_id}", request_id, details)
            return "ok", user

        outcome, user = await self.database.run("email.verify", work)
        if outcome == "ok" and user is not None:
            return _address(user)
        why = {
            "none": "no code was asked for (PUT /v1/me/email first)",
            "expired": "the code expired or was tried too often: ask for a new one",
            "wrong": "the code is not the one sent",
        }[outcome]
        raise InputInvalid(f"code: {why}", [{"loc": ["body", "code"], "msg": why}], param="code")

    def _digest(self, user_id: str, address: str, code: str) -> str:
        message = f"{user_id}\n{address.lower()}\n{code}".encode()
        return hmac.new(self.code_key, message, hashlib.sha256).hexdigest()


def _address(user: UserRow | None) -> dict[str, Any]:
    """The EmailAddress answer; all empty for an account without a user (no address)."""
    if user is None:
        empty = dict.fromkeys(("email", "verified_at", "pending", "pending_expires_at"))
        return {**empty, "notify_jobs": False}
    return {
        "email": user.email,
        "notify_jobs": bool(user.email_jobs),
        "verified_at": user.email_verified_at,
        "pending": user.email_pending,
        "pending_expires_at": user.email_code_expires_at if user.email_pending else None,
    }


def _audit(
    s: Any, caller: Principal, action: str, target: str, request_id: str, details: dict[str, Any]
) -> None:
    audit.add(
        s,
        actor=caller.subject,
        action=action,
        target=target,
        request_id=request_id or None,
        details=details,
    )
