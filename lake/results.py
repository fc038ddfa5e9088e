"""Result JSON: one per evaluation, validated against lake/schemas/result.schema.json."""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import jsonschema

SCHEMA_PATH = Path(__file__).parent / "schemas" / "result.schema.json"
METRICS = ("tokens_per_second", "peak_memory_bw_GBs", "latency_p99_ms", "ttft_p50_ms", "ttft_p99_ms",
           "tpot_p50_ms", "tpot_p99_ms", "accuracy", "peak_memory_bytes", "energy_joules")


@lru_cache(maxsize=1)
def result_schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text())


def validate_result(result: dict) -> dict:
    """Raise jsonschema.ValidationError naming the offending field; return the result unchanged."""
    validator().validate(result)
    return result


@lru_cache(maxsize=1)
def validator():
    """The schema checked once, its validator reused (checking the schema itself costs ~0.1 s)."""
    cls = jsonschema.validators.validator_for(result_schema())
    cls.check_schema(result_schema())
    return cls(result_schema())


def empty_metrics() -> dict:
    """Every metric unmeasured: null is the honest default."""
    return {name: None for name in METRICS}
