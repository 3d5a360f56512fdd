"""The SQL rules that choose audiences and the Python rules that re-check at send time agree."""

from __future__ import annotations

import itertools

from sqlalchemy import select

from campaigns.eligibility import channel_choice_sql, choose_channel
from models.member import ContactStatus, MailchimpStatus, Member
from tests.support.members import add_members, make_member


def test_channel_choice_in_sql_and_in_python_agree_for_every_combination(pg_sessions):
    combos = list(itertools.product([True, False], [True, False],
                                    [ContactStatus.OK, ContactStatus.MISSING, ContactStatus.UNDELIVERABLE],
                                    [ContactStatus.OK, ContactStatus.INVALID],
                                    [None, MailchimpStatus.SUBSCRIBED, MailchimpStatus.REFUSED]))
    members = []
    for index, (email_opt_in, sms_opt_in, email_status, phone_status, mailchimp_status) in enumerate(combos):
        member = make_member(f"C{index:02d}", email_opt_in=email_opt_in, sms_opt_in=sms_opt_in)
        member.email_status, member.phone_status = email_status, phone_status
        member.mailchimp_status = mailchimp_status
        members.append(member)
    add_members(pg_sessions, *members)

    for channels in (["email"], ["sms"], ["email", "sms"], ["sms", "email"], ["mailchimp"], ["mailchimp", "sms"],
                     ["sms", "mailchimp", "email"]):
        channel, reason = channel_choice_sql(channels)
        with pg_sessions() as session:
            from_sql = {row.external_id: (row.channel, row.reason)
                        for row in session.execute(select(Member.external_id, channel.label("channel"), reason.label("reason")))}
            from_python = {m.external_id: choose_channel(m, channels) for m in session.scalars(select(Member))}
        assert from_sql == from_python, channels
        assert set(from_python.values()) >= {(channels[0], None), (None, "no_consent")}
        if channels[0] != "sms":  # an address that bounced for good says so, not "no usable address"
            assert (None, "email_undeliverable") in set(from_python.values()), channels
        if "mailchimp" in channels and "email" not in channels:  # refused by Mailchimp: no usable address
            assert (None, "no_usable_address") in set(from_python.values())
