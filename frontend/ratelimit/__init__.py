"""Fair use: request windows per tier (limiter.py) and daily token budgets (quota.py)."""
