from __future__ import annotations

from fastapi import APIRouter

from ..deps import AccessDep, PrincipalDep
from ..schemas.access import Usage
from ..schemas.common import error_responses
from ..services import access as service

router = APIRouter(prefix="/v1", tags=["auth"])


@router.get(
    "/usage",
    response_model=Usage,
    responses=error_responses(401, 503),
    summary="Your rate-limit windows and token budget now (role: any; not counted)",
)
async def usage(principal: PrincipalDep, access: AccessDep) -> object:
    return await service.usage(access, principal)
