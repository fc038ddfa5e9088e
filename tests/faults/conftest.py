"""Fixtures of the fault tests (helpers in faultkit.py); every test here carries the ``faults`` marker."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from faultkit import intake_process, pg_cluster  # noqa: F401  (fixtures)

HERE = Path(__file__).parent


def pytest_collection_modifyitems(config, items):
    """A dockerd restart disturbs everything on the host's engine: only with ARENA_TEST_DOCKERD_RESTART=1."""
    mine = [item for item in items if HERE in Path(str(item.fspath)).parents]
    for item in mine:
        item.add_marker(pytest.mark.faults)
    if os.environ.get("ARENA_TEST_DOCKERD_RESTART") == "1":
        return
    skip = pytest.mark.skip(reason="restarts the host's dockerd; set ARENA_TEST_DOCKERD_RESTART=1 to run it")
    for item in mine:
        if "dockerd_restart" in item.keywords:
            item.add_marker(skip)


