"""scripts/services.py's closed doors, on real processes: the operator tools listen on the internal
address only and start with an allow-listed environment; dagster.yaml names the Postgres URL by `env:`."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from scripts import services  # noqa: E402

SECRETS = {"ARENA_SECRET_KEY": "k" * 40, "ARENA_GITHUB_CLIENT_SECRET": "gh-secret",
           "ARENA_OIDC_CLIENT_SECRET": "oidc-secret", "ARENA_DATABASE_URL": "postgresql://u:intake-pw@db/arena"}
SHELL = {"SSH_AUTH_SOCK": "/tmp/agent", "GITHUB_TOKEN": "ghp_operator", "HISTFILE": "/root/.bash_history"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_each_service_gets_only_its_allow_list():
    env = {"PATH": "/usr/bin", "HOME": "/root", "ARENA_HOME": "/srv/arena", "ARENA_SANDBOX_MEMORY": "4g",
           "DAGSTER_HOME": "/srv/dagster", "ARENA_DAGSTER_POSTGRES_URL": "postgresql://d:dagster-pw@db/dagster",
           "DOCKER_HOST": "unix:///run/docker.sock", "PIP_FIND_LINKS": "/opt/wheels", **SECRETS, **SHELL}
    dagster = services.service_env("dagster-daemon", env)
    assert not set(SECRETS) & set(dagster) and not set(SHELL) & set(dagster)
    assert {"ARENA_HOME", "ARENA_SANDBOX_MEMORY", "DAGSTER_HOME", "ARENA_DAGSTER_POSTGRES_URL",
            "DOCKER_HOST", "PATH", "PIP_FIND_LINKS"} <= set(dagster)
    assert services.service_env("dagster-webserver", env) == dagster

    streamlit = services.service_env("streamlit", env)
    assert streamlit["ARENA_SECRET_KEY"] == SECRETS["ARENA_SECRET_KEY"]   # to check intake's cookie
    assert "ARENA_DATABASE_URL" in streamlit                             # to find the session
    assert not {"ARENA_GITHUB_CLIENT_SECRET", "ARENA_OIDC_CLIENT_SECRET", "ARENA_SANDBOX_MEMORY",
                "PIP_FIND_LINKS"} & set(streamlit)
    assert not set(SHELL) & set(streamlit)

    intake = services.service_env("intake", env)
    assert "ARENA_DAGSTER_POSTGRES_URL" not in intake and not set(SHELL) & set(intake)
    with pytest.raises(ValueError):
        services.service_env("something-else", env)


def listening(pid: int) -> set[str]:
    """Addresses (host:port) a process tree listens on, from `ss`."""
    out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout
    found = set()
    for line in out.splitlines():
        if f"pid={pid}," in line or any(f"pid={c}," in line for c in children(pid)):
            found.add(line.split()[3])
    return found


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    kids = [int(p) for p in out.split()]
    return kids + [g for k in kids for g in children(k)]


@pytest.mark.parametrize("name", ["streamlit", "dagster-webserver"])
def test_operator_tools_listen_on_the_internal_address_only(name, tmp_path, monkeypatch):
    port = free_port()
    port_var = {"streamlit": "ARENA_STREAMLIT_PORT", "dagster-webserver": "ARENA_DAGSTER_PORT"}[name]
    monkeypatch.setenv("ARENA_HOST", "0.0.0.0")               # intake public...
    monkeypatch.delenv("ARENA_INTERNAL_HOST", raising=False)   # ...the tools stay on 127.0.0.1
    monkeypatch.setenv(port_var, str(port))
    svc = services.services()[name]
    assert services.services()["intake"]["cmd"][services.services()["intake"]["cmd"].index("--host") + 1] == "0.0.0.0"
    home = tmp_path / "home"
    env = {**os.environ, "ARENA_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"), **SECRETS, **SHELL}
    env = services.service_env(name, env)
    (home / "dagster").mkdir(parents=True)
    log = (tmp_path / "log").open("wb")
    proc = subprocess.Popen(svc["cmd"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not services.answers(svc["url"]):
            assert proc.poll() is None, (tmp_path / "log").read_text()[-3000:]
            assert time.monotonic() < deadline, f"{name} did not answer"
            time.sleep(0.5)
        addresses = listening(proc.pid)
        assert addresses == {f"127.0.0.1:{port}"}, addresses
        seen = dict(item.split("=", 1) for item in
                    Path(f"/proc/{proc.pid}/environ").read_text().split("\0") if "=" in item)
        assert not set(SHELL) & set(seen)
        if name == "dagster-webserver":
            assert not set(SECRETS) & set(seen)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(20)


def test_dagster_yaml_names_the_postgres_url_by_env_and_dagster_uses_it(tmp_path, monkeypatch):
    from dagster import DagsterInstance

    from orchestration.config import write_dagster_yaml

    admin = os.environ.get("ARENA_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
    name = f"arena_dagster_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        base = admin.rsplit("/", 1)[0].replace("postgresql://postgres@", "postgresql://postgres:pw-never-on-disk@")
        monkeypatch.setenv("ARENA_DAGSTER_POSTGRES_URL", f"{base}/{name}")
        path = write_dagster_yaml(tmp_path)
        text = path.read_text()
        assert "pw-never-on-disk" not in text and name not in text
        assert "env: ARENA_DAGSTER_POSTGRES_URL" in text
        with DagsterInstance.from_config(str(tmp_path)) as instance:   # Dagster reads it from the env
            assert instance.get_runs_count() == 0
        with psycopg.connect(f"{admin.rsplit('/', 1)[0]}/{name}") as conn:
            tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        assert "runs" in tables
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
