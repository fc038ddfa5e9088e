"""Start and stop the platform's services in the background (`make up` / `make down`).

Each service runs in its own session (process group) so `down` can stop it and all its children by
PID, whatever signals the service itself ignores. `up` returns once every service answers.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lake.config import arena_home  # noqa: E402
from sandbox import cpus  # noqa: E402
from orchestration.config import dagster_home, write_dagster_yaml  # noqa: E402

BIN = Path(sys.executable).parent


def env_port(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def services() -> dict[str, dict]:
    host = os.environ.get("ARENA_HOST", "127.0.0.1")          # public: intake only
    internal = internal_host()                                 # operator tools: Dagster UI, Streamlit
    api, ui, st = env_port("ARENA_PORT", 8000), env_port("ARENA_DAGSTER_PORT", 3000), env_port("ARENA_STREAMLIT_PORT", 8501)
    header_bytes = os.environ.get("ARENA_MAX_HEADER_BYTES", "16384")
    read_only = ["--read-only"] if os.environ.get("ARENA_DAGSTER_READ_ONLY", "") not in ("", "0", "false") else []
    return {
        "dagster-daemon": {"cmd": [str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"], "url": None},
        "dagster-webserver": {"cmd": [str(BIN / "dagster-webserver"), "-w", "workspace.yaml", "-h", internal,
                                      "-p", str(ui), *read_only], "url": f"http://{internal}:{ui}/server_info"},
        "intake": {"cmd": [str(BIN / "uvicorn"), "intake.app:app", "--host", host, "--port", str(api),
                           "--http", "h11", "--h11-max-incomplete-event-size", header_bytes],
                   "url": f"http://{host}:{api}/healthz"},
        "streamlit": {"cmd": [str(BIN / "streamlit"), "run", "dashboards/app.py", "--server.address", internal,
                              "--server.port", str(st), "--server.headless", "true",
                              "--browser.gatherUsageStats", "false", "--client.toolbarMode", "viewer"],
                      "url": f"http://{internal}:{st}/_stcore/health"},
    }


# -- closed doors: bind addresses and each service's environment (README "Security model") ----------
def internal_host() -> str:
    """Where the operator tools listen: ARENA_INTERNAL_HOST, 127.0.0.1 unless set; never ARENA_HOST."""
    return os.environ.get("ARENA_INTERNAL_HOST", "127.0.0.1")


#: Variables any service may see: the process basics, TLS trust and proxies of the host.
BASE_ENV = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "PYTHONPATH",
            "VIRTUAL_ENV", "PYTHONUNBUFFERED", "LD_LIBRARY_PATH", "SSL_CERT_FILE", "SSL_CERT_DIR",
            "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "AWS_CA_BUNDLE", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY",
            "http_proxy", "https_proxy", "no_proxy")
#: Where the Docker engine is (the sandbox and the admin page talk to it).
ENGINE_ENV = ("DOCKER_HOST", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH")
#: Intake's own secrets: the signing key, its database, the OAuth client secrets.
INTAKE_SECRETS = ("ARENA_SECRET_KEY", "ARENA_DATABASE_URL", "ARENA_GITHUB_CLIENT_SECRET",
                  "ARENA_GOOGLE_CLIENT_SECRET", "ARENA_OIDC_CLIENT_SECRET")
#: What the dashboards read: storage, intake's sessions (key and database, to check the cookie),
#: Dagster's instance and the engine (admin page).
STREAMLIT_ENV = ("ARENA_HOME", "ARENA_BUCKET_URL", "ARENA_LAKE_URL", "ARENA_S3_ENDPOINT_URL", "ARENA_DATABASE_URL",
                 "ARENA_SECRET_KEY", "ARENA_PUBLIC_URL", "ARENA_HOST", "ARENA_PORT", "ARENA_DEFAULT_CHALLENGE",
                 "DAGSTER_HOME", "ARENA_DAGSTER_POSTGRES_URL", *ENGINE_ENV,
                 # fleet mode: the instance's password reference, and the launcher's broker it names
                 "ARENA_DAGSTER_MODE", "ARENA_DAGSTER_POSTGRES_PASSWORD", "ARENA_REDIS_URL", "ARENA_POOLS_FILE")


#: The daemon launches each embedded run through the code server (gRPC StartRun), which answers once
#: the run's process has imported the code location: at load 45-65 on 2 cores that passed Dagster's
#: 60 s default, and the run was failed as "Unexpected error in IPC client" before it ever started.
DAGSTER_GRPC_TIMEOUT = "DAGSTER_GRPC_TIMEOUT_SECONDS"
DAGSTER_GRPC_TIMEOUT_DEFAULT = "300"


def service_env(name: str, env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment ``name`` is started with: an allow-list, never the operator's whole shell.

    - Dagster (daemon, webserver, the runs they launch): the platform's ARENA_* settings except intake's
      secrets, DAGSTER_HOME, the engine's address, the GPU selection, the host's pip configuration
      (PIP_*, for the build's wheelhouse); ARENA_DAGSTER_POSTGRES_URL is read
      by dagster.yaml through an `env:` reference, so the password is never written to a file;
    - Streamlit: STREAMLIT_ENV;
    - intake: its ARENA_* settings, without Dagster's storage URL.
    """
    env = dict(os.environ if env is None else env)
    keep = set(BASE_ENV) | {k for k in env if k.startswith("AWS_")}  # an S3 bucket or lake
    if name.startswith("dagster"):
        keep |= {k for k in env if k.startswith("ARENA_") and k not in INTAKE_SECRETS}
        keep |= {"DAGSTER_HOME", DAGSTER_GRPC_TIMEOUT, *ENGINE_ENV, "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES"}
        keep |= {k for k in env if k.startswith("PIP_")}  # the build's host-side wheelhouse download
    elif name == "streamlit":
        keep |= set(STREAMLIT_ENV)
    elif name == "intake":
        keep |= {k for k in env if k.startswith("ARENA_") and k != "ARENA_DAGSTER_POSTGRES_URL"}
    else:
        raise ValueError(f"no environment allow-list for service {name!r}")
    return {k: v for k, v in env.items() if k in keep}


