"""Resident memory of a process and its children, from Linux's /proc (no dependency).

``memory(pid)`` reads ``/proc/PID/smaps_rollup``: RSS (pages resident), PSS (each shared page
divided among the processes sharing it) and USS (pages only this process has: private clean
+ private dirty; a copy-on-write page that a forked worker has touched counts here). The
sum of USS over a parent and its forked workers plus the parent's shared pages is what the
whole tree really uses; the sum of RSS counts the shared pages once per process.

``Sampler`` polls a process and its descendants in a thread and keeps the time series.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Sampler", "children", "memory", "mib"]


def mib(n_bytes: float) -> float:
    """Bytes to MiB."""
    return n_bytes / 2 ** 20


def memory(pid: int) -> dict[str, int] | None:
    """``rss``, ``pss``, ``uss``, ``shared`` and ``swap`` in bytes (None if the process
    is gone)."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    kb: dict[str, int] = {}
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 2 and parts[0].endswith(":"):
            kb[parts[0][:-1]] = int(parts[1])
    uss = kb.get("Private_Clean", 0) + kb.get("Private_Dirty", 0)
    return {"rss": kb.get("Rss", 0) * 1024, "pss": kb.get("Pss", 0) * 1024,
            "uss": uss * 1024,
            "shared": (kb.get("Shared_Clean", 0) + kb.get("Shared_Dirty", 0)) * 1024,
            "swap": kb.get("Swap", 0) * 1024}


def children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (children first)."""
    parent: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        # the command name (field 2) may hold spaces: split after its closing parenthesis
        parent[int(d)] = int(stat[stat.rindex(")") + 2:].split()[1])
    out, frontier = [], [pid]
    while frontier:
        kids = [c for c, p in parent.items() if p in frontier]
        out += kids
        frontier = kids
    return out


@dataclass
class Sample:
    """One poll: time since start, and memory per pid (main first)."""

    t: float
    main: dict[str, int]
    workers: dict[int, dict[str, int]]


@dataclass
class Sampler:
    """Poll ``pid`` and its descendants every ``interval`` seconds in a thread."""

    pid: int
    interval: float = 1.0
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    t0: float = field(default_factory=time.perf_counter)

    def poll(self) -> Sample | None:
        """Take one sample now (also called by the thread)."""
        main = memory(self.pid)
        if main is None:
            return None
        workers = {}
        for c in children(self.pid):
            m = memory(c)
            if m is not None:
                workers[c] = m
        s = Sample(time.perf_counter() - self.t0, main, workers)
        self.samples.append(s)
        return s

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            if self.poll() is None:
                return

    def start(self) -> Sampler:
        """Start polling."""
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop polling."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def peak(self, key: str = "rss") -> int:
        """Largest ``key`` of the main process over the samples."""
        return max((s.main[key] for s in self.samples), default=0)

    def peak_total(self, key: str = "uss") -> int:
        """Largest sum of ``key`` over the main process and its workers."""
        return max((s.main[key] + sum(w[key] for w in s.workers.values())
                    for s in self.samples), default=0)
