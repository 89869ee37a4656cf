"""REST calls of ``/api/v1/notifications``."""

from __future__ import annotations

import contextlib
import json
import re
import time
import uuid
from typing import Annotated, Any, Final
from urllib.parse import urlencode

import orjson
from fastapi import APIRouter, Body, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from campana import metrics, notifications
from campana.api import errors
from campana.api.deps import CurrentUser, ServicesDep, get_services, producer_from_header
from campana.errors import BodyTooLarge, IncompleteBody, UnsupportedMediaType
from campana.schemas import (
    IDEMPOTENCY_KEY_MAX_CHARS,
    BulkChange,
    BulkDelete,
    BulkResult,
    Counts,
    ErrorBody,
    NotificationCreate,
    NotificationItem,
    NotificationType,
    UnreadCount,
)
from campana.store import Action, View

router = APIRouter(
    prefix="/api/v1/notifications", tags=["notifications"], route_class=errors.EveryMethodRoute
)

# Deeper pages are refused: past 2^63 the databases overflow, and long before that an
# offset scan costs more than any user scrolls.
MAX_SKIP: Final = 1_000_000


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    descriptions = {
        400: "The body is not JSON.",
        401: "Missing, malformed, badly signed or expired token.",
        403: "The token lacks the `notifications:send` scope.",
        404: "No such notification for this user.",
        409: "Idempotency-Key reused with a different body.",
        413: "The body is larger than `CAMPANA_HTTP_MAX_BODY_BYTES`; the connection closes.",
        415: "The body is not sent as `Content-Type: application/json`.",
        422: "Invalid input; `detail` says what is wrong.",
    }
    return {code: {"model": ErrorBody, "description": descriptions[code]} for code in codes}


# Replaced by the cursor in the next page's link; every other parameter (filters) is kept.
PAGE_KEYS: Final = frozenset({"skip", "before"})
NEXT_PAGE_HEADER: Final = {
    "Link": {
        "description": "The next page, when there is one: `</api/v1/notifications/?before=<id>"
        '&limit=N...>; rel="next"` (RFC 8288), the same filters and the last item as cursor.',
        "schema": {"type": "string"},
    }
}


@router.get(
    "/",
    responses={200: {"headers": NEXT_PAGE_HEADER}, **_errors(401, 404, 422)},
    summary="List the caller's notifications",
)
async def list_notifications(
    services: ServicesDep,
    principal: CurrentUser,
    request: Request,
    response: Response,
    skip: Annotated[
        int, Query(ge=0, le=MAX_SKIP, description=f"Items to skip, at most {MAX_SKIP:,}.")
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=100, description="Items to return.")] = 20,
    before: Annotated[
        uuid.UUID | None,
        Query(
            description="Cursor: only items older than this one of yours (the last item of "
            "the page before; 404 if it is not yours). Pages stay gapless and without "
            "repeats while items are added. `skip` then counts from it."
        ),
    ] = None,
    is_read: Annotated[
        bool | None, Query(description="`false`: unread items only; `true`: read ones only.")
    ] = None,
    is_seen: Annotated[
        bool | None, Query(description="`false`: unseen items only; `true`: seen ones only.")
    ] = None,
    archived: Annotated[
        bool,
        Query(description="`true`: the archived view; `false` (the default): the inbox."),
    ] = False,
    types: Annotated[
        list[NotificationType] | None,
        Query(
            alias="type",
            description="Items of this type only; given several times, of any of them.",
        ),
    ] = None,
) -> list[NotificationItem]:
    """The inbox (or the archived view), newest first (`created_at` descending, ties by
    `id` descending). Page with `before` (the `Link` header names the next page) or, as
    before, with `skip`."""
    page = await notifications.list_notifications(
        services.db,
        user_id=principal.user_id,
        skip=skip,
        limit=limit,
        before=before,
        view=View(
            archived=archived,
            types=_types(types),
            is_read=is_read,
            is_seen=is_seen,
        ),
    )
    if page.has_more:
        query = [(k, v) for k, v in request.query_params.multi_items() if k not in PAGE_KEYS]
        query.append(("before", str(page.items[-1].id)))
        response.headers["Link"] = f'<{request.url.path}?{urlencode(query)}>; rel="next"'
    return page.items


def _types(types: list[NotificationType] | None) -> tuple[str, ...] | None:
    return None if types is None else tuple(dict.fromkeys(kind.value for kind in types))


@router.get("/unread-count", responses=_errors(401), summary="The caller's unread count")
async def unread_count(services: ServicesDep, principal: CurrentUser) -> UnreadCount:
    """Unread items in the inbox (archived ones do not count)."""
    count = await notifications.unread_count(services.db, user_id=principal.user_id)
    return UnreadCount(count=count)


