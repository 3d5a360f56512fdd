"""Support commands: a one-off send, a member's history, show a member, record an opt-out.

Every action that changes something writes an audit row: who (``--as``, else ``$LOYALTY_ACTOR``
or ``$USER``), what, why (``--reason``) and when.
"""

from __future__ import annotations

import json

import click
from rich.table import Table

from loyalty.cli import cli, runtime_for_cli
from loyalty.cli import plain as console
from loyalty.cli import plain_errors as errors

CHANNELS = click.Choice(["email", "sms"])


def _default_actor() -> str:
    from core.settings import get_settings

    return get_settings().actor


actor_option = click.option(
    "--as", "actor", default=_default_actor, metavar="NAME",
    help="Who is acting, for the audit log (default: $LOYALTY_ACTOR or $USER).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="JSON for scripts instead of tables.")


def _echo_json(data) -> None:
    click.echo(json.dumps(data, ensure_ascii=False))


@cli.command()
@click.argument("campaign")
@click.option("--member", "member_id", required=True, metavar="ID|EMAIL|PHONE",
              help="The member: their id in the shop (external id), email address or phone number.")
@click.option("--reason", required=True, metavar="TEXT", help="Why this send is made; kept in the audit log.")
@click.option("--channel", type=CHANNELS, help="Send over this channel only (default: the campaign's first usable one).")
@click.option("--dry-run", is_flag=True, help="Render and show the message; write and send nothing.")
@click.option("--force", is_flag=True,
              help="Send again what this member already received: the same message and coupon, no new reward.")
@click.option("--grant", is_flag=True,
              help="Send a new occurrence with its own reward although the member already received one; audited.")
@actor_option
@json_option
def send(campaign: str, member_id: str, reason: str, channel: str | None, dry_run: bool, force: bool, grant: bool,
         actor: str, as_json: bool) -> None:
    """Send CAMPAIGN to one member now, through the normal pipeline (consent, rendering, ledger, reward).

    A member who already received it is refused unless --force (the same message again, no new
    reward) or --grant (a new one with its reward); consent is never overridden.

    Example: loyalty send birthday --member M0042 --reason "gift lost, ticket 1234" --as alice
    """
    from workers.one_off import send_one_off

    runtime = runtime_for_cli()
    result = send_one_off(runtime, campaign_id=campaign, member_external_id=member_id, reason=reason, actor=actor,
                          channel=channel, force=force, grant=grant, dry_run=dry_run)
    if as_json:
        _echo_json(result.as_json())
    elif dry_run:
        message = result.rendered
        assert message is not None  # send_one_off renders every dry run
        again = f" (the same message as {result.resend_of}, no new reward)" if result.resend_of else ""
        if message.state == "planned":
            console.print(f"Dry run: {result.occurrence_key} would go to {result.member} by {result.channel} "
                          f"({message.locale}){again}; nothing was written or sent.")
        else:
            why = f" ({message.reason}: {message.detail})" if message.detail else f" ({message.reason})"
            console.print(f"Dry run: {result.occurrence_key} to {result.member} by {result.channel} would end "
                          f"{message.state}{why}; nothing was written or sent.")
        if message.subject is not None:
            console.print(f"Subject: {message.subject}")
        if message.text:
            console.print(message.text)
    else:
        _print_send_outcome(result)
    if dry_run and result.rendered is not None and result.rendered.state != "planned":
        raise SystemExit(1)
    if not dry_run and result.state not in ("sent", "planned"):
        raise SystemExit(1)


def _print_send_outcome(result) -> None:
    what = f"{result.campaign} to {result.member} by {result.channel} (delivery {result.delivery_id}, {result.occurrence_key})"
    if result.state == "sent":
        reward = f"; {result.reward_points} points granted" if result.reward_points else ""
        if result.resend_of:
            reward = f"; the same message as {result.resend_of}, no new reward"
        console.print(f"Sent {what}{reward}.")
    elif result.state == "planned":
        from core.calendar import iso_utc

        console.print(f"Waiting: {what} is due at {iso_utc(result.due_at)} ({result.reason or 'quiet hours'}); "
                      "the worker sends it then.")
    else:
        why = f" ({result.reason})" if result.reason else ""
        errors.print(f"Not sent: {what} ended {result.state}{why}; see loyalty history --member {result.member}.")


@cli.command()
@click.option("--member", "member_id", required=True, metavar="ID|EMAIL|PHONE",
              help="The member: their id in the shop (external id), email address or phone number.")
@json_option
def history(member_id: str, as_json: bool) -> None:
    """One member's deliveries, points, tier and consent changes and support actions, oldest first.

    Example: loyalty history --member M0042
    """
    from services.history import get_member, member_history

    runtime = runtime_for_cli()
    with runtime.sessions() as session:
        member = get_member(session, member_id, runtime.settings.default_locale)
        events = member_history(session, member)
        header = f"{member.external_id} · {member.tier} · {member.timezone}"
    if as_json:
        for event in events:
            _echo_json({"member": member.external_id, **event.as_json()})
        return
    table = Table(title=f"History of {header}")
    for column in ("when (UTC)", "what", "detail"):
        table.add_column(column, overflow="fold")
    for event in events:
        table.add_row(event.at.strftime("%Y-%m-%d %H:%M"), event.type, event.summary)
    console.print(table)
    console.print(f"{len(events)} event(s)." if events else "Nothing has happened to this member yet.")


@cli.group()
def member() -> None:
    """Look at one member, or record their opt-out.

    Example: loyalty member show M0042
    """


@member.command("show")
@click.argument("member_id", metavar="ID|EMAIL|PHONE")
@json_option
def member_show(member_id: str, as_json: bool) -> None:
    """Who the member is, how to reach them, their consent, tier, points and activity.

    Example: loyalty member show M0042
    """
    from services.history import get_member, member_summary

    runtime = runtime_for_cli()
    with runtime.sessions() as session:
        summary = member_summary(session, get_member(session, member_id, runtime.settings.default_locale))
    if as_json:
        _echo_json(summary)
        return
    table = Table(title=f"Member {summary['member']}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for label, value in _shown_fields(summary):
        table.add_row(label, value)
    console.print(table)


def _shown_fields(s: dict) -> list[tuple[str, str]]:
    def consent(channel: str) -> str:
        c = s["consent"][channel]
        word = "yes" if c["opt_in"] else "no"
        return word + (f", since {c['at']}" if c["at"] else "") + (f" ({c['source']})" if c["source"] else "")

    expiry = s["next_expiry"]
    return [
        ("name", s["name"] or "-"),
        ("email", f"{s['email'] or '-'} ({s['email_status']})"),
        ("phone", f"{s['phone'] or '-'} ({s['phone_status']})"),
        ("locale, time zone", f"{s['locale']}, {s['timezone']}"),
        ("birthday", f"{s['birthday']} (known since {s['birthday_known_since']})" if s["birthday"] else "-"),
        ("tier", s["tier"]),
        ("joined", s["joined_at"] or "-"),
        ("email consent", consent("email")),
        ("SMS consent", consent("sms")),
        ("points", str(s["points_balance"])),
        ("next expiry", f"{expiry['points']} points on {expiry['at']}" if expiry else "-"),
        ("last order", s["last_order_at"] or "-"),
        ("deliveries", ", ".join(f"{n} {state}" for state, n in s["deliveries"].items()) or "none"),
        ("coupons", "\n".join(s.get("coupons") or []) or "none"),
    ]


@member.command("optout")
@click.argument("member_id", metavar="ID|EMAIL|PHONE")
@click.option("--channel", type=CHANNELS, required=True, help="The channel the member no longer wants.")
@click.option("--reason", required=True, metavar="TEXT", help="Why (e.g. 'asked by phone, ticket 1234'); audited.")
@actor_option
@json_option
def member_optout(member_id: str, channel: str, reason: str, actor: str, as_json: bool) -> None:
    """Record that a member withdraws consent for a channel; planned sends over it are then skipped.

    Example: loyalty member optout M0042 --channel email --reason "asked by phone" --as alice
    """
    runtime = runtime_for_cli()
    external_id, changed, at, source = opt_out(runtime.sessions, member_id, channel, reason=reason, actor=actor,
                                               default_locale=runtime.settings.default_locale)
    if as_json:
        _echo_json({"member": external_id, "channel": channel, "opt_in": False, "changed": changed,
                    "at": at, "source": source})
    elif changed:
        console.print(f"{external_id} is opted out of {channel} since {at} ({source}); "
                      "planned sends over it will be skipped, and the change is in the audit log.")
    else:
        console.print(f"{external_id} had already opted out of {channel} on {at} ({source}); nothing changed.")


def opt_out(sessions, member_id: str, channel: str, *, reason: str, actor: str,
            default_locale: str | None = None) -> tuple[str, bool, str | None, str | None]:
    """Withdraw consent for ``channel``, with an audit row: (external id, changed, since when, source).

    ``member_id`` is an external id, an email or a phone number (see :func:`services.history.get_member`).

    A member who already refused outside any import (a link, STOP, support) is left as is. One who
    merely never said yes is recorded as refusing, so that a later shop import cannot opt them in
    (imports never undo a refusal given elsewhere).
    """
    from core.calendar import iso_utc
    from core.errors import InputError
    from models.base import utcnow
    from models.consent import record_consent
    from models.db import transaction
    from services.history import get_member

    reason = reason.strip()
    if not reason:
        raise InputError("--reason is empty; say in a few words why, for the audit log.")
    now = utcnow()
    source = f"support:{actor}"[:64]
    with transaction(sessions) as session:
        member = get_member(session, member_id, default_locale)
        opted_in, since, was = (getattr(member, f"{channel}_{c}") for c in ("opt_in", "consent_at", "consent_source"))
        if not record_consent(session, member.id, channel, granted=False, source=source, at=now, actor=actor,
                              reason=reason, details={"channel": channel, "was_opted_in": bool(opted_in)},
                              over_unsaid=True):
            return member.external_id, False, iso_utc(since) if since else None, was
    return member.external_id, True, iso_utc(now), source
