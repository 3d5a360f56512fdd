"""How long an SMS is, in what it costs: segments, in GSM-7 or UCS-2 (pure).

A carrier bills, and a phone reassembles, an SMS in *segments*. A body written only with the GSM-7
alphabet takes 160 septets in one segment, or 153 per segment once it is split (each part carries
a header); the extension characters ``^{}\\[~]|€`` and form feed take two septets. One character
outside GSM-7 (``ç``, ``’``, an emoji) makes the whole body UCS-2: 70 UTF-16 code units in one
segment, 67 per segment once split (an emoji is two units).

``loyalty validate`` warns when a campaign's SMS renders longer than its ``max_segments``; the
sender refuses to send such a message (``failed: sms_too_long``) rather than pay for it or cut it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENDED = frozenset("^{}\\[~]|€\f")

GSM7_SINGLE, GSM7_PART = 160, 153
UCS2_SINGLE, UCS2_PART = 70, 67


@dataclass(frozen=True)
class SmsLength:
    encoding: str  # "GSM-7" or "UCS-2"
    units: int  # septets (GSM-7) or UTF-16 code units (UCS-2)
    segments: int

    def __str__(self) -> str:
        return f"{self.segments} segment{'s' if self.segments != 1 else ''} ({self.encoding}, {self.units} units)"


def is_gsm7(text: str) -> bool:
    return all(ch in GSM7_BASIC or ch in GSM7_EXTENDED for ch in text)


def measure(body: str) -> SmsLength:
    """The encoding a carrier uses for ``body`` and how many segments it makes."""
    if not body:
        return SmsLength("GSM-7", 0, 0)
    if is_gsm7(body):
        units = sum(2 if ch in GSM7_EXTENDED else 1 for ch in body)
        single, part, encoding = GSM7_SINGLE, GSM7_PART, "GSM-7"
    else:
        units = len(body.encode("utf-16-le")) // 2
        single, part, encoding = UCS2_SINGLE, UCS2_PART, "UCS-2"
    return SmsLength(encoding, units, 1 if units <= single else math.ceil(units / part))


def not_gsm7(body: str) -> list[str]:
    """The characters that force UCS-2, in order of first appearance (to say what to replace)."""
    return list(dict.fromkeys(ch for ch in body if ch not in GSM7_BASIC and ch not in GSM7_EXTENDED))
