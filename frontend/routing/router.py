"""Which version answers a request, and the routing configuration every worker shares.

Defaults come from the routing file (or, without one, every served version stable and
the highest the default). Admin changes are stored in the state store under
`routing:overrides`; each worker reads that key every `poll_s` (0.5 s) and rebuilds its
table when it changed, so a change reaches every worker and replica within a second."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from ..catalog import Catalog, ServedModel
from ..errors import StateUnavailable, VersionRetired
from ..state.store import StateStore
from .assign import Assigner
from .config import ModelRouting, RoutingConfig

log = logging.getLogger("infergate.routing")
OVERRIDES = "routing:overrides"


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
    ) -> None:
        self._catalog = catalog
        self._defaults = defaults
        self._store = store
        self._assigner = assigner
        self._poll_s = poll_s
        self._seen: bytes | None = None
        self._rejected: bytes | None = None  # the last stored value that could not be used
        self._overrides: dict[str, ModelRouting] = {}
        self.table: dict[str, ModelRouting] = self._build({})

    def _served(self, model: str) -> list[str]:
        return [str(v) for v in sorted(self._catalog.get(model).cards)]

    def _build(self, overrides: dict[str, ModelRouting]) -> dict[str, ModelRouting]:
        table = {}
        for name in self._catalog.names():
            chosen = overrides.get(name) or self._defaults.models.get(name) or ModelRouting()
            table[name] = chosen.model_copy(deep=True).check(name, self._served(name))
        return table

    def validate(self, model: str, routing: ModelRouting) -> ModelRouting:
        self._catalog.get(model)
        return routing.model_copy(deep=True).check(model, self._served(model))

    # --- shared configuration -------------------------------------------------------------

    async def sync(self) -> bool:
        """Read the overrides; rebuild when they changed. True when something changed."""
        raw = await self._store.get(OVERRIDES)
        if raw == self._seen:
            return False
        try:
            # Parsed inside the guard too: a stored value that is not JSON, or not a routing,
            # must not end the watch loop (every later admin change would go unseen).
            stored = json.loads(raw) if raw else {}
            if not isinstance(stored, dict):
                raise ValueError("routing overrides must be a JSON object")
            overrides = {
                name: ModelRouting.model_validate(value)
                for name, value in stored.items()
                if name in self._catalog.models
            }
            table = self._build(overrides)
        except ValueError as exc:  # e.g. a version no longer served: keep serving
            if raw != self._rejected:  # once per bad value, not every poll
                log.warning("routing overrides not applied", extra={"error": str(exc)[:500]})
            self._rejected = raw
            return False
        self.table = table
        self._seen, self._overrides, self._rejected = raw, overrides, None
        return True

    async def watch(self) -> None:
        while True:
            with contextlib.suppress(StateUnavailable):
                await self.sync()
            await asyncio.sleep(self._poll_s)

    async def set_model(self, model: str, routing: ModelRouting | None) -> ModelRouting:
        """Store a model's routing (None: back to the file's defaults) for every worker."""
        if routing is not None:
            routing = self.validate(model, routing)
        with contextlib.suppress(StateUnavailable):
            await self.sync()  # start from what the other workers see
        overrides = dict(self._overrides)
        if routing is None:
            overrides.pop(model, None)
        else:
            overrides[model] = routing
        blob = json.dumps(
            {k: v.model_dump(mode="json") for k, v in sorted(overrides.items())}, sort_keys=True
        ).encode()
        await self._store.put(OVERRIDES, blob)
        await self.sync()
        return self.table[model]

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
