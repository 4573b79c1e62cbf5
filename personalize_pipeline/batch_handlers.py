"""One batch handler per recipe type: parse a line into a request, score a chunk's requests
with the recipe's interface, render the output lines.

:class:`BatchHandler` is what the streaming job runner (:mod:`.batch`) drives, a chunk of
lines at a time, on two threads. The recommendation types share filters, numResults and the
grouping of requests by filter values (:class:`RecommendationHandler`);
:class:`UserRecommendationHandler` (USER_PERSONALIZATION), :class:`RelatedItemsHandler`
(RELATED_ITEMS) and :class:`RankingHandler` (PERSONALIZED_RANKING) score through
:class:`~.recipes.UserRecommender`, :class:`~.recipes.RelatedItemsRecipe` and
:class:`~.recipes.Ranker`. Batch segment jobs have theirs in :mod:`.segments`.
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import numpy as np
import pandas as pd

from .batch_requests import (
    ItemRequest,
    JobSettings,
    ParsedLine,
    RankingRequest,
    UserRequest,
    decode_object,
    parse_item_request,
    parse_ranking_request,
    parse_user_request,
)
from .errors import InputError
from .filters import Filter, FilterContext, parse_filter
from .recipes import ExplorationConfig, Ranker, Recipe, RelatedItemsRecipe, UserRecommender, explores
from .recipes.scoring import resolve_device, resolve_precision, scoring_precision
from .rendering import input_json, json_text, render_top_line, render_top_lines, renderable, text_table
from .store import SolutionVersion

MAX_RESULTS = 500
# a chunk of lines that are all exactly '{"userId": "<printable ASCII, no quote or backslash>"}':
# json.dumps of the parsed line is the line itself, so such a chunk needs no per-line parsing
PLAIN_USER_LINES = re.compile(r'(?:\{"userId": "[\x20\x21\x23-\x5b\x5d-\x7e]+"\}\n)*')
PLAIN_USER_PREFIX = len('{"userId": "')

RequestT = TypeVar("RequestT")
RecipeT = TypeVar("RecipeT", bound=Recipe)


class FilteredRequest(Protocol):
    """A recommendation request: its line number and the filter values it is scored with."""

    @property
    def line(self) -> int: ...

    @property
    def filter_values(self) -> Any: ...


FilteredT = TypeVar("FilteredT", bound=FilteredRequest)


@dataclass
class Served:
    """A chunk's requests served: rendered blocks (positions into the requests, their output
    lines), per-request errors by position, and how many requests named an unknown user/item."""

    blocks: list[tuple[list[int], bytes]] = field(default_factory=list)
    errors: dict[int, str] = field(default_factory=dict)
    unknown: int = 0


class BatchHandler(ABC, Generic[RequestT, RecipeT]):
    """parse → score → render for the recipe type ``recipe_type``; built once per job."""

    recipe_type: ClassVar[str]
    interface: ClassVar[type[Recipe]]
    max_results: ClassVar[int]  # numResults at most
    chunk_size: ClassVar[int | None] = None  # lines per chunk (None: batch.CHUNK)

    def __init__(self, version: SolutionVersion, settings: JobSettings) -> None:
        if not isinstance(version.recipe, self.interface):
            raise InputError(f"{version.manifest['recipe']} is not a {self.recipe_type} recipe")
        self.version, self.settings = version, settings
        self.recipe: RecipeT = version.recipe  # type: ignore[assignment]  # checked above

    @classmethod
    @abstractmethod
    def default_input(cls, version: SolutionVersion) -> tuple[str, str]:
        """(file name, JSONL text) of the job input of a scheduled run without one, naming
        everything the solution version knows; an InputError where the type needs a given input."""

    @abstractmethod
    def parse(self, text: str, lineno: int) -> ParsedLine[RequestT]:
        """One input line as a request, or the error naming the line."""

    @abstractmethod
    def serve(self, requests: list[RequestT]) -> Served:
        """Score and render a chunk's valid requests."""

    def serve_plain(self, texts: list[str]) -> tuple[bytes, int] | None:
        """A short cut for a chunk of input lines the handler can serve without parsing them
        one by one: (the output lines, how many named an unknown user or item), byte-identical
        to parse → serve; None where the chunk needs the general path."""
        return None

    def warm_up(self) -> None:
        """Build what the first chunk would otherwise build (the item side of scoring,
        compiled loops loaded or compiled), so that a job's start-up is counted as such."""


