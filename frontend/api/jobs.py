"""The batch-jobs routes (design §6): submit (JSON or multipart), list, status, events,
results, errors, cancel, and the admins' listing. Thin: the service does the work
(frontend/jobs/service.py). Every `{job_id}` route reads the job with its owner (any
owner for admins), so another owner's job is 404 as one that does not exist."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Request
from starlette.responses import Response

from ..db.jobs import JOB_STATES, JobFileRow, JobRow
from ..deps import AdminDep, JobsDep, LimitedDep, RequestIdDep, SettingsDep
from ..errors import InputInvalid, NotFound
from ..jobs import download, events, idempotency
from ..responses import OrjsonResponse
from ..schemas.common import error_responses
from ..schemas.jobs import JobList, JobRequest, JobResponse
from ..services.bodies import json_body
from . import paging
from .common import call_context

router = APIRouter(tags=["jobs"])
ERRORS = error_responses(401, 403, 404, 422, 429, 503)
SUBMIT_ERRORS = error_responses(401, 403, 404, 409, 410, 413, 415, 422, 429, 503, 507)
DOWNLOAD_ERRORS = error_responses(401, 404, 406, 410, 416, 429, 503)
MAX_PAGE = 100
PageLimit = Annotated[int, Query(ge=1, le=MAX_PAGE, description="Jobs per page")]
States = Annotated[
    list[str] | None,
    Query(alias="state", description="Only jobs in these states (repeatable)"),
]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias=idempotency.HEADER,
        description="1 to 255 printable ASCII characters: the same request again answers "
        "the same job (200, Idempotent-Replayed: true); another request with it, 409",
    ),
]


def render(
    job: JobRow,
    files: Sequence[JobFileRow],
    *,
    notify: dict[str, Any] | None = None,
    notifications: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The JobResponse of a job (design §6). `notify`: the choices as the submission's
    answer shows them (with the callback secret); default: from the job, without it."""
    if notify is None and job.notify is not None:
        notify = {"callback_url": job.notify.get("callback_url"), "email": job.notify["email"]}
    total, done, failed = job.rows_total, job.rows_done, job.rows_failed
    rate = job.rate_rows_per_s
    eta = None if job.terminal else events.eta_s(job)
    percent = None
    if total is not None:
        percent = 100.0 if total == 0 else round(100.0 * (done + failed) / total, 2)
    base = f"/v1/jobs/{job.id}"
    return {
        "id": job.id,
        "object": "job",
        "model": job.model,
        "version": job.version,
        "task": job.task,
        "state": job.state,
        "created_at": job.created_at,
        "updated_at": job.updated_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "expires_at": job.expires_at,
        "progress": {
            "rows_total": total,
            "rows_done": done,
            "rows_failed": failed,
            "chunks_total": job.chunks_total,
            "chunks_done": job.chunks_done,
            "rows_per_s": rate,
            "eta_s": eta,
            "percent": percent,
        },
        "files": [
            {
                "name": f.name,
                "format": f.format,
                "bytes": f.bytes,
                "sha256": f.sha256,
                "rows": f.rows,
                "first_row": f.first_row,
            }
            for f in files
        ],
        "parameters": job.parameters,
        "metadata": job.meta,
        "waiting": job.waiting,
        "error": job.error,
        "notify": notify,
        "notifications": notifications,
        "links": {
            "self": base,
            "events": f"{base}/events",
            "results": f"{base}/results",
            "errors": f"{base}/errors",
        },
    }


def _states(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    unknown = [v for v in values if v not in JOB_STATES]
    if unknown:
        raise InputInvalid(
            f"state: {unknown[0]!r} is not a job state ({', '.join(JOB_STATES)})",
            [{"loc": ["query", "state"], "msg": f"one of {', '.join(JOB_STATES)}"}],
            param="state",
        )
    return values


def _page(found: list[tuple[JobRow, list[JobFileRow]]], more: bool) -> dict[str, Any]:
    last = found[-1][0] if found else None
    cursor = paging.key_cursor((last.created_at, last.id)) if more and last else None
    return {"object": "list", "data": [render(j, f) for j, f in found], "next_cursor": cursor}


def _submit_docs() -> dict[str, Any]:
    upload_fields = {
        "model": {"type": "string"},
        "version": {"type": "string"},
        "text_field": {"type": "string", "default": "text"},
        "columns": {"type": "string", "description": "a JSON array of column names"},
        "parameters": {"type": "string", "description": "a JSON object"},
        "metadata": {"type": "string", "description": "a JSON object of strings"},
        "notify": {"type": "string", "description": 'a JSON object: {"callback_url", "email"}'},
        "file": {
            "type": "array",
            "items": {"type": "string", "format": "binary"},
            "description": "JSONL or CSV files (UTF-8), after the fields",
        },
    }
    return {
        "requestBody": {
            "required": True,
            "description": "The rows inline (JSON), or as files (multipart/form-data: the "
            "plain fields first, then `file` parts).",
            "content": {
                "application/json": {"schema": JobRequest.model_json_schema()},
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["model", "file"],
                        "properties": upload_fields,
                    }
                },
            },
        }
    }


