"""What a batch job is asked: the job's settings and one typed request per input line.

A batch inference job has settings (:class:`JobSettings`: numResults, the filter and its
values, itemExplorationConfig, the compute device) and one request per JSONL line, of the
kind the solution's recipe type takes: :class:`UserRequest` (``{"userId": ...}``,
USER_PERSONALIZATION), :class:`RankingRequest` (``{"userId": ..., "itemList": [...]}``,
PERSONALIZED_RANKING), :class:`ItemRequest` (``{"itemId": ...}``, RELATED_ITEMS) and
:class:`SegmentRequest` (``{"itemId": ...}`` or ``{"itemAttributes": ...}``,
USER_SEGMENTATION). A line that is not a valid request is a :class:`ParsedLine` with an
error naming the line; the job goes on.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, NamedTuple, TypeVar

MAX_LIST_ITEMS = 500  # items of a ranking request's itemList (Personalize's limit)


@dataclass(frozen=True)
class JobSettings:
    """A batch job's settings (Personalize's batchInferenceJobConfig and numResults)."""

    num_results: int = 25
    filter_expression: str | None = None
    filter_values: dict[str, Any] | None = None  # the job's; a line's "filterValues" overrides them
    exploration_weight: float | None = None
    exploration_item_age_cut_off: float | None = None
    device: str | None = None  # auto, cpu or cuda: where tensor recipes score
    scoring_precision: str | None = None  # float32 (default) or bf16: how they score on a CPU


@dataclass(frozen=True, slots=True)
class UserRequest:
    """Top items for a user (USER_PERSONALIZATION)."""

    line: int
    input: dict[str, Any]
    user_id: str
    filter_values: Any = None  # the line's or the job's, when the job has a filter


@dataclass(frozen=True, slots=True)
class RankingRequest:
    """A user's item list, reordered (PERSONALIZED_RANKING)."""

    line: int
    input: dict[str, Any]
    user_id: str
    item_ids: tuple[str, ...]
    filter_values: Any = None


@dataclass(frozen=True, slots=True)
class ItemRequest:
    """Items related to an item (RELATED_ITEMS)."""

    line: int
    input: dict[str, Any]
    item_id: str
    filter_values: Any = None


@dataclass(frozen=True, slots=True)
class SegmentRequest:
    """Users for an item or an item attribute condition (USER_SEGMENTATION)."""

    line: int
    input: dict[str, Any]
    query: str  # the itemId, or the itemAttributes condition


RequestT = TypeVar("RequestT")


class ParsedLine(NamedTuple, Generic[RequestT]):
    """One input line: its JSON object (None when it is not one), the request, or the error."""

    input: Any
    request: RequestT | None
    error: str | None


def decode_object(text: str, lineno: int) -> tuple[dict[str, Any] | None, str | None]:
    """(the line's JSON object, None) or (None, the error naming the line)."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, f"line {lineno}: invalid JSON ({exc.msg} at column {exc.colno})"
    if not isinstance(obj, dict):
        return None, f"line {lineno}: expected a JSON object"
    return obj, None


def id_text(value: Any) -> str | None:
    """A user or item id as text, or None when it is not a non-empty string or integer."""
    if isinstance(value, bool) or not isinstance(value, (str, int)) or str(value) == "":
        return None
    return str(value)


def _user_id(obj: dict[str, Any], lineno: int) -> tuple[str | None, str | None]:
    if "userId" not in obj:
        return None, f'line {lineno}: missing key "userId"'
    user = id_text(obj["userId"])
    if user is None:
        return None, f'line {lineno}: "userId" must be a non-empty string'
    return user, None


def parse_user_request(obj: dict[str, Any], lineno: int, filter_values: Any = None) -> ParsedLine[UserRequest]:
    if "itemList" in obj:
        return ParsedLine(
            obj,
            None,
            f"line {lineno}: itemList is for PERSONALIZED_RANKING solutions; this solution is USER_PERSONALIZATION",
        )
    user, error = _user_id(obj, lineno)
    if user is None:
        return ParsedLine(obj, None, error)
    return ParsedLine(obj, UserRequest(lineno, obj, user, filter_values), None)


def parse_ranking_request(obj: dict[str, Any], lineno: int, filter_values: Any = None) -> ParsedLine[RankingRequest]:
    user, error = _user_id(obj, lineno)
    if user is None:
        return ParsedLine(obj, None, error)
    items = obj.get("itemList")
    if not isinstance(items, list) or not items:
        return ParsedLine(obj, None, f'line {lineno}: "itemList" must be a non-empty list of item ids')
    if len(items) > MAX_LIST_ITEMS:
        return ParsedLine(
            obj, None, f'line {lineno}: "itemList" has {len(items)} items; at most {MAX_LIST_ITEMS} are allowed'
        )
    ids = tuple(i for i in map(id_text, items) if i is not None)
    if len(ids) != len(items):
        return ParsedLine(obj, None, f'line {lineno}: "itemList" must contain only non-empty item ids')
    return ParsedLine(obj, RankingRequest(lineno, obj, user, ids, filter_values), None)


def parse_item_request(obj: dict[str, Any], lineno: int, filter_values: Any = None) -> ParsedLine[ItemRequest]:
    if "itemId" not in obj:
        return ParsedLine(obj, None, f'line {lineno}: missing key "itemId" (this solution is RELATED_ITEMS)')
    item = id_text(obj["itemId"])
    if item is None:
        return ParsedLine(obj, None, f'line {lineno}: "itemId" must be a non-empty string')
    return ParsedLine(obj, ItemRequest(lineno, obj, item, filter_values), None)


def parse_segment_request(obj: dict[str, Any], lineno: int, key: str) -> ParsedLine[SegmentRequest]:
    """``key``: "itemId" (aws-item-affinity) or "itemAttributes" (aws-item-attribute-affinity)."""
    other = "itemAttributes" if key == "itemId" else "itemId"
    if key not in obj:
        hint = f' ("{other}" is for the other segmentation recipe)' if other in obj else ""
        return ParsedLine(obj, None, f'line {lineno}: missing key "{key}"{hint}')
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value).strip():
        return ParsedLine(obj, None, f'line {lineno}: "{key}" must be a non-empty string')
    return ParsedLine(obj, SegmentRequest(lineno, obj, str(value)), None)


# recipe type -> the request parser of its batch inference lines (segment lines: parse_segment_request)
REQUEST_PARSERS: dict[str, Callable[[dict[str, Any], int], ParsedLine[Any]]] = {
    "USER_PERSONALIZATION": parse_user_request,
    "PERSONALIZED_RANKING": parse_ranking_request,
    "RELATED_ITEMS": parse_item_request,
}


def parse_line(text: str, lineno: int, recipe_type: str) -> ParsedLine:
    """(input object, request, error) of one batch inference input line for ``recipe_type``."""
    obj, error = decode_object(text, lineno)
    if obj is None:
        return ParsedLine(None, None, error)
    parser = REQUEST_PARSERS.get(recipe_type)
    if parser is None:
        return ParsedLine(obj, None, f"line {lineno}: recipe type {recipe_type} is not supported by batch inference")
    return parser(obj, lineno)


__all__ = [
    "JobSettings",
    "UserRequest",
    "RankingRequest",
    "ItemRequest",
    "SegmentRequest",
    "ParsedLine",
    "parse_line",
    "decode_object",
    "parse_user_request",
    "parse_ranking_request",
    "parse_item_request",
    "parse_segment_request",
    "REQUEST_PARSERS",
    "MAX_LIST_ITEMS",
]
