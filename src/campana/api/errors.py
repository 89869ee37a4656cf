"""Errors as HTTP answers: ``{"error": "<code>", "detail": "<what is wrong>"}``.

The app's exception handlers and the producer call's short road (``rest.ProducerCalls``)
render them alike.
"""

from __future__ import annotations

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from campana.errors import CampanaError

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized"}


# Seconds a client is asked to wait after a 503 (the database was unreachable).
RETRY_AFTER_SECONDS = 1


def domain_error(error: CampanaError) -> JSONResponse:
    headers = None
    if error.status_code == 401:
        headers = {"WWW-Authenticate": "Bearer"}
    elif error.status_code == 503:
        headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
    return JSONResponse(
        {"error": error.code, "detail": error.message},
        status_code=error.status_code,
        headers=headers,
    )


def invalid_request(error: RequestValidationError) -> JSONResponse:
    problems = [_describe(problem) for problem in error.errors()]
    return JSONResponse({"error": "validation_failed", "detail": "; ".join(problems)}, 422)


def http_error(error: HTTPException) -> JSONResponse:
    return JSONResponse(
        {"error": _HTTP_CODES.get(error.status_code, "http_error"), "detail": error.detail},
        status_code=error.status_code,
        headers=error.headers,
    )


def _describe(problem: dict[str, object]) -> str:
    """``body.link_url: ...``: where and what, never the offending value itself."""
    location = problem.get("loc") or ()
    assert isinstance(location, (tuple, list))
    path = ".".join(str(part) for part in location)
    message = str(problem.get("msg", "invalid")).removeprefix("Value error, ")
    return f"{path}: {message}" if path else message
