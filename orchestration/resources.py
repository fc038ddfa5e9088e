"""Dagster resources: the platform's storage and sandbox, configured from the environment."""
from __future__ import annotations

from dagster import ConfigurableResource, InitResourceContext

from lake.bucket import Bucket
from lake.config import StorageSettings
from lake.tables import Lake
from sandbox.config import SandboxSettings
from sandbox.devices import Devices, for_this_process


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
    """Build and run limits (ARENA_SANDBOX_*), on the devices of the worker running this process."""

    def setup_for_execution(self, context: InitResourceContext) -> None:
        # a build or an evaluation step stops (and cleans up) when its run worker dies
        from orchestration.lifeline import follow_parent
        follow_parent()

    def settings(self) -> SandboxSettings:
        base = SandboxSettings.from_env()
        return self.devices(base).apply(base)

    def devices(self, base: SandboxSettings | None = None) -> Devices:
        """The fleet worker's own devices (ARENA_WORKER_*), never a process-wide list; the host
        defaults (ARENA_SANDBOX_CPUSET/GPUS) only in embedded mode, where no worker is bound."""
        return for_this_process(base or SandboxSettings.from_env())
