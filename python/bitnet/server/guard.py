"""What every request passes first: a request id, the API key check, the body size limit and
one access-log line (a pure ASGI middleware, so streams pass through untouched)."""

from __future__ import annotations

import hmac
import logging
import time
import uuid
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from .schemas import error_body
from .settings import ServerConfig

__all__ = ["ACCESS_LOGGER", "OPEN_PATHS", "Guard"]

ACCESS_LOGGER = logging.getLogger("bitnet.access")
OPEN_PATHS = frozenset({"/health", "/ready"})


class Guard:
    """Pure ASGI middleware (streams pass through untouched): request ids, API keys, body size
    limit, JSON access log lines."""

    def __init__(self, app: Any, config: ServerConfig) -> None:
        self.app = app
        self.config = config

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        t0 = time.perf_counter()
        status = 500

        async def send_with_id(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode("latin-1")),
                ]
            await send(message)

        early = _check_auth(request, self.config) or _check_size(request, self.config)
        try:
            await (early or self.app)(scope, receive, send_with_id)
        finally:
            ACCESS_LOGGER.info(
                "%s %s %s",
                request.method,
                request.url.path,
                status,
                extra={
                    "bitnet_event": {
                        "event": "http_request",
                        "request_id": request_id,
                        "method": request.method,
                        "path": request.url.path,
                        "status": status,
                        "duration_ms": round((time.perf_counter() - t0) * 1000, 3),
                        "client": request.client.host if request.client else None,
                    }
                },
            )


def _check_auth(request: Request, config: ServerConfig) -> Response | None:
    if not config.api_keys or request.url.path in OPEN_PATHS or request.method == "OPTIONS":
        return None
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    # Every key is compared, each in constant time, so timing reveals nothing about which matched.
    matched = False
    for key in config.api_keys:
        matched |= hmac.compare_digest(token.strip().encode(), key.encode())
    if scheme.lower() == "bearer" and matched:
        return None
    return JSONResponse(
        error_body(
            "missing or invalid API key (Authorization: Bearer <key>)", "authentication_error", 401
        ),
        401,
        {"WWW-Authenticate": "Bearer"},
    )


def _check_size(request: Request, config: ServerConfig) -> Response | None:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > config.max_body_bytes:
        return JSONResponse(
            error_body(
                f"the request body has {length} bytes; the limit is {config.max_body_bytes}",
                "invalid_request_error",
                413,
            ),
            413,
        )
    if (
        length is None
        and request.method == "POST"
        and "chunked" in request.headers.get("transfer-encoding", "")
    ):
        return JSONResponse(
            error_body(
                "send a Content-Length header (chunked bodies are not accepted)",
                "invalid_request_error",
                411,
            ),
            411,
        )
    return None
