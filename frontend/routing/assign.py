"""Sticky assignment: a subject's bucket in [0, 1) is an HMAC-SHA256 of (model, policy,
subject) under a key derived from the server secret, so it is the same in every worker,
replica and restart, cannot be predicted without the secret, and never uses Python's
salted hash(). A rollout compares the bucket with p: raising p only adds subjects."""

from __future__ import annotations

import hashlib
import hmac

from .config import Experiment, Rollout

SCALE = float(1 << 64)


class Assigner:
    def __init__(self, key: bytes) -> None:
        self._key = key

    def bucket(self, *parts: str) -> float:
        message = "\x1f".join(parts).encode()
        digest = hmac.new(self._key, message, hashlib.sha256).digest()
        return int.from_bytes(digest[:8], "big") / SCALE

    def in_rollout(self, model: str, rollout: Rollout, subject: str) -> bool:
        if subject in rollout.block:
            return False
        if subject in rollout.allow:
            return True
        # Keyed by the canary version, not p: moving p keeps every subject's bucket.
        return self.bucket(model, "rollout", rollout.version, subject) < rollout.percent / 100

    def variant(self, model: str, experiment: Experiment, subject: str) -> str:
        """The variant's name."""
        point = self.bucket(model, "experiment", experiment.name, subject)
        ordered = experiment.ordered()
        total = sum(v.weight for _, v in ordered)
        edge = 0.0
        for name, variant in ordered:
            edge += variant.weight / total
            if point < edge:
                return name
        return ordered[-1][0]
