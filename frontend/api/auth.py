from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, Request
from starlette.responses import Response

from ..deps import AccessDep, LimitedDep
from ..schemas.access import LogoutRequest, RefreshRequest, TokenPairOut, TokenRequest
from ..schemas.common import error_responses
from ..services import access as service

router = APIRouter(prefix="/v1/auth", tags=["auth"])


@router.post(
    "/token",
    response_model=TokenPairOut,
    responses=error_responses(401, 422, 429, 503),
    summary="Log in: username + password → access token + refresh token (no auth needed)",
)
async def token(body: TokenRequest, request: Request, access: AccessDep) -> object:
    # The peer address as the server sees it (behind a proxy: its forwarded header, when
    # the server is told to trust that proxy). Login budgets are counted per client.
    client = request.client.host if request.client else "unknown"
    pair = await service.login(access, body.username, body.password, client)
    return asdict(pair)


@router.post(
    "/refresh",
    response_model=TokenPairOut,
    responses=error_responses(401, 422, 503),
    summary="Rotate a refresh token (single use; a reused one revokes its whole login)",
)
async def refresh(body: RefreshRequest, access: AccessDep) -> object:
    return asdict(await access.tokens.refresh(body.refresh_token))


@router.post(
    "/logout",
    status_code=204,
    responses=error_responses(401, 422, 503),
    summary="Revoke this access token and its login (role: any JWT user)",
)
async def logout(
    principal: LimitedDep, access: AccessDep, body: LogoutRequest | None = None
) -> Response:
    await access.tokens.logout(principal, body.refresh_token if body else None)
    return Response(status_code=204)
