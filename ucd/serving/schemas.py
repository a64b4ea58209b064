"""The serving API's request and response models, and its error contract.

A refused request is a :class:`RequestError`: an HTTP status (4xx) and the offending ``field``,
sent as ``{"detail": "<field>: <message>", "field": "<field>"}``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError

MAX_K = 1000

Id = StrictInt | StrictStr


class RecommendRequest(BaseModel):
    """Give exactly one of ``user_id`` (history looked up) or ``items`` (history, oldest first)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"user_id": 42, "k": 10},
                {"user_id": "196", "k": 5, "exclude_seen": False},
                {"items": [50, 181, "258"], "k": 10},
            ]
        },
    )

    user_id: Id | None = Field(None, description="internal user id (integer) or source user id (string)")
    items: list[Id] | None = Field(
        None, description="history, oldest first: internal item ids (integers) or source ids (strings)"
    )
    k: StrictInt = Field(10, ge=1, le=MAX_K, description="number of items to return")
    exclude_seen: StrictBool = Field(True, description="never recommend an item of the history")


class RecommendedItem(BaseModel):
    item_id: int
    source_id: str
    title: str
    score: float


class ModelInfo(BaseModel):
    uri: str  # as configured, e.g. models:/ucd-student@production
    resolved_uri: str  # what was loaded, e.g. models:/ucd-student/3 or a folder
    name: str | None = None
    version: str | None = None
    run_id: str | None = None
    kind: str
    n_items: int
    max_len: int
    dataset: str | None = None
    loaded_at: float


class RecommendResponse(BaseModel):
    user_id: int | None
    user_source_id: str | None
    items: list[RecommendedItem]
    k: int
    exclude_seen: bool
    history_length: int  # items known for the request
    used_history: int  # items the model read (the newest max_len)
    truncated: bool
    model: ModelInfo


class ItemInfo(BaseModel):
    item_id: int
    source_id: str
    title: str
    text: str


class RequestError(Exception):
    """A request the server refuses: HTTP status, the offending field and a readable message."""

    def __init__(self, status: int, field: str, message: str) -> None:
        # All three in args: the error crosses process boundaries (Serve handles) by pickling.
        super().__init__(status, field, message)
        self.status = status
        self.field = field
        self.message = message

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"

    def body(self) -> dict[str, Any]:
        return {"detail": str(self), "field": self.field}


def _field_of(loc: tuple | list) -> str:
    """``("body", "items", 3, "int")`` -> ``items[3]``: union member tags are not fields."""
    parts = [p for p in loc if p not in ("body", "path", "query", "header")]
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        elif not out:
            out = str(p)
    return out or "body"


def validation_error(errors: list[dict[str, Any]]) -> RequestError:
    """One :class:`RequestError` from pydantic/FastAPI errors, naming the first bad field."""
    if not errors:
        return RequestError(422, "body", "invalid request")
    first = errors[0]
    if first.get("type") == "json_invalid":
        reason = (first.get("ctx") or {}).get("error", "")
        return RequestError(400, "body", f"malformed JSON{': ' + str(reason) if reason else ''}")
    field = _field_of(first.get("loc", ()))
    # A value rejected by every member of a union gives one error per member: join them.
    msgs: list[str] = []
    for e in errors:
        if _field_of(e.get("loc", ())) == field:
            m = "unknown field" if e.get("type") == "extra_forbidden" else str(e.get("msg", "invalid value"))
            if m not in msgs:
                msgs.append(m)
    others = sum(_field_of(e.get("loc", ())) != field for e in errors)
    return RequestError(422, field, " or ".join(msgs) + (f" (and {others} more error(s))" if others else ""))


def parse_request(payload: Any) -> RecommendRequest:
    if isinstance(payload, RecommendRequest):
        return payload
    if not isinstance(payload, dict):
        raise RequestError(422, "body", f"expected a JSON object, got {type(payload).__name__}")
    try:
        return RecommendRequest.model_validate(payload)
    except ValidationError as e:
        raise validation_error(e.errors()) from None
