"""Run a submission's container in the sandbox and talk to it over attached stdin/stdout.

`run_sandboxed` creates the container with every limit of DESIGN.md (no network, no capabilities,
no-new-privileges, non-root, read-only root, a small /tmp, pids/memory/CPU limits, the model mounted
read-only as the only mount), attaches before starting so no byte is missed, and hands stdout lines to
the caller stamped with the monotonic time of their arrival. Nothing the container says about time is
trusted. The container is always removed, whatever happens.
"""
from __future__ import annotations

import queue
import socket
import struct
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import docker
import docker.errors

from sandbox.config import SandboxSettings
from sandbox.cpus import CpuSplit, eval_cgroup_parent
from lake.vocabulary import LABEL_MANAGED
from sandbox.engine import client, resolve_runtime
from sandbox.gpu import device_requests
from sandbox.protocol import StdoutSplitter
from sandbox.seccomp import profile_json as seccomp_profile

MODEL_MOUNT = "/arena/model"


@dataclass
class ContainerExit:
    exit_code: int | None
    oom_killed: bool
    killed_by_us: str | None      # why the platform stopped it (timeout, protocol), or None


@dataclass
class SandboxedContainer:
    """A running container. stdout lines go to `on_line(arrival_ns, line)`; an over-long line to
    `on_overflow(nbytes)`; EOF to `on_eof()`. stderr is kept in `stderr_log`, capped."""
    container: "docker.models.containers.Container"
    runtime: str
    settings: SandboxSettings
    started_ns: int = 0
    stderr_log: bytearray = field(default_factory=bytearray)    # the first stderr_cap_bytes
    stderr_bytes: int = 0                                        # all stderr bytes, kept or not
    stdout_bytes: int = 0                                        # all stdout bytes received
    last_stdout_ns: int = 0                                      # arrival of the last stdout byte
    killed_reason: str | None = None
    _sock: socket.socket | None = None
    _outbox: "queue.Queue[bytes | None]" = field(default_factory=queue.Queue)
    _threads: list[threading.Thread] = field(default_factory=list)
    _eof: threading.Event = field(default_factory=threading.Event)

    # -- input -----------------------------------------------------------------------------
    def send(self, data: bytes) -> None:
        """Queue bytes for the container's stdin; never blocks the caller (a decoder that stops
        reading stdin cannot stall the load generator)."""
        self._outbox.put(data)

    def close_stdin(self) -> None:
        self._outbox.put(None)

    def _write_loop(self) -> None:
        assert self._sock is not None
        while (data := self._outbox.get()) is not None:
            try:
                self._sock.sendall(data)
            except OSError:
                return
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    # -- output ----------------------------------------------------------------------------
    def _read_loop(self, on_line, on_overflow, on_eof) -> None:
        assert self._sock is not None
        sock, splitter = self._sock, StdoutSplitter()
        try:
            while True:
                header = _recv_exact(sock, 8)
                if header is None:
                    break
                stream, size = header[0], struct.unpack(">I", header[4:])[0]
                payload = _recv_exact(sock, size)
                if payload is None:
                    break
                now = time.monotonic_ns()
                if stream == 2:
                    self._keep_stderr(payload)
                    continue
                self.stdout_bytes += len(payload)
                self.last_stdout_ns = now
                if splitter.overflow is not None:
                    continue    # keep draining so the container never blocks on a full pipe
                for message in splitter.feed(payload):
                    on_line(now, message)
                if splitter.overflow is not None:
                    on_overflow(splitter.overflow)
        except OSError:
            pass
        finally:
            if (rest := splitter.rest()) is not None:
                on_line(time.monotonic_ns(), rest)
            self._eof.set()
            on_eof()

    def _keep_stderr(self, payload: bytes) -> None:
        # Constant work per frame: a flood of tiny writes must not cost the host quadratic time.
        self.stderr_bytes += len(payload)
        room = self.settings.stderr_cap_bytes - len(self.stderr_log)
        if room > 0:
            self.stderr_log += payload[:room]

    # -- lifecycle -------------------------------------------------------------------------
    def kill(self, reason: str) -> None:
        if self.killed_reason is None:
            self.killed_reason = reason
        try:
            self.container.kill()
        except docker.errors.APIError:
            pass

    def pid(self) -> int | None:
        """The container's main process on the host (for its cgroup), None when unknown."""
        try:
            self.container.reload()
            return self.container.attrs.get("State", {}).get("Pid") or None
        except docker.errors.APIError:
            return None

    def wait_eof(self, timeout: float | None = None) -> bool:
        return self._eof.wait(timeout)

    def wait_exit(self, timeout: float = 30) -> ContainerExit:
        try:
            status = self.container.wait(timeout=timeout)
            code = status.get("StatusCode")
        except Exception:  # still running after the timeout: stop it
            self.kill("did not exit")
            code = None
        self.container.reload()
        state = self.container.attrs.get("State", {})
        return ContainerExit(code if code is not None else state.get("ExitCode"),
                             bool(state.get("OOMKilled")), self.killed_reason)

    @property
    def stderr_text(self) -> str:
        text = self.stderr_log.decode("utf-8", errors="replace")
        if self.stderr_bytes > self.settings.stderr_cap_bytes:
            text += f"\n[arena] stderr truncated: {self.stderr_bytes} bytes, cap {self.settings.stderr_cap_bytes}\n"
        return text


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def container_config(image: str, settings: SandboxSettings, runtime: str, model_dir: Path | None,
                     labels: dict[str, str], image_volumes: tuple[str, ...] = (),
                     gpus: Sequence[str] | None = None) -> dict:
    """The docker-py create() arguments: every isolation setting in one place.

    `image_volumes` are the VOLUME paths the image declares: Docker would back each with a fresh,
    writable, unlimited anonymous volume, so each gets an empty read-only tmpfs instead, and the
    model stays the only mount from the host. `gpus` are the GPUs of the worker running this
    evaluation (UUIDs, see sandbox/gpu.py); None falls back to ARENA_SANDBOX_GPUS."""
    tmpfs = {"/tmp": f"rw,nosuid,nodev,noexec,size={settings.tmpfs_bytes}"}
    tmpfs |= {path: "ro,nosuid,nodev,noexec,size=4096" for path in image_volumes if path != "/tmp"}
    cfg = dict(
        image=image, stdin_open=True, tty=False, detach=True,
        network_mode="none", cap_drop=["ALL"],
        security_opt=["no-new-privileges:true", f"seccomp={seccomp_profile(runtime)}"],
        user=settings.user, read_only=True,
        tmpfs=tmpfs,
        mem_limit=settings.memory_bytes, memswap_limit=settings.memory_bytes,
        pids_limit=settings.pids_limit, nano_cpus=int(settings.cpus * 1e9),
        runtime=runtime, labels={LABEL_MANAGED: "1", **labels},
        environment={"ARENA_MODEL_DIR": MODEL_MOUNT, "HOME": "/tmp", "PYTHONUNBUFFERED": "1",
                     **thread_environment(settings.threads)},
        ipc_mode="none" if runtime == "runc" else None, hostname="sandbox",
        log_config={"type": "none"},
        healthcheck={"test": ["NONE"]},     # an image's HEALTHCHECK would exec into the container
        ulimits=[docker.types.Ulimit(name="nofile", soft=settings.nofile, hard=settings.nofile),
                 docker.types.Ulimit(name="core", soft=0, hard=0)],
        privileged=False, devices=[],
    )
    if settings.cpuset:
        cfg["cpuset_cpus"] = settings.cpuset
        # the evaluation cpuset cgroup of scripts/setup-cpus.sh, where it exists (sandbox/cpus.py)
        cfg["cgroup_parent"] = eval_cgroup_parent(CpuSplit.of(settings.cpuset))
    if model_dir is not None:
        cfg["volumes"] = {str(Path(model_dir).resolve()): {"bind": MODEL_MOUNT, "mode": "ro"}}
    requests = device_requests(settings.gpus if gpus is None else gpus)
    if requests:
        cfg["device_requests"] = requests
    return {k: v for k, v in cfg.items() if v is not None}


