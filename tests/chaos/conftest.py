"""Fixtures of the chaos tests: real worker processes on a Redis queue, a counting SMTP server in a
process of its own, private PostgreSQL and Redis servers for the tests that restart them.

Every scenario prints one line (expected / accepted / duplicates / missing / unknown), repeated at
the end of the run in pytest's summary.
"""

from __future__ import annotations

import pytest

from tests.support import chaos
from tests.support.chaos import ChaosRun
from tests.support.private_services import private_postgres, private_redis  # noqa: F401 (fixtures)


@pytest.fixture(autouse=True)
def tallies_in_the_report(request):
    """The scenario's tally lines go with its report, for the summary at the end (tests/conftest.py)."""
    before = len(chaos.REPORTED)
    yield
    request.node.user_properties.extend(("chaos tally", line) for line in chaos.REPORTED[before:])


@pytest.fixture
def scenario(tmp_path):
    """The moving parts of one scenario, stopped afterwards whatever happened. Ask for it last, so
    that its processes stop before the servers and the Redis namespace they use are taken away."""
    run = ChaosRun(tmp_path)
    yield run
    run.close()


@pytest.fixture
def counting_smtp(tmp_path):
    """An SMTP server in a process of its own that counts every Message-ID it accepted."""
    server = chaos.CountingSmtp(tmp_path).start()
    yield server
    server.stop()
