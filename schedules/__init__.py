"""The clock: exactly one APScheduler process that only enqueues small messages."""