def thread_environment(threads: int | None) -> dict[str, str]:
    """A challenge's thread limit, told to the decoder and its math libraries (none: nothing set)."""
    if not threads:
        return {}
    return {name: str(threads) for name in ("ARENA_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                           "MKL_NUM_THREADS")}


@contextmanager
def run_sandboxed(image: str, settings: SandboxSettings, *, model_dir: Path | None,
                  on_line: Callable[[int, bytes], None],
                  on_overflow: Callable[[int], None] = lambda n: None,
                  on_eof: Callable[[], None] = lambda: None,
                  labels: dict[str, str] | None = None,
                  gpus: Sequence[str] | None = None) -> Iterator[SandboxedContainer]:
    """Start `image` under the sandbox and yield it; the container is removed on exit, always."""
    runtime = resolve_runtime(settings.runtime)
    volumes = tuple((client().images.get(image).attrs.get("Config") or {}).get("Volumes") or {})
    container = client().containers.create(
        **container_config(image, settings, runtime, model_dir, labels or {}, volumes, gpus))
    box = SandboxedContainer(container=container, runtime=runtime, settings=settings)
    try:
        sock = client().api.attach_socket(container.id, params={
            "stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
        box._sock = getattr(sock, "_sock", sock)
        box._threads = [
            threading.Thread(target=box._read_loop, args=(on_line, on_overflow, on_eof), daemon=True),
            threading.Thread(target=box._write_loop, daemon=True),
        ]
        for t in box._threads:
            t.start()
        box.started_ns = time.monotonic_ns()
        container.start()
        yield box
    finally:
        box.close_stdin()
        try:
            container.remove(force=True, v=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError:   # e.g. "removal already in progress"; one more try
            time.sleep(1)
            try:
                container.remove(force=True, v=True)
            except docker.errors.NotFound:
                pass
        if box._sock is not None:
            try:
                box._sock.close()
            except OSError:
                pass
