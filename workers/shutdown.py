"""A second SIGTERM must not kill a worker process that is finishing its messages.

On Heroku (every process of the dyno gets SIGTERM) and under honcho (the whole process group gets
it), dramatiq's worker processes receive SIGTERM twice: from the platform, and a moment later from
dramatiq's main process, which forwards it. dramatiq takes a second signal as "kill now" and exits
without finishing the message in hand, which leaves a delivery in ``sending`` (later marked
``unknown``) although there was time to finish it. So in a worker process, only the first SIGTERM
is passed on to dramatiq's handler; the platform's SIGKILL (30 s after SIGTERM on Heroku) still
ends a worker that is truly stuck.

The first SIGTERM also sets :data:`stopping`: a delivery batch checks it between messages and hands
the ids it has not started back to the queue, so the worker stops within a message's time, not a
batch's.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

import structlog

log = structlog.get_logger("loyalty.worker")

#: Set when this worker process has been asked to stop.
stopping = threading.Event()


def pass_on_first_sigterm_only() -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    previous = signal.getsignal(signal.SIGTERM)
    if not callable(previous):  # not inside dramatiq's worker process: nothing to guard
        return
    received = False

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        nonlocal received
        if received:
            log.info("worker.sigterm_again", detail="already stopping: finishing the messages in hand")
            return
        received = True
        stopping.set()
        previous(signum, frame)

    signal.signal(signal.SIGTERM, on_sigterm)
