"""CPU time per pipeline stage, measured in the thread that runs the stage.

A stage's time is taken once per chunk (``time.thread_time`` around the stage's loop over the
chunk), never per row, so the clock costs a few microseconds a chunk. Worker processes send their
chunk's figures back with its rows; the writer thread keeps its own clock; the runner adds them up.
What no stage claims (interpreter start, imports, worker start-up, pickling between processes)
is the difference between a process tree's total CPU and the sum: ``civicmail bench pipeline``
prints it as "other".
"""
from __future__ import annotations

import time

#: every stage the clock knows, in pipeline order (what `drop run --stage-cpu` prints)
STAGES = ("read", "validate", "match", "consent", "render", "compose", "sign", "structure", "transfer", "write",
          "commit", "report")

now = time.thread_time


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

    @property
    def total(self) -> float:
        return sum(self.seconds.values())

    def lines(self, notices: int) -> list[tuple[str, str, str]]:
        """(stage, CPU seconds, ms per notice) for every stage measured, in pipeline order."""
        per = max(notices, 1)
        return [(stage, f"{self.seconds[stage]:.2f}", f"{1000 * self.seconds[stage] / per:.4f}")
                for stage in STAGES if stage in self.seconds]
