"""Job notifications: the outbox dispatcher, webhooks and e-mail."""
