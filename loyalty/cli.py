"""The ``loyalty`` command: one CLI for marketers, support staff and operators.

Every error is one sentence on stderr and a non-zero exit code, never a traceback (set
``LOYALTY_DEBUG=1`` to see one). On the embedded default, any command creates or migrates the
SQLite database on first use.
"""

from __future__ import annotations

import os
import sys
from datetime import datetime

import click
from rich.console import Console
from rich.markup import escape
from sqlalchemy.exc import OperationalError

from campaigns.calendar import parse_instant
from loyalty import logs
from loyalty.errors import InputError, LoyaltyError
from loyalty.settings import get_settings
from models.base import utcnow

console = Console()
errors = Console(stderr=True)
#: For text that carries data (ids, subjects, reasons): no markup, no ``:emoji:`` codes, no colouring.
plain = Console(markup=False, emoji=False, highlight=False)
plain_errors = Console(stderr=True, markup=False, emoji=False, highlight=False)


class LoyaltyGroup(click.Group):
    """Turns every failure into one sentence."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except LoyaltyError as exc:
            _fail(str(exc), 2)
        except OperationalError as exc:
            origin = str(exc.orig).strip().splitlines()[0] if exc.orig else "connection failed"
            _fail(f"The database cannot be reached ({origin}); check DATABASE_URL and that the server is running.", 3)
        except BrokenPipeError:  # the reader went away (`loyalty history ... | head`): not an error
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(0)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException, SystemExit):
            raise
        except Exception as exc:  # the last line of defence: still one sentence
            if os.environ.get("LOYALTY_DEBUG"):
                raise
            _fail(f"Unexpected error: {type(exc).__name__}: {exc} (set LOYALTY_DEBUG=1 to see where).", 1)


def _fail(message: str, code: int):
    errors.print(f"[bold red]error:[/] {escape(message)}", highlight=False, emoji=False, soft_wrap=True)
    sys.exit(code)


def instant_option(value: str | None) -> datetime:
    if value is None or value == "now":
        return utcnow().replace(microsecond=0)
    try:
        return parse_instant(value)
    except ValueError:
        raise InputError(f"--at {value!r} is not an ISO 8601 instant; write it like 2027-02-28T09:30:00Z.") from None


def runtime_for_cli():
    from workers.runtime import build_runtime

    return build_runtime(get_settings())


@click.group(cls=LoyaltyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="loyalty-worker")
def cli() -> None:
    """Run a store's loyalty program: who hears what, when, over which channel, exactly once."""
    logs.configure_quiet()


def main() -> None:
    import loyalty.commands  # noqa: F401  (registers every command on the group)

    cli(prog_name="loyalty")


if __name__ == "__main__":
    from loyalty.cli import main as _main  # the importable module, on which the commands register

    _main()
