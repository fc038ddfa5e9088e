"""The devices one evaluation may use: a cpuset and GPU UUIDs, bound to the worker that runs it.

A fleet worker (`arena worker start --pool P --devices ...`) owns its devices and passes them to the
runs it executes through ARENA_WORKER_DEVICES in its own environment (same syntax), so two
workers on one host never share a device. Without a worker binding (embedded mode) the sandbox's
host defaults apply (ARENA_SANDBOX_CPUSET / ARENA_SANDBOX_GPUS). Every result records the devices
it ran on as `environment.devices`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from sandbox.config import SandboxSettings

ENV = "ARENA_WORKER_DEVICES"


@dataclass(frozen=True)
class Devices:
    cpuset: str | None = None          # Docker --cpuset-cpus syntax, e.g. "3" or "2-3"
    gpus: tuple[str, ...] = ()         # GPU UUIDs (or indices on a dev box)

    @classmethod
    def parse(cls, text: str) -> "Devices":
        """`cpuset=2-3,gpus=GPU-aaa+GPU-bbb`, `gpus=GPU-aaa` or `cpuset=1` (the worker's --devices)."""
        cpuset, gpus = None, ()
        for part in filter(None, (p.strip() for p in text.replace(";", ",").split(","))):
            key, sep, value = part.partition("=")
            if not sep or key not in ("cpuset", "gpus") or not value:
                raise ValueError(f"--devices: {part!r} is not cpuset=CPUS or gpus=UUID[+UUID...]")
            if key == "cpuset":
                cpuset = value
            else:
                gpus = tuple(g for g in value.split("+") if g)
        if cpuset is None and not gpus:
            raise ValueError(f"--devices {text!r} names no device: give cpuset=CPUS and/or gpus=UUID")
        return cls(cpuset=cpuset, gpus=gpus)

    def env(self) -> dict[str, str]:
        """The environment a worker process hands to the runs it executes."""
        return {ENV: str(self)}

    def as_json(self) -> dict:
        return {"cpuset": self.cpuset, "gpus": list(self.gpus)}

    def apply(self, settings: SandboxSettings) -> SandboxSettings:
        return settings.with_(cpuset=self.cpuset, gpus=self.gpus)

    def __str__(self) -> str:
        parts = ([f"cpuset={self.cpuset}"] if self.cpuset else []) + ([f"gpus={'+'.join(self.gpus)}"] if self.gpus else [])
        return ",".join(parts)


def bound() -> Devices | None:
    """The devices of the worker this process runs on; None outside a fleet worker."""
    value = os.environ.get(ENV, "").strip()
    return Devices.parse(value) if value else None


def for_this_process(settings: SandboxSettings) -> Devices:
    """The worker's devices, or the sandbox's host defaults in embedded mode."""
    return bound() or Devices(cpuset=settings.cpuset, gpus=tuple(settings.gpus))
