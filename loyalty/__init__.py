"""The loyalty marketing-automation worker: entry points (CLI, web, settings, logging)."""

__version__ = "0.1.0"
