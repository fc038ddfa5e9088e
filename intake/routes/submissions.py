"""/api/v1/submissions: upload, list, read, and follow the logs of submissions."""
from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from intake.auth import current_user, resolve_user
from intake.errors import ApiError, error_body
from intake.models import User
from intake.uploads import receive_upload
from lake.vocabulary import TERMINAL_STATUSES as TERMINAL

router = APIRouter(prefix="/api/v1/submissions", tags=["submissions"])

UPLOAD_DOC = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file"],
    "properties": {"file": {"type": "string", "format": "binary", "description": "the submission zip"},
                   "challenge": {"type": "string", "description": "challenge name (default: arena.toml, "
                                                                   "then ARENA_DEFAULT_CHALLENGE)"}}}}}}}


@router.post("", status_code=202, openapi_extra=UPLOAD_DOC,
             responses={200: {"description": "the same zip was already submitted by you: that submission"},
                        413: {"description": "too large"}, 422: {"description": "refused, every problem listed"},
                        429: {"description": "quota; see Retry-After"}})
async def create_submission(request: Request, user: User = Depends(current_user)) -> JSONResponse:
    service = request.app.state.submissions
    settings = request.app.state.settings
    try:
        attempt = await run_in_threadpool(service.admit, user.id)  # rate limit and quota, before any reading
    except ApiError:
        request.app.state.metrics.uploads.labels(outcome="refused").inc()
        raise
    upload = None
    try:
        upload = await receive_upload(request, settings.max_upload_bytes, settings.home / "tmp",
                                      settings.max_multipart_parts, settings.max_header_bytes)
        # settles the attempt ("accepted"/"duplicate") in the submission's own transaction
        accepted = await run_in_threadpool(service.accept, user.id, upload.path, upload.fields.get("challenge") or None,
                                           attempt)
    except ApiError as exc:
        rule = exc.details[0].get("rule") if exc.details and isinstance(exc.details[0], dict) else None
        await run_in_threadpool(service.settle, attempt, f"refused:{rule or exc.code}")
        request.app.state.metrics.uploads.labels(outcome="refused").inc()
        raise
    except BaseException:
        await run_in_threadpool(service.settle, attempt, "error")
        raise
    finally:
        if upload is not None:
            upload.discard()
    request.app.state.metrics.uploads.labels(outcome="accepted" if accepted.created else "duplicate").inc()
    sub = accepted.submission
    body = {"id": sub.id, "status": service.status(sub.id)["status"], "challenge": sub.challenge,
            "duplicate": not accepted.created, "urls": service.urls(sub.id)}
    return JSONResponse(body, status_code=202 if accepted.created else 200)


@router.get("")
def list_submissions(request: Request, user: User = Depends(current_user),
                     all: bool = Query(False, description="admins only: every user's submissions"),
                     limit: int = Query(50, ge=1, le=500),
                     before: str | None = Query(None, description="page: ids sorting before this one")) -> dict:
    service = request.app.state.submissions
    with request.app.state.db.session() as session:
        rows = service.listing(session, user, all, limit, before)
        items = [service.describe(sub, with_result=False) for sub in rows]
    return {"items": items, "next_before": items[-1]["id"] if len(items) == limit else None}


@router.get("/{sid}")
def read_submission(sid: str, request: Request, user: User = Depends(current_user)) -> dict:
    service = request.app.state.submissions
    with request.app.state.db.session() as session:
        return service.describe(service.visible(session, user, sid))


@router.get("/{sid}/logs")
def read_logs(sid: str, request: Request, user: User = Depends(current_user)) -> dict:
    """Every log line so far (the polling alternative to the WebSocket)."""
    service = request.app.state.submissions
    with request.app.state.db.session() as session:
        service.visible(session, user, sid)
    status = service.status(sid)
    return {"id": sid, "status": status.get("status"), "reason": status.get("reason"),
            "lines": [{"phase": phase, "line": line} for phase, line in service.bucket.log_lines(sid)]}


LOG_POLL_S = 0.25


async def deny(websocket: WebSocket, status: int, code: str, message: str) -> None:
    """Refuse the handshake with a plain HTTP answer in the API's error shape."""
    from intake.errors import count_refusal
    count_refusal(websocket.app, ApiError(status, code, message))
    await websocket.send_denial_response(JSONResponse(error_body(code, message), status))


@router.websocket("/{sid}/logs")
async def follow_logs(websocket: WebSocket, sid: str) -> None:
    """History first, then new lines as they land in the bucket; a final {"status": …} when done."""
    service = websocket.app.state.submissions
    user, how = await run_in_threadpool(resolve_user, websocket)
    origin = websocket.headers.get("origin")
    same_site = {websocket.app.state.settings.public_url, f"http://{websocket.headers.get('host')}",
                 f"https://{websocket.headers.get('host')}"}
    if how == "session" and origin and origin.rstrip("/") not in same_site:
        # a cookie-authenticated socket opened by another site's page (cross-site WebSocket hijacking)
        return await deny(websocket, 403, "cross_origin", "this socket may only be opened from the arena's pages")
    if user is None:
        return await deny(websocket, 401, "unauthorized", "a valid API token is required (?token= or Bearer)")

    def visible():
        with websocket.app.state.db.session() as session:
            service.visible(session, user, sid)
    try:
        await run_in_threadpool(visible)
    except ApiError as exc:
        return await deny(websocket, exc.status, exc.code, exc.message)
    settings = websocket.app.state.settings
    sockets = websocket.app.state.ws_open  # user id -> log sockets open now (this process)
    if sockets.get(user.id, 0) >= settings.ws_per_user:
        return await deny(websocket, 429, "too_many_sockets",
                          f"at most {settings.ws_per_user} log sockets open at once per user "
                          f"(rule ws_per_user = {settings.ws_per_user}); close one first")
    sockets[user.id] = sockets.get(user.id, 0) + 1
    try:
        await _follow(websocket, service, sid, settings.ws_max_lifetime_s)
    finally:
        sockets[user.id] -= 1
        if not sockets[user.id]:
            del sockets[user.id]


async def _follow(websocket: WebSocket, service, sid: str, lifetime_s: float) -> None:
    await websocket.accept()
    sent, last_status = 0, None
    ends = asyncio.get_running_loop().time() + lifetime_s
    # Listen while polling: a client that goes away frees its slot at once, not at the next send.
    listening = asyncio.ensure_future(websocket.receive())
    try:
        while True:
            if asyncio.get_running_loop().time() >= ends:
                await websocket.send_json({"closed": "lifetime", "rule": "ws_max_lifetime_s", "value": lifetime_s,
                                           "message": f"a log socket lives at most {lifetime_s} s; reconnect"})
                await websocket.close(code=1000, reason="ws_max_lifetime_s")  # clients reconnect
                return
            status = service.status(sid)  # read before the logs: lines written before a terminal status are sent
            lines = await run_in_threadpool(service.bucket.log_lines, sid)
            for phase, line in lines[sent:]:
                await websocket.send_json({"phase": phase, "line": line})
            sent = len(lines)
            state = status.get("status")
            if state != last_status:
                last_status = state
                final = state in TERMINAL
                await websocket.send_json({"status": state, "reason": status.get("reason"), "final": final})
                if final:
                    await websocket.close()
                    return
            await asyncio.wait({listening}, timeout=LOG_POLL_S)
            if listening.done():
                if listening.result()["type"] == "websocket.disconnect":
                    return
                listening = asyncio.ensure_future(websocket.receive())  # what clients send is ignored
    except WebSocketDisconnect:
        return
    finally:
        listening.cancel()
