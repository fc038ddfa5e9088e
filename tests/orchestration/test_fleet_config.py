"""Fleet mode's configuration: the pools file, worker devices, and the dagster.yaml both ends share."""
from __future__ import annotations

import os

import pytest
import yaml

from orchestration.config import write_dagster_yaml
from orchestration.pools import load_workers, pool_limits
from orchestration.worker_process import check_devices, worker_command, worker_environment
from sandbox.config import SandboxSettings
from sandbox.devices import Devices, for_this_process


def test_devices_parse_and_travel_through_the_environment():
    d = Devices.parse("cpuset=2-3,gpus=GPU-aaa+GPU-bbb")
    assert (d.cpuset, d.gpus) == ("2-3", ("GPU-aaa", "GPU-bbb"))
    assert d.as_json() == {"cpuset": "2-3", "gpus": ["GPU-aaa", "GPU-bbb"]}
    assert Devices.parse(str(d)) == d
    for bad in ("", "cpus=1", "gpus=", "cpuset"):
        with pytest.raises(ValueError):
            Devices.parse(bad)


def test_the_sandbox_takes_the_workers_devices_not_the_process_wide_ones(monkeypatch):
    monkeypatch.setenv("ARENA_SANDBOX_CPUSET", "0")
    monkeypatch.setenv("ARENA_SANDBOX_GPUS", "0,1")
    base = SandboxSettings.from_env()
    assert for_this_process(base) == Devices("0", ("0", "1"))          # embedded: the host defaults
    env = worker_environment("gpu", Devices.parse("cpuset=1,gpus=GPU-x"), base=dict(os.environ))
    monkeypatch.setenv("ARENA_WORKER_DEVICES", env["ARENA_WORKER_DEVICES"])
    from orchestration.resources import Sandbox
    settings = Sandbox().settings()
    assert (settings.cpuset, settings.gpus) == ("1", ("GPU-x",))       # a worker: its own devices only
    assert env["ARENA_DAGSTER_MODE"] == "fleet" and env["ARENA_WORKER_POOL"] == "gpu"


def test_a_worker_refuses_devices_its_host_lacks():
    with pytest.raises(ValueError, match="not on this host"):
        check_devices(Devices.parse(f"cpuset={os.cpu_count()}"))
    check_devices(Devices.parse(f"cpuset=0-{os.cpu_count() - 1}"))
    cmd = worker_command("gpu-h100", "w1")
    assert cmd[cmd.index("-Q") + 1] == "gpu-h100" and "--concurrency=1" in cmd and "--max-tasks-per-child=1" in cmd


def test_pools_file_gives_each_pool_its_number_of_workers(tmp_path):
    path = tmp_path / "pools.toml"
    path.write_text('[[worker]]\nname="g0"\npool="gpu"\nhost="h1"\ndevices="gpus=GPU-a"\n'
                    '[[worker]]\nname="g1"\npool="gpu"\nhost="h1"\ndevices="gpus=GPU-b"\n'
                    '[[worker]]\nname="c0"\npool="cpu"\ndevices="cpuset=3"\n')
    assert pool_limits(path) == {"gpu": 2, "cpu": 1}
    assert [w.name for w in load_workers(path)] == ["g0", "g1", "c0"]
    path.write_text('[[worker]]\nname="g0"\npool="gpu"\nhost="h1"\ndevices="gpus=GPU-a"\n'
                    '[[worker]]\nname="g1"\npool="gpu"\nhost="h1"\ndevices="gpus=GPU-a"\n')
    with pytest.raises(ValueError, match="GPU-a on h1 is given to both g0 and g1"):
        load_workers(path)


