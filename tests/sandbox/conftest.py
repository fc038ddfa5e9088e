"""Fixtures for the sandbox tests: images built once per session from tests/fixtures, removed at the
end; small workloads and short limits so that a whole battery of evaluations takes minutes."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from sandbox.build import build_image, remove_image
from sandbox.config import SandboxSettings
from sandbox.evaluate import Evaluation, Workload, evaluate_image
from sandbox_workloads import BATTERY, FIXTURES, SESSION, calibrated_workload


@pytest.fixture(scope="session")
def images():
    """`images(path)` builds tests/fixtures/<path> once per session; every image is removed at the end."""
    built: dict[str, str] = {}

    def get(path: str) -> str:
        if path not in built:
            tag = f"arena-test/{path.replace('/', '-').replace('_', '-')}:{SESSION}"
            log: list[str] = []
            with tempfile.TemporaryDirectory(prefix="arena-fixture-") as tmp:
                context = Path(tmp) / "context"
                shutil.copytree(FIXTURES / path, context)
                shutil.copy(FIXTURES / "hostile" / "probe.py", context)   # report() and behave()
                result = build_image(context, tag, BATTERY, log.append)
            assert result.ok, f"building {path} failed: {result.error}\n" + "\n".join(log[-20:])
            built[path] = tag
        return built[path]

    yield get
    for tag in built.values():
        remove_image(tag)


@pytest.fixture(scope="session")
def calibrated(images) -> str:
    return images("decoders/calibrated")


@pytest.fixture
def evaluate(tmp_path):
    """Evaluate an image with the battery's limits (or `settings`), logs under tmp_path."""
    counter = iter(range(1000))

    def run(image: str, runtime: str, workload: Workload | None = None,
            settings: SandboxSettings = BATTERY, model_dir: Path | None = None) -> Evaluation:
        n = next(counter)
        return evaluate_image(image, submission_id=f"test-{SESSION}-{n}", challenge="test",
                              workload=workload or calibrated_workload(), model_dir=model_dir,
                              settings=settings.with_(runtime=runtime), log_root=tmp_path / f"eval-{n}")
    return run

