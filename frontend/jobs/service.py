"""Batch-job submission, status, listing and cancel (design §6): what the routes call.

Submission, JSON or multipart, in this order (each step refuses before the next costs
anything): the Idempotency-Key claimed; the model, its task and the version resolved
once through the router as the predict route does (404/410/422, Deprecation/Sunset
headers kept for the 201); the caller's scopes; the task's parameters; the job limits
read (no file byte stored for an account at its limit); the rows stored; then one
transaction admits the job exactly (`admit`), inserts it and binds the key; the planning
is dispatched last (a lost dispatch is found again by the reconciler). Any failure after
the claim drops the key and deletes what was stored (shielded).

Ownership: every job is read with its owner (None for admins), so another owner's job is
404 exactly like a job that does not exist."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import anyio.to_thread
import orjson
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request

from ..auth import scopes
from ..auth.principal import Principal
from ..db import jobs
from ..db.database import Database
from ..db.ids import new_id
from ..db.jobs import Admission, DoneChunk, JobFileRow, JobRow, Work
from ..errors import InputInvalid, JobFinished, NotFound
from ..observability.metrics import Metrics
from ..schemas.jobs import JobFields, JobRequest
from ..services.inference import CallContext, InferenceService
from ..settings import Settings
from ..storage.base import Storage
from . import idempotency, limits, upload
from .dispatch import Dispatcher
from .idempotency import Claim
from .parameters import check_parameters, form_fields, task_route
from .retention import job_prefix
from .upload import FieldsOk, StoredFile


def new_job_id() -> str:
    """`job_` and 26 base32 characters of 16 random bytes."""
    return new_id("job")


@dataclass(frozen=True, slots=True)
class Submitted:
    job: JobRow
    files: list[JobFileRow]
    replayed: bool
    headers: dict[str, str]  # Deprecation / Sunset / Link of the version
    # The job's notification choices as its answer shows them (the callback secret).
    notify: dict[str, Any] | None = None


class JobNotifications(Protocol):
    """The notification service as jobs see it (frontend/notify/service.py)."""

    async def job_notify(
        self, caller: Principal, job_id: str, notify: Any
    ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]: ...

    def reveal(self, job_id: str, stored: dict[str, Any] | None) -> dict[str, Any] | None: ...

    async def job_notifications(self, job_id: str) -> list[dict[str, Any]]: ...


@dataclass(frozen=True, slots=True)
class Resolved:
    """A submission's fields once its model, version and parameters are checked."""

    fields: JobFields
    task: str
    version: str
    headers: dict[str, str]
    # The job's notification choices as stored and as its answer shows them.
    notify: tuple[dict[str, Any] | None, dict[str, Any] | None] = (None, None)


