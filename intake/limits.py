"""Bounds on what one request may make intake hold: total body bytes and header bytes, for every
request, before any handler runs (the multipart parser adds the part count and part header bytes,
``intake.uploads``). A refusal names the limit and its value, in the API's error shape.

The HTTP server bounds header bytes too (``uvicorn --h11-max-incomplete-event-size``, set from the same
setting by ``python -m intake`` and scripts/services.py), so an endless header never reaches this code.
"""
from __future__ import annotations

import json

from intake.errors import ApiError, error_body


def limit_error(status: int, code: str, rule: str, value: int, what: str) -> ApiError:
    return ApiError(status, code, f"{what} exceeds the limit {rule} = {value}",
                    [{"rule": rule, "value": value, "message": f"{what} may be at most {value} bytes"}])


def body_too_large(cap: int) -> ApiError:
    return limit_error(413, "too_large", "max_request_bytes", cap, "the request body")


class BodyLimit:
    """Pure ASGI middleware: refuse a declared Content-Length over ``max_bytes`` at once, count the bytes
    of a body that did not declare one (or lied) and fail the read that crosses the bound, and refuse
    request headers larger than ``max_header_bytes`` in total."""

    def __init__(self, app, max_bytes: int, max_header_bytes: int):
        self.app, self.max_bytes, self.max_header_bytes = app, max_bytes, max_header_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        header_bytes = sum(len(k) + len(v) + 4 for k, v in scope.get("headers", ()))
        if header_bytes > self.max_header_bytes:
            error = limit_error(431, "headers_too_large", "max_header_bytes", self.max_header_bytes,
                                f"the request headers ({header_bytes} bytes)")
            return await self._refuse(scope, receive, send, error)
        if scope["type"] == "websocket":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers", ())).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._refuse(scope, receive, send, body_too_large(self.max_bytes))
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise body_too_large(self.max_bytes)
            return message
        await self.app(scope, counted, send)

    async def _refuse(self, scope, receive, send, error: ApiError):
        if "app" in scope:
            from intake.errors import count_refusal
            count_refusal(scope["app"], error)
        if scope["type"] == "websocket":
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": 1009, "reason": error.message[:120]})
            return
        body = json.dumps(error_body(error.code, error.message, error.details)).encode()
        await send({"type": "http.response.start", "status": error.status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
