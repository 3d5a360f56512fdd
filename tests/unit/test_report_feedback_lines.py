"""The terminal report's bounce and complaint lines: what the relays reported that names no email of
ours is said, as the HTML page says it, whether or not any campaign's emails bounced."""

from __future__ import annotations

from loyalty.commands import report


def printed(feedback: dict) -> str:
    with report.console.capture() as captured:
        report._print_email_feedback({"email_feedback": feedback})
    return captured.get()


QUIET = {"campaign": "birthday", "emails_sent": 26, "bounced": 0, "hard_bounced": 0, "complaints": 0,
         "bounce_rate": 0.0, "complaint_rate": 0.0}


def test_notices_not_traced_to_an_email_are_counted_when_no_campaign_bounced():
    text = printed({"campaigns": [QUIET], "untraced": {"complaint": 1, "hard_bounce": 11}, "warnings": []})
    assert "none traced to this period's emails" in text
    assert "not traced to an email: 1 complaint, 11 hard bounce." in text


def test_and_under_the_table_when_some_did():
    bounced = {**QUIET, "bounced": 2, "hard_bounced": 1, "bounce_rate": 2 / 26}
    text = printed({"campaigns": [bounced], "untraced": {"soft_bounce": 3}, "warnings": []})
    assert "birthday" in text and "Not traced to an email: 3 soft bounce." in text


def test_without_sends_but_with_untraced_notices_they_still_show():
    assert "not traced to an email: 4 hard bounce." in printed({"campaigns": [], "untraced": {"hard_bounce": 4}})
    assert printed({"campaigns": [], "untraced": {}}) == ""
