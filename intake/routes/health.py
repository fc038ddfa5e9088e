"""/healthz: the database answers and the bucket is writable."""
from __future__ import annotations

import os

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz(request: Request) -> JSONResponse:
    checks = {}
    try:
        with request.app.state.db.session() as session:
            session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # report, do not raise: this is what the probe is for
        checks["database"] = f"error: {exc.__class__.__name__}"
    bucket = request.app.state.settings.bucket
    checks["bucket"] = "ok" if bucket.is_dir() and os.access(bucket, os.W_OK) else "error: not writable"
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse({"status": "ok" if ok else "degraded", "checks": checks}, 200 if ok else 503)