@router.post(
    "/v1/jobs",
    status_code=201,
    response_model=JobResponse,
    responses=SUBMIT_ERRORS,
    summary="Submit a batch job: rows inline (JSON) or JSONL/CSV files (multipart)",
    openapi_extra=_submit_docs(),
)
async def submit(
    request: Request,
    caller: LimitedDep,
    service: JobsDep,
    settings: SettingsDep,
    request_id: RequestIdDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    key = idempotency.parse_key(idempotency_key)
    call = call_context(request, caller, settings)
    content_type = request.headers.get("content-type", "")
    if content_type.lower().startswith("multipart/form-data"):
        submitted = await service.submit_upload(
            request, caller, call, key=key, request_id=request_id
        )
    else:
        body = await json_body(request, JobRequest)
        submitted = await service.submit_json(caller, body, call, key=key, request_id=request_id)
    job = submitted.job
    headers = {**submitted.headers, "Location": f"/v1/jobs/{job.id}"}
    if submitted.replayed:
        headers[idempotency.REPLAYED] = "true"
    status = 200 if submitted.replayed else 201
    shown = render(job, submitted.files, notify=submitted.notify)
    return OrjsonResponse(shown, status_code=status, headers=headers)


@router.get("/v1/jobs", response_model=JobList, responses=ERRORS, summary="Your jobs")
async def list_jobs(
    caller: LimitedDep,
    service: JobsDep,
    state: States = None,
    limit: PageLimit = 20,
    cursor: paging.KeyCursor = None,
) -> object:
    found, more = await service.listing(
        owner=caller.owner,
        states=_states(state),
        model=None,
        after=paging.after_key(cursor),
        limit=limit,
    )
    return _page(found, more)


@router.get("/v1/jobs/{job_id}", response_model=JobResponse, responses=ERRORS, summary="One job")
async def get_job(job_id: str, caller: LimitedDep, service: JobsDep) -> object:
    job, files = await service.detail(caller, job_id)
    return render(job, files, notifications=await service.notifications(job.id))


@router.get(
    "/v1/jobs/{job_id}/events",
    responses={**ERRORS, 200: {"content": {"text/event-stream": {}}}},
    summary="A job's progress as server-sent events (progress, then done)",
)
async def job_events(
    job_id: str, request: Request, caller: LimitedDep, service: JobsDep, settings: SettingsDep
) -> Response:
    _, files = await service.detail(caller, job_id)  # 404 before the stream starts
    known: list[list[JobFileRow]] = [files]

    async def load() -> JobRow | None:
        try:
            job, found = await service.detail(caller, job_id)
        except NotFound:
            return None
        known[0] = found
        return job

    return await events.job_events(
        request, load=load, render=lambda job: render(job, known[0]), settings=settings.jobs
    )


async def _download(
    request: Request, caller: Any, service: Any, job_id: str, what: Literal["results", "errors"]
) -> Response:
    job, chunks = await service.done_chunks(caller, job_id)
    fmt = download.pick_format(request.headers.get("accept"), what)
    return await download.download(request, job, chunks, service.storage, fmt, now=service.clock())


@router.get(
    "/v1/jobs/{job_id}/results",
    responses={**DOWNLOAD_ERRORS, 206: {"description": "A byte range of the results"}},
    summary="A job's results so far: JSONL, or CSV with Accept: text/csv (Range, ETag)",
)
async def job_results(
    job_id: str, request: Request, caller: LimitedDep, service: JobsDep
) -> Response:
    return await _download(request, caller, service, job_id, "results")


@router.get(
    "/v1/jobs/{job_id}/errors",
    responses={**DOWNLOAD_ERRORS, 206: {"description": "A byte range of the row errors"}},
    summary="A job's row errors so far (JSONL: row, code, reason)",
)
async def job_errors(
    job_id: str, request: Request, caller: LimitedDep, service: JobsDep
) -> Response:
    return await _download(request, caller, service, job_id, "errors")


@router.delete(
    "/v1/jobs/{job_id}",
    status_code=202,
    response_model=JobResponse,
    responses={**ERRORS, **error_responses(409), 200: {"description": "Already cancelled"}},
    summary="Cancel a job: no new chunk starts; finished chunks stay downloadable",
)
async def cancel_job(job_id: str, caller: LimitedDep, service: JobsDep) -> Response:
    job, files, status = await service.cancel(caller, job_id)
    return OrjsonResponse(render(job, files), status_code=status)


@router.get(
    "/v1/admin/jobs",
    response_model=JobList,
    responses=error_responses(401, 403, 422, 429, 503),
    summary="Everyone's jobs (role: admin)",
)
async def admin_jobs(
    _admin: AdminDep,
    service: JobsDep,
    owner: Annotated[str | None, Query(max_length=64)] = None,
    model: Annotated[str | None, Query(max_length=128)] = None,
    state: States = None,
    limit: PageLimit = 20,
    cursor: paging.KeyCursor = None,
) -> object:
    found, more = await service.listing(
        owner=owner,
        states=_states(state),
        model=model,
        after=paging.after_key(cursor),
        limit=limit,
    )
    return _page(found, more)
