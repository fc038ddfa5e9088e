"""A whole fleet on one machine, for the fleet tests, `make fleet-demo` and the fleet benchmarks.

It creates its own PostgreSQL database and uses its own Redis database number, starts a moto S3
server (run outputs and compute logs), the Dagster daemon and webserver of the control plane, and
one `arena worker start` process per [[worker]] of its pools file, each standing in for a host.
Every process runs in its own session and is stopped by its process group id.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _reset_signals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


@dataclass
class LocalFleet:
    root: Path                                   # a private directory: DAGSTER_HOME, logs, pools file
    workers: list[dict]                          # [{"name", "pool", "devices"}]
    workspace: Path = ROOT / "workspace.yaml"
    redis_db: int = 7
    pg_admin: str = "postgresql://postgres@127.0.0.1:5432"
    extra_env: dict = field(default_factory=dict)
    db_prefix: str = "arena_fleet"               # its PostgreSQL database: <db_prefix>_<random>
    procs: dict = field(default_factory=dict)

    def __post_init__(self):
        self.root = Path(self.root)
        self.db_name = f"{self.db_prefix}_{uuid.uuid4().hex[:10]}"
        self.s3_port, self.web_port = free_port(), free_port()
        self.logs = self.root / "logs"

    # -- settings ------------------------------------------------------------------------------
    @property
    def env(self) -> dict[str, str]:
        return os.environ | {
            "ARENA_DAGSTER_MODE": "fleet",
            "DAGSTER_HOME": str(self.root / "dagster"),
            "ARENA_REDIS_URL": f"redis://127.0.0.1:6379/{self.redis_db}",
            "ARENA_DAGSTER_POSTGRES_URL": f"{self.pg_admin}/{self.db_name}",
            "ARENA_DAGSTER_IO_URL": "s3://arena-dagster/fleet",
            "ARENA_S3_ENDPOINT_URL": f"http://127.0.0.1:{self.s3_port}",
            "AWS_ACCESS_KEY_ID": "arena", "AWS_SECRET_ACCESS_KEY": "arena-local",
            "AWS_DEFAULT_REGION": "us-east-1",
            "ARENA_POOLS_FILE": str(self.root / "pools.toml"),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            "PYTHONUNBUFFERED": "1",
        } | self.extra_env

    def s3_buckets(self) -> list[str]:
        """The S3 buckets its storage URLs name (Dagster's run outputs, and the intake bucket and the
        lake when extra_env puts them on s3://): created on its S3 server at start."""
        e = self.env
        urls = [e.get(k, "") for k in ("ARENA_DAGSTER_IO_URL", "ARENA_BUCKET_URL", "ARENA_LAKE_URL")]
        return sorted({u[5:].split("/", 1)[0] for u in urls if u.startswith("s3://")})

    def storage_urls(self) -> dict[str, str]:
        e = self.env
        urls = {"dagster storage": f"postgresql+psycopg2://{self.pg_admin.split('://', 1)[1]}/{self.db_name}",
                "broker": e["ARENA_REDIS_URL"], "run outputs (IO manager)": f"{e['ARENA_DAGSTER_IO_URL']}/io",
                "compute logs": f"{e['ARENA_DAGSTER_IO_URL']}/compute-logs"}
        for what, key in (("intake bucket", "ARENA_BUCKET_URL"), ("lake", "ARENA_LAKE_URL"),
                          ("intake database", "ARENA_DATABASE_URL")):
            if e.get(key):
                urls[what] = e[key]
        urls["S3 endpoint"] = e["ARENA_S3_ENDPOINT_URL"]
        return urls

    # -- processes -----------------------------------------------------------------------------
    def spawn(self, name: str, cmd: list[str], env: dict | None = None) -> subprocess.Popen:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = open(self.logs / f"{name}.log", "ab")
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, preexec_fn=_reset_signals, env=env or self.env)
        self.procs[name] = proc
        return proc

    def stop_process(self, name: str, sig: int = signal.SIGTERM, wait_s: float = 15) -> None:
        proc = self.procs.pop(name, None)
        if proc is None:
            return
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=wait_s)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def kill_worker(self, name: str) -> None:
        """The host died: SIGKILL to the worker and every process it started."""
        self.stop_process(f"worker-{name}", signal.SIGKILL)

    def log(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # -- life ----------------------------------------------------------------------------------
    def write_pools(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        text = "".join(f'[[worker]]\nname = "{w["name"]}"\npool = "{w["pool"]}"\ndevices = "{w["devices"]}"\n\n'
                       for w in self.workers if w["pool"] != "control")
        (self.root / "pools.toml").write_text(text)

    def start(self, webserver: bool = True, timeout: float = 180) -> "LocalFleet":
        import redis
        self.write_pools()
        subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", self.db_name], check=True)
        redis.Redis.from_url(self.env["ARENA_REDIS_URL"]).flushdb()
        self.spawn("s3", [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(self.s3_port)])
        self._wait(lambda: _answers(f"http://127.0.0.1:{self.s3_port}/"), timeout, "moto S3 server")
        for bucket in self.s3_buckets():
            self._s3().create_bucket(Bucket=bucket)
        env = self.env
        os.makedirs(env["DAGSTER_HOME"], exist_ok=True)
        subprocess.run([sys.executable, "-c", "from orchestration.config import write_dagster_yaml; write_dagster_yaml()"],
                       cwd=ROOT, env=env, check=True)
        self.spawn("daemon", self.daemon_command())
        if webserver:
            self.spawn("webserver", [str(BIN / "dagster-webserver"), "-w", str(self.workspace), "-h", "127.0.0.1",
                                     "-p", str(self.web_port)])
        for w in self.workers:
            self.start_worker(w)
        if webserver:
            self._wait(lambda: _answers(f"http://127.0.0.1:{self.web_port}/server_info"), timeout, "Dagster webserver")
        self.wait_workers([w["name"] for w in self.workers], timeout)
        return self

    def daemon_command(self) -> list[str]:
        return [str(BIN / "dagster-daemon"), "run", "-w", str(self.workspace)]

    def start_worker(self, w: dict) -> None:
        cmd = [sys.executable, "-m", "intake.cli", "worker", "start", "--pool", w["pool"], "--name", w["name"]]
        if w.get("devices"):
            cmd += ["--devices", w["devices"]]
        self.spawn(f"worker-{w['name']}", cmd)

    def celery(self):
        from dagster_celery.make_app import make_app
        saved = dict(os.environ)
        os.environ.update({k: v for k, v in self.env.items() if k.startswith("ARENA_")})
        try:
            from orchestration.fleet import celery_app_args
            return make_app(app_args=celery_app_args())
        finally:
            os.environ.clear()
            os.environ.update(saved)

    def wait_workers(self, names: list[str], timeout: float = 120) -> None:
        app = self.celery()

        def ready():
            for name in names:
                proc = self.procs.get(f"worker-{name}")
                if proc is not None and proc.poll() is not None:
                    raise RuntimeError(f"worker {name} exited:\n{self.log('worker-' + name)[-3000:]}")
            replies = app.control.ping(timeout=1.0) or []
            alive = {n.split("@")[0] for reply in replies for n in reply}
            return set(names) <= alive
        self._wait(ready, timeout, f"workers {names}")

    def _s3(self):
        import boto3
        return boto3.client("s3", endpoint_url=self.env["ARENA_S3_ENDPOINT_URL"], aws_access_key_id="arena",
                            aws_secret_access_key="arena-local", region_name="us-east-1")

    def _wait(self, check, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            for name, proc in self.procs.items():
                if proc.poll() is not None and not name.startswith("worker-"):
                    raise RuntimeError(f"{name} exited:\n{self.log(name)[-3000:]}")
            time.sleep(0.5)
        raise TimeoutError(f"{what} not ready after {timeout:.0f} s (logs in {self.logs})")

    def activate(self) -> None:
        """Point this process at the fleet (its instance, broker and S3): a client of the control plane."""
        os.environ.update({k: v for k, v in self.env.items() if k.startswith(("ARENA_", "DAGSTER_", "AWS_"))})

    def instance(self):
        from dagster import DagsterInstance
        self.activate()
        return DagsterInstance.get()

    def stop(self) -> None:
        for name in [n for n in self.procs if n.startswith("worker-")] + ["webserver", "daemon", "s3"]:
            self.stop_process(name)
        for name in list(self.procs):
            self.stop_process(name)
        try:
            import redis
            redis.Redis.from_url(self.env["ARENA_REDIS_URL"]).flushdb()
        except Exception:
            pass
        subprocess.run(["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--if-exists", "--force", self.db_name],
                       check=False, capture_output=True)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status < 500
    except Exception:
        return False


def cleanup_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
