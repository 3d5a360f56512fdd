"""(d) The worker's peak memory, read from ``/proc`` (no psutil needed).

:class:`TreeSampler` follows a process and all its descendants (the dramatiq main process and its
worker processes) while they work, every 100 ms:

- ``VmHWM`` of each process: the kernel's own high-water mark of its resident set, exact however
  short the peak; the headline is their **sum** over the whole worker (main process included), an
  upper bound of what the dyno holds (pages shared after ``fork`` are counted once per process);
- ``Pss`` (``/proc/<pid>/smaps_rollup``): shared pages split between the processes that share them,
  so the sum is what the processes really take together; its peak is a sampled one.

The measurement itself happens during the delivery benchmark (``benchmarks/delivery.py``), where
the worker plans the birthday tick and delivers; :func:`rows` turns the figures of every size into
table rows, and the ratio of the largest size to 100,000 members.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field

from benchmarks.common import Row

TARGET_MB = 300
TARGET_GROWTH = 1.2


def _status(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmHWM:", "VmRSS:")):
                name, value = line.split(":", 1)
                out[name] = int(value.split()[0])  # kB
    return out


def _pss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def descendants(root: int) -> list[int]:
    """``root`` and every process below it, from the parent ids in ``/proc/*/stat``."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


@dataclass
class TreeSampler:
    root: int
    interval: float = 0.1
    hwm_kb: dict[int, int] = field(default_factory=dict)  # pid → its VmHWM, last seen
    peak_pss_kb: int = 0
    peak_rss_kb: int = 0
    samples: int = 0
    cpu_ticks: dict[int, int] = field(default_factory=dict)  # pid → utime + stime, last seen
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> TreeSampler:
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self) -> None:
        pss = rss = 0
        for pid in descendants(self.root):
            try:
                status = _status(pid)
            except OSError:
                continue
            self.hwm_kb[pid] = max(self.hwm_kb.get(pid, 0), status.get("VmHWM", 0))
            try:
                self.cpu_ticks[pid] = _cpu_ticks(pid)
            except OSError:
                pass
            rss += status.get("VmRSS", 0)
            pss += _pss(pid)
        self.peak_pss_kb = max(self.peak_pss_kb, pss)
        self.peak_rss_kb = max(self.peak_rss_kb, rss)
        self.samples += 1

    def cpu_seconds(self) -> float:
        """CPU time used so far by the whole tree (a fresh reading)."""
        self.sample()
        return sum(self.cpu_ticks.values()) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> dict:
        self.sample()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        return self.figures()

    def figures(self) -> dict:
        mb = 1024
        per_process = sorted(self.hwm_kb.values(), reverse=True)
        return {
            "sum_hwm_mb": sum(per_process) / mb,
            "largest_process_hwm_mb": (per_process[0] / mb) if per_process else 0.0,
            "per_process_hwm_mb": [v / mb for v in per_process],
            "peak_pss_mb": self.peak_pss_kb / mb,
            "peak_rss_mb": self.peak_rss_kb / mb,
            "processes": len(per_process),
            "cpu_seconds": sum(self.cpu_ticks.values()) / os.sysconf("SC_CLK_TCK"),
            "samples": self.samples,
        }


def rows(figures_by_size: dict[int, dict]) -> list[Row]:
    """Table rows: each size's peak, and the growth from 100,000 members to the largest size."""
    out = []
    for size, figures in sorted(figures_by_size.items()):
        if not figures:
            out.append(Row("d. memory", f"{size:,} members", status="not measured", target=f"< {TARGET_MB} MB"))
            continue
        peak = figures["sum_hwm_mb"]
        out.append(Row(
            "d. memory", f"{size:,} members", ours=peak, unit="MB", target=f"< {TARGET_MB} MB", met=peak < TARGET_MB,
            note=(f"sum of VmHWM over {figures['processes']} processes; largest {figures['largest_process_hwm_mb']:.0f} MB;"
                  f" peak PSS {figures['peak_pss_mb']:.0f} MB"),
            details=figures,
        ))
    sizes = sorted(s for s, f in figures_by_size.items() if f)
    if 100_000 in sizes and sizes[-1] > 100_000:
        small, large = figures_by_size[100_000]["sum_hwm_mb"], figures_by_size[sizes[-1]]["sum_hwm_mb"]
        growth = large / small if small else None
        out.append(Row(
            "d. memory", f"{sizes[-1]:,} / 100,000", ours=large, floor=small, unit="MB", ratio=growth,
            target=f"≤ {TARGET_GROWTH}×", met=growth is not None and growth <= TARGET_GROWTH,
            note="growth of the peak with the member base",
        ))
    return out


def now() -> float:
    return time.monotonic()
