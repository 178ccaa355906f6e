"""py-libp2p's service tasks find their parent by lookup, not by a walk over every task.

py-libp2p 0.8.1's ``TrioManager.run_task`` finds the new task's parent by walking the
service's whole task tree (``_find_parent_task``: every task, recursively, compared with
the current trio task). A service's tasks grow with its peers: a coordinator's pubsub
holds tasks for every connected peer, and spawns one per message and per joining peer,
so each spawn cost O(N) and a round O(N^2). py-spy of a coordinator enrolling 600 peers:
22 % of its CPU in that walk. Here each running ``FunctionTask`` is indexed by its trio
task, and the parent is the indexed task, if it belongs to this manager's tree (checked
by walking *up* from it: the tree's depth, not its size). Same answer, same tree.
Applied by :func:`peer.libp2p_patches.install`.
"""

from __future__ import annotations

from typing import Any

import trio
from libp2p.tools.anyio_service.trio_manager import TrioManager
from libp2p.tools.anyio_service.trio_tasks import FunctionTask

_running: dict[trio.lowlevel.Task, FunctionTask] = {}  # trio task -> its FunctionTask
_original_setter = FunctionTask.trio_task.fset
_original_run = FunctionTask.run


def _set_trio_task(self: FunctionTask, value: trio.lowlevel.Task) -> None:
    _original_setter(self, value)
    _running[value] = self


async def _run(self: FunctionTask) -> None:
    try:
        await _original_run(self)
    finally:
        trio_task = self._trio_task
        if trio_task is not None and _running.get(trio_task) is self:
            del _running[trio_task]


def _find_parent_task(self: TrioManager, trio_task: trio.lowlevel.Task) -> Any:
    task = _running.get(trio_task)
    if task is None:
        return None  # not a service task: a new root, as before
    root: Any = task
    while getattr(root, "parent", None) is not None:
        root = root.parent
    return task if root in self._root_tasks else None  # another manager's: a new root


def install() -> None:
    FunctionTask.trio_task = property(FunctionTask.trio_task.fget, _set_trio_task)
    FunctionTask.run = _run  # type: ignore[method-assign]
    TrioManager._find_parent_task = _find_parent_task  # type: ignore[method-assign]


def applied() -> bool:
    return (TrioManager._find_parent_task is _find_parent_task
            and FunctionTask.run is _run
            and FunctionTask.trio_task.fset is _set_trio_task)
