"""The worker's process leaves what start-up built out of the cycle collector's full collections
(``gc.freeze``), and still collects the garbage messages make."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REDIS_URL

ROOT = Path(__file__).resolve().parents[2]
PROBE = """
import gc
import workers.main
frozen = gc.get_freeze_count()

class Cycle:
    pass

gc.disable()  # so that the collection below is the one that finds them
for _ in range(1000):
    a, b = Cycle(), Cycle()
    a.other, b.other = b, a
del a, b
print(frozen, gc.collect())
"""


def test_the_worker_module_freezes_its_start_and_still_collects_cycles(env):
    done = subprocess.run([sys.executable, "-c", PROBE], env={**os.environ, **env, "REDIS_URL": REDIS_URL},
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    frozen, collected = (int(n) for n in done.stdout.split()[-2:])
    assert frozen > 10_000  # modules, the runtime, campaigns, tables
    assert collected >= 2000  # the cycles made after start are collected as before
