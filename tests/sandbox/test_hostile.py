"""A battery of hostile submissions. Each one ends with a specific status and reason and a detail that
says what happened; whatever it tried is contained; and the next evaluation on the same engine (the
calibration decoder) is still correct. Every one runs under the default runtime (gVisor where Docker
has it); a representative subset runs under runc too."""
from __future__ import annotations

import json

import pytest

from challenges import load_challenge
from sandbox_workloads import BATTERY, assert_calibrated_ok, calibrated_workload, default_runtime

RUNC_SUBSET = {"network", "fork_bomb", "memory_bomb", "fill_tmp", "escape", "huge_line", "early_exit",
               "secrets"}


def probe(evaluation) -> dict:
    """What the decoder reported about its attempts: its `ARENA-PROBE {...}` stderr line."""
    for line in evaluation.stderr.splitlines():
        if line.startswith("ARENA-PROBE "):
            return json.loads(line[len("ARENA-PROBE "):])
    raise AssertionError(f"the decoder reported nothing; stderr: {evaluation.stderr[-2000:]!r}")


def peak_rss_reset() -> None:
    with open("/proc/self/clear_refs", "w") as f:   # resets VmHWM, the peak resident set
        f.write("5")


def peak_rss_bytes() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


# -- what each hostile decoder must end with, and what else must hold ---------------------------------

def check_network(ev, runtime):
    attempts = probe(ev)
    for what in ("tcp_ip", "tcp_dns", "dns", "udp", "gateway"):
        assert attempts[what] != "ok", f"{what} reached the outside: {attempts}"
    assert attempts["interfaces"] == ["lo"], attempts


def check_fork_bomb(ev, runtime):
    if runtime != "runc":
        # gVisor's ptrace platform backs guest processes and threads with host ones in the container's
        # pids cgroup: reaching the limit takes the whole sandbox down (Go runtime, exit 2), not the fork.
        assert ev.container.exit_code == 2, ev.container
        return
    attempts = probe(ev)
    assert attempts["error"] is not None and "Resource temporarily unavailable" in attempts["error"], attempts
    assert attempts["forked"] < BATTERY.pids_limit, attempts


def check_fill_tmp(ev, runtime):
    attempts = probe(ev)
    assert attempts["error"] == "ENOSPC", attempts
    assert attempts["written"] <= BATTERY.tmpfs_bytes, attempts


def check_stderr_flood(ev, runtime):
    assert len(ev.stderr.encode()) <= BATTERY.stderr_cap_bytes + 200
    assert "[arena] stderr truncated" in ev.stderr and ev.stderr.startswith("noise ")


def check_escape(ev, runtime):
    attempts = probe(ev)
    failed = ("write_model", "create_in_model", "write_root", "mount", "remount_model", "ptrace",
              "docker_socket", "dev_mem", "kcore", "shadow", "sysrq", "kmsg", "syslog", "setuid_root")
    worked = {k: attempts[k] for k in failed if attempts[k] == "ok"}
    if runtime != "runc" and attempts["syslog"] == "ok":   # gVisor's own synthetic kernel log, no host's
        assert "gVisor" in attempts["kernel_log"][0] or "Starting" in attempts["kernel_log"][0], attempts
        del worked["syslog"]
    assert not worked, f"these attempts worked: {worked}; all: {attempts}"
    assert attempts["hostname"] == "sandbox" and attempts["uid"] == 10001, attempts
    assert set(attempts["env"]) <= {"ARENA_MODEL_DIR", "HOME", "PYTHONUNBUFFERED", "PATH", "HOSTNAME",
                                    "PYTHONDONTWRITEBYTECODE", "PIP_NO_CACHE_DIR", "DEBIAN_FRONTEND",
                                    "PIP_DISABLE_PIP_VERSION_CHECK", "OPENBLAS_NUM_THREADS", "LC_CTYPE"}, attempts


