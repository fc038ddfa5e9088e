"""Fixtures for the dashboards tests: the seeded arena (seeded_arena.py), the Streamlit app served over
it on a loopback port, and Debian's Chromium."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest
import uvicorn

from playwright.sync_api import expect
from seeded_arena import ROOT, SeededArena, build_arena

# The machine running the tests may be busy (six builds at once): give Streamlit time to render.
expect.set_options(timeout=90_000)


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


SECRET_KEY = "dashboards-test-secret-" + "k" * 32
ADMIN, PARTICIPANT, STRANGER = "olga", "alice", "mallory"   # alice owns FAST and ALICE_OLD; mallory nothing


@dataclass
class Intake:
    """The real intake app (uvicorn, in a thread) over the test arena: users log in here, the browser
    keeps its session cookie, and the dashboards check that cookie."""
    url: str
    settings: object
    app: object
    tokens: dict[str, str]


@pytest.fixture(scope="session")
def intake(arena) -> Intake:
    from intake.app import create_app
    from intake.config import Settings
    from intake.security import create_user

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    settings = Settings(home=arena.home, bucket=arena.home / "bucket", lake=arena.home / "lake",
                        database_url=f"sqlite:///{arena.home / 'arena.db'}", secret_key=SECRET_KEY, port=port,
                        public_url=f"http://127.0.0.1:{port}")
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "intake did not start"
        time.sleep(0.05)
    tokens = {}
    with app.state.db.session() as session, session.begin():
        for name in (ADMIN, PARTICIPANT, STRANGER):
            tokens[name] = create_user(session, name, admin=name == ADMIN)[1]
    yield Intake(f"http://127.0.0.1:{port}", settings, app, tokens)
    server.should_exit = True
    thread.join(30)
    sock.close()


@pytest.fixture(scope="session")
def streamlit_url(arena, intake, tmp_path_factory) -> str:
    """The dashboards app served by a real `streamlit run` over the test arena, checking intake's sessions
    with the environment scripts/services.py gives it (its allow-list)."""
    sys.path.insert(0, str(ROOT))
    from scripts.services import service_env

    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("ARENA_BUCKET_URL", "ARENA_LAKE_URL")}
    env |= {"ARENA_HOME": str(arena.home), "DAGSTER_HOME": str(arena.dagster_home), "PYTHONUNBUFFERED": "1",
            "ARENA_DATABASE_URL": intake.settings.database_url, "ARENA_SECRET_KEY": SECRET_KEY,
            "ARENA_PUBLIC_URL": intake.url, "ARENA_POOLS_FILE": str(arena.pools_file)}
    env = service_env("streamlit", env)
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


def log_in(page, intake: Intake, name: str) -> None:
    """Log in to intake in this browser with the user's API token (the web form's token login)."""
    page.goto(f"{intake.url}/login")
    page.fill('input[name="token"]', intake.tokens[name])
    page.locator('form[action="/login/token"] button, form[action="/login/token"] input[type="submit"]').click()
    page.wait_for_url(f"{intake.url}/submissions")


@pytest.fixture
def browser_page(chromium):
    """A fresh browser with no session (anonymous)."""
    context = chromium.new_context(viewport={"width": 1500, "height": 1100})
    page = context.new_page()
    page.set_default_timeout(45_000)
    yield page
    context.close()


@pytest.fixture
def page(browser_page, intake):
    """An organiser's browser: logged in to intake as an admin."""
    log_in(browser_page, intake, ADMIN)
    return browser_page


@pytest.fixture
def participant_page(browser_page, intake):
    """A participant's browser: logged in to intake as alice."""
    log_in(browser_page, intake, PARTICIPANT)
    return browser_page


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory) -> Path:
    """Where page screenshots go (ARENA_SCREENSHOTS to keep them somewhere known)."""
    target = os.environ.get("ARENA_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        return Path(target)
    return tmp_path_factory.mktemp("screenshots")
