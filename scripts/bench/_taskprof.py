"""Where an event loop's CPU goes, by task: a trio instrument for the benches.

:class:`TaskProfile` charges the CPU time (``time.thread_time``) of every task step to
the task's name (trio names a task by its function's qualified name), the CPU spent
between steps (the scheduler: deadlines, cancellations) to ``(run loop)``, whose "steps"
are its passes, and the CPU of the I/O waits themselves (epoll) to ``(I/O wait)``.
``scale.py --task-profile`` installs one in each peer worker process and prints, for
the quiet window it measures idle CPU over, the top tasks per connected peer: what an
idle peer spends its CPU on, in its own event loop, without a sampling profiler
stopping the process (py-spy at 200 Hz doubled the idle figure it was measuring).
"""

from __future__ import annotations

import gc
import re
import time
from collections import Counter

from trio.abc import Instrument

_ADDRESS = re.compile(r" at 0x[0-9a-f]+")


def task_key(name: str) -> str:
    """A task's name without the object addresses some names carry."""
    return _ADDRESS.sub("", name)


class TaskProfile(Instrument):
    """CPU seconds and steps per task name, and the run loop's own CPU between steps."""

    def __init__(self) -> None:
        self.cpu: Counter[str] = Counter()
        self.steps: Counter[str] = Counter()
        self._began = 0.0
        self._last_end = time.thread_time()

    def before_io_wait(self, timeout: float) -> None:
        now = time.thread_time()
        self.cpu["(run loop)"] += now - self._last_end
        self._last_end = now

    def after_io_wait(self, timeout: float) -> None:  # one scheduler pass per I/O wait
        now = time.thread_time()
        self.cpu["(I/O wait)"] += now - self._last_end
        self.steps["(run loop)"] += 1
        self._last_end = now

    def before_task_step(self, task) -> None:
        now = time.thread_time()
        self.cpu["(run loop)"] += now - self._last_end
        self._began = now

    def after_task_step(self, task) -> None:
        now = time.thread_time()
        key = task_key(task.name)
        self.cpu[key] += now - self._began
        self.steps[key] += 1
        self._last_end = now

    def snapshot(self) -> dict[str, tuple[float, int]]:
        return {k: (self.cpu[k], self.steps[k]) for k in self.cpu}

    def count_gc(self) -> None:
        """Also time the cyclic garbage collector, as ``[gc gen N]`` (CPU and collections):
        part of whichever task or pass it interrupted, so counted twice in the total."""
        started = [0.0]

        def on_gc(phase: str, info: dict) -> None:
            now = time.thread_time()
            if phase == "start":
                started[0] = now
            else:
                key = f"[gc gen {info['generation']}]"
                self.cpu[key] += now - started[0]
                self.steps[key] += 1

        gc.callbacks.append(on_gc)


def difference(after: dict[str, list], before: dict[str, list]) -> dict[str, list]:
    """What ``after`` added to ``before`` (two snapshots, as JSON gives them back)."""
    out = {}
    for key, (cpu, steps) in after.items():
        cpu0, steps0 = before.get(key, (0.0, 0))
        if cpu - cpu0 > 0 or steps - steps0 > 0:
            out[key] = [cpu - cpu0, steps - steps0]
    return out
