"""`arena worker start`: one Celery worker of one pool, bound to one device set.

The worker gets the fleet's dagster.yaml (same instance as the control host), the fleet's Celery
settings (orchestration/worker.py loads them like the launcher does), its devices in its own
environment (ARENA_WORKER_DEVICES, read by the sandbox of every run it executes),
and runs one evaluation at a time in a fresh process (--concurrency=1 --max-tasks-per-child=1).
The command replaces itself with Celery, so its PID is the worker's and a signal stops it.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from orchestration.fleet import CONTROL_QUEUE
from sandbox.cpus import host_cpus
from sandbox.devices import Devices

ROOT = Path(__file__).resolve().parent.parent


def check_devices(devices: Devices | None) -> None:
    """Refuse devices this host does not have: a cpuset outside the CPUs, a GPU it does not list."""
    if devices is None:
        return
    if devices.cpuset:
        cpus = set()
        for part in devices.cpuset.split(","):
            lo, _, hi = part.partition("-")
            cpus.update(range(int(lo), int(hi or lo) + 1))
        # the host's CPUs, not this process's affinity: workers run confined to the platform CPUs
        # (sandbox/cpus.py), while their evaluations are pinned to the evaluation CPUs
        missing = cpus - host_cpus()
        if missing:
            raise ValueError(f"--devices cpuset={devices.cpuset}: CPU(s) {sorted(missing)} are not on this host "
                             f"(it has {sorted(host_cpus())})")
    if devices.gpus and shutil.which("nvidia-smi"):
        listed = subprocess.run(["nvidia-smi", "--query-gpu=uuid,index", "--format=csv,noheader"],
                                capture_output=True, text=True, timeout=30).stdout
        known = {v.strip() for line in listed.splitlines() for v in line.split(",")}
        unknown = [g for g in devices.gpus if g not in known]
        if unknown:
            raise ValueError(f"--devices gpus: {', '.join(unknown)} not on this host (nvidia-smi lists {sorted(known)})")


def worker_command(pool: str, name: str, loglevel: str = "INFO") -> list[str]:
    return [str(Path(sys.executable).parent / "celery"), "-A", "orchestration.worker", "worker",
            "-Q", pool, "-n", f"{name}@%h", "--concurrency=1", "--max-tasks-per-child=1",
            "--prefetch-multiplier=1", "--without-gossip", "--without-mingle", f"--loglevel={loglevel}"]


def worker_environment(pool: str, devices: Devices | None, base: dict | None = None) -> dict[str, str]:
    """The worker's environment: fleet mode, the shared Dagster home, and its own devices."""
    from lake.config import arena_home
    env = dict(os.environ if base is None else base)
    env["ARENA_DAGSTER_MODE"] = "fleet"
    env.setdefault("DAGSTER_HOME", str(arena_home() / "dagster"))
    env["ARENA_WORKER_POOL"] = pool
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("ARENA_WORKER_DEVICES", None)
    if devices is not None:
        env |= devices.env()
    return env


def start(pool: str, devices: Devices | None, name: str | None = None, exec_: bool = True):
    """Write the fleet's dagster.yaml into DAGSTER_HOME, then become the Celery worker."""
    from orchestration.config import write_dagster_yaml
    if devices is None and pool != CONTROL_QUEUE:
        raise ValueError(f"pool {pool!r}: a worker that evaluates needs --devices (cpuset=CPUS and/or gpus=UUID)")
    check_devices(devices)
    env = worker_environment(pool, devices)
    os.environ.update({k: env[k] for k in ("ARENA_DAGSTER_MODE", "DAGSTER_HOME")})
    write_dagster_yaml(Path(env["DAGSTER_HOME"]))
    cmd = worker_command(pool, name or f"{pool}-{os.getpid()}")
    if exec_:
        os.chdir(ROOT)
        os.execve(cmd[0], cmd, env)
    return cmd, env
