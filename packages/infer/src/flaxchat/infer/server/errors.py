"""Errors in OpenAI's shape: {"error": {"message", "type", "param", "code"}} with a 4xx/5xx status."""

from __future__ import annotations

import logging
from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

logger = logging.getLogger(__name__)


class APIError(Exception):
    """A request the server refuses; the message tells the client what to change."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def validation_message(errors) -> tuple[str, str | None]:
    """Pydantic errors -> one readable message ("messages.0.content: String should have at most 8000 characters")
    and the parameter of the first one."""
    parts, param = [], None
    for error in errors[:5]:
        where = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
        param = param or where or None
        parts.append(f"{where}: {error.get('msg')}" if where else str(error.get("msg")))
    return "; ".join(parts) or "invalid request", param


def install_error_handlers(app: FastAPI, count: Callable[[int], None]) -> None:
    """Every error answers in OpenAI's shape; count(status) sees each one."""

    def respond(error: APIError, headers=None) -> JSONResponse:
        count(error.status)
        return JSONResponse(error.body(), status_code=error.status, headers=headers)

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError):
        return respond(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        message, param = validation_message(exc.errors())
        return respond(APIError(400, message, param=param, code="invalid_value"))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return respond(APIError(exc.status_code, str(exc.detail), type=kind), getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception):
        logger.exception("internal error serving %s %s", request.method, request.url.path)
        return respond(APIError(500, f"internal server error: {type(exc).__name__}", type="server_error"))