@router.get("/counts", responses=_errors(401), summary="The caller's counts, per type")
async def counts(services: ServicesDep, principal: CurrentUser) -> Counts:
    """Unread and unseen items of the inbox, in all and per type: what `counts.updated`
    says on a socket opened with `counts=1`."""
    badge = await notifications.counts(services.db, user_id=principal.user_id)
    return Counts.model_validate(badge.counts_payload())


async def _change(
    services: ServicesDep, principal: CurrentUser, notification_id: uuid.UUID, action: Action
) -> NotificationItem:
    return await notifications.change_notification(
        services.db,
        services.publisher,
        user_id=principal.user_id,
        notification_id=notification_id,
        action=action,
    )


_ITEM_ERRORS: Final = _errors(401, 404, 422)


@router.patch("/{notification_id}/read", responses=_ITEM_ERRORS, summary="Mark one as read")
async def mark_read(
    services: ServicesDep, principal: CurrentUser, notification_id: uuid.UUID
) -> NotificationItem:
    """Read (and so seen). Sockets of the owner get `notification.read`, then
    `notification.updated`, then `unread_count.updated`, only when this call changed the
    item; marking a read item again answers it unchanged."""
    return await _change(services, principal, notification_id, Action.READ)


@router.patch("/{notification_id}/unread", responses=_ITEM_ERRORS, summary="Mark one as unread")
async def mark_unread(
    services: ServicesDep, principal: CurrentUser, notification_id: uuid.UUID
) -> NotificationItem:
    """Unread again (it stays seen): `notification.updated`, then `unread_count.updated`
    if it is in the inbox."""
    return await _change(services, principal, notification_id, Action.UNREAD)


@router.patch("/{notification_id}/seen", responses=_ITEM_ERRORS, summary="Mark one as seen")
async def mark_seen(
    services: ServicesDep, principal: CurrentUser, notification_id: uuid.UUID
) -> NotificationItem:
    return await _change(services, principal, notification_id, Action.SEEN)


@router.patch("/{notification_id}/archive", responses=_ITEM_ERRORS, summary="Archive one")
async def archive(
    services: ServicesDep, principal: CurrentUser, notification_id: uuid.UUID
) -> NotificationItem:
    """Out of the inbox (and its counts), into the archived view: `notification.updated`,
    then `unread_count.updated` if it was unread."""
    return await _change(services, principal, notification_id, Action.ARCHIVE)


@router.patch("/{notification_id}/unarchive", responses=_ITEM_ERRORS, summary="Unarchive one")
async def unarchive(
    services: ServicesDep, principal: CurrentUser, notification_id: uuid.UUID
) -> NotificationItem:
    return await _change(services, principal, notification_id, Action.UNARCHIVE)


@router.delete(
    # Only an id: `DELETE /read-all` is the 405 of that path, not a malformed id.
    "/{notification_id:uuid}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=_ITEM_ERRORS,
    summary="Delete one for good",
)
async def delete(
    services: ServicesDep, principal: CurrentUser, notification_id: uuid.UUID
) -> Response:
    """Sockets of the owner get `notification.deleted`, then `unread_count.updated` if it
    was unread in the inbox."""
    await _change(services, principal, notification_id, Action.DELETE)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


_BULK_ANSWERS: Final[dict[int | str, dict[str, Any]]] = {
    202: {
        "model": BulkResult,
        "description": "Still running (many items): it carries on in the server, counts are"
        " pushed as it goes and `notifications.changed` when it is done.",
    },
    **_errors(400, 401, 404, 422),
}
BulkBody = Annotated[BulkChange | None, Body()]
DeleteBody = Annotated[BulkDelete | None, Body()]


async def _bulk(
    services: ServicesDep,
    principal: CurrentUser,
    response: Response,
    action: Action,
    body: BulkChange | None,
    *,
    archived: bool = False,
) -> BulkResult:
    body = body or BulkChange()
    call = notifications.BulkCall(
        user_id=principal.user_id,
        action=action,
        view=View(
            archived=body.archived if isinstance(body, BulkDelete) else archived,
            types=_types(body.types),
            is_read=body.is_read,
        ),
        up_to=body.up_to,
    )
    result = await services.bulk.run(call)
    if not result.done:
        response.status_code = status.HTTP_202_ACCEPTED
    return result


_BULK_DOC: Final = (
    " The body is optional: `types`, `is_read` and `up_to` narrow it (`up_to`: only items"
    " created with that one or before, so one arriving meanwhile is never changed). Runs"
    " in batches; answers 202 if it is still running after about a second."
)


