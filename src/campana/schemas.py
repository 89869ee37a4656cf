"""The REST models: items, the producer call's body, counts and errors, with their limits.

The socket's frames are built in ``protocol.py`` from the items' JSON payloads made here.
"""

from __future__ import annotations

import enum
import re
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any, Final

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    model_validator,
)

MESSAGE_MAX_CHARS: Final = 2000
LINK_MAX_CHARS: Final = 2048
USER_ID_MAX_CHARS: Final = 255
IDEMPOTENCY_KEY_MAX_CHARS: Final = 255


class NotificationType(enum.StrEnum):
    GENERIC_INFO = "GENERIC_INFO"
    TEMPLATE_APPROVED = "TEMPLATE_APPROVED"
    TEMPLATE_REJECTED = "TEMPLATE_REJECTED"
    CAMPAIGN_SCHEDULED = "CAMPAIGN_SCHEDULED"
    CAMPAIGN_SENDING = "CAMPAIGN_SENDING"
    CAMPAIGN_COMPLETED = "CAMPAIGN_COMPLETED"
    CAMPAIGN_ERROR = "CAMPAIGN_ERROR"


class NotificationItem(BaseModel):
    """One notification as frontends see it (the guide's ``NotificationItem``)."""

    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={
            "examples": [
                {
                    "id": "3f487f1b-a1a8-46b1-bbb1-c2e1c9497b4e",
                    "message": "Campaign 'Black Friday' is scheduled for 09:00.",
                    "type": "CAMPAIGN_SCHEDULED",
                    "link_url": "/campaigns/981",
                    "is_read": False,
                    "is_seen": False,
                    "is_archived": False,
                    "created_at": "2026-11-28T07:00:00.123456Z",
                }
            ]
        },
    )

    id: uuid.UUID
    message: str
    type: NotificationType
    link_url: str | None
    is_read: bool
    is_seen: bool = Field(
        description="The user has had it in front of them (opened the bell). A read item is"
        " always seen."
    )
    is_archived: bool = Field(description="Out of the inbox, in the archived view.")
    created_at: datetime = Field(description="ISO-8601 with zone offset, server time.")


def _safe_link(value: str) -> str:
    """Allow what is harmless in an ``href``: http(s) URLs and site-relative paths.

    ``//host`` and ``/\\host`` are refused too: browsers read both as another site.
    """
    if not _LINK_URL.fullmatch(value):
        raise ValueError(
            "link_url must be an http(s) URL with a host or a path starting with a single '/',"
            " without whitespace, control characters or '\\'"
        )
    return value


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain the NUL character")  # PostgreSQL cannot store it
    return value


# The validators above decide. These JSON Schema patterns (ECMA-262 that Python's `re` reads
# the same way) tell the OpenAPI document exactly what the validators accept, so that every
# request it allows is accepted; tests/test_openapi_fuzz.py checks that both agree.

# What pydantic's `strip_whitespace` removes (Rust's `char::is_whitespace`).
_STRIPPED: Final = r"\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
# Any string without NUL: user ids, idempotency keys.
NO_NUL_PATTERN: Final = r"^[^\x00]*$"
# No NUL, and 1 to MESSAGE_MAX_CHARS characters once stripped (first and last not stripped).
MESSAGE_PATTERN: Final = (
    rf"^[{_STRIPPED}]*[^\x00{_STRIPPED}]"
    rf"(?:[^\x00]{{0,{MESSAGE_MAX_CHARS - 2}}}[^\x00{_STRIPPED}])?[{_STRIPPED}]*$"
)

# Never in a link: controls (C0, DEL, C1), whitespace and '\\'.
_NOT_IN_LINK: Final = rf"\x00-\x20\x7f-\x9f\\{_STRIPPED}"
# A path starting with one '/' (two would leave the site), or an http(s) URL with a host.
# The validator and the OpenAPI document use this one pattern.
LINK_URL_PATTERN: Final = (
    rf"^(?:/(?:[^/{_NOT_IN_LINK}][^{_NOT_IN_LINK}]*)?"
    rf"|[hH][tT][tT][pP][sS]?://[^/?#{_NOT_IN_LINK}]+(?:[/?#][^{_NOT_IN_LINK}]*)?)$"
)
_LINK_URL: Final = re.compile(LINK_URL_PATTERN)


def _message_schema(schema: dict[str, Any]) -> None:
    # The length is checked once stripped: `maxLength` would count the stripped whitespace.
    del schema["maxLength"]
    schema["pattern"] = MESSAGE_PATTERN


# Each `Field` below only documents, in the JSON Schema; the validators check.
Message = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=MESSAGE_MAX_CHARS),
    AfterValidator(_no_nul),
    Field(
        description=f"Stripped of surrounding whitespace, then 1 to {MESSAGE_MAX_CHARS:,}"
        " characters; no NUL.",
        json_schema_extra=_message_schema,
    ),
]
LinkUrl = Annotated[
    str,
    StringConstraints(max_length=LINK_MAX_CHARS),
    AfterValidator(_safe_link),
    Field(
        description="An http(s) URL with a host or a path starting with a single '/',"
        " without whitespace, control characters or '\\'.",
        json_schema_extra={"pattern": LINK_URL_PATTERN},
    ),
]
UserId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=USER_ID_MAX_CHARS),
    AfterValidator(_no_nul),
    Field(json_schema_extra={"pattern": NO_NUL_PATTERN}),
]
IdempotencyKey = Annotated[
    str,
    StringConstraints(min_length=1, max_length=IDEMPOTENCY_KEY_MAX_CHARS),
    AfterValidator(_no_nul),
    Field(json_schema_extra={"pattern": NO_NUL_PATTERN}),
]


