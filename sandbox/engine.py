"""The Docker engine as the sandbox sees it: a client, the runtime to use, leftover cleanup."""
from __future__ import annotations

from functools import lru_cache

import docker

#: Every container and image the platform makes carries this label, so cleanup can find them.
LABEL = "org.decode-arena.managed"


@lru_cache(maxsize=1)
def client() -> docker.DockerClient:
    return docker.from_env(timeout=120)


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


def remove_leftovers(older_than_s: float = 0) -> int:
    """Remove containers the platform left behind (a crash of the platform itself). Returns the count."""
    import time
    from datetime import datetime
    removed = 0
    for c in client().containers.list(all=True, filters={"label": LABEL}):
        created = datetime.fromisoformat(c.attrs["Created"][:26].rstrip("Z")).timestamp()
        if time.time() - created >= older_than_s:
            c.remove(force=True)
            removed += 1
    return removed