@dataclass(frozen=True)
class JobFilter:
    """A job's filter, parsed and checked against the solution version once."""

    parsed: Filter
    context: FilterContext

    @classmethod
    def build(cls, version: SolutionVersion, expression: str) -> JobFilter:
        parsed = parse_filter(expression)
        context = FilterContext.from_history(
            version.item_ids,
            version.items_metadata,
            version.user_ids,
            version.users_metadata,
            *version.filter_history(),
        )
        parsed.check(context)  # unknown fields fail the job before any output
        return cls(parsed, context)

    def mask(self, user_codes: np.ndarray, values: dict[str, Any] | None) -> np.ndarray:
        """[len(user_codes), n_items] bool: the items each user may get (-1: no user)."""
        return self.parsed.mask(self.context, user_codes, values)


def exploration_config(
    version: SolutionVersion, weight: float | None, age_cut_off: float | None
) -> ExplorationConfig | None:
    """The job's ``itemExplorationConfig``: values checked first, Personalize's defaults
    (0.3, 30 days) where not given; None for recipes that do not explore, and an error when
    it is given for one of those."""
    default = ExplorationConfig()
    config = ExplorationConfig(
        weight=default.weight if weight is None else float(weight),
        item_age_cut_off=default.item_age_cut_off if age_cut_off is None else float(age_cut_off),
    )
    if explores(version.recipe):
        return config
    if weight is not None or age_cut_off is not None:
        raise InputError(
            "itemExplorationConfig (exploration weight / item age cut-off) applies to aws-user-personalization "
            f"solutions; this solution version uses {version.manifest['recipe']}"
        )
    return None


def warm_index(ids: np.ndarray) -> pd.Index:
    """An id index whose hash table is built before the job's threads share it."""
    index = pd.Index(np.asarray(ids, dtype=object))
    index.get_indexer(index[:1])
    return index


class RecommendationHandler(BatchHandler[FilteredT, RecipeT]):
    """What the three recommendation types share: numResults (1 to 500), the job's filter with
    a line's ``filterValues`` overriding the job's, itemExplorationConfig checks, the device.
    Requests are scored in groups of equal filter values."""

    max_results = MAX_RESULTS

    def __init__(self, version: SolutionVersion, settings: JobSettings) -> None:
        super().__init__(version, settings)
        if not 1 <= int(settings.num_results) <= MAX_RESULTS:
            raise InputError(f"numResults must be between 1 and {MAX_RESULTS}, got {settings.num_results}")
        expression = settings.filter_expression
        self.filter = JobFilter.build(version, expression) if expression else None
        self.exploration = exploration_config(
            version, settings.exploration_weight, settings.exploration_item_age_cut_off
        )
        self.device = resolve_device(settings.device)
        self.precision = resolve_precision(settings.scoring_precision)
        self.k = min(int(settings.num_results), len(version.item_ids))

    @abstractmethod
    def request_of(self, obj: dict[str, Any], lineno: int, filter_values: Any) -> ParsedLine[FilteredT]:
        """The request of a line's JSON object (or its error)."""

    @abstractmethod
    def score_and_render(self, requests: list[FilteredT], values: dict[str, Any] | None) -> tuple[bytes, int]:
        """Output lines of requests sharing filter ``values``, and how many were unknown."""

    def parse(self, text: str, lineno: int) -> ParsedLine[FilteredT]:
        obj, error = decode_object(text, lineno)
        if obj is None:
            return ParsedLine(None, None, error)
        values = obj.get("filterValues", self.settings.filter_values) if self.filter is not None else None
        parsed = self.request_of(obj, lineno, values)
        if parsed.request is not None and values is not None and not isinstance(values, dict):
            return ParsedLine(
                obj, None, f'line {lineno}: "filterValues" must be a JSON object of parameter names to values'
            )
        return parsed

    def serve(self, requests: list[FilteredT]) -> Served:
        groups: dict[str, list[int]] = {}
        group_values: dict[str, Any] = {}
        for pos, request in enumerate(requests):
            values = request.filter_values
            key = json.dumps(values, sort_keys=True) if values is not None else "null"  # no dumps without filters
            groups.setdefault(key, []).append(pos)
            group_values[key] = values
        served = Served()
        for key, positions in groups.items():
            group = [requests[pos] for pos in positions]
            try:
                blob, unknown = self.score_and_render(group, group_values[key])
            except InputError as exc:  # e.g. a line's filterValues lacks a placeholder
                if key == json.dumps(self.settings.filter_values, sort_keys=True):
                    raise
                served.errors.update(
                    {pos: f"line {r.line}: {exc.message}" for pos, r in zip(positions, group, strict=True)}
                )
                continue
            served.blocks.append((positions, blob))
            served.unknown += unknown
        return served


