"""Model versions and routing: version status, gradual rollout, sticky A/B experiments,
shadow traffic."""
