"""Which version answers a request, and the routing configuration every worker shares.

Defaults come from the routing file (or, without one, every served version stable and
the highest the default). Admin changes are stored in SQL (one row per routed model, and
a history row and an audit entry per change, in one transaction), then announced: the
writer puts a new random token under `routing:changed` in the state store. Every worker
reads that token every `poll_s` (0.5 s: one cheap GET) and reloads the routing from SQL
when it changed, so a change reaches every worker and replica within a second. Every
`reload_s` each worker reloads from SQL regardless, so a lost announcement (Redis down
or flushed at the wrong moment) only delays a change; nothing of it lives in Redis."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from asyncio import Lock
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from ..catalog import Catalog, ServedModel
from ..db import audit
from ..db import routing as stored_routing
from ..db.database import Database
from ..db.tables import RoutingHistoryRow
from ..errors import DatabaseUnavailable, StateUnavailable, VersionRetired
from ..state.store import StateStore
from .assign import Assigner
from .config import ModelRouting, RoutingConfig

log = logging.getLogger("infergate.routing")
CHANGED = "routing:changed"  # a random token, replaced at every change
RELOAD_S = 5.0


@dataclass(frozen=True, slots=True)
class Decision:
    version: int
    policy: str  # explicit | default | rollout | experiment
    experiment: str | None = None
    variant: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


def load_file(path: Path | None) -> RoutingConfig:
    if path is None:
        return RoutingConfig()
    return RoutingConfig.model_validate(json.loads(path.read_text()))


class Router:
    def __init__(
        self,
        catalog: Catalog,
        defaults: RoutingConfig,
        store: StateStore,
        assigner: Assigner,
        poll_s: float = 0.5,
        database: Database | None = None,
        reload_s: float = RELOAD_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._catalog = catalog
        self._store = store
        self._assigner = assigner
        self._poll_s = poll_s
        self._db = database  # None: no admin changes, the file's defaults only
        self._reload_s = reload_s
        self._clock = clock
        # One load-and-apply at a time: a poll that read SQL before an admin change was
        # committed must not apply its older snapshot over the change.
        self._lock = Lock()
        self._token: bytes | None = None  # the last announcement this worker acted on
        self._reload_at = float("-inf")  # the first sync always reads SQL
        self._applied: dict[str, Any] = {}  # model -> the stored routing in `table`
        self._rejected: dict[str, Any] = {}  # model -> stored routing that did not validate
        self._unreadable: str | None = None  # the last error reading the rows, logged once
        self._defaults = {
            name: (defaults.models.get(name) or ModelRouting())
            .model_copy(deep=True)
            .check(name, self._served(name))
            for name in catalog.names()
        }
        self.table: dict[str, ModelRouting] = dict(self._defaults)

    def _served(self, model: str) -> list[str]:
        return [str(v) for v in sorted(self._catalog.get(model).cards)]

    def validate(self, model: str, routing: ModelRouting) -> ModelRouting:
        self._catalog.get(model)
        return routing.model_copy(deep=True).check(model, self._served(model))

    # --- shared configuration -------------------------------------------------------------

    async def sync(self) -> bool:
        """Reload from SQL when another worker announced a change, or when the periodic
        reload is due; True when this worker's table changed. The state store being down
        is survived here (the periodic reload still runs), and so is a stored routing
        that cannot be used (logged once); DatabaseUnavailable is raised (the watch loop
        retries at the next poll)."""
        async with self._lock:
            try:
                token = await self._store.get(CHANGED)
            except StateUnavailable:
                token = self._token  # unknown: no reload for it, the periodic one still runs
            now = self._clock()
            if token == self._token and now < self._reload_at:
                return False
            try:
                stored = await self._load()
            except ValueError as exc:  # a row that is not JSON (SQLite edited by hand)
                if str(exc) != self._unreadable:
                    log.warning("stored routing unreadable", extra={"error": str(exc)[:500]})
                self._unreadable = str(exc)
                return False  # the last good table keeps serving; the next poll retries
            self._unreadable = None
            self._token, self._reload_at = token, now + self._reload_s
            return self._apply(stored)

    async def _load(self) -> dict[str, Any]:
        if self._db is None:
            return {}
        return await self._db.run("routing.load", stored_routing.load)

    def _apply(self, stored: dict[str, Any]) -> bool:
        """Take each served model's stored routing (absent: the file's defaults) into the
        table. One that no longer validates (a version since removed, a malformed row)
        leaves that model on its last good routing, and is logged once, not every poll."""
        table = dict(self.table)
        changed = False
        for name in self._catalog.names():
            config = stored.get(name)
            if config == self._applied.get(name):
                self._rejected.pop(name, None)
                continue
            if config is None:
                chosen = self._defaults[name]
            else:
                try:
                    chosen = self.validate(name, ModelRouting.model_validate(config))
                except ValueError as exc:  # pydantic's ValidationError is one too
                    if self._rejected.get(name) != config:
                        log.warning(
                            "stored routing not applied",
                            extra={"model": name, "error": str(exc)[:500]},
                        )
                    self._rejected[name] = config
                    continue
            table[name] = chosen
            self._rejected.pop(name, None)
            if config is None:
                self._applied.pop(name, None)
            else:
                self._applied[name] = config
            changed = True
        if changed:
            self.table = table
        return changed

    async def watch(self) -> None:
        failing: str | None = None
        while True:
            try:
                await self.sync()
                failing = None
            except (StateUnavailable, DatabaseUnavailable):
                pass  # an outage: counted by its breaker, retried at the next poll
            except Exception as exc:  # never end the loop: no later change would be seen
                if type(exc).__name__ != failing:
                    log.error(
                        "routing reload failed",
                        extra={"error": type(exc).__name__, "detail": str(exc)[:300]},
                    )
                failing = type(exc).__name__
            await asyncio.sleep(self._poll_s)

    async def set_model(
        self,
        model: str,
        routing: ModelRouting | None,
        *,
        actor: str,
        request_id: str | None,
    ) -> ModelRouting:
        """Store a model's routing (None: back to the file's defaults), with its history
        row and audit entry in the same transaction; applied here at once, announced to
        every other worker. ValueError: it names versions that cannot serve."""
        if self._db is None:
            raise RuntimeError("this router has no database: routing changes cannot be stored")
        if routing is None:
            self._catalog.get(model)
            config = None
        else:
            config = self.validate(model, routing).model_dump(mode="json")
        action = "routing.update" if config is not None else "routing.reset"

        async def write(session: AsyncSession) -> dict[str, Any]:
            entry = await stored_routing.save(
                session, model, config, actor=actor, request_id=request_id
            )
            audit.add(
                session,
                actor=actor,
                action=action,
                target=f"model:{model}",
                request_id=request_id,
                details={"history_id": entry.id},
            )
            return await stored_routing.load(session)  # what every worker will now see

        async with self._lock:
            try:
                stored = await self._db.run("routing.save", write)
            except IntegrityError:
                # Another admin stored this model's first routing at the same moment: once
                # more, now seeing (and recording as `previous`) theirs.
                stored = await self._db.run("routing.save", write)
            self._apply(stored)
            # `_token` stays as it was: the next poll reloads once more, which also picks
            # up a change another worker committed while this one was being written.
        await self._announce()
        return self.table[model]

    async def _announce(self) -> None:
        try:
            await self._store.put(CHANGED, secrets.token_hex(16).encode())
        except StateUnavailable:
            log.warning(
                "routing change stored but not announced: the other workers apply it at"
                " their next periodic reload",
                extra={"reload_s": self._reload_s},
            )

    async def history(
        self, model: str, *, limit: int, before: int | None = None
    ) -> list[RoutingHistoryRow]:
        """`model`'s routing changes, newest first (404 for a model not served)."""
        self._catalog.get(model)
        if self._db is None:
            return []
        db = self._db
        return await db.run(
            "routing.history",
            lambda session: stored_routing.history(session, model, limit=limit, before=before),
        )

    # --- decisions ------------------------------------------------------------------------

    def route(self, model: ServedModel, requested: str | None, subject: str) -> Decision:
        routing = self.table[model.name]
        if requested:
            version = self._catalog.resolve_version(model, requested)  # 404 / 422
            return self._decide(model.name, routing, version, "explicit")
        if routing.experiment is not None:
            name = self._assigner.variant(model.name, routing.experiment, subject)
            variant = routing.experiment.variants[name]
            return self._decide(
                model.name,
                routing,
                int(variant.version),
                "experiment",
                routing.experiment.name,
                name,
            )
        if routing.rollout is not None and self._assigner.in_rollout(
            model.name, routing.rollout, subject
        ):
            return self._decide(model.name, routing, int(routing.rollout.version), "rollout")
        assert routing.default is not None
        return self._decide(model.name, routing, int(routing.default), "default")

    def _decide(
        self,
        model: str,
        routing: ModelRouting,
        version: int,
        policy: str,
        experiment: str | None = None,
        variant: str | None = None,
    ) -> Decision:
        status = routing.status(str(version))
        if status.status == "retired":
            replacement = status.replacement or routing.default
            raise VersionRetired(
                f"model {model!r} version {version} is retired; use version {replacement}",
                {"replacement": replacement},
            )
        headers: dict[str, str] = {}
        if status.status == "deprecated":
            headers["Deprecation"] = "true"
            if status.sunset:
                headers["Sunset"] = status.sunset
            successor = status.replacement or routing.default
            if successor and successor != str(version):
                headers["Link"] = (
                    f'</v1/models/{model}/versions/{successor}/predict>; rel="successor-version"'
                )
        return Decision(version, policy, experiment, variant, headers)
