"""Errors as the OpenAI API returns them: `{"error": {"message", "type", "param", "code"}}` with the status."""

from __future__ import annotations

import math

from starlette.responses import JSONResponse


class APIError(Exception):
    """An error answered to the client with its HTTP status, in the OpenAI shape."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type, code, param
        self.retry_after = retry_after

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        headers = {}
        if self.retry_after is not None:
            headers["Retry-After"] = str(max(1, math.ceil(self.retry_after)))
        if self.status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        return JSONResponse(self.body(), status_code=self.status, headers=headers)


def bad_request(message: str, code: str, param: str | None = None) -> APIError:
    return APIError(400, message, code=code, param=param)


def bad_item(index: int, message: str, code: str) -> APIError:
    """A 400 that names the offending `input` item."""
    return APIError(400, f"input[{index}]: {message}", code=code, param=f"input[{index}]")


def unauthorized(message: str) -> APIError:
    return APIError(401, message, code="invalid_api_key")


def model_not_found(name: str, served: str) -> APIError:
    return APIError(404, f"The model '{name}' does not exist; this server serves '{served}' (see GET /v1/models)",
                    code="model_not_found", param="model")


def not_found(path: str) -> APIError:
    return APIError(404, f"no route {path}; routes: POST /v1/embeddings, GET /v1/models, GET /v1/health/live, "
                    "GET /v1/health/ready, GET /metrics", code="not_found")


def too_large(size: int | None, limit: int) -> APIError:
    got = f"{size} bytes" if size is not None else "the request body"
    return APIError(413, f"{got} is over the {limit}-byte limit (--max-body-mb)", code="request_too_large")


def queue_full(retry_after: float) -> APIError:
    return APIError(429, "the server's queue is full; retry after the Retry-After header's seconds",
                    type="rate_limit_error", code="queue_full", retry_after=retry_after)


def unavailable(message: str, code: str, retry_after: float = 1.0) -> APIError:
    return APIError(503, message, type="server_error", code=code, retry_after=retry_after)


def server_error(message: str) -> APIError:
    return APIError(500, message, type="server_error", code="internal_error")
