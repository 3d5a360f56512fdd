"""Channels: one small interface (``workers.channels.base.Channel``), one module per way out."""
