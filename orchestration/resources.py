"""Dagster resources: the platform's storage and sandbox, configured from the environment."""
from __future__ import annotations

from dagster import ConfigurableResource

from lake.bucket import Bucket
from lake.config import StorageSettings
from lake.tables import Lake
from sandbox.config import SandboxSettings


class ArenaStorage(ConfigurableResource):
    """The intake bucket and the lake (ARENA_BUCKET_URL, ARENA_LAKE_URL)."""

    def settings(self) -> StorageSettings:
        return StorageSettings.from_env()

    def bucket(self) -> Bucket:
        return Bucket(self.settings().bucket)

    def lake(self) -> Lake:
        return Lake(self.settings().lake)

    def models_dir(self):
        return self.settings().home / "models"


class Sandbox(ConfigurableResource):
    """Build and run limits (ARENA_SANDBOX_*)."""

    def settings(self) -> SandboxSettings:
        return SandboxSettings.from_env()
