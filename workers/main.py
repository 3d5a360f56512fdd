"""The ``worker`` process entry: ``dramatiq workers.main`` (see the Procfile).

Reads the settings, builds the runtime (which checks the database's schema and the personal-data
keys against stored members) and the broker, and moves the actors onto it. A problem found here
is one sentence on stderr, as the CLI prints it, and the whole worker stops with exit code 2.
"""

import gc
import multiprocessing
import os
import signal
import sys
from typing import NoReturn

import dramatiq
import structlog

from core import logs
from core.errors import LoyaltyError


def refuse_to_start(sentence: str, code: int = 2) -> NoReturn:
    """Print ``sentence`` once and stop the whole worker.

    Under ``dramatiq --processes N`` every worker process imports this module and would fail the
    same way: only the first prints, and each asks dramatiq's parent to stop (SIGTERM), so the parent
    shuts down quietly with the exit code instead of adding a line about a worker that "exited
    unexpectedly". The sentence goes straight to file descriptor 2: dramatiq redirects ``sys.stderr``
    of its workers into a pipe its parent may no longer read while it shuts down.
    """
    under_dramatiq = multiprocessing.parent_process() is not None and "dramatiq.cli" in sys.modules
    first = not under_dramatiq or multiprocessing.current_process()._identity[:1] in ((), (1,))
    if under_dramatiq:
        # The parent answers each SIGTERM with a SIGTERM to every worker process, and dramatiq's handler
        # in a worker prints "Killing worker process..." at the second: a worker that refuses hears no more.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        os.kill(os.getppid(), signal.SIGTERM)
        _tell_dramatiq_this_process_booted()  # after the SIGTERM: the parent takes it before it goes on
    if first:
        os.write(2, f"error: {sentence}\n".encode())
    os._exit(code)  # nothing of dramatiq's start-up may print more


def _tell_dramatiq_this_process_booted() -> None:
    """Set the event dramatiq's parent waits on, up to ``--worker-fork-timeout`` (10 s in the Procfile),
    before it goes on: dramatiq sets it in a ``finally`` that ``os._exit`` skips, so a refused start
    took the whole time-out to end. The event is an argument of the worker process's target
    (``dramatiq.cli.worker_process``); nothing is set when none is there."""
    from multiprocessing.synchronize import Event

    for argument in getattr(multiprocessing.current_process(), "_args", ()):
        if isinstance(argument, Event):
            argument.set()


def _start() -> dramatiq.Broker:
    from core.settings import get_settings

    settings = get_settings()  # a malformed variable is one sentence before the runtime's imports, not after
    logs.configure(settings.log_level)
    from workers.broker import build_broker, install_broker
    from workers.runtime import get_runtime
    from workers.shutdown import pass_on_first_sigterm_only

    runtime = get_runtime()  # at start, not at the first message: a wrong key or an unmigrated database stops here
    for campaign, problem in runtime.refusals().items():  # said again on each tick that evaluates it
        structlog.get_logger("loyalty.worker").error("campaign.broken", campaign=campaign, problem=problem)
    runtime.twilio_api()  # with Twilio configured: the SDK imported and its client built now, not by the first texts
    pass_on_first_sigterm_only()
    broker = install_broker(build_broker(settings))
    freeze_what_start_built()
    return broker


def freeze_what_start_built() -> None:
    """Leave what start-up built (modules, the runtime, campaigns, SQLAlchemy's tables: about 150,000
    objects that live as long as the process) out of the cycle collector's full collections.

    Without it, each full collection walks them all again: 110-320 ms of wall time each on the
    loaded benchmark machine, one or more in a run of a few hundred messages. Nothing is freed
    differently: these objects are never garbage; what messages create is collected as before."""
    gc.collect()
    gc.freeze()


try:
    broker = _start()
except LoyaltyError as exc:
    refuse_to_start(str(exc))
