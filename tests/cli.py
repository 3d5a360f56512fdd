"""The ``loyalty`` command run in this test process, answering like the process it stands for.

Starting ``python -m loyalty`` costs 0.1 s (``--help``) to nearly a second (a command that opens the
runtime) of imports; most CLI tests check what a command prints and writes, not how a process starts. :func:`loyalty` runs the command with click's
``CliRunner`` in the environment a subprocess would have had and returns the same
``CompletedProcess`` (return code, stdout, stderr). What a real process would print that the runner
swallows is put back: an exception that escaped the command becomes its traceback on stderr and
exit code 1, as the interpreter would. The process-wide state a command sets up (settings, the
runtime and its database engines, personal-data keys, logging) is undone afterwards, so the next test
starts as before. A handful of tests still start real processes (exit codes, no traceback, signals,
the installed console script): :func:`loyalty_process`.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import traceback
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import dramatiq
import structlog
from click.testing import CliRunner

REPO_ROOT = Path(__file__).resolve().parent.parent

#: Variables a test's environment replaces; those it leaves out are unset for the command, as for a
#: subprocess given ``{**clean, **env}``.
SERVICE_VARIABLES = ("DATABASE_URL", "REDIS_URL", "SMTP_URL")


@contextmanager
def logging_kept() -> Iterator[None]:
    """Logging put back as it was (the root logger's handlers and level, structlog's configuration)
    after code that configures it for the stream of the moment: a command's captured stderr, or a
    test's ``capsys``, is closed once done, and every later log line would fail writing to it."""
    root = logging.getLogger()
    handlers, level, config = root.handlers[:], root.level, structlog.get_config()
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        structlog.configure(**config)


def loyalty(env: Mapping[str, str], *args: str, cwd: Path | str = REPO_ROOT,
            drop: Iterable[str] = SERVICE_VARIABLES, input: str | None = None) -> subprocess.CompletedProcess:
    """``loyalty *args`` with ``env`` over this process's environment minus ``drop``, in ``cwd``."""
    import loyalty.commands  # noqa: F401  (registers every command on the group)
    import workers.runtime
    from core.settings import get_settings
    from loyalty import cli as cli_module
    from models import personal_data

    environment: dict[str, str | None] = {name: None for name in drop if name in os.environ}
    environment.update(env)
    consoles = [cli_module.console, cli_module.errors, cli_module.plain, cli_module.plain_errors]
    colours = [console._color_system for console in consoles]
    widths = [console._width for console in consoles]  # rich reads COLUMNS when a console is made
    columns = environment.get("COLUMNS", os.environ.get("COLUMNS"))
    saved_runtime = workers.runtime._runtime
    saved_keys = personal_data._ring
    saved_broker = dramatiq.broker.global_broker  # the demo installs an in-process queue of its own
    built: list = []
    original_build = workers.runtime.build_runtime

    def recording_build(*a, **k):
        runtime = original_build(*a, **k)
        built.append(runtime)
        return runtime

    old_cwd = os.getcwd()
    workers.runtime._runtime = None
    workers.runtime.build_runtime = recording_build
    get_settings.cache_clear()
    for console in consoles:
        console._color_system = None  # a pipe, as for a process whose output is captured
        console._width = int(columns) if columns and columns.isdigit() else None
    try:
        os.chdir(cwd)
        with logging_kept():
            result = CliRunner().invoke(cli_module.cli, list(args), env=environment, input=input, prog_name="loyalty",
                                        catch_exceptions=True)
    finally:
        os.chdir(old_cwd)
        workers.runtime.build_runtime = original_build
        if workers.runtime._runtime is not None and workers.runtime._runtime not in built:
            built.append(workers.runtime._runtime)
        for runtime in built:
            runtime.close()
        workers.runtime._runtime = saved_runtime
        personal_data._ring = saved_keys
        dramatiq.broker.global_broker = saved_broker
        get_settings.cache_clear()
        for console, colour, width in zip(consoles, colours, widths, strict=True):
            console._color_system, console._width = colour, width
    stderr = result.stderr
    code = result.exit_code
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        stderr += "Traceback (most recent call last):\n" + "".join(traceback.format_exception(*result.exc_info)[1:])
        code = 1
    return subprocess.CompletedProcess(["loyalty", *args], code, result.stdout, stderr)


def loyalty_process(env: Mapping[str, str], *args: str, cwd: Path | str = REPO_ROOT,
                    drop: Iterable[str] = SERVICE_VARIABLES, timeout: float = 120) -> subprocess.CompletedProcess:
    """``python -m loyalty *args`` as a real process (for the tests of what only a process shows)."""
    clean = {name: value for name, value in os.environ.items() if name not in set(drop)}
    return subprocess.run([sys.executable, "-m", "loyalty", *args], env={**clean, **env}, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)
