"""``loyalty coupons export``: the codes no shop has yet, as a CSV for the shop's import.

With a shop's admin API configured, codes are made in the shop before any message carries them and
nothing is left to export; without one, the codes are recorded and this writes them.
"""

from __future__ import annotations

import csv
import sys

import click

from core.errors import InputError
from loyalty.cli import cli, runtime_for_cli
from loyalty.cli import plain as console
from loyalty.commands.shop import _since


@cli.group()
def coupons() -> None:
    """The discount codes the program hands out (win-back coupons, redeemed points)."""


@coupons.command("export")
@click.option("--since", metavar="DATE", help="Only the codes made since this day (YYYY-MM-DD, UTC) or instant. "
              "Default: every code no shop has yet.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True), default="-", show_default=True,
              help="The CSV file to write; - for the standard output.")
def coupons_export(since: str | None, output: str) -> None:
    """Write the codes not created in a shop as CSV (WooCommerce's coupon fields), and mark them exported.

    Example: loyalty coupons export --since 2027-04-01 -o coupons.csv
    """
    from models.db import transaction
    from workers.coupons import EXPORT_COLUMNS, export_rows

    start = _since(since)
    runtime = runtime_for_cli()
    with transaction(runtime.sessions) as session:
        rows = export_rows(session, start, runtime.settings.default_timezone)
        try:
            target = sys.stdout if output == "-" else open(output, "w", encoding="utf-8", newline="")  # noqa: SIM115
        except OSError as error:
            raise InputError(f"{output} cannot be written ({error.strerror}); choose another file with -o.") from None
        try:
            writer = csv.DictWriter(target, fieldnames=EXPORT_COLUMNS, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
        finally:
            if target is not sys.stdout:
                target.close()
    if output != "-":
        console.print(f"{len(rows)} code(s) written to {output}.")
