"""What a kind's send-time functions receive (kept apart to avoid an import cycle)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass
class SendCheck:
    """One planned delivery, right before sending: the kind may re-check it and add template values.

    ``session`` is open for reads (e.g. the points expiring now); the kind must not write.
    """

    campaign: Any
    member: Any
    delivery: Any
    at: datetime
    session: Any
    program: Any
    secret: str = ""  # for values derived from the occurrence, such as coupon codes
