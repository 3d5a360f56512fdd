"""``loyalty keys rotate``: re-encrypt members' personal data with the current key."""

from __future__ import annotations

import click
from rich.progress import BarColumn, Progress, TextColumn

from core.settings import get_settings
from loyalty.cli import cli, console, errors


@cli.group()
def keys() -> None:
    """Personal-data keys: see the README's "Personal data" section."""


@keys.command()
@click.option("--batch", default=1000, show_default=True, help="Members re-encrypted per transaction.")
def rotate(batch: int) -> None:
    """Re-encrypt every member's email, phone and names with the first key of LOYALTY_DATA_KEYS,
    and recompute the look-up hashes with LOYALTY_LOOKUP_KEY.

    Run it after putting a new key first in LOYALTY_DATA_KEYS (the old ones after it); then the old
    keys can be removed. Safe to run again: it only rewrites.

    Example: LOYALTY_DATA_KEYS=new,old loyalty keys rotate
    """
    from sqlalchemy import func, select, update

    from models.db import transaction
    from models.member import Member
    from models.personal_data import lookup_columns
    from workers.runtime import build_runtime

    runtime = build_runtime(get_settings(), check_keys=False)  # it repairs what the start-up check refuses
    with runtime.sessions() as session:
        total = session.scalar(select(func.count()).select_from(Member))
    done, last_id = 0, 0
    with Progress(TextColumn("Re-encrypting"), BarColumn(), TextColumn("{task.completed}/{task.total} members"),
                  console=errors, transient=True) as progress:
        task = progress.add_task("rotate", total=total)
        while True:
            with transaction(runtime.sessions) as session:
                rows = session.execute(
                    select(Member.id, Member.email, Member.phone, Member.first_name, Member.last_name)
                    .where(Member.id > last_id).order_by(Member.id).limit(batch)
                ).all()
                for row in rows:  # decrypted on the way out, encrypted with the current key on the way in
                    session.execute(update(Member).where(Member.id == row.id).values(
                        email=row.email, phone=row.phone, first_name=row.first_name, last_name=row.last_name,
                        **lookup_columns(row.email, row.phone)))
            if not rows:
                break
            last_id = rows[-1].id
            done += len(rows)
            progress.update(task, completed=done)
    console.print(f"Re-encrypted the personal data of {done} member(s) with the current key.")
