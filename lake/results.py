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
    jsonschema.validate(result, result_schema())
    return result


def empty_metrics() -> dict:
    """Every metric unmeasured: null is the honest default."""
    return {name: None for name in METRICS}


def flatten(result: dict) -> dict:
    """One flat row of a result, for the evaluations table."""
    row = {k: result[k] for k in ("submission_id", "challenge", "status", "reason", "started_at", "finished_at")}
    row.update({f"m_{k}": (float(v) if v is not None else None) for k, v in result["metrics"].items()})
    meas = result["measurement"]
    row.update({"scenario": meas["scenario"], "valid": meas["valid"], "repeats": meas["repeats"],
                "tokens_per_second_cv": meas["tokens_per_second_cv"], "engine": meas["engine"]})
    interference = meas.get("interference") or {}
    row.update({"disturbed": interference.get("disturbed"), "remeasured": interference.get("remeasured")})
    env = result["environment"]
    row.update({"runtime": env["runtime"], "image_digest": env["image_digest"],
                "base_image": env["base_image"], "gpu": env["gpu"], "host": env["host"],
                "harness_version": env["harness_version"]})
    return row
