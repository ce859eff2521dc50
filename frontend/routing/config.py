"""The routing configuration per model, validated against the catalog.

    {"models": {"intent": {
        "default": "1",
        "versions": {"1": {"status": "stable"},
                     "2": {"status": "canary"}},
        "rollout": {"version": "2", "percent": 10, "allow": ["user:ab12"], "block": []},
        "experiment": {"name": "intent-lr-vs-svc",
                       "variants": {"lr": {"version": "1", "weight": 50},
                                    "svc": {"version": "2", "weight": 50}}},
        "shadow": {"version": "2", "percent": 20}}}}

Precedence for a request: an explicit version (path or X-Model-Version) when it is
servable; else the experiment (if any); else the rollout; else the default."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

Status = Literal["stable", "canary", "deprecated", "retired"]


class _Strict(BaseModel):
    """Also a request body (PUT /v1/admin/routing/{model}): no type coercion, as for every
    request model (versions are strings, `"percent": "10"` or `true` is refused)."""

    model_config = ConfigDict(strict=True)


class VersionPolicy(_Strict):
    status: Status = "stable"
    sunset: str | None = Field(None, description="HTTP-date after which it is retired")
    replacement: str | None = Field(None, description="The version to move to")


class Rollout(_Strict):
    version: str = Field(description="The canary version")
    percent: float = Field(ge=0, le=100)
    allow: list[str] = Field(default_factory=list, max_length=10_000)
    block: list[str] = Field(default_factory=list, max_length=10_000)


class Variant(_Strict):
    version: str
    weight: float = Field(gt=0)


VariantName = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class Experiment(_Strict):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    # By name (names are unique by construction); buckets are laid out in name order, so
    # the JSON's key order never moves anyone.
    variants: dict[VariantName, Variant] = Field(min_length=2, max_length=10)

    def ordered(self) -> list[tuple[str, Variant]]:
        return sorted(self.variants.items())


class Shadow(_Strict):
    version: str
    percent: float = Field(gt=0, le=100)


class ModelRouting(_Strict):
    default: str | None = None
    versions: dict[str, VersionPolicy] = Field(default_factory=dict)
    rollout: Rollout | None = None
    experiment: Experiment | None = None
    shadow: Shadow | None = None

    def status(self, version: str) -> VersionPolicy:
        return self.versions.get(version, VersionPolicy())

    def check(self, model: str, served: list[str]) -> ModelRouting:
        """Every version named exists and can take traffic; a default is chosen."""
        for version in self.versions:
            if version not in served:
                raise ValueError(f"{model}: version {version} is not served")
        live = [v for v in served if self.status(v).status != "retired"]
        if not live:
            raise ValueError(f"{model}: every version is retired")
        named = [("default", self.default)] if self.default else []
        if self.rollout:
            named.append(("rollout", self.rollout.version))
        if self.experiment:
            named += [(f"variant {n}", v.version) for n, v in self.experiment.variants.items()]
        if self.shadow:
            named.append(("shadow", self.shadow.version))
        for what, version in named:
            if version not in live:
                raise ValueError(f"{model}: {what} names version {version}, not servable")
        for version, policy in self.versions.items():
            if policy.replacement is not None and policy.replacement not in live:
                raise ValueError(f"{model}: replacement of {version} is not servable")
        if self.default is None:
            stable = [v for v in live if self.status(v).status == "stable"] or live
            self.default = max(stable, key=int)
        return self


class RoutingConfig(_Strict):
    models: dict[str, ModelRouting] = Field(default_factory=dict)
