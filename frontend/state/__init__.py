"""Shared state: Redis when configured (every worker and replica sees the same), or an
in-process store (one worker only). Both implement `StateStore`."""