@router.post(
    "/read-all",
    responses=_BULK_ANSWERS,
    summary="Mark all as read",
    description="Every unread item of the inbox (without a body, as the guide says). Sockets"
    " get `unread_count.updated` as batches commit, `notifications.changed` at the end, and"
    " no per-item event." + _BULK_DOC,
)
async def mark_all_read(
    services: ServicesDep, principal: CurrentUser, response: Response, body: BulkBody = None
) -> BulkResult:
    return await _bulk(services, principal, response, Action.READ, body)


@router.post(
    "/seen-all",
    responses=_BULK_ANSWERS,
    summary="Mark all as seen",
    description="Every unseen item of the inbox (the bell was opened)." + _BULK_DOC,
)
async def mark_all_seen(
    services: ServicesDep, principal: CurrentUser, response: Response, body: BulkBody = None
) -> BulkResult:
    return await _bulk(services, principal, response, Action.SEEN, body)


@router.post(
    "/archive-all",
    responses=_BULK_ANSWERS,
    summary="Archive all",
    description="Every item of the inbox (`is_read: true`: the read ones only)." + _BULK_DOC,
)
async def archive_all(
    services: ServicesDep, principal: CurrentUser, response: Response, body: BulkBody = None
) -> BulkResult:
    return await _bulk(services, principal, response, Action.ARCHIVE, body)


@router.post(
    "/unarchive-all",
    responses=_BULK_ANSWERS,
    summary="Unarchive all",
    description="Every item of the archived view back into the inbox." + _BULK_DOC,
)
async def unarchive_all(
    services: ServicesDep, principal: CurrentUser, response: Response, body: BulkBody = None
) -> BulkResult:
    return await _bulk(services, principal, response, Action.UNARCHIVE, body, archived=True)


@router.post(
    "/delete-all",
    responses=_BULK_ANSWERS,
    summary="Delete all for good",
    description="Every item of the inbox, or of the archived view with `archived: true`."
    + _BULK_DOC,
)
async def delete_all(
    services: ServicesDep, principal: CurrentUser, response: Response, body: DeleteBody = None
) -> BulkResult:
    return await _bulk(services, principal, response, Action.DELETE, body)


# The producer call is the hot path. It takes the request alone: no dependency solving
# (a fifth of its time), the body parsed by pydantic from bytes and the answer serialised
# once by orjson, skipping FastAPI's JSON decode and response model validation. The
# OpenAPI document still describes its token, header, body and answers.
_CREATE_BODY_SCHEMA = NotificationCreate.model_json_schema(
    ref_template="#/components/schemas/{model}"
)
_CREATE_BODY_SCHEMA.pop("$defs", None)  # NotificationType is in components already
# A header value as the server reads it: visible first (HTTP drops leading spaces), then
# visible, space or tab; NUL and other controls are refused by the HTTP parser (400).
IDEMPOTENCY_HEADER_PATTERN: Final = r"^[\x21-\x7e\x80-\xff][\t\x20-\x7e\x80-\xff]*$"


@router.post(
    "/",
    status_code=status.HTTP_201_CREATED,
    response_model=NotificationItem | list[NotificationItem],
    responses=_errors(401, 403, 409, 413, 415, 422),
    summary="Create notifications (producer call)",
    openapi_extra={
        "security": [{"HTTPBearer": []}],
        "parameters": [
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "schema": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": IDEMPOTENCY_KEY_MAX_CHARS,
                    "pattern": IDEMPOTENCY_HEADER_PATTERN,
                },
                "description": (
                    "A retry with the same key and body returns the original items. The body's"
                    " `idempotency_key` does the same; given both, they must be equal (else 422)."
                ),
            }
        ],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _CREATE_BODY_SCHEMA}},
        },
    },
)
async def create_notifications(request: Request) -> Response:
    """Needs a token with the `notifications:send` scope, and a JSON body.

    `user_id` creates one item and answers it; `user_ids` creates one item per user, all or
    none, and answers them in the order given (duplicates once). Each recipient's sockets
    get `notification.created` then `unread_count.updated`. A replayed answer carries the
    header `Idempotent-Replayed: true`.
    """
    services = await get_services(request)
    producer = await producer_from_header(services, request.headers.get("authorization"))
    _require_json(request)
    raw = await _read_body(request, services.settings.http_max_body_bytes)
    body = parse_create_body(raw)
    created = await services.creates.create(
        producer=producer.user_id,
        request=body,
        idempotency_key=request.headers.get("idempotency-key"),
    )
    return Response(
        orjson.dumps(created.items[0] if body.user_id is not None else created.items),
        status_code=status.HTTP_201_CREATED,
        media_type="application/json",
        headers={"Idempotent-Replayed": "true"} if created.replayed else None,
    )


