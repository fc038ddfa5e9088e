"""The typed challenge spec: ``challenge.toml`` parsed once into frozen dataclasses.

Every reader of a challenge (intake, the sandbox, orchestration, dashboards) gets the same typed
object, so a key is spelled, typed, defaulted and checked in exactly one place. A spec that breaks a
rule is refused when it is loaded, with the file, the table, the key and the value in the message,
never later in the middle of an evaluation. Unknown keys are refused too: a typo must not silently
fall back to a default.

The ``[model]``, ``[prompts]`` and ``[gate]`` tables also carry keys that only their ``kind`` knows;
those stay in a read-only ``table`` that the kind's implementation parses with ``Fields`` (see
``challenges/registry.py``).
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

SCENARIOS = ("offline", "single-stream", "server")
_REQUIRED = object()


class ChallengeSpecError(ValueError):
    """A challenge.toml that breaks a rule; the message names the file, table, key and value."""


class Fields:
    """Reads one TOML table into typed values and refuses keys nobody read (``done()``)."""

    def __init__(self, raw: Mapping[str, Any], where: str):
        if not isinstance(raw, Mapping):
            raise ChallengeSpecError(f"{where}: must be a table, got {raw!r}")
        self.raw, self.where, self._read = raw, where, set()

    def _value(self, key: str, default, kinds: tuple[type, ...], what: str):
        self._read.add(key)
        if key not in self.raw:
            if default is _REQUIRED:
                raise ChallengeSpecError(f"{self.where}: `{key}` is required ({what})")
            return default
        value = self.raw[key]
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            raise ChallengeSpecError(f"{self.where}: `{key}` must be {what}, got {value!r}")
        return value

    def int(self, key: str, default=_REQUIRED, minimum: int | None = None) -> int:
        value = self._value(key, default, (int,), "an integer")
        if value is not None and minimum is not None and value < minimum:
            raise ChallengeSpecError(f"{self.where}: `{key}` must be at least {minimum}, got {value!r}")
        return value

    def float(self, key: str, default=_REQUIRED, minimum: float | None = None,
              maximum: float | None = None) -> float:
        value = self._value(key, default, (int, float), "a number")
        if value is None:
            return value
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            raise ChallengeSpecError(f"{self.where}: `{key}` must be within [{minimum}, {maximum}], got {value!r}")
        return float(value)

    def str(self, key: str, default=_REQUIRED, choices: tuple[str, ...] | None = None) -> str:
        value = self._value(key, default, (str,), "a string")
        if value is not None and choices is not None and value not in choices:
            raise ChallengeSpecError(f"{self.where}: `{key}` must be one of {', '.join(choices)}, got {value!r}")
        return value

    def strs(self, key: str, default=_REQUIRED, choices: tuple[str, ...] | None = None) -> tuple[str, ...]:
        value = self._value(key, default, (list, tuple), "a list of strings")
        if not all(isinstance(v, str) for v in value):
            raise ChallengeSpecError(f"{self.where}: `{key}` must be a list of strings, got {value!r}")
        bad = [v for v in value if choices is not None and v not in choices]
        if bad:
            raise ChallengeSpecError(f"{self.where}: `{key}` may hold only {', '.join(choices)}, got {bad!r}")
        return tuple(value)

    def table(self, key: str, required: bool = True) -> "Fields":
        self._read.add(key)
        if key not in self.raw and not required:
            return Fields({}, f"{self.where} [{key}]")
        if key not in self.raw:
            raise ChallengeSpecError(f"{self.where}: table [{key}] is required")
        return Fields(self.raw[key], f"{self.where} [{key}]")

    def rest(self) -> Mapping[str, Any]:
        """Every key not read yet, read-only: the kind-specific part of a table."""
        rest = {k: v for k, v in self.raw.items() if k not in self._read}
        self._read |= set(rest)
        return MappingProxyType(rest)

    def done(self) -> None:
        unknown = sorted(set(self.raw) - self._read)
        if unknown:
            raise ChallengeSpecError(f"{self.where}: unknown key(s) {', '.join(map(repr, unknown))}")


@dataclass(frozen=True)
class Limits:
    """Sandbox limits of this challenge's evaluations; None keeps the sandbox's default (ARENA_SANDBOX_*).

    A limit set here wins over the host's defaults: limits are rules of the competition, the same
    for every participant whichever host runs the evaluation."""
    memory_bytes: int | None = None
    cpus: float | None = None
    threads: int | None = None           # threads the decoder is told to use (OMP/BLAS, ARENA_THREADS)
    pids: int | None = None
    tmpfs_bytes: int | None = None
    load_timeout_s: float | None = None
    run_timeout_s: float | None = None
    stall_timeout_s: float | None = None   # requests in flight and no output for this long: timeout
    build_timeout_s: float | None = None   # wall clock for building a submission's image


@dataclass(frozen=True)
class WorkloadSpec:
    max_new_tokens: int
    public_prompts: int          # prompts.json: all of them go through the accuracy pass
    private_prompts: int         # fresh private prompts in the accuracy pass
    timed_min_prompts: int       # each warm-up and timed run sends at least this many fresh prompts
    performance_set: tuple[str, ...] = ("private",)


@dataclass(frozen=True)
class PerformanceSpec:
    scenario: str                # the default scenario
    scenarios: tuple[str, ...]   # the scenarios a submission may be measured in
    repeats: int
    warmup_passes: int
    min_duration_ms: int
    server_load_fraction: float  # server: Poisson arrivals at this fraction of the measured offline rate
    ttft_latency_ms: float
    tpot_latency_ms: float


@dataclass(frozen=True)
class KindSpec:
    """A pluggable part (model, prompts): its kind and the keys only that kind knows."""
    kind: str
    table: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), hash=False)


@dataclass(frozen=True)
class GateSpec:
    kind: str
    threshold: float             # the share of scored tokens that must pass
    audit_fraction: float        # share of timed outputs judged (drawn unpredictably); 1.0: all
    table: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), hash=False)


@dataclass(frozen=True)
class ChallengeSpec:
    name: str
    description: str
    queue: str
    base_images: tuple[str, ...]
    limits: Limits
    workload: WorkloadSpec
    performance: PerformanceSpec
    gate: GateSpec
    model: KindSpec
    prompts: KindSpec


def parse_spec(raw: Mapping[str, Any], where: str) -> ChallengeSpec:
    """The typed spec of a parsed challenge.toml; ChallengeSpecError for any broken rule."""
    top = Fields(raw, where)
    spec = ChallengeSpec(
        name=top.str("name"), description=top.str("description", "").strip(),
        queue=top.str("queue", "cpu"), base_images=top.strs("base_images"),
        limits=_limits(top.table("limits", required=False)),
        workload=_workload(top.table("workload")), performance=_performance(top.table("performance")),
        gate=_gate(top.table("gate")), model=_kind(top.table("model")), prompts=_kind(top.table("prompts")))
    top.done()
    if not spec.base_images:
        raise ChallengeSpecError(f"{where}: `base_images` must name at least one official base image")
    return spec


def load_spec(path: Path) -> ChallengeSpec:
    try:
        raw = tomllib.loads(Path(path).read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ChallengeSpecError(f"{path}: not valid TOML ({exc})") from exc
    return parse_spec(raw, str(path))


def _limits(f: Fields) -> Limits:
    limits = Limits(memory_bytes=f.int("memory_bytes", None, 1 << 20), cpus=f.float("cpus", None, 0.01),
                    threads=f.int("threads", None, 1), pids=f.int("pids", None, 8),
                    tmpfs_bytes=f.int("tmpfs_bytes", None, 1 << 20),
                    load_timeout_s=f.float("load_timeout_s", None, 1),
                    run_timeout_s=f.float("run_timeout_s", None, 1),
                    stall_timeout_s=f.float("stall_timeout_s", None, 1),
                    build_timeout_s=f.float("build_timeout_s", None, 1))
    f.done()
    return limits


def _workload(f: Fields) -> WorkloadSpec:
    private = f.int("private_prompts", minimum=1)
    workload = WorkloadSpec(
        max_new_tokens=f.int("max_new_tokens", minimum=1), public_prompts=f.int("public_prompts", minimum=0),
        private_prompts=private, timed_min_prompts=f.int("timed_min_prompts", private, 1),
        performance_set=f.strs("performance_set", ("private",), choices=("private",)))
    f.done()
    return workload


def _performance(f: Fields) -> PerformanceSpec:
    scenarios = f.strs("scenarios", SCENARIOS, choices=SCENARIOS)
    perf = PerformanceSpec(
        scenario=f.str("scenario", "offline", choices=scenarios), scenarios=scenarios,
        repeats=f.int("repeats", 3, 1), warmup_passes=f.int("warmup_passes", 1, 1),
        min_duration_ms=f.int("min_duration_ms", 3000, 0),
        server_load_fraction=f.float("server_load_fraction", 0.5, 0.01, 1.0),
        ttft_latency_ms=f.float("ttft_latency_ms", 2000.0, 0.001),
        tpot_latency_ms=f.float("tpot_latency_ms", 200.0, 0.001))
    f.done()
    return perf


def _gate(f: Fields) -> GateSpec:
    return GateSpec(kind=f.str("kind"), threshold=f.float("threshold", minimum=0.0, maximum=1.0),
                    audit_fraction=f.float("audit_fraction", 1.0, 0.01, 1.0), table=f.rest())


def _kind(f: Fields) -> KindSpec:
    return KindSpec(kind=f.str("kind"), table=f.rest())
