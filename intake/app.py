"""The intake web application: `create_app(settings)`; `app` for `uvicorn intake.app:app`."""
from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from starlette.middleware.sessions import SessionMiddleware

from intake.config import Settings
from intake.db import Database
from intake.errors import install_error_handlers
from intake.oauth import build_oauth
from intake.limits import BodyLimit
from intake.metrics import IntakeMetrics
from intake.routes import admin, health, leaderboard, submissions, web
from intake.sessions import COOKIE as SESSION_COOKIE
from intake.submissions import Submissions

log = logging.getLogger("arena.intake")

ERROR_SCHEMA = {"type": "object", "required": ["error"], "properties": {"error": {
    "type": "object", "required": ["code", "message", "details"],
    "properties": {"code": {"type": "string"}, "message": {"type": "string"}, "details": {"type": "array"}}}}}
ERROR_RESPONSES = {status: {"description": what, "content": {"application/json": {"schema": ERROR_SCHEMA}}}
                   for status, what in ((400, "malformed request"), (401, "no valid API token"),
                                        (403, "not allowed (admins only, CSRF)"), (404, "not found, or not yours"),
                                        (413, "upload too large"), (415, "not multipart/form-data"),
                                        (422, "refused; every problem in details"),
                                        (429, "quota; see Retry-After"))}


async def sweep_forever(subs: Submissions, settings: Settings) -> None:
    """Submissions.sweep at startup (rows of the last 7 days) and every ARENA_SWEEP_INTERVAL_S (only
    rows that aged past ARENA_SWEEP_AGE_S since the last sweep, so a sweep reads a few statuses, not
    a week's), off the event loop."""
    window_s = 7 * 86400
    while True:
        try:
            removed = await asyncio.to_thread(subs.sweep, settings.sweep_age_s, window_s)
            window_s = 2 * settings.sweep_interval_s
            if removed["spool_files"] or removed["orphan_rows"]:
                log.warning("swept %s", removed)
        except Exception:   # a sweep that fails (database restarting) waits for the next one
            log.exception("sweep failed")
        await asyncio.sleep(settings.sweep_interval_s)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    db = Database(settings.database_url)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        db.migrate()
        await run_in_threadpool(app.state.submissions.warm_up)
        sweeper = asyncio.create_task(sweep_forever(app.state.submissions, settings))
        yield
        sweeper.cancel()
        db.dispose()

    app = FastAPI(title="Decode Arena intake", version="1", lifespan=lifespan, responses=ERROR_RESPONSES)
    app.state.settings = settings
    app.state.db = db
    app.state.submissions = Submissions(settings, db)
    app.state.metrics = IntakeMetrics(settings.bucket, settings.lake)  # GET /metrics (ARENA_METRICS_TOKEN)
    app.state.ws_open = {}  # user id -> log sockets open in this process (ARENA_WS_PER_USER)
    app.add_middleware(SessionMiddleware, secret_key=settings.secret_key, session_cookie=SESSION_COOKIE,
                       max_age=settings.session_max_age_s, same_site="lax",
                       https_only=settings.public_url.startswith("https"))
    app.add_middleware(BodyLimit, max_bytes=settings.max_request_bytes, max_header_bytes=settings.max_header_bytes)
    install_error_handlers(app)
    for module in (submissions, leaderboard, admin, health):
        app.include_router(module.router)
    app.state.oauth = build_oauth(settings)
    web.install(app)
    return app


def __getattr__(name: str):
    # `intake.app:app` is built on first use, so importing this module reads no environment.
    if name == "app":
        global app
        app = create_app()
        return app
    raise AttributeError(name)
