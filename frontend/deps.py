"""Annotated dependency aliases: routes declare what they need, nothing global.

All async: FastAPI runs a plain `def` dependency in its thread pool, two thread hops per
request for nothing (seen in a py-spy profile of the predict route).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from .services.catalog import Catalog
from .services.inference import InferenceService
from .settings import Settings
from .triton.client import TritonClient


async def _settings(request: Request) -> Settings:
    return request.app.state.settings


async def _triton(request: Request) -> TritonClient:
    return request.app.state.triton


async def _catalog(request: Request) -> Catalog:
    return request.app.state.catalog


async def _inference(request: Request) -> InferenceService:
    return request.app.state.inference


async def _request_id(request: Request) -> str:
    return str(getattr(request.state, "request_id", ""))


SettingsDep = Annotated[Settings, Depends(_settings)]
TritonDep = Annotated[TritonClient, Depends(_triton)]
CatalogDep = Annotated[Catalog, Depends(_catalog)]
InferenceDep = Annotated[InferenceService, Depends(_inference)]
RequestIdDep = Annotated[str, Depends(_request_id)]
ModelVersionHeader = Annotated[
    str | None,
    Header(
        alias="X-Model-Version", description="Model version; the path form wins.", examples=["2"]
    ),
]
