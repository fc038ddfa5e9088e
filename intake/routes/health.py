"""/healthz: the database answers and the bucket is writable."""
from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
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
    checks["bucket"] = "ok" if request.app.state.submissions.bucket.writable() else "error: not writable"
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse({"status": "ok" if ok else "degraded", "checks": checks}, 200 if ok else 503)


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    """Prometheus metrics (intake/metrics.py); only with ``Authorization: Bearer $ARENA_METRICS_TOKEN``."""
    from intake.errors import ApiError
    from intake.metrics import authorized

    token = request.app.state.settings.metrics_token
    if not token:
        raise ApiError(404, "not_found", "metrics are off: set ARENA_METRICS_TOKEN to turn them on")
    if not authorized(request.headers.get("authorization"), token):
        raise ApiError(401, "unauthorized", "metrics need Authorization: Bearer <ARENA_METRICS_TOKEN>",
                       headers={"WWW-Authenticate": "Bearer"})
    body, content_type = request.app.state.metrics.render()
    return Response(body, media_type=content_type)
