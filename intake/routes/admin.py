"""/api/v1/admin: operator actions."""
from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from intake.auth import admin_user
from intake.models import User

router = APIRouter(prefix="/api/v1/admin", tags=["admin"])


@router.post("/submissions/{sid}/rerun", status_code=202)
def rerun(sid: str, request: Request, admin: User = Depends(admin_user)) -> dict:
    service = request.app.state.submissions
    with request.app.state.db.session() as session:
        sub = service.visible(session, admin, sid)
    key = service.bucket.request_rerun(sub.id, requested_by=admin.name)
    return {"id": sub.id, "rerun_key": key}
