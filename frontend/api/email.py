"""The account's e-mail address for job notifications: set it (a six-digit code is mailed
to it) and prove it with that code. Only a verified address ever receives mail from a
job, so no caller can make the server relay mail to an address of their choosing."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from ..deps import LimitedDep, NotificationsDep, RequestIdDep
from ..responses import OrjsonResponse
from ..schemas.common import error_responses
from ..schemas.webhooks import EmailAddress, EmailDefault, EmailRequest, EmailVerify

router = APIRouter(prefix="/v1/me/email", tags=["notifications"])
ERRORS = error_responses(401, 404, 422, 429, 503)


@router.get("", response_model=EmailAddress, responses=ERRORS, summary="Your e-mail address")
async def get_email(caller: LimitedDep, service: NotificationsDep) -> object:
    return await service.email_status(caller)


@router.put(
    "",
    status_code=202,
    response_model=EmailAddress,
    responses=ERRORS,
    summary="Set your e-mail address: a code is mailed to it (valid 15 minutes)",
)
async def set_email(
    body: EmailRequest, caller: LimitedDep, service: NotificationsDep, request_id: RequestIdDep
) -> Response:
    shown = await service.request_email(caller, body.email, request_id)
    return OrjsonResponse(shown, status_code=202)


@router.post(
    "/verify",
    response_model=EmailAddress,
    responses=ERRORS,
    summary="Prove the address with its code: job e-mails go there from now on",
)
async def verify_email(
    body: EmailVerify, caller: LimitedDep, service: NotificationsDep, request_id: RequestIdDep
) -> object:
    return await service.verify_email(caller, body.code, request_id)


@router.patch(
    "",
    response_model=EmailAddress,
    responses=ERRORS,
    summary="Mail the end of your jobs by default (a verified address first)",
)
async def set_default(
    body: EmailDefault, caller: LimitedDep, service: NotificationsDep, request_id: RequestIdDep
) -> object:
    return await service.set_default(caller, body.notify_jobs, request_id)
