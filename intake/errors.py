"""One error shape everywhere: {"error": {"code", "message", "details": [...]}} (DESIGN.md, "REST API")."""
from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
              405: "method_not_allowed", 409: "conflict", 413: "too_large", 415: "unsupported_media_type",
              422: "invalid", 429: "quota_exceeded", 500: "internal"}


class ApiError(Exception):
    """A refusal the caller can act on: ``code`` is stable, ``message`` is for people."""

    def __init__(self, status: int, code: str, message: str, details: list[Any] | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.details = details or []
        self.headers = headers or {}


def error_body(code: str, message: str, details: list[Any] | None = None) -> dict:
    return {"error": {"code": code, "message": message, "details": details or []}}


def count_refusal(app, exc: ApiError) -> None:
    """Count a refusal in the app's Prometheus metrics (intake/metrics.py), by the rule it named."""
    metrics = getattr(app.state, "metrics", None)
    if metrics is not None:
        from intake.metrics import rule_of
        metrics.refused(rule_of(exc), exc.status)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        count_refusal(request.app, exc)
        return JSONResponse(error_body(exc.code, exc.message, exc.details), exc.status, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = HTTP_CODES.get(exc.status_code, "error")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        return JSONResponse(error_body(code, message), exc.status_code, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        details = [{"rule": "request", "value": ".".join(str(p) for p in err.get("loc", ())),
                    "message": err.get("msg", "")} for err in exc.errors()]
        return JSONResponse(error_body("invalid_request", "the request does not match the API", details), 422)

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, _exc: Exception) -> JSONResponse:
        return JSONResponse(error_body("internal", "internal error; the operators have the traceback"), 500)