def _recipients_alternative(field: str, json_type: str, other: str) -> dict[str, Any]:
    """``field`` given, not null, and ``other`` absent."""
    return {
        "required": [field],
        "properties": {field: {"type": json_type}},
        "not": {"required": [other]},
    }


class NotificationCreate(BaseModel):
    """The producer call: one recipient (``user_id``) or many (``user_ids``)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            # Exactly one of the two, as the validator below demands, so that every body
            # the schema allows is accepted.
            "oneOf": [
                _recipients_alternative("user_id", "string", other="user_ids"),
                _recipients_alternative("user_ids", "array", other="user_id"),
            ],
            "examples": [
                {
                    "user_id": "user-42",
                    "type": "CAMPAIGN_SCHEDULED",
                    "message": "Campaign 'Black Friday' is scheduled for 09:00.",
                    "link_url": "/campaigns/981",
                },
                {
                    "user_ids": ["user-42", "user-43"],
                    "type": "TEMPLATE_APPROVED",
                    "message": "Template 'Welcome' was approved.",
                    "link_url": None,
                    "idempotency_key": "template-77-approved",
                },
            ],
        },
    )

    user_id: UserId | None = None
    # Checked entry by entry until the first bad one: 200k bad entries cost one message,
    # not 200k (the most CAMPANA_MAX_RECIPIENTS allows is 100 000).
    user_ids: list[UserId] | None = Field(None, min_length=1, max_length=100_000, fail_fast=True)
    type: NotificationType
    message: Message
    link_url: LinkUrl | None = None
    idempotency_key: IdempotencyKey | None = None

    @model_validator(mode="after")
    def _one_way_to_name_recipients(self) -> NotificationCreate:
        if (self.user_id is None) == (self.user_ids is None):
            raise ValueError("give exactly one of user_id or user_ids")
        return self

    @property
    def recipients(self) -> list[str]:
        """Recipients in the order given, each once."""
        if self.user_id is not None:
            return [self.user_id]
        return list(dict.fromkeys(self.user_ids or ()))

    def fingerprint(self) -> bytes:
        """What an idempotent retry must repeat exactly (the key itself aside)."""
        return orjson.dumps(
            {
                "user_id": self.user_id,
                "user_ids": self.user_ids,
                "type": self.type.value,
                "message": self.message,
                "link_url": self.link_url,
            }
        )


class UnreadCount(BaseModel):
    count: int = Field(ge=0, examples=[3])


class TypeCounts(BaseModel):
    unread: int = Field(ge=0)
    unseen: int = Field(ge=0)


class Counts(BaseModel):
    """The inbox's counts (archived items count for none), exact, uncapped."""

    unread: int = Field(ge=0, examples=[4])
    unseen: int = Field(ge=0, examples=[2])
    by_type: dict[NotificationType, TypeCounts] = Field(
        description="Every type, each with its unread and unseen items."
    )


def counts_by_type(counts: Sequence[int]) -> dict[str, tuple[int, int]]:
    """Each type's (unread, unseen) of the numbers as a badge keeps them: unread, unseen,
    then each type's unread and unseen, types in ``NotificationType``'s order."""
    return {
        kind.value: (counts[2 + 2 * i], counts[3 + 2 * i])
        for i, kind in enumerate(NotificationType)
    }


def counts_payload_of(counts: Sequence[int]) -> ItemPayload:
    """``counts_payload`` of the numbers as a badge keeps them (``counts_by_type``)."""
    return counts_payload(counts_by_type(counts), counts[0], counts[1])


def counts_payload(by_type: dict[str, tuple[int, int]], unread: int, unseen: int) -> ItemPayload:
    """``Counts`` as JSON-ready values (the ``counts.updated`` payload), every type in it."""
    return {
        "unread": unread,
        "unseen": unseen,
        "by_type": {
            kind: {"unread": kind_unread, "unseen": kind_unseen}
            for kind, (kind_unread, kind_unseen) in by_type.items()
        },
    }


class BulkChange(BaseModel):
    """Which items a bulk call changes: all fields optional, an empty body is every item."""

    model_config = ConfigDict(extra="forbid")

    types: list[NotificationType] | None = Field(
        None, min_length=1, max_length=len(NotificationType), description="Of these types only."
    )
    up_to: uuid.UUID | None = Field(
        None,
        description="The id of the newest item the user could see: only items created with"
        " it or before change, so one arriving during the call never does (404 if it is not"
        " one of yours).",
    )
    is_read: bool | None = Field(None, description="Only read (`true`) or unread items.")


class BulkDelete(BulkChange):
    archived: bool = Field(
        False, description="`true`: empty the archived view instead of the inbox."
    )


class BulkResult(BaseModel):
    count: int = Field(ge=0, description="The unread count after it (202: so far).")
    changed: int = Field(ge=0, description="Items it changed (202: so far).")
    done: bool = Field(
        description="`false` (202): it carries on in the server, counts are pushed as it"
        " goes and `notifications.changed` when it is done."
    )


ItemPayload = dict[str, Any]  # a NotificationItem as JSON-ready values


def item_payload(item: NotificationItem) -> ItemPayload:
    return item.model_dump(mode="json")


_ITEMS: TypeAdapter[list[NotificationItem]] = TypeAdapter(list[NotificationItem])


def item_payloads(rows: Sequence[Any]) -> list[ItemPayload]:
    """``item_payload`` of many rows (objects with the item's attributes) in two calls."""
    items = _ITEMS.validate_python(rows, from_attributes=True)
    payloads: list[ItemPayload] = _ITEMS.dump_python(items, mode="json")
    return payloads


class ErrorBody(BaseModel):
    """Every error answer: a stable code for programs and a sentence for people."""

    error: str = Field(examples=["not_found"])
    detail: str = Field(examples=["notification not found"])
