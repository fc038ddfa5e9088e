"""Fixtures for the dashboards tests: the seeded arena (seeded_arena.py), the Streamlit app served over
it on a loopback port, and Debian's Chromium."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import docker
import pytest

from seeded_arena import ROOT, SeededArena, build_arena


@pytest.fixture(scope="session")
def arena(tmp_path_factory) -> SeededArena:
    home = tmp_path_factory.mktemp("arena-home")
    built, container = build_arena(home)
    yield built
    try:
        container.remove(force=True)
    except docker.errors.NotFound:
        pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def streamlit_url(arena, tmp_path_factory) -> str:
    """The dashboards app served by a real `streamlit run` over the test arena."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("ARENA_BUCKET_URL", "ARENA_LAKE_URL")}
    env |= {"ARENA_HOME": str(arena.home), "DAGSTER_HOME": str(arena.dagster_home), "PYTHONUNBUFFERED": "1"}
    log = tmp_path_factory.mktemp("streamlit") / "streamlit.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "dashboards/app.py", "--server.address", "127.0.0.1",
             "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false",
             "--server.fileWatcherType", "none"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"streamlit did not come up:\n{log.read_text()[-3000:]}")
            time.sleep(0.3)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(15)


@pytest.fixture
def page(chromium):
    context = chromium.new_context(viewport={"width": 1500, "height": 1100})
    page = context.new_page()
    page.set_default_timeout(45_000)
    yield page
    context.close()


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory) -> Path:
    """Where page screenshots go (ARENA_SCREENSHOTS to keep them somewhere known)."""
    target = os.environ.get("ARENA_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        return Path(target)
    return tmp_path_factory.mktemp("screenshots")
