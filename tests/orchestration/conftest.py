"""A private ARENA_HOME per test, the way the services see it (environment variables)."""
from __future__ import annotations

import pytest
from dagster import DagsterInstance

from lake.bucket import Bucket
from lake.config import StorageSettings


@pytest.fixture
def arena_home(tmp_path, monkeypatch):
    monkeypatch.setenv("ARENA_HOME", str(tmp_path / "home"))
    for key in ("ARENA_BUCKET_URL", "ARENA_LAKE_URL"):
        monkeypatch.delenv(key, raising=False)
    return tmp_path / "home"


@pytest.fixture
def bucket(arena_home) -> Bucket:
    return Bucket(StorageSettings.from_env().bucket)


@pytest.fixture
def instance():
    with DagsterInstance.ephemeral() as inst:
        yield inst