_CREATE_FIELDS: Final = frozenset(NotificationCreate.model_fields)
_KEY_END: Final = re.compile(rb'"\s*:')
# More problems than this, and the body is read again to say what is wrong in one line.
_MANY_PROBLEMS: Final = 20


class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _refuse_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) != len(pairs):
        seen: set[str] = set()
        for key, _value in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return document


def parse_create_body(raw: bytes) -> NotificationCreate:
    """The producer call's body, or a 422 whose size and cost do not grow with the body.

    A key given twice is refused: the model would keep the last value, and a gateway in
    front that reads the first would let through what it did not check. Unknown keys are
    counted, not each described (300k of them would be 300k messages).
    """
    try:
        body = NotificationCreate.model_validate_json(raw)
    except ValidationError as error:
        raise _bounded(error, raw) from None
    # Without a backslash no string holds a quote, so each `"` followed by `:` ends a key:
    # as many as the fields given, and no key came twice. Most bodies skip a second reading.
    if b"\\" in raw or len(_KEY_END.findall(raw)) != len(body.model_fields_set):
        try:
            json.loads(raw, object_pairs_hook=_refuse_duplicate_keys)
        except _DuplicateKey as duplicate:
            message = f"key {_quoted(duplicate.key)} is given twice"
            raise _invalid_body(message, "duplicate_key") from None
    return body


def _bounded(error: ValidationError, raw: bytes) -> RequestValidationError:
    """The model's problems; past a few, the unknown keys that made them, counted.

    ``user_ids`` stops at its first bad entry: only unknown keys come by the thousand.
    """
    if error.error_count() > _MANY_PROBLEMS:
        with contextlib.suppress(ValueError, RecursionError):
            document = json.loads(raw)
            unknown = [key for key in document if key not in _CREATE_FIELDS]
            if unknown:
                named = ", ".join(_quoted(key) for key in unknown[:3])
                more = f" and {len(unknown) - 3} more" if len(unknown) > 3 else ""
                return _invalid_body(f"unknown fields {named}{more}", "extra_forbidden")
    return RequestValidationError(
        [
            {**problem, "loc": ("body", *problem["loc"])}
            for problem in error.errors(include_input=False, include_url=False)
        ]
    )


def _invalid_body(message: str, kind: str) -> RequestValidationError:
    return RequestValidationError([{"loc": ("body",), "msg": message, "type": kind}])


def _quoted(key: str) -> str:
    return repr(key if len(key) <= 40 else key[:39] + "…")


def _require_json(request: Request) -> None:
    media_type = request.headers.get("content-type", "").partition(";")[0]
    if media_type.strip().lower() != "application/json":  # parameters (charset) may follow
        raise UnsupportedMediaType()


async def _read_body(request: Request, max_bytes: int) -> bytes:
    """The body, never more than ``max_bytes`` of it in memory.

    A declared ``Content-Length`` above the limit is refused before a byte is read; a
    chunked body is refused as soon as it grows past the limit.
    """
    declared = request.headers.get("content-length", "")
    if declared.isdecimal() and int(declared) > max_bytes:
        raise BodyTooLarge(max_bytes)
    chunks: list[bytes] = []
    size = 0
    try:
        async with contextlib.aclosing(request.stream()) as stream:
            async for chunk in stream:
                size += len(chunk)
                if size > max_bytes:
                    raise BodyTooLarge(max_bytes)
                chunks.append(chunk)
    except ClientDisconnect:
        # Gone, or silent past the body deadline (the HTTP layer then answers 408 itself).
        raise IncompleteBody() from None
    return b"".join(chunks)


class ProducerCalls:
    """Serves the producer call past the framework's layers: it is the hot path.

    ``POST /api/v1/notifications/`` goes straight to its endpoint, which takes the request
    alone; routing, exception and exit-stack middleware, CORS and the metrics wrapper cost
    more than a fifth of a create. The answers are the same: errors are rendered as the
    app's handlers render them, anything unexpected reaches the server's 500 handler, and
    the request is timed under its route. A browser's call (with an ``Origin``) takes the
    full road, for CORS.
    """

    PATH = f"{router.prefix}/"

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or scope["path"] != scope.get("root_path", "") + self.PATH
            or any(name == b"origin" for name, _ in scope["headers"])
        ):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        try:
            try:
                response: Response = await create_notifications(Request(scope, receive))
            except Exception as error:
                rendered = errors.render(error)
                if rendered is None:
                    raise  # the server's 500 handler, as on the app's road
                response = rendered
            status = response.status_code
            await response(scope, receive, send)
        finally:
            metrics.observe_request("POST", self.PATH, status, started)
