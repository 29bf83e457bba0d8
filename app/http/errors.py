"""API errors: raised anywhere in a route, rendered once as an enveloped JSON response."""

from __future__ import annotations

from starlette.responses import JSONResponse

from app.contract import error_body


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        return JSONResponse(error_body(self.message, self.code), status_code=self.status, headers=self.headers)
