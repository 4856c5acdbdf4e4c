"""OpenAI-style errors: every failure answers `{"error": {"message", "type", "param", "code"}}`.

That is the body the official clients parse into their exception's message (PEERS §6.1); the status
picks the client's exception class (400 BadRequestError, 401 AuthenticationError, 413, 429
RateLimitError, 5xx InternalServerError). FastAPI's own 422 for a malformed request becomes a 400, as
OpenAI answers malformed requests. Handlers are installed by `install(app)`.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("granite_asr.server")

_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "server_error",
    504: "server_error",
}


class ApiError(Exception):
    """An error answered as OpenAI answers it."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers = headers

    def body(self) -> dict:
        kind = _TYPES.get(self.status, "server_error" if self.status >= 500 else "invalid_request_error")
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


class UploadTooLarge(Exception):
    """The request body passed --max-upload-mb (raised from inside the body reader, see app.py)."""

    def __init__(self, limit_bytes: int):
        super().__init__(f"upload larger than {limit_bytes} bytes")
        self.limit_bytes = limit_bytes


def bad_request(message: str, param: str | None = None, code: str | None = "invalid_value") -> ApiError:
    return ApiError(400, message, param=param, code=code)


def too_large(limit_bytes: int) -> ApiError:
    mb = limit_bytes / 2**20
    return ApiError(
        413, f"Maximum content size limit ({mb:g} MB) exceeded.", param="file", code="file_too_large"
    )


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, e: ApiError) -> JSONResponse:
        return e.response()

    @app.exception_handler(UploadTooLarge)
    async def _upload(request: Request, e: UploadTooLarge) -> JSONResponse:
        return too_large(e.limit_bytes).response()

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, e: RequestValidationError) -> JSONResponse:
        first = e.errors()[0] if e.errors() else {}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "form")]
        message = first.get("msg", "invalid request")
        return bad_request(message, param=".".join(loc) or None).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, e: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code)
        return ApiError(e.status_code, str(e.detail), code=code, headers=e.headers).response()

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, e: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        return ApiError(500, f"internal error: {type(e).__name__}: {e}", code="internal_error").response()
