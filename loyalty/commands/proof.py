"""``loyalty proof``: send yourself the message a member would get, marked as a proof."""

from __future__ import annotations

import json

import click

from loyalty.cli import cli, runtime_for_cli
from loyalty.cli import plain as console
from loyalty.cli import plain_errors as errors
from loyalty.commands.support import actor_option


@cli.command()
@click.argument("campaign")
@click.option("--to", "to", required=True, metavar="ADDRESS|NUMBER",
              help="Where the proof goes: your email address, or your phone number for an SMS proof.")
@click.option("--member", "member_id", metavar="ID|EMAIL|PHONE",
              help="Render what this member would get (default: the sample member of loyalty validate).")
@click.option("--channel", type=click.Choice(["email", "sms"]),
              help="The message to proof (default: the campaign's first email or SMS channel).")
@click.option("--variant", metavar="NAME", help="This A/B variant (default: the member's own; the sample member: the first).")
@actor_option
@click.option("--json", "as_json", is_flag=True, help="JSON for scripts instead of sentences.")
def proof(campaign: str, to: str, member_id: str | None, channel: str | None, variant: str | None, actor: str,
          as_json: bool) -> None:
    """Send CAMPAIGN's message, as MEMBER would get it, to your own address or number, marked [PROOF].

    It goes through the real channel, and touches neither the send ledger, nor the rewards, nor the
    frequency cap; it is audited.

    Example: loyalty proof birthday --member M0042 --to marketer@example.com
    """
    from workers.proof import send_proof

    runtime = runtime_for_cli()
    result = send_proof(runtime, campaign_id=campaign, to=to, actor=actor, member_external_id=member_id,
                        channel=channel, variant=variant)
    if as_json:
        click.echo(json.dumps(result.as_json(), ensure_ascii=False))
    else:
        who = "the sample member" if result.member == "sample" else result.member
        variant_words = f", variant {result.variant}" if result.variant else ""
        if result.state == "sent":
            console.print(f"Proof of {result.campaign} for {who} ({result.channel}, {result.locale}{variant_words}) "
                          f"sent to {result.to}; nothing was written to the send ledger.", soft_wrap=True)
            if result.subject is not None:
                console.print(f"Subject: {result.subject}", soft_wrap=True)
        else:
            errors.print(f"The proof of {result.campaign} for {who} was not sent: the {result.channel} channel answered "
                         f"{result.state} ({result.reason}).", soft_wrap=True)
    if result.state != "sent":
        raise SystemExit(1)
