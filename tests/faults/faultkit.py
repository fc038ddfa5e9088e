"""Helpers of the fault tests (tests/faults): faults against the real services: an intake process the test starts (and kills), a PostgreSQL cluster
of its own (and restarts), a size-limited tmpfs as the lake. Nothing here touches the shared services
other tests and helpers use (the PostgreSQL on 5432, dockerd), except the opt-in dockerd restart."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from intake.db import Database
from intake.packaging import zip_directory
from intake.security import create_user
from lake.bucket import Bucket

ROOT = Path(__file__).resolve().parents[2]
SECRET = "faults-test-secret-key-" + "x" * 32


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


@dataclass
class IntakeProcess:
    """`python -m intake` in its own process, on its own port and ARENA_HOME."""
    home: Path
    database_url: str
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None
    log: Path | None = None
    extra_env: dict = field(default_factory=dict)    # ARENA_* settings of this test

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def bucket(self) -> Bucket:
        return Bucket(self.home / "bucket")

    def env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ARENA_")}
        env.update(ARENA_HOME=str(self.home), ARENA_PORT=str(self.port), ARENA_DATABASE_URL=self.database_url,
                   ARENA_SECRET_KEY=SECRET, ARENA_DAILY_QUOTA="1000", ARENA_UPLOAD_RATE_LIMIT="1000",
                   ARENA_MAX_CONCURRENT="1000", PYTHONPATH=str(ROOT))
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 120) -> "IntakeProcess":
        self.log = self.home / f"intake-{self.port}-{time.monotonic_ns()}.log"
        self.home.mkdir(parents=True, exist_ok=True)
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "intake"], cwd=ROOT, env=self.env(),
                                         stdout=out, stderr=subprocess.STDOUT)

        def up():
            if self.proc.poll() is not None:
                raise AssertionError(f"intake exited {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                return httpx.get(self.url + "/healthz", timeout=5).status_code == 200
            except httpx.HTTPError:
                return False
        wait_for(up, timeout, f"intake on {self.url}", every=0.3)
        return self

    def kill(self) -> None:
        """SIGKILL: no handler runs, nothing is cleaned up."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def intake_process(tmp_path):
    """intake_process(database_url=None) -> a started IntakeProcess (SQLite in its home by default)."""
    started = []

    def start(database_url: str | None = None, home: Path | None = None) -> IntakeProcess:
        home = home or tmp_path / "home"
        p = IntakeProcess(home, database_url or f"sqlite:///{home / 'arena.db'}")
        started.append(p)
        return p.start()

    yield start
    for p in started:
        p.stop()


def make_user(database_url: str, name: str) -> str:
    """A user with an API token, written straight into intake's database (migrated first)."""
    db = Database(database_url)
    try:
        db.migrate()
        with db.session() as session, session.begin():
            _, token = create_user(session, name)
        return token
    finally:
        db.dispose()


def make_zip(tmp_path: Path, marker: str, padding: int = 0) -> Path:
    """A valid submission zip; ``padding`` bytes of incompressible data make the upload take a while."""
    src = tmp_path / f"src-{marker}"
    src.mkdir(parents=True, exist_ok=True)
    (src / "Dockerfile").write_text('FROM arena/python-cpu:1\nCOPY . /app\nCMD ["python3", "decoder.py"]\n')
    (src / "requirements.txt").write_text("")
    (src / "decoder.py").write_text(f"# submission {marker}\nprint('{{\"ready\": true}}')\n")
    if padding:
        (src / "weights.bin").write_bytes(os.urandom(padding))
    return zip_directory(src, tmp_path / f"submission-{marker}.zip")


def bucket_files(bucket_root: Path) -> list[str]:
    """Every file under the bucket, hidden temporaries included: what an operator would find on disk."""
    if not bucket_root.exists():
        return []
    return sorted(str(p.relative_to(bucket_root)) for p in bucket_root.rglob("*") if p.is_file())


def postgres_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


@dataclass
class PgCluster:
    """A throwaway PostgreSQL cluster in a temporary directory, on its own port."""
    bindir: Path
    datadir: Path
    port: int
    user: str | None  # run the server as this OS user (initdb refuses root)

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=120)

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def init(self) -> None:
        self.datadir.mkdir(parents=True)
        if self.user:
            shutil.chown(self.datadir, self.user)
            shutil.chown(self.datadir.parent, self.user)
        self._run("initdb", "-D", str(self.datadir), "-U", "postgres", "--auth=trust", "-E", "UTF8")

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.datadir), "-l", str(self.datadir.parent / "pg.log"), "-w",
                  "-o", f"-p {self.port} -k {self.datadir.parent} -h 127.0.0.1", "start")

    def restart(self) -> None:
        # -l: the server's output goes to the log, not to our pipe (which it would hold open)
        self._run("pg_ctl", "-D", str(self.datadir), "-l", str(self.datadir.parent / "pg.log"), "-m", "fast", "-w",
                  "restart")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.datadir), "-m", "immediate", "-w", "stop", check=False)


@pytest.fixture
def pg_cluster():
    """A PostgreSQL cluster of this test's own (never the shared one on 5432), stopped at the end."""
    bindir = postgres_bin()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (/usr/lib/postgresql/*/bin) are not installed")
    user = None
    if os.geteuid() == 0:
        import pwd
        try:
            user = pwd.getpwnam("postgres").pw_name
        except KeyError:
            pytest.skip("running as root without a postgres OS user to run the cluster as")
    # not under pytest's tmp dir: that is private to root, and the server runs as another user
    base = Path(tempfile.mkdtemp(prefix="arena-faults-pg-"))
    cluster = PgCluster(bindir, base / "data", free_port(), user)
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)
