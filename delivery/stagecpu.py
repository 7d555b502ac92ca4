"""CPU time per pipeline stage, measured in the thread that runs the stage.

A stage's time is taken once per chunk (``time.thread_time`` around the stage's loop over the
chunk), never per row, so the clock costs a few microseconds a chunk. Worker processes send their
chunk's figures back with its rows; the writer thread keeps its own clock; the runner adds them up.
What no stage claims (interpreter start, imports, worker start-up, pickling between processes)
is the difference between a process tree's total CPU and the sum: ``civicmail bench pipeline``
prints it as "other".
"""
from __future__ import annotations

import resource
import time

#: every stage the clock knows, in pipeline order (what `drop run --stage-cpu` prints), then what
#: no stage claimed while the drop ran: in the drop's process (its other threads: the process
#: pool's result and feeder threads, pickling, the heartbeat) and in the worker processes
#: (receiving and pickling chunks, start-up)
STAGES = ("read", "validate", "match", "consent", "render", "compose", "sign", "structure", "transfer", "blobs",
          "write", "commit", "report", "main-other", "worker-other")

now = time.thread_time


def process_tree_cpu() -> tuple[float, float]:
    """(CPU seconds of this process, of its finished and waited-for children), user + system."""
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, children.ru_utime + children.ru_stime


class StageCpu:
    """Seconds of CPU per stage (a plain dict: it travels between processes as one)."""

    __slots__ = ("seconds",)

    def __init__(self, seconds: dict[str, float] | None = None) -> None:
        self.seconds: dict[str, float] = dict(seconds or {})

    def add(self, stage: str, since: float) -> float:
        """Charge ``stage`` the thread's CPU since ``since`` (a ``now()``); returns the new now."""
        t = now()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + (t - since)
        return t

    def merge(self, other: "StageCpu | dict[str, float]") -> None:
        for stage, s in (other.seconds if isinstance(other, StageCpu) else other).items():
            self.seconds[stage] = self.seconds.get(stage, 0.0) + s

    def add_rest(self, started: tuple[float, float], workers: "StageCpu") -> None:
        """Add the workers' stages, and what no stage claimed since ``started`` (a
        ``process_tree_cpu()``) in this process (every stage here is this process's) and in the
        workers (finished by now: a pool's workers are waited for when it shuts down)."""
        mine, children = process_tree_cpu()
        self.seconds["main-other"] = max(0.0, mine - started[0] - self.total)
        if workers.seconds:
            self.seconds["worker-other"] = max(0.0, children - started[1] - workers.total)
        self.merge(workers)

    @property
    def total(self) -> float:
        return sum(self.seconds.values())

    def lines(self, notices: int) -> list[tuple[str, str, str]]:
        """(stage, CPU seconds, ms per notice) for every stage measured, in pipeline order."""
        per = max(notices, 1)
        return [(stage, f"{self.seconds[stage]:.2f}", f"{1000 * self.seconds[stage] / per:.4f}")
                for stage in STAGES if stage in self.seconds]