class JobsService:
    def __init__(
        self,
        settings: Settings,
        database: Database,
        storage: Storage,
        inference: InferenceService,
        dispatcher: Dispatcher,
        metrics: Metrics,
        *,
        tasks: Collection[str],
        notifications: JobNotifications | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`inference`: the online service (the version is resolved as the predict route
        resolves it). `tasks`: those a job runner can run (adapters_for's keys)."""
        self.settings = settings
        self.database = database
        self.storage = storage
        self.inference = inference
        self.dispatcher = dispatcher
        self.metrics = metrics
        self.tasks = frozenset(tasks)
        self.notify = notifications
        self.clock = clock

    # -- submission -------------------------------------------------------------------

    def resolve(self, caller: Principal, fields: JobFields, call: CallContext) -> Resolved:
        """Model, task, scopes, version (routing applied once, now) and parameters."""
        served = self.inference.catalog.get(fields.model)  # 404 listing every model
        task = served.task
        if task not in self.tasks:
            kind = "image" if task == "image-classification" else task
            raise InputInvalid(
                f"model: {fields.model!r} is a {task} model; jobs take text rows for "
                f"{', '.join(sorted(self.tasks))} models",
                [{"loc": ["body", "model"], "msg": f"{kind} models take no jobs"}],
                param="model",
            )
        scopes.require(caller, route=task_route(task), model=served.name)
        routed = self.inference.resolve(served.name, task, fields.version, call)
        check_parameters(task, fields.parameters, routed.card, self.settings.limits)
        return Resolved(fields, task, routed.version, dict(routed.decision.headers))

    async def _with_notify(self, caller: Principal, job_id: str, resolved: Resolved) -> Resolved:
        """The job's notification choices checked (422 for an unsafe callback URL or no
        verified address) before anything is stored."""
        notify = resolved.fields.notify
        if self.notify is None:
            if notify is not None:
                raise InputInvalid(
                    "notify: notifications are off on this server",
                    [{"loc": ["body", "notify"], "msg": "notifications are off"}],
                    param="notify",
                )
            return resolved
        chosen = await self.notify.job_notify(caller, job_id, notify)
        return dataclasses.replace(resolved, notify=chosen)

    async def submit_json(
        self,
        caller: Principal,
        body: JobRequest,
        call: CallContext,
        *,
        key: str | None,
        request_id: str,
    ) -> Submitted:
        cap = self.settings.jobs.max_inline_rows
        if len(body.inputs) > cap:
            raise InputInvalid(
                f"inputs: at most {cap} rows in a JSON body; upload a file for more",
                [{"loc": ["body", "inputs"], "msg": f"at most {cap} rows"}],
                param="inputs",
            )
        digest = idempotency.json_hash(body.model_dump(mode="json"), upload.JOBS_PATH)
        claim = await self._claim(caller, key, digest)
        if claim is not None and claim.outcome == "replay":
            return await self._replay(caller, claim)
        job_id = new_job_id()
        try:
            resolved = await self._with_notify(caller, job_id, self.resolve(caller, body, call))
            await self._precheck(caller, len(body.inputs))
            lines = [orjson.dumps(row) for row in body.inputs]
            stored = await upload.write_inline(
                self.storage, job_id, lines, settings=self.settings.jobs
            )
            return await self._create(
                caller, job_id, resolved, [stored], claim, digest, request_id, len(body.inputs)
            )
        except BaseException:
            await self._undo(job_id, claim)
            raise

    async def submit_upload(
        self,
        request: Request,
        caller: Principal,
        call: CallContext,
        *,
        key: str | None,
        request_id: str,
    ) -> Submitted:
        claim = await self._claim(caller, key, None)  # in_progress: 409 before the body
        job_id = new_job_id()
        found: list[Resolved] = []

        async def on_fields(raw: dict[str, str]) -> FieldsOk:
            fields = form_fields(raw)
            if claim is None or claim.held:  # a done key is compared after the body
                resolved = self.resolve(caller, fields, call)
                found.append(await self._with_notify(caller, job_id, resolved))
                await self._precheck(caller, 1)
            return FieldsOk(fields.text_field, fields.columns)

        try:
            form = await upload.read_job_form(
                request,
                storage=self.storage,
                job_id=job_id,
                settings=self.settings.jobs,
                metrics=self.metrics,
                on_fields=on_fields,
            )
            digest = idempotency.upload_hash(form.fields, [(f.name, f.sha256) for f in form.files])
            if claim is not None and claim.outcome == "done":
                idempotency.check_done(claim, digest)  # 409 for another request
                await self._undo(job_id, None)  # the twin's files are not needed
                return await self._replay(caller, claim)
            rows = sum(f.rows_estimate for f in form.files)
            return await self._create(
                caller, job_id, found[0], form.files, claim, digest, request_id, rows
            )
        except BaseException:
            await self._undo(job_id, claim)
            raise

    async def _claim(self, caller: Principal, key: str | None, digest: str | None) -> Claim | None:
        if key is None:
            return None
        return await idempotency.claim(
            self.database, caller.owner, key, digest, self.clock(), self.settings.jobs
        )

    async def _precheck(self, caller: Principal, rows: int) -> None:
        await limits.precheck(
            self.database,
            caller,
            limits.limits_for(caller, self.settings.auth.tiers),
            rows,
            now=self.clock(),
            busy_retry_after_s=self.settings.jobs.busy_retry_after_s,
        )

    async def _replay(self, caller: Principal, claim: Claim) -> Submitted:
        assert claim.job_id is not None
        job, files = await self.detail(caller, claim.job_id)
        shown = self.notify.reveal(job.id, job.notify) if self.notify is not None else None
        return Submitted(job, files, True, {}, shown)

    async def _create(
        self,
        caller: Principal,
        job_id: str,
        resolved: Resolved,
        stored: Sequence[StoredFile],
        claim: Claim | None,
        digest: str,
        request_id: str,
        rows: int,
    ) -> Submitted:
        fields = resolved.fields
        notify, shown = resolved.notify
        now = self.clock()
        today = jobs.utc_day(now)
        row = JobRow(
            id=job_id,
            owner=caller.owner,
            account=caller.account,
            subject=caller.subject,
            tier=caller.tier,
            model=fields.model,
            version=resolved.version,
            task=resolved.task,
            created_at=now,
            updated_at=now,
            parameters=dict(fields.parameters),
            key_id=caller.key_id,
            key_limits=dataclasses.asdict(caller.limits) if caller.limits else None,
            meta=fields.metadata,
            text_field=fields.text_field,
            columns=fields.columns,
            rows_reserved=rows,
            reserved_day=today,
            plan_dispatched_at=now,  # dispatched below: the reconciler waits redispatch_s
            idempotency_key=claim.key if claim is not None else None,
            request_id=request_id[:128] or None,
            notify=notify,
        )
        files = [f.as_row() for f in stored]
        job_limits = limits.limits_for(caller, self.settings.auth.tiers)

        async def commit(s: AsyncSession) -> Admission:
            admission = await jobs.admit(s, caller.account, rows, job_limits, today)
            if admission.admitted:
                await jobs.insert_job(s, row, files)
                if claim is not None and claim.held:
                    await jobs.bind_idempotency(
                        s, claim.owner, claim.key, job_id, digest, claimed_at=claim.claimed_at
                    )
            return admission

        admission = await self.database.run("jobs.submit", commit)
        if not admission.admitted:
            raise limits.refusal(
                admission, job_limits, caller.tier, now, self.settings.jobs.busy_retry_after_s
            )
        await self.dispatcher.send([Work("plan", job_id)])
        return Submitted(row, files, False, resolved.headers, shown)

    async def _undo(self, job_id: str, claim: Claim | None) -> None:
        """A failed submission keeps nothing: its key and its stored files (shielded)."""
        await idempotency.drop(self.database, claim)

        def delete() -> None:
            self.storage.delete_prefix(job_prefix(job_id))

        with contextlib.suppress(OSError):  # else the retention sweep takes the orphan
            await asyncio.shield(anyio.to_thread.run_sync(delete))

    # -- reading, cancelling ----------------------------------------------------------

    async def notifications(self, job_id: str) -> list[dict[str, Any]]:
        """Each delivery of the job's events (its status shows them)."""
        return [] if self.notify is None else await self.notify.job_notifications(job_id)

    def _owner(self, caller: Principal) -> str | None:
        return None if caller.is_admin else caller.owner

    async def detail(self, caller: Principal, job_id: str) -> tuple[JobRow, list[JobFileRow]]:
        """The job and its files; 404 unless the caller owns it (or is an admin)."""
        owner = self._owner(caller)

        async def read(s: AsyncSession) -> tuple[JobRow | None, list[JobFileRow]]:
            found = await jobs.owned(s, job_id, owner)
            return found, (await jobs.files(s, job_id) if found is not None else [])

        job, files = await self.database.run("jobs.get", read)
        if job is None:
            raise NotFound(f"no job {job_id!r}", details={"job_id": job_id[:64]})
        return job, files

    async def find(self, caller: Principal, job_id: str) -> JobRow | None:
        """The job, None when the caller may not see it (or it is gone)."""
        owner = self._owner(caller)
        return await self.database.run("jobs.get", lambda s: jobs.owned(s, job_id, owner))

    async def done_chunks(self, caller: Principal, job_id: str) -> tuple[JobRow, list[DoneChunk]]:
        owner = self._owner(caller)

        async def read(s: AsyncSession) -> tuple[JobRow | None, list[DoneChunk]]:
            found = await jobs.owned(s, job_id, owner)
            return found, (await jobs.done_chunks(s, job_id) if found is not None else [])

        job, chunks = await self.database.run("jobs.done_chunks", read)
        if job is None:
            raise NotFound(f"no job {job_id!r}", details={"job_id": job_id[:64]})
        return job, chunks

    async def listing(
        self,
        *,
        owner: str | None,
        states: Sequence[str] | None,
        model: str | None,
        after: tuple[float, str] | None,
        limit: int,
    ) -> tuple[list[tuple[JobRow, list[JobFileRow]]], bool]:
        """A page of jobs (newest first) with their files; True when more follow."""

        async def read(s: AsyncSession) -> list[tuple[JobRow, list[JobFileRow]]]:
            rows = await jobs.page(
                s, owner=owner, states=states, model=model, after=after, limit=limit + 1
            )
            return [(row, await jobs.files(s, row.id)) for row in rows]

        found = await self.database.run("jobs.page", read)
        return found[:limit], len(found) > limit

    async def cancel(self, caller: Principal, job_id: str) -> tuple[JobRow, list[JobFileRow], int]:
        """queued → cancelled at once; running → cancelling (cancelled here when no chunk
        runs, else by its last chunk or the reconciler): 202. Already cancelling or
        cancelled: 200 as is. Finished: 409 job_finished."""
        owner = self._owner(caller)
        now = self.clock()
        retention_s = float(self.settings.jobs.retention_s)

        async def work(s: AsyncSession) -> tuple[JobRow | None, int]:
            if not await jobs.lock_job(s, job_id):
                return None, 404
            job = await jobs.owned(s, job_id, owner)
            if job is None or job.state in ("succeeded", "failed", "cancelling", "cancelled"):
                return job, 200
            # A running job with no chunk under a live lease has nothing to wait for.
            stop_now = job.state == "queued" or (
                await jobs.transition(s, job_id, "cancelling", now)
                and not await _runs(s, job_id, now)
            )
            if stop_now:
                await jobs.transition(s, job_id, "cancelled", now, retention_s=retention_s)
            return await jobs.job(s, job_id), 202

        job, status = await self.database.run("jobs.cancel", work)
        if job is None:
            raise NotFound(f"no job {job_id!r}", details={"job_id": job_id[:64]})
        if job.state in ("succeeded", "failed"):
            raise JobFinished(f"job {job_id!r} has already {job.state}")
        _, files = await self.detail(caller, job_id)
        return job, files, status


async def _runs(session: AsyncSession, job_id: str, now: float) -> bool:
    """A chunk of the job is held under a live lease (it will commit, then finish)."""
    c = jobs.CHUNKS.c
    found = await session.execute(
        select(c.idx).where(c.job_id == job_id, c.state == "running", c.lease_until >= now).limit(1)
    )
    return found.first() is not None
