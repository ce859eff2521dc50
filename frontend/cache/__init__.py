"""Response caching for deterministic model outputs: per item, per model version and
artifact digest, per tenant by default, with single-flight for concurrent misses."""
