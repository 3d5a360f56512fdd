"""Operator command: read the bounce mailbox now (the clock does it every 5 minutes)."""

from __future__ import annotations

from core.errors import InputError
from core.settings import get_settings
from loyalty.cli import cli, console


@cli.group()
def bounces() -> None:
    """Bounces and complaints: the bounce mailbox (see the README's "Bounces and complaints")."""


@bounces.command("read")
def read() -> None:
    """Read the bounce mailbox (LOYALTY_BOUNCE_IMAP_URL) and apply what its unseen reports say.

    Example: loyalty bounces read
    """
    from models.db import engine_for, make_sessionmaker
    from workers.channels.email_feedback import FeedbackProblem
    from workers.email_bounces import read_mailbox

    settings = get_settings()
    engine = engine_for(settings)
    try:
        report = read_mailbox(settings, make_sessionmaker(engine))
    except FeedbackProblem as problem:
        raise InputError(f"{str(problem)[:1].upper()}{str(problem)[1:]}.") from None
    finally:
        engine.dispose()
    effects = ", ".join(f"{count} {effect.replace('_', ' ')}" for effect, count in sorted(report.effects.items()))
    console.print(f"Read {report.read} message(s): {report.reports} bounce or complaint report(s)"
                  + (f" ({effects})" if effects else "")
                  + (f"; {report.unreadable} could not be read (see the log)" if report.unreadable else "") + ".",
                  soft_wrap=True)
