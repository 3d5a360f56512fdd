"""The ``loyalty`` command: one CLI for marketers, support staff and operators.

Every error is one sentence on stderr and a non-zero exit code, never a traceback (set
``LOYALTY_DEBUG=1`` to see one). On the embedded default, any command creates or migrates the
SQLite database on first use. Whatever the consoles print is stripped of terminal control
characters (an ANSI escape in a member's name, a file name or a provider's error text cannot move
the cursor, recolour the terminal or rewrite what was printed before); newlines and tabs stay.
"""

from __future__ import annotations

import os
import re
import sys
from datetime import datetime

import click
from rich.console import Console, ConsoleOptions, ConsoleRenderable, RenderableType, RenderHook, RenderResult
from rich.markup import escape
from rich.segment import Segment

from core.calendar import parse_instant
from core.errors import InputError, LoyaltyError
from core.settings import get_settings

#: ANSI escape sequences (CSI, OSC, two-character), then any C0 control but tab and newline, DEL and C1.
_CONTROL = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[ -~]?"
    r"|[\x00-\x08\x0b-\x1f\x7f-\x9f]"
)


def strip_control(text: str) -> str:
    """``text`` without terminal control characters (escape sequences removed whole)."""
    return _CONTROL.sub("", text)


class _Stripped:
    """A renderable printed as its wrapped one, with control characters taken out of its text (a
    ``Text`` built by a command, which does not go through :meth:`_DataConsole.render_str`)."""

    def __init__(self, renderable: RenderableType):
        self.renderable = renderable

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        for segment in console.render(self.renderable, options):
            if segment.control is None and _CONTROL.search(segment.text):
                segment = Segment(strip_control(segment.text), segment.style)
            yield segment


class _StripControl(RenderHook):
    def process_renderables(self, renderables: list[ConsoleRenderable]) -> list[ConsoleRenderable]:
        return [_Stripped(renderable) for renderable in renderables]


class _DataConsole(Console):
    """A console that prints no terminal control characters: strings lose theirs before they are
    laid out, and any renderable's text loses what is left as it is rendered."""

    def __init__(self, **options):
        super().__init__(**options)
        self.push_render_hook(_StripControl())

    def render_str(self, text: str, **options):
        return super().render_str(strip_control(text), **options)


def _console(**options) -> Console:
    return _DataConsole(**options)


console = _console()
errors = _console(stderr=True)
#: For text that carries data (ids, subjects, reasons): no markup, no ``:emoji:`` codes, no colouring.
plain = _console(markup=False, emoji=False, highlight=False)
plain_errors = _console(stderr=True, markup=False, emoji=False, highlight=False)


class LoyaltyGroup(click.Group):
    """Turns every failure into one sentence."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except LoyaltyError as exc:
            _fail(str(exc), 2)
        except BrokenPipeError:  # the reader went away (`loyalty history ... | head`): not an error
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(0)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException, SystemExit):
            raise
        except Exception as exc:  # the last line of defence: still one sentence
            origin = _unreachable_database(exc)
            if origin is not None:
                _fail(f"The database cannot be reached ({origin}); check DATABASE_URL and that the server is running.", 3)
            if os.environ.get("LOYALTY_DEBUG"):
                raise
            _fail(f"Unexpected error: {type(exc).__name__}: {exc} (set LOYALTY_DEBUG=1 to see where).", 1)


def _unreachable_database(exc: Exception) -> str | None:
    """The driver's first line when ``exc`` is SQLAlchemy's ``OperationalError`` (the database cannot
    be reached), else None. A command that never imported SQLAlchemy cannot have raised it: the CLI
    does not import it (about 100 ms of every start, ``--help`` included) only to ask."""
    if "sqlalchemy.exc" not in sys.modules:
        return None
    from sqlalchemy.exc import OperationalError

    if not isinstance(exc, OperationalError):
        return None
    return str(exc.orig).strip().splitlines()[0] if exc.orig else "connection failed"


def _fail(message: str, code: int):
    errors.print(f"[bold red]error:[/] {escape(message)}", highlight=False, emoji=False, soft_wrap=True)
    sys.exit(code)


def instant_option(value: str | None) -> datetime:
    if value is None or value == "now":
        from models.base import utcnow

        return utcnow().replace(microsecond=0)
    try:
        return parse_instant(value)
    except ValueError:
        raise InputError(f"--at {value!r} is not an ISO 8601 instant; write it like 2027-02-28T09:30:00Z.") from None


def runtime_for_cli():
    settings = get_settings()  # a malformed variable is one sentence before the runtime's imports, not after
    from workers.runtime import build_runtime

    return build_runtime(settings)


@click.group(cls=LoyaltyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="loyalty-worker")
def cli() -> None:
    """Run a store's loyalty program: who hears what, when, over which channel, exactly once."""
    from core import logs  # structlog, about 40 ms: not for `loyalty --help`, which ends before this runs

    logs.configure_quiet()


def main() -> None:
    import loyalty.commands  # noqa: F401  (registers every command on the group)

    cli(prog_name="loyalty")


if __name__ == "__main__":
    from loyalty.cli import main as _main  # the importable module, on which the commands register

    _main()
