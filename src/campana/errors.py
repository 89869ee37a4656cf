"""The domain's errors. ``api/errors.py`` renders them as HTTP answers, for the app's
handlers and the producer call's short road alike."""

from __future__ import annotations


class CampanaError(Exception):
    """Base error: ``code`` is stable for programs, ``message`` is for people."""

    status_code = 400
    code = "bad_request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidToken(CampanaError):
    status_code = 401
    code = "unauthorized"


class MissingScope(CampanaError):
    status_code = 403
    code = "forbidden"


class NotificationNotFound(CampanaError):
    status_code = 404
    code = "not_found"

    def __init__(self, message: str = "notification not found") -> None:
        super().__init__(message)


class IdempotencyConflict(CampanaError):
    status_code = 409
    code = "idempotency_conflict"

    def __init__(self) -> None:
        super().__init__("this Idempotency-Key was already used with a different request body")


class BodyTooLarge(CampanaError):
    status_code = 413
    code = "body_too_large"

    def __init__(self, max_bytes: int) -> None:
        super().__init__(f"the request body is larger than {max_bytes} bytes")


class UnsupportedMediaType(CampanaError):
    status_code = 415
    code = "unsupported_media_type"

    def __init__(self) -> None:
        super().__init__("the body must be JSON, sent with Content-Type: application/json")


class IncompleteBody(CampanaError):
    """The client went away, or stopped sending, before its body was complete. Nobody reads
    the answer; it exists so the request ends as a client's error, not as a 500."""

    status_code = 400
    code = "incomplete_body"

    def __init__(self) -> None:
        super().__init__("the request body ended before it was complete")


class InvalidRequest(CampanaError):
    status_code = 422
    code = "validation_failed"


class DatabaseUnavailable(CampanaError):
    """The database could not be reached or did not answer in time. Nothing was written,
    unless the connection broke during the commit itself, whose outcome no one knows:
    a create is retried safely with its idempotency key."""

    status_code = 503
    code = "database_unavailable"

    def __init__(self) -> None:
        super().__init__("the database is not reachable right now; try again shortly")
