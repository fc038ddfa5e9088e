"""Handing GPUs to a container: exactly the worker's GPUs, by UUID, through a Docker device request.

A worker on a GPU pool is bound to its GPUs (``ARENA_WORKER_DEVICES``, the fleet's ``Devices``); each
run passes them here. The container gets them the way NVIDIA's container toolkit expects: one
``DeviceRequest(driver="nvidia", device_ids=[UUIDs], capabilities=[["gpu"]])`` (what ``docker run
--gpus '"device=GPU-…"'`` sends). UUIDs, not indices: an index names a different GPU when
``CUDA_VISIBLE_DEVICES`` or a reboot reorders them, a UUID never does. Indices are still accepted for a
one-machine setup (``ARENA_SANDBOX_GPUS=0``).

Isolation, recorded with every result (``gpu_isolation``):
* ``runsc-nvproxy``: gVisor with ``--nvproxy`` (runsc registered with ``"runtimeArgs": ["--nvproxy"]``):
  the application's ioctls to the NVIDIA driver are proxied by gVisor's Sentry, which only passes the
  ones it knows; the host kernel is still shielded by gVisor.
* ``runc-hardened``: the fallback where nvproxy does not support the driver: runc with every other
  limit of the sandbox (no network, no capabilities, seccomp, read-only root, non-root user); the
  GPU driver's ioctl surface is then reachable from the container, so only trusted pools should use it.
"""
from __future__ import annotations

import re
from typing import Sequence

import docker.types

_UUID = re.compile(r"^(GPU|MIG)-[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}$")
_INDEX = re.compile(r"^[0-9]{1,3}$")


def check_gpu_ids(ids: Sequence[str]) -> tuple[str, ...]:
    """The ids unchanged, or ValueError naming the one that is neither a GPU/MIG UUID nor an index."""
    out = tuple(ids)
    for gpu in out:
        if not (_UUID.match(gpu) or _INDEX.match(gpu)):
            raise ValueError(f"GPU id {gpu!r} is neither a GPU UUID (GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx, "
                             f"from nvidia-smi -L), a MIG UUID nor a device index")
    if len(set(out)) != len(out):
        raise ValueError(f"GPU ids {list(out)} name a device twice")
    return out


def device_requests(ids: Sequence[str]) -> list[docker.types.DeviceRequest]:
    """The create() ``device_requests`` giving the container exactly these GPUs (none: an empty list)."""
    ids = check_gpu_ids(ids)
    if not ids:
        return []
    return [docker.types.DeviceRequest(driver="nvidia", device_ids=list(ids), capabilities=[["gpu"]])]


def gpu_isolation(runtime: str, ids: Sequence[str]) -> str | None:
    """What stands between the GPU driver and the container: None without GPUs."""
    if not ids:
        return None
    return "runsc-nvproxy" if runtime == "runsc" else "runc-hardened"