def check_secrets(ev, runtime):
    found = probe(ev)
    assert found["by_name"] == [] and found["by_content"] == [], found
    assert found["env"] == {}, found
    host_mounts = [m for m in found["mounts"] if not m.startswith(("/proc", "/sys", "/dev"))]
    assert set(host_mounts) <= {"/", "/tmp", "/arena/model", "/etc/hostname", "/etc/hosts",
                                "/etc/resolv.conf"}, found["mounts"]


def check_huge_line(ev, runtime):
    pass   # the bounded host memory is asserted around the evaluation, see test_hostile_submission


EXPECTED = {
    # name: (status, reason, words the detail must contain, extra check)
    "network": ("success", None, None, check_network),
    "fork_bomb": ("success", None, None, check_fork_bomb),
    "memory_bomb": ("failed", "oom", "out of memory", None),
    "fill_tmp": ("success", None, None, check_fill_tmp),
    "busy_no_output": ("timeout", "timeout", 'no {"ready": true} within', None),
    "hang_after_ready": ("timeout", "timeout", "stalled: no output for", None),
    "hang_mid_run": ("timeout", "timeout", "stalled: no output for", None),
    "invalid_json": ("failed", "protocol", "not JSON", None),
    "huge_line": ("failed", "protocol", "longer than the limit", check_huge_line),
    "stderr_flood": ("success", None, None, check_stderr_flood),
    "unknown_id": ("failed", "protocol", "unknown request id", None),
    "duplicate_done": ("failed", "protocol", "after its done", None),
    "early_exit": ("failed", "crash", "exit code 3", None),
    "escape": ("success", None, None, check_escape),
    "secrets": ("success", None, None, check_secrets),
}

CASES = [pytest.param(name, "auto", id=f"{name}-default") for name in EXPECTED] + \
        [pytest.param(name, "runc", id=f"{name}-runc") for name in EXPECTED if name in RUNC_SUBSET]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """The real challenge's model, mounted read-only, so that its mount is what the probes see."""
    return load_challenge("efficient-decode").model_dir(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def private_workload():
    """The challenge's own prompts (2 public, private ones from its generator), with the calibration
    decoder's answers as reference."""
    source = load_challenge("efficient-decode").prompts

    class FewPublic:
        def public(self):
            return source.public()[:2]

        def private(self, seed, count):
            return source.private(seed, count)
    return calibrated_workload(prompts=FewPublic())


@pytest.mark.docker
@pytest.mark.parametrize("name,runtime", CASES)
def test_hostile_submission(name, runtime, images, calibrated, evaluate, model_dir, private_workload):
    status, reason, detail_words, check = EXPECTED[name]
    image = images(f"hostile/{name}")
    workload = private_workload if name == "secrets" else calibrated_workload()
    if name == "fork_bomb" and runtime != "runc":
        status, reason, detail_words = "failed", "crash", "exit code 2"
    if name == "huge_line":
        peak_rss_reset()
        before = peak_rss_bytes()
    evaluation = evaluate(image, runtime, workload=workload, model_dir=model_dir)
    result = evaluation.result
    if name == "huge_line":   # 100 MB arrived; the harness held at most about one line's limit of it
        assert peak_rss_bytes() - before < 48 << 20, (before, peak_rss_bytes())
    expected_runtime = default_runtime() if runtime == "auto" else runtime
    assert result["environment"]["runtime"] == expected_runtime
    detail = result["measurement"]["detail"]
    assert (result["status"], result["reason"]) == (status, reason), f"detail: {detail}; stderr: " \
        f"{evaluation.stderr[-1500:]!r}"
    if detail_words:
        assert detail_words in detail, detail
    if status != "success":
        assert result["measurement"]["valid"] is not True   # nothing of a failed run is ranked
    if check:
        check(evaluation, runtime)
    # The engine is none the worse: the next evaluation on it is correct.
    assert_calibrated_ok(evaluate(calibrated, runtime))
