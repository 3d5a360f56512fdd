"""Logs: one structured JSON event per line on stdout, for the processes of the Procfile.

Events carry ids (member external id, delivery id, campaign), never an email address, a phone
number or a name. ``LOYALTY_LOG_LEVEL`` sets the level (``info`` by default), read and checked
with the other settings (``core/settings.py``) and passed in by each process.

Libraries log through the standard ``logging`` module (uvicorn, APScheduler, dramatiq): their
records go through the same JSON rendering, a traceback included, so a line is always one event.
As a last guard, anything that looks like an email address or a phone number, E.164 or formatted
(``+33 6 12 34 56 78``, ``(415) 555-0123``), is masked in every event with the patterns of
:mod:`core.redact` (a provider's error text may quote the address it refused).
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor

from core.redact import redact

QUIET_LIBRARIES = ("alembic",)  # "setup plugin ..." on import: noise in a process's log


def _mask(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value, email="<email>", phone="<phone>")
    if isinstance(value, dict):
        return {key: _mask(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_mask(item) for item in value]
    return value


def mask_personal_data(_logger: Any, _method: str, event_dict: EventDict) -> EventDict:
    event_dict.pop("color_message", None)  # uvicorn's copy of the message with terminal colours
    return {key: _mask(value) for key, value in event_dict.items()}


def configure(level: str = "info", *, stream: TextIO | None = None) -> None:
    """``level``: one of ``debug``, ``info``, ``warning``, ``error`` (``Settings.log_level``)."""
    numeric = logging.getLevelNamesMapping()[level.upper()]
    out = stream or sys.stdout
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    handler = logging.StreamHandler(out)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name, structlog.stdlib.ExtraAdder()],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            mask_personal_data,
            structlog.processors.JSONRenderer(default=str),
        ],
    ))
    logging.basicConfig(level=numeric, handlers=[handler], force=True)
    for noisy in ("apscheduler", "dramatiq"):
        logging.getLogger(noisy).setLevel(max(numeric, logging.INFO))
    for quiet in QUIET_LIBRARIES:
        logging.getLogger(quiet).setLevel(max(numeric, logging.WARNING))
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, mask_personal_data, structlog.processors.JSONRenderer()],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.WriteLoggerFactory(out),  # one write a line: several processes share a pipe
        cache_logger_on_first_use=False,
    )


def configure_quiet() -> None:
    """For the interactive CLI: only warnings, on stderr, so tables on stdout stay clean."""
    configure("warning", stream=sys.stderr)
