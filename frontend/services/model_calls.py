"""What every service of a batched model shares: the model for a task (and, when it does
another, the route that serves it), the routed version, the result cache around the
Triton call, the per-variant metrics, and the answer's envelope.

    routed = calls.route(name, task, requested_version, call)
    outcome = await calls.fetch(routed, keys, compute, params, call, labels_of)
    return calls.answer(routed, body, items, clock.seconds, outcome)

inference.py (text classification, embeddings), entities.py, images.py and summaries.py
build on it; each keeps only what its task does differently."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import numpy as np
from starlette.requests import Request

from ..cache.service import CacheOutcome, Compute, ResultCache
from ..catalog import Catalog, ModelCard, ServedModel
from ..errors import InfergateError, ModelNotFound
from ..observability.metrics import Metrics
from ..routing.router import Decision, Router
from ..routing.stats import RoutingStats
from ..settings import Settings
from ..triton.client import TritonClient

CLASSIFY, EMBED = "text-classification", "feature-extraction"
TOKENS, IMAGES, SUMMARIES = "token-classification", "image-classification", "summarization"
PREDICT_ROUTE: Final = "/v1/models/{model}/predict"
# The tasks the predict route serves, and where each other task is served: named when a
# route is asked for another task's model.
PREDICT_TASKS: Final = (CLASSIFY, TOKENS, IMAGES, SUMMARIES)
ROUTES_BY_TASK: Final = {
    **{task: PREDICT_ROUTE for task in PREDICT_TASKS},
    EMBED: "/v1/embeddings",
    "text-generation": "/v1/chat/completions or /v1/completions",
}


@dataclass(frozen=True, slots=True)
class CallContext:
    account: str  # whose cache entries (tenant scope)
    bypass: bool  # the caller sent Cache-Control: no-cache / no-store
    subject: str = ""  # who routing assigns (sticky rollout / experiment buckets)


@dataclass(kw_only=True)
class Answer:
    body: dict[str, Any]
    model: str
    version: str
    items: int
    triton_seconds: float
    cache_hits: int = 0
    cacheable: bool = False
    ttl_s: int = 0
    headers: dict[str, str] = field(default_factory=dict)  # e.g. Deprecation, Sunset, Link


@dataclass(frozen=True, slots=True)
class Routed:
    """A request's model, the version routing chose, and that version's card."""

    name: str
    decision: Decision
    card: ModelCard

    @property
    def version(self) -> str:
        return str(self.decision.version)


@dataclass
class TritonClock:
    """Triton's time for a request, summed over its calls (a compute may make one)."""

    seconds: float = 0.0


def top_labels(row: np.ndarray, labels: list[str], k: int) -> list[dict[str, Any]]:
    """The k best of one row of SCORES, best first (ties in label order)."""
    best = np.argsort(-row, kind="stable")[:k]
    return [{"label": labels[j], "score": float(row[j])} for j in best]


class Predictor(Protocol):
    """A task's side of POST /v1/models/{model}/predict: `read` parses and checks the
    body (422 / 413 naming the field), `predict` answers it."""

    async def read(self, request: Request, model: ServedModel) -> Any: ...

    async def predict(
        self,
        name: str,
        requested_version: str | None,
        body: Any,
        request_id: str,
        call: CallContext,
    ) -> Answer: ...


class ModelCalls:
    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        triton: TritonClient,
        cache: ResultCache,
        router: Router,
        stats: RoutingStats,
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.triton = triton
        self.cache = cache
        self.router = router
        self.stats = stats
        self.metrics = metrics
        # When a request last came through (time.monotonic): the in-process job executor
        # yields to the online service's traffic (frontend/jobs/pacing.py).
        self.last_call_at = float("-inf")

    def called_within(self, seconds: float) -> bool:
        return time.monotonic() - self.last_call_at < seconds

    def observe(
        self, model: str, decision: Decision, seconds: float, labels: list[str] | None
    ) -> None:
        """Per-variant metrics (every routed request) and experiment statistics."""
        variant = decision.variant or ""
        outcome = "error" if labels is None else "ok"
        self.metrics.variant_requests.labels(
            model, decision.policy, variant, str(decision.version), outcome
        ).inc()
        if decision.experiment is None or decision.variant is None:
            return
        self.metrics.variant_latency.labels(model, variant).observe(seconds)
        for label in labels or ():
            self.metrics.variant_labels.labels(model, variant, label).inc()
        self.stats.record(
            decision.experiment, decision.variant, seconds, labels is None, labels or []
        )

    def model_for(self, name: str, task: str) -> ServedModel:
        """The named model if it does `task`. Another task's model is refused as the
        catalog refuses it (404 model_not_found, listing this task's models), and the
        message names the route that serves it."""
        try:
            return self.catalog.get(name, task=task)
        except ModelNotFound as exc:
            other = self.catalog.models.get(name)
            if other is None:
                raise
            route = ROUTES_BY_TASK.get(other.task, "/v1/models for what each model does")
            raise ModelNotFound(
                f"{exc.message}: it is a {other.task} model; use {route.format(model=name)}",
                details=exc.details,
            ) from None

    def route(
        self, name: str, task: str, requested_version: str | None, call: CallContext
    ) -> Routed:
        self.last_call_at = time.monotonic()
        return self.resolve(name, task, requested_version, call)

    def resolve(
        self, name: str, task: str, requested_version: str | None, call: CallContext
    ) -> Routed:
        """What `route` gives, for a call that is not one itself (a job's submission
        resolves its version once; its rows are not online traffic)."""
        model = self.model_for(name, task)
        decision = self.router.route(model, requested_version, call.subject)
        return Routed(model.name, decision, model.card(decision.version))

    async def fetch(
        self,
        routed: Routed,
        keys: Sequence[str],
        compute: Compute,
        params: dict[str, Any],
        call: CallContext,
        labels_of: Callable[[list[Any]], list[str]],
    ) -> CacheOutcome:
        """The items' values through the result cache (keyed on each item's key, the
        version's artifact digest and `params`), observed for the variant metrics:
        `labels_of(values)` names what was predicted (an error observes None)."""
        started = time.perf_counter()
        try:
            outcome = await self.cache.fetch(
                keys,
                compute,
                model=routed.name,
                version=routed.version,
                digest=routed.card.artifact.sha256,
                params=params,
                account=call.account,
                bypass=call.bypass,
            )
        except InfergateError:
            self.observe(routed.name, routed.decision, time.perf_counter() - started, None)
            raise
        elapsed = time.perf_counter() - started
        self.observe(routed.name, routed.decision, elapsed, labels_of(outcome.values))
        return outcome

    def answer(
        self,
        routed: Routed,
        body: dict[str, Any],
        items: int,
        triton_seconds: float,
        outcome: CacheOutcome,
    ) -> Answer:
        return Answer(
            body=body,
            model=routed.name,
            version=routed.version,
            items=items,
            triton_seconds=triton_seconds,
            cache_hits=outcome.hits,
            cacheable=outcome.cacheable,
            ttl_s=self.cache.ttl_for(routed.name),
            headers=routed.decision.headers,
        )
