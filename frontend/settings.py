"""Typed settings from the environment (prefix INFERGATE_, nested with __), validated.

INFERGATE_TRITON__URL=127.0.0.1:8001
INFERGATE_TRITON__TIMEOUTS='{"intent": 2.5}'
INFERGATE_LIMITS__MAX_BATCH_ITEMS=128
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_SECRET = "dev-only-secret-change-me"


class TritonSettings(BaseModel):
    url: str = "127.0.0.1:8001"
    # Seconds; every call has a deadline. Per-model overrides in `timeouts`.
    default_timeout_s: float = Field(10.0, gt=0, le=600)
    timeouts: dict[str, float] = Field(default_factory=dict)
    health_timeout_s: float = Field(1.0, gt=0, le=30)
    # Retries only for UNAVAILABLE before the request reached Triton (connect failures).
    connect_retries: int = Field(1, ge=0, le=5)
    # gRPC reconnect backoff: the default grows to 120 s, which would keep the frontend
    # failing long after Triton is back (RELIABILITY row 6).
    max_reconnect_backoff_ms: int = Field(1000, ge=100)
    # Models that must be ready for /health/ready; others only degrade it. Empty: all.
    required_models: list[str] = Field(default_factory=list)
    # Where the generated repository's model cards are read from.
    model_repository: Path = Path("model_repository")

    def timeout_for(self, model: str) -> float:
        return self.timeouts.get(model, self.default_timeout_s)


class RedisSettings(BaseModel):
    url: SecretStr | None = None  # None: in-process state (single worker only)
    socket_timeout_s: float = Field(0.25, gt=0, le=10)
    connect_timeout_s: float = Field(0.25, gt=0, le=10)


class LimitSettings(BaseModel):
    max_body_bytes: int = Field(1 << 20, ge=1024)
    max_json_depth: int = Field(64, ge=2, le=512)
    max_batch_items: int = Field(256, ge=1, le=256)  # Triton's max_batch_size is 256
    max_input_chars: int = Field(20_000, ge=1)
    max_batch_chars: int = Field(1_000_000, ge=1)
    max_top_k: int = Field(20, ge=1)


class CorsSettings(BaseModel):
    allow_origins: list[str] = Field(default_factory=list)  # empty: CORS off
    allow_credentials: bool = False

    @model_validator(mode="after")
    def no_wildcard_with_credentials(self) -> CorsSettings:
        if self.allow_credentials and "*" in self.allow_origins:
            raise ValueError("CORS: '*' cannot be combined with allow_credentials")
        return self


class LogSettings(BaseModel):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    json_format: bool = True


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="INFERGATE_", env_nested_delimiter="__", extra="ignore"
    )

    environment: Literal["dev", "test", "prod"] = "dev"
    secret_key: SecretStr = SecretStr(DEV_SECRET)
    triton: TritonSettings = Field(default_factory=TritonSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    cors: CorsSettings = Field(default_factory=CorsSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    # Set by `python -m frontend` when it runs several workers (metrics in files).
    prometheus_multiproc_dir: Path | None = None

    @field_validator("secret_key")
    @classmethod
    def secret_long_enough(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < 16:
            raise ValueError("secret_key must be at least 16 characters")
        return value

    @model_validator(mode="after")
    def no_default_secret_outside_dev(self) -> Settings:
        if self.environment == "prod" and self.secret_key.get_secret_value() == DEV_SECRET:
            raise ValueError("INFERGATE_SECRET_KEY must be set outside dev")
        return self
