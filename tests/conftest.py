"""Fixtures shared by the test modules, and a hang guard on every trio test."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from .hangs import guarded_runner


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    run = guarded_runner(config)
    for item in items:
        if inspect.iscoroutinefunction(getattr(item, "obj", None)):
            item.add_marker(pytest.mark.trio(run=run))


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "coordinator"