def run_dir() -> Path:
    d = arena_home() / "run"
    d.mkdir(parents=True, exist_ok=True)
    return d


def pid_of(name: str) -> int | None:
    try:
        pid = int((run_dir() / f"{name}.pid").read_text())
        os.kill(pid, 0)
        return pid
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None


def answers(url: str | None) -> bool:
    if url is None:
        return True
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status < 500
    except Exception:
        return False


def _reset_signals() -> None:
    # A service started from a script in the background inherits SIGINT ignored; restore defaults.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def recover_runs() -> None:
    """Embedded mode, no daemon running: fail the runs the last stop cut off, so they are retried
    (orchestration/recovery.py). Fleet mode: runs live on the workers; nothing to do."""
    from orchestration.fleet import mode
    if mode() != "embedded" or pid_of("dagster-daemon") is not None:
        return
    from dagster import DagsterInstance
    from orchestration.recovery import fail_orphaned_runs
    with DagsterInstance.get() as instance:
        if ended := fail_orphaned_runs(instance):
            print(f"{len(ended)} run(s) cut off by the last stop failed as platform failures; they are retried")


def up(timeout: float) -> int:
    os.environ.setdefault("DAGSTER_HOME", str(dagster_home()))
    os.environ.setdefault(DAGSTER_GRPC_TIMEOUT, DAGSTER_GRPC_TIMEOUT_DEFAULT)
    write_dagster_yaml(Path(os.environ["DAGSTER_HOME"]))
    logs = arena_home() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    recover_runs()
    from sandbox.engine import remove_leftovers
    try:
        if n := remove_leftovers():
            print(f"removed {n} container(s) left by an earlier crash")
    except Exception as exc:
        print(f"warning: could not clean leftover containers: {exc}")
    for name, svc in services().items():
        if pid_of(name):
            continue
        log = open(logs / f"{name}.log", "ab")
        proc = subprocess.Popen(svc["cmd"], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_reset_signals,
                                env=service_env(name, os.environ | {"PYTHONUNBUFFERED": "1"}))
        (run_dir() / f"{name}.pid").write_text(str(proc.pid))
        confined = cpus.confine(proc.pid)     # the platform's CPUs, never the evaluation's (README)
    deadline = time.monotonic() + timeout
    waiting = dict(services())
    while waiting and time.monotonic() < deadline:
        for name in list(waiting):
            if pid_of(name) is None:
                print(f"{name} exited; see {logs / (name + '.log')}")
                print((logs / f"{name}.log").read_text()[-3000:])
                return 1
            if answers(waiting[name]["url"]):
                del waiting[name]
        time.sleep(0.5)
    if waiting:
        print(f"not answering after {timeout:.0f} s: {', '.join(waiting)} (logs in {logs})")
        return 1
    for name, svc in services().items():
        print(f"{name:18} pid {pid_of(name):<7} {svc['url'] or ''}")
    split = cpus.CpuSplit.of(os.environ.get("ARENA_SANDBOX_CPUSET") or None)
    if "confined" in locals():
        print(f"services on platform CPUs {cpus.format_cpuset(split.platform)} ({confined}); "
              f"evaluations on CPUs {cpus.format_cpuset(split.evaluation)}")
    return 0


def down() -> int:
    for name in services():
        pid = pid_of(name)
        if pid is None:
            continue
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        for _ in range(50):
            if pid_of(name) is None:
                break
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
            time.sleep(0.2)
        else:
            os.killpg(pid, signal.SIGKILL)
        (run_dir() / f"{name}.pid").unlink(missing_ok=True)
        print(f"stopped {name}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument("--timeout", type=float, default=180)
    args = parser.parse_args()
    if args.action == "up":
        return up(args.timeout)
    if args.action == "down":
        return down()
    for name, svc in services().items():
        pid = pid_of(name)
        print(f"{name:18} {'pid ' + str(pid) if pid else 'stopped':12} "
              f"{'answers' if pid and answers(svc['url']) else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
