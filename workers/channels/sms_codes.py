"""What a Twilio error code means for a delivery and for the member (pure: no SDK).

Apart from the channel (``workers/channels/sms.py``) so that the status callback, in the web process
and in every worker, sorts a code without importing the Twilio SDK and ``requests`` (about 60 ms of
a start); the SDK is imported only where Twilio is configured (``workers/runtime.py``).
"""

from __future__ import annotations

import re

from models.member import ContactStatus
from workers.channels.base import PermanentFailure, RetryableFailure, Withdrawal

OPTED_OUT, INVALID_NUMBER, NOT_MOBILE = 21610, 21211, 21614
_NUMBER = re.compile(r"\+?\d[\d ().-]{5,}\d")


def masked(text: str) -> str:
    return _NUMBER.sub("<number>", text or "")


def failure_for_code(code: int | None, status: int | None, text: str) -> PermanentFailure | RetryableFailure:
    """The failure a Twilio error code means, with what it teaches about the member.

    Shared by the synchronous answer and the status callback (a Messaging Service may accept a
    message and report 21610 or 21614 later)."""
    detail = f"twilio {status or '-'} {code or '-'}: {masked(text)}"[:500]
    if code == OPTED_OUT:
        return PermanentFailure("sms_opted_out", detail, withdraws=Withdrawal("sms", f"twilio:{OPTED_OUT}"))
    if code == INVALID_NUMBER:
        return PermanentFailure("sms_invalid_number", detail, {"phone_status": ContactStatus.INVALID})
    if code == NOT_MOBILE:
        return PermanentFailure("sms_not_mobile", detail, {"phone_status": ContactStatus.UNREACHABLE})
    if status is not None and (status == 429 or code == 20429 or status >= 500):
        return RetryableFailure("sms_provider_busy" if status == 429 else "sms_provider_error", detail)
    if status in (401, 403):
        return RetryableFailure("sms_auth_failed", detail)
    return PermanentFailure("sms_rejected", detail)