def test_fleet_dagster_yaml(tmp_path, monkeypatch):
    pools = tmp_path / "pools.toml"
    pools.write_text('[[worker]]\nname="a"\npool="cpu"\ndevices="cpuset=0"\n'
                     '[[worker]]\nname="b"\npool="cpu"\ndevices="cpuset=1"\n')
    monkeypatch.setenv("ARENA_POOLS_FILE", str(pools))
    monkeypatch.setenv("ARENA_DAGSTER_MODE", "fleet")
    monkeypatch.setenv("ARENA_DAGSTER_POSTGRES_URL", "postgresql://arena@db.internal:5433/dagster")
    monkeypatch.setenv("ARENA_DAGSTER_POSTGRES_PASSWORD", "s3cret")
    monkeypatch.setenv("ARENA_DAGSTER_IO_URL", "s3://runs/arena")
    text = write_dagster_yaml(tmp_path).read_text()
    assert "s3cret" not in text                     # the password is an env reference
    config = yaml.safe_load(text)
    db = config["storage"]["postgres"]["postgres_db"]
    assert db["password"] == {"env": "ARENA_DAGSTER_POSTGRES_PASSWORD"}
    assert (db["hostname"], db["port"], db["db_name"], db["scheme"]) == ("db.internal", 5433, "dagster",
                                                                         "postgresql+psycopg2")
    limits = config["run_coordinator"]["config"]["tag_concurrency_limits"]
    assert limits == [{"key": "arena/queue", "value": "cpu", "limit": 2}]
    launcher = config["run_launcher"]
    assert launcher["class"] == "ArenaCeleryRunLauncher" and launcher["config"]["broker"] == {"env": "ARENA_REDIS_URL"}
    celery = launcher["config"]["config_source"]
    assert celery["task_acks_late"] and celery["task_reject_on_worker_lost"] and celery["worker_prefetch_multiplier"] == 1
    from orchestration.fleet import max_runtime_s, visibility_timeout_s
    from challenges import challenge_names
    assert celery["broker_transport_options"]["visibility_timeout"] == visibility_timeout_s()
    assert visibility_timeout_s() > max(max_runtime_s(n) for n in challenge_names())
    assert config["run_retries"]["enabled"] and config["run_retries"]["max_retries"] == 1
    assert config["compute_logs"]["config"]["bucket"] == "runs"
    # the worker's Celery app loads exactly the launcher's settings
    from orchestration.fleet import celery_app_args
    assert celery_app_args()["config_source"] == celery
    monkeypatch.setenv("ARENA_DAGSTER_POSTGRES_URL", "postgresql://arena:inline@db/dagster")
    with pytest.raises(ValueError, match="must not contain a password"):
        write_dagster_yaml(tmp_path)


def test_embedded_dagster_yaml_retries_platform_failures(tmp_path, monkeypatch):
    monkeypatch.delenv("ARENA_DAGSTER_MODE", raising=False)
    config = yaml.safe_load(write_dagster_yaml(tmp_path).read_text())
    # embedded: Dagster's default launcher with a run-worker health check (orchestration/launcher.py)
    assert config["run_launcher"] == {"module": "orchestration.launcher", "class": "ArenaDefaultRunLauncher"}
    assert config["run_retries"] == {"enabled": True, "max_retries": 1, "retry_on_asset_or_op_failure": True}


def test_max_runtime_follows_the_challenge_limits():
    from orchestration.fleet import max_runtime_s
    import tomllib
    from challenges import CHALLENGES_ROOT
    limits = tomllib.loads((CHALLENGES_ROOT / "smollm2-135m" / "challenge.toml").read_text())["limits"]
    assert max_runtime_s("smollm2-135m") >= limits["run_timeout_s"] + limits["load_timeout_s"]
    assert max_runtime_s("smollm2-135m") > max_runtime_s("efficient-decode")


def test_a_local_fleet_creates_the_s3_buckets_its_storage_urls_name(tmp_path):
    """The fleet demo's bucket and lake live on the fleet's S3 server: LocalFleet creates every bucket
    its s3:// storage URLs name, and lists those URLs; file:// URLs need no bucket."""
    from orchestration.localfleet import LocalFleet
    fleet = LocalFleet(tmp_path, [], db_prefix="arena_fleet_cfg", extra_env={
        "ARENA_BUCKET_URL": "s3://arena-demo/bucket", "ARENA_LAKE_URL": "s3://arena-lake/lake"})
    assert fleet.db_name.startswith("arena_fleet_cfg_")
    assert fleet.s3_buckets() == ["arena-dagster", "arena-demo", "arena-lake"]
    urls = fleet.storage_urls()
    assert (urls["intake bucket"], urls["lake"]) == ("s3://arena-demo/bucket", "s3://arena-lake/lake")
    local = LocalFleet(tmp_path, [], extra_env={"ARENA_BUCKET_URL": f"file://{tmp_path}/bucket",
                                                 "ARENA_LAKE_URL": f"file://{tmp_path}/lake"})
    assert local.s3_buckets() == ["arena-dagster"]


def test_a_plain_postgresql_url_gets_the_psycopg2_driver_dagster_postgres_needs(tmp_path, monkeypatch):
    from orchestration.config import DAGSTER_POSTGRES_URL_ENV
    monkeypatch.delenv("ARENA_DAGSTER_MODE", raising=False)
    for given in ("postgresql://u@127.0.0.1:5432/d", "postgresql+psycopg://u@127.0.0.1:5432/d"):
        monkeypatch.setenv(DAGSTER_POSTGRES_URL_ENV, given)
        config = yaml.safe_load(write_dagster_yaml(tmp_path).read_text())
        assert config["storage"]["postgres"]["postgres_url"] == {"env": DAGSTER_POSTGRES_URL_ENV}
        assert os.environ[DAGSTER_POSTGRES_URL_ENV] == "postgresql+psycopg2://u@127.0.0.1:5432/d"