class TopKRenderer:
    """Output lines of top-k item codes and scores: a block of lines at a time in one
    compiled pass (see rendering.py), item ids JSON-encoded once per job."""

    def __init__(self, item_ids: np.ndarray) -> None:
        self.encoded_items = np.array([json_text(str(i)) for i in item_ids], dtype=object)
        self.item_table = text_table(self.encoded_items.tolist())

    def warm_up(self) -> None:
        """Load (or compile) the rendering loops."""
        self.render_texts(["{}"], np.zeros((1, 1), dtype=np.int64), np.ones((1, 1), dtype=np.float32))

    def render(self, inputs: list[dict[str, Any]], items: np.ndarray, scores: np.ndarray) -> bytes:
        return self.render_texts([input_json(obj) for obj in inputs], items, scores)

    def render_texts(self, input_texts: list[str], items: np.ndarray, scores: np.ndarray) -> bytes:
        """:meth:`render` of the inputs' JSON texts."""
        if renderable(items, scores):
            return render_top_lines(input_texts, items, scores, self.item_table)
        # e.g. scores outside [0, 1] from a custom recipe: the per-element way
        return "".join(self._line(t, i, s) + "\n" for t, i, s in zip(input_texts, items, scores, strict=True)).encode(
            "utf-8"
        )

    def _line(self, input_text: str, items: np.ndarray, scores: np.ndarray) -> str:
        valid = items >= 0  # invalid entries (-1) only pad the end
        return render_top_line(input_text, self.encoded_items[items[valid]].tolist(), scores[valid].tolist())


