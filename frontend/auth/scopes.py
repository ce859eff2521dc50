"""A key's scopes: the models and inference routes it may use. Checked where a route knows
its model (the path, or the body's `model`); /v1/models lists only what a key may use."""

from __future__ import annotations

from collections.abc import Iterable

from ..errors import OutOfScope
from .principal import Principal


def require(principal: Principal, *, route: str | None, model: str | None) -> None:
    if route is not None and principal.routes is not None and route not in principal.routes:
        raise OutOfScope(
            f"this key's scopes do not include the {route!r} route",
            {"scope": "routes", "needed": route, "allowed": sorted(principal.routes)},
        )
    if model is not None and principal.models is not None and model not in principal.models:
        raise OutOfScope(
            f"this key's scopes do not include model {model!r}",
            {"scope": "models", "needed": model, "allowed": sorted(principal.models)},
        )


def visible(principal: Principal, names: Iterable[str]) -> list[str]:
    allowed = principal.models
    return [n for n in names if allowed is None or n in allowed]
