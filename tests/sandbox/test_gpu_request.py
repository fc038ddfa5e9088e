"""GPU handover: a container gets exactly the GPUs of its run, by UUID, as one NVIDIA device request.
Checked on the created container's HostConfig (this host has no GPU and no NVIDIA toolkit)."""
from __future__ import annotations

import docker.errors
import pytest

from lake.vocabulary import LABEL_MANAGED
from sandbox.config import SandboxSettings
from sandbox.engine import client
from sandbox.gpu import check_gpu_ids, gpu_isolation
from sandbox.runner import container_config

GPU_A = "GPU-1f3c9a2e-5b7d-4e21-9c0a-8d6f2b4e1a37"
GPU_B = "GPU-8a2b4c6d-0e1f-4a3b-8c5d-6e7f8091a2b3"


@pytest.fixture
def created():
    made = []

    def create(gpus, settings=SandboxSettings(), runtime="runsc"):
        cfg = container_config("arena/python-cpu:1", settings, runtime, None, {"org.decode-arena.test": "gpu"},
                               (), gpus)
        container = client().containers.create(command=["true"], **cfg)
        made.append(container)
        container.reload()
        return container
    yield create
    for c in made:
        c.remove(force=True)


@pytest.mark.docker
def test_the_container_gets_exactly_its_runs_gpus_by_uuid(created):
    c = created([GPU_A, GPU_B])
    assert c.attrs["HostConfig"]["DeviceRequests"] == [
        {"Driver": "nvidia", "Count": 0, "DeviceIDs": [GPU_A, GPU_B], "Capabilities": [["gpu"]], "Options": {}}]
    assert not c.attrs["HostConfig"]["Devices"] and c.attrs["HostConfig"]["Privileged"] is False
    assert c.attrs["Config"]["Labels"][LABEL_MANAGED] == "1"


@pytest.mark.docker
def test_the_runs_gpus_win_over_the_process_wide_setting_and_none_means_none(created):
    settings = SandboxSettings().with_(gpus=("0",))
    assert created([GPU_B], settings).attrs["HostConfig"]["DeviceRequests"][0]["DeviceIDs"] == [GPU_B]
    assert created(None, settings).attrs["HostConfig"]["DeviceRequests"][0]["DeviceIDs"] == ["0"]
    assert not created([], settings).attrs["HostConfig"]["DeviceRequests"]


@pytest.mark.docker
def test_without_the_nvidia_toolkit_a_gpu_container_does_not_start(created):
    c = created([GPU_A])
    with pytest.raises(docker.errors.APIError, match="could not select device driver"):
        c.start()


def test_ids_that_are_not_gpus_are_refused_by_name():
    assert check_gpu_ids([GPU_A, "MIG-1f3c9a2e-5b7d-4e21-9c0a-8d6f2b4e1a37", "3"]) == (
        GPU_A, "MIG-1f3c9a2e-5b7d-4e21-9c0a-8d6f2b4e1a37", "3")
    with pytest.raises(ValueError, match="'all'"):
        check_gpu_ids(["all"])
    with pytest.raises(ValueError, match="twice"):
        check_gpu_ids([GPU_A, GPU_A])


def test_the_isolation_recorded_follows_the_runtime():
    assert gpu_isolation("runsc", [GPU_A]) == "runsc-nvproxy"
    assert gpu_isolation("runc", [GPU_A]) == "runc-hardened"
    assert gpu_isolation("runsc", []) is None
