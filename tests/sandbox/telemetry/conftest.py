"""Fixtures for the telemetry tests: real containers on the local Docker engine, always removed."""
from __future__ import annotations

import json
import time
from pathlib import Path

import docker
import pytest

from sandbox.telemetry.replay import load_trace

IMAGE = "arena/python-cpu:1"
TRACE = Path(__file__).parents[2] / "fixtures" / "telemetry" / "h200_replay_trace.json"

IDLE = "import time; time.sleep(600)"


@pytest.fixture(scope="session")
def docker_client():
    client = docker.from_env()
    deadline = time.monotonic() + 600
    while True:   # the image may still be building when the suite starts
        try:
            client.images.get(IMAGE)
            return client
        except docker.errors.ImageNotFound:
            if time.monotonic() > deadline:
                raise
            time.sleep(5)


@pytest.fixture
def run_container(docker_client):
    """Start ``python3 -c CODE`` in a network-less container; every one is removed afterwards."""
    started = []

    def run(code: str, runtime: str = "runc", wait_for: str | None = None):
        container = docker_client.containers.run(IMAGE, ["python3", "-c", code], detach=True,
                                                 network_mode="none", runtime=runtime)
        started.append(container)
        if wait_for is not None:
            deadline = time.monotonic() + 60
            while wait_for.encode() not in container.logs():
                assert time.monotonic() < deadline, f"container never printed {wait_for!r}"
                time.sleep(0.1)
        return container

    yield run
    for container in started:
        try:
            container.remove(force=True)
        except docker.errors.NotFound:
            pass   # the test removed it itself


@pytest.fixture
def idle_container(run_container):
    return run_container(IDLE)


@pytest.fixture
def trace() -> dict:
    return load_trace(TRACE)


@pytest.fixture
def trace_json() -> dict:
    return json.loads(TRACE.read_text())
