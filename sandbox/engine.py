"""The Docker engine as the sandbox sees it: a client, the runtime to use, leftover cleanup."""
from __future__ import annotations

from functools import lru_cache

import docker

from lake.vocabulary import LABEL_MANAGED, LABEL_SUBMISSION, parse_utc_iso


@lru_cache(maxsize=1)
def client() -> docker.DockerClient:
    return docker.from_env(timeout=120)


def engine_identity(pid_file: str = "/var/run/docker.pid") -> str | None:
    """Which run of the local Docker engine is up: its pid and start time. A change between the start
    and the end of an evaluation means the engine restarted under it (a platform failure, never the
    participant's). None where the engine is not local or not readable."""
    try:
        pid = int(open(pid_file).read().strip())
        with open(f"/proc/{pid}/stat") as fh:
            start = fh.read().rsplit(")", 1)[1].split()[19]   # field 22: start time in clock ticks
        return f"{pid}:{start}"
    except (OSError, ValueError, IndexError):
        return None


def available_runtimes() -> set[str]:
    return set((client().info().get("Runtimes") or {}).keys())


def resolve_runtime(requested: str) -> str:
    """`auto` means gVisor where Docker has it registered, else runc; an explicit choice must exist."""
    runtimes = available_runtimes()
    if requested == "auto":
        return "runsc" if "runsc" in runtimes else "runc"
    if requested not in runtimes:
        raise RuntimeError(f"container runtime {requested!r} is not registered with Docker "
                           f"(registered: {sorted(runtimes)})")
    return requested


def remove_containers(labels: dict[str, str] | None = None, older_than_s: float = 0) -> int:
    """Remove (with their anonymous volumes) the platform's containers carrying ``labels``, created at
    least ``older_than_s`` ago. Before an evaluation starts, with its submission's label: a container an
    earlier attempt left behind (its run worker killed mid-start) must not share the evaluation CPU."""
    import time

    import docker.errors
    wanted = [LABEL_MANAGED] + [f"{k}={v}" for k, v in (labels or {}).items()]
    removed = 0
    for c in client().containers.list(all=True, filters={"label": wanted}):
        created = parse_utc_iso(c.attrs["Created"])
        if time.time() - created.timestamp() >= older_than_s:
            try:
                c.remove(force=True, v=True)
                removed += 1
            except docker.errors.NotFound:
                pass   # removed meanwhile by its own evaluation
    return removed


def remove_leftovers(older_than_s: float = 0, labels: dict[str, str] | None = None) -> int:
    """Remove what a crash of the platform itself left behind: every container carrying LABEL_MANAGED (and
    `labels`, to narrow it down) created at least `older_than_s` ago, with its anonymous volumes, and
    the dangling images of builds that never finished. Call it at startup. Returns the containers removed."""
    import time

    import docker.errors
    wanted = [LABEL_MANAGED] + [f"{k}={v}" for k, v in (labels or {}).items()]
    removed = remove_containers(labels, older_than_s)
    try:
        client().images.prune(filters={"dangling": True, "label": wanted})
    except docker.errors.APIError:
        pass   # a prune already running elsewhere; the next startup does it
    # submission images outlive their evaluation only when the platform died in between
    for image in client().images.list(filters={"label": wanted + [LABEL_SUBMISSION]}):
        created = parse_utc_iso(image.attrs["Created"])
        if time.time() - created.timestamp() >= older_than_s:
            try:
                client().images.remove(image.id, force=False)
            except docker.errors.APIError:
                pass   # in use by a running build or evaluation: not a leftover
    return removed