class UserRecommendationHandler(RecommendationHandler[UserRequest, UserRecommender]):
    """USER_PERSONALIZATION: ``{"userId"}`` → the recipe's top-k (with exploration) per user."""

    recipe_type = "USER_PERSONALIZATION"
    interface = UserRecommender

    def __init__(self, version: SolutionVersion, settings: JobSettings) -> None:
        super().__init__(version, settings)
        self.renderer = TopKRenderer(version.item_ids)
        self.user_index = warm_index(version.user_ids)

    @classmethod
    def default_input(cls, version: SolutionVersion) -> tuple[str, str]:
        """Every user the solution version knows."""
        return "all-users.jsonl", "".join(json.dumps({"userId": str(u)}) + "\n" for u in version.user_ids)

    def request_of(self, obj: dict[str, Any], lineno: int, filter_values: Any) -> ParsedLine[UserRequest]:
        return parse_user_request(obj, lineno, filter_values)

    def warm_up(self) -> None:
        if len(self.version.item_ids):
            self.renderer.warm_up()
        scorer = getattr(self.recipe, "linear_scorer", None)
        if callable(scorer):
            scorer(self.device).warm_up()

    def score_and_render(self, requests: list[UserRequest], values: dict[str, Any] | None) -> tuple[bytes, int]:
        codes, items, scores = self.top_k([r.user_id for r in requests], values)
        return self.renderer.render([r.input for r in requests], items, scores), int((codes < 0).sum())

    def top_k(self, user_ids: list[str], values: dict[str, Any] | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(user codes, top-k item codes, scores) of users sharing filter ``values``."""
        codes = self.user_index.get_indexer(pd.Index(np.array(user_ids, dtype=object)))
        allowed = self.filter.mask(codes, values) if self.filter is not None else None
        with scoring_precision(self.precision):
            items, scores = self.recipe.recommend(
                self.version.user_batch(codes),
                self.k,
                allowed=allowed,
                exploration=self.exploration,
                device=self.device,
            )
        return codes, items, scores

    def serve_plain(self, texts: list[str]) -> tuple[bytes, int] | None:
        """Lines that are all ``{"userId": "..."}`` as ``json.dumps`` writes it (printable ASCII
        ids without quotes or backslashes) and carry no filterValues: the ids are cut out of
        the text, which is also the rendered input."""
        values = self.settings.filter_values if self.filter is not None else None
        if (values is not None and not isinstance(values, dict)) or not PLAIN_USER_LINES.fullmatch(
            "\n".join(texts) + "\n"
        ):
            return None
        codes, items, scores = self.top_k([t[PLAIN_USER_PREFIX:-2] for t in texts], values)
        return self.renderer.render_texts(texts, items, scores), int((codes < 0).sum())


class RelatedItemsHandler(RecommendationHandler[ItemRequest, RelatedItemsRecipe]):
    """RELATED_ITEMS: ``{"itemId"}`` → the recipe's related items."""

    recipe_type = "RELATED_ITEMS"
    interface = RelatedItemsRecipe

    def __init__(self, version: SolutionVersion, settings: JobSettings) -> None:
        super().__init__(version, settings)
        self.renderer = TopKRenderer(version.item_ids)
        self.item_index = warm_index(version.item_ids)

    @classmethod
    def default_input(cls, version: SolutionVersion) -> tuple[str, str]:
        """Every item the solution version knows."""
        return "all-items.jsonl", "".join(json.dumps({"itemId": str(i)}) + "\n" for i in version.item_ids)

    def request_of(self, obj: dict[str, Any], lineno: int, filter_values: Any) -> ParsedLine[ItemRequest]:
        return parse_item_request(obj, lineno, filter_values)

    def score_and_render(self, requests: list[ItemRequest], values: dict[str, Any] | None) -> tuple[bytes, int]:
        codes = self.item_index.get_indexer(pd.Index(np.array([r.item_id for r in requests], dtype=object)))
        allowed = self.filter.mask(np.full(len(codes), -1), values) if self.filter is not None else None
        items, scores = self.recipe.related(codes, self.k, allowed=allowed)
        return self.renderer.render([r.input for r in requests], items, scores), int((codes < 0).sum())


@dataclass
class RankedLists:
    """A group of ranking requests, ranked: the item codes of each list ([n, L], -1 unknown,
    -2 excluded by the filter), each list's length, the order and scores from ``Ranker.rank``."""

    lists: np.ndarray
    lengths: np.ndarray
    order: np.ndarray
    scores: np.ndarray


class RankingHandler(RecommendationHandler[RankingRequest, Ranker]):
    """PERSONALIZED_RANKING: ``{"userId", "itemList"}`` → the list reordered by the recipe;
    unknown items go last, in input order, with a null score; items a filter excludes are
    left out."""

    recipe_type = "PERSONALIZED_RANKING"
    interface = Ranker

    def __init__(self, version: SolutionVersion, settings: JobSettings) -> None:
        super().__init__(version, settings)
        self.user_index = warm_index(version.user_ids)
        self.item_index = warm_index(version.item_ids)

    @classmethod
    def default_input(cls, version: SolutionVersion) -> tuple[str, str]:
        """None: the items to rank are the input's."""
        raise InputError(
            f"{version.manifest['recipe']} ranks the items each input line lists: set batch_inference.input to a "
            'JSONL file (or folder) of {"userId": ..., "itemList": [...]} lines'
        )

    def request_of(self, obj: dict[str, Any], lineno: int, filter_values: Any) -> ParsedLine[RankingRequest]:
        return parse_ranking_request(obj, lineno, filter_values)

    def score_and_render(self, requests: list[RankingRequest], values: dict[str, Any] | None) -> tuple[bytes, int]:
        codes = self.user_index.get_indexer(pd.Index(np.array([r.user_id for r in requests], dtype=object)))
        allowed = self.filter.mask(codes, values) if self.filter is not None else None
        ranked = self.score(requests, codes, allowed)
        return self.render(requests, ranked), int((codes < 0).sum())

    def score(self, requests: list[RankingRequest], user_codes: np.ndarray, allowed: np.ndarray | None) -> RankedLists:
        width = max(len(r.item_ids) for r in requests)
        lengths = np.array([len(r.item_ids) for r in requests])
        codes_flat = self.item_index.get_indexer(
            pd.Index(np.array([i for r in requests for i in r.item_ids], dtype=object))
        )
        lists = np.full((len(requests), width), -1, dtype=np.int64)
        lists[np.arange(width)[None, :] < lengths[:, None]] = codes_flat
        if allowed is not None:
            blocked = (lists >= 0) & ~np.take_along_axis(allowed, np.maximum(lists, 0), axis=1)
            lists[blocked] = -2  # ranked as unknown, then dropped when rendered
        order, scores = self.recipe.rank(self.version.user_batch(user_codes), lists)
        return RankedLists(lists, lengths, order, scores)

    def render(self, requests: list[RankingRequest], ranked: RankedLists) -> bytes:
        lines = []
        for j, request in enumerate(requests):
            order = ranked.order[j]
            keep = (order < ranked.lengths[j]) & (ranked.lists[j][order] != -2)  # drop padding and filtered items
            names = [json.dumps(request.item_ids[p], ensure_ascii=False) for p in order[keep]]
            values = ["null" if np.isnan(v) else repr(round(float(v), 7)) for v in ranked.scores[j][keep]]
            output = '{"recommendedItems": [' + ", ".join(names) + '], "scores": [' + ", ".join(values) + "]}"
            lines.append('{"input": ' + input_json(request.input) + ', "output": ' + output + ', "error": null}\n')
        return "".join(lines).encode("utf-8")


__all__ = [
    "BatchHandler",
    "RecommendationHandler",
    "UserRecommendationHandler",
    "RelatedItemsHandler",
    "RankingHandler",
    "JobFilter",
    "Served",
    "TopKRenderer",
    "exploration_config",
    "MAX_RESULTS",
]
