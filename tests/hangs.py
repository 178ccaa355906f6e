"""A guard for trio tests that hang: after ``HG_TEST_HANG_LIMIT`` seconds (600 by default)
the test's trio task tree is printed and the run stops, so a hang costs ten minutes and
says where it is, not the CI's whole budget in silence.

A hang here is usually a task waiting, shielded, on something nobody will set; the
threads' stacks (py-spy, faulthandler) show only trio's idle loop, the task tree shows the
awaits. Installed for every trio test by ``conftest.py`` as the test's runner."""

from __future__ import annotations

import os
import sys
import threading

import pytest
import trio

HANG_LIMIT = float(os.environ.get("HG_TEST_HANG_LIMIT", "600"))


def task_tree() -> str:
    """Every live task of the current trio run with the frames it awaits in, indented."""
    lines: list[str] = []

    def walk(task: trio.lowlevel.Task, depth: int) -> None:
        lines.append("  " * depth + f"task {task.name}")
        for frame, lineno in task.iter_await_frames():
            where = frame.f_code.co_filename.split("/site-packages/")[-1]
            lines.append("  " * depth + f"    {where}:{lineno} {frame.f_code.co_name}")
        for nursery in task.child_nurseries:
            for child in nursery.child_tasks:
                walk(child, depth + 1)

    walk(trio.lowlevel.current_root_task(), 0)
    return "\n".join(lines)


class HangGuard(trio.abc.Instrument):
    def __init__(self, config: pytest.Config, limit: float = HANG_LIMIT):
        self.config, self.limit, self.ended = config, limit, threading.Event()

    def before_run(self) -> None:
        token = trio.lowlevel.current_trio_token()
        threading.Thread(target=self._watch, args=(token,), daemon=True).start()

    def after_run(self) -> None:
        self.ended.set()

    def _watch(self, token: trio.lowlevel.TrioToken) -> None:
        if not self.ended.wait(self.limit):
            try:
                trio.from_thread.run_sync(self._report, trio_token=token)
            except trio.RunFinishedError:
                pass

    def _report(self) -> None:
        capture = self.config.pluginmanager.getplugin("capturemanager")
        with capture.global_and_fixture_disabled():
            print(f"\n\nA trio test ran past {self.limit:g} s (HG_TEST_HANG_LIMIT); its tasks:"
                  f"\n{task_tree()}\n", file=sys.stderr, flush=True)
        os._exit(3)


def guarded_runner(config: pytest.Config):
    """A ``trio.run`` for pytest-trio's ``run=`` marker argument, with a :class:`HangGuard`."""
    def run(fn, *, clock=None, instruments=()):
        return trio.run(fn, clock=clock, instruments=[*instruments, HangGuard(config)])
    return run
