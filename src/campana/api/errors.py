"""Errors as HTTP answers: ``{"error": "<code>", "detail": "<what is wrong>"}``.

The app's exception handlers and the producer call's short road (``rest.ProducerCalls``)
render them alike. ``EveryMethodRoute`` makes a 405's ``Allow`` true to its path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.routing import Match
from starlette.types import Receive, Scope, Send

from campana.errors import CampanaError

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized"}


# Seconds a client is asked to wait after a 503 (the database was unreachable).
RETRY_AFTER_SECONDS = 1


def domain_error(error: CampanaError) -> JSONResponse:
    headers = None
    if error.status_code == 401:
        headers = {"WWW-Authenticate": "Bearer"}
    elif error.status_code == 413:
        # The rest of the body is not read: the connection cannot carry another request.
        headers = {"Connection": "close"}
    elif error.status_code == 503:
        headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
    return JSONResponse(
        {"error": error.code, "detail": error.message},
        status_code=error.status_code,
        headers=headers,
    )


# A bad request learns its first few problems and how many more there are: the answer
# to one request stays small whatever it holds.
MAX_PROBLEMS = 5
MAX_PROBLEM_CHARS = 200


def invalid_request(error: RequestValidationError) -> JSONResponse:
    problems = error.errors()
    described = [_describe(problem) for problem in problems[:MAX_PROBLEMS]]
    if len(problems) > MAX_PROBLEMS:
        described.append(f"and {len(problems) - MAX_PROBLEMS} more")
    return JSONResponse({"error": "validation_failed", "detail": "; ".join(described)}, 422)


def http_error(error: HTTPException) -> JSONResponse:
    return JSONResponse(
        {"error": _HTTP_CODES.get(error.status_code, "http_error"), "detail": error.detail},
        status_code=error.status_code,
        headers=error.headers,
    )


# What each kind of error answers, for the app's handlers and the producer call's road.
RENDERERS: dict[type[Exception], Callable[[Any], JSONResponse]] = {
    CampanaError: domain_error,
    RequestValidationError: invalid_request,
    HTTPException: http_error,
}


def render(error: Exception) -> JSONResponse | None:
    """The answer to ``error``, or ``None`` for one that is a bug (the server's 500)."""
    for kind, renderer in RENDERERS.items():
        if isinstance(error, kind):
            return renderer(error)
    return None


def _describe(problem: dict[str, object]) -> str:
    """``body.link_url: ...``: where and what, never the offending value itself."""
    location = problem.get("loc") or ()
    assert isinstance(location, (tuple, list))
    path = ".".join(str(part) for part in location)
    message = str(problem.get("msg", "invalid")).removeprefix("Value error, ")
    described = f"{path}: {message}" if path else message
    if len(described) > MAX_PROBLEM_CHARS:  # a location may hold a client's long key
        described = described[: MAX_PROBLEM_CHARS - 1] + "…"
    return described


# The methods a path may accept, in the order an ``Allow`` header lists them.
_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


class EveryMethodRoute(APIRoute):
    """A route whose 405 names every method of its path, not only its own.

    Each method of a path is a route of its own, and the router hands a request with no
    matching method to the first route of the path: its ``Allow`` would say ``GET`` where
    ``GET, POST`` is true. A plain ``OPTIONS`` (a CORS preflight never gets here) is
    answered 204 with the same list.
    """

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in (self.methods or ()):
            await super().handle(scope, receive, send)
            return
        allowed = ", ".join(_methods_of_path(scope))
        if scope["method"] == "OPTIONS":
            await Response(status_code=204, headers={"Allow": allowed})(scope, receive, send)
            return
        raise HTTPException(status_code=405, headers={"Allow": allowed})


def _methods_of_path(scope: Scope) -> list[str]:
    """Asks every route of the app, as the router would for each method."""
    routes = scope["router"].routes
    accepted = []
    for method in _METHODS:
        # A fresh scope each time: matching writes into the scope it is given.
        probe = {
            "type": "http",
            "method": method,
            "path": scope["path"],
            "root_path": scope.get("root_path", ""),
            "headers": scope.get("headers", []),
        }
        if any(route.matches(probe)[0] is Match.FULL for route in routes):
            accepted.append(method)
    return [*accepted, "OPTIONS"]
