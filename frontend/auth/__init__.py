"""Identity: API keys, users with passwords, JWT access and refresh tokens, principals."""
