"""Amazon Personalize recommendation filters: parse filter expressions, evaluate them to masks.

``parse_filter(text)`` turns a filter expression into an immutable :class:`Filter`;
``Filter.mask(context, user_codes, values)`` gives a bool matrix ``[len(user_codes), n_items]``
(True = the item may be recommended to that user). The caller ranks only allowed items.

Grammar (keywords, ``ItemID`` and dataset names are case-insensitive; field names are matched
exactly, else case-insensitively when that is unambiguous)::

    filter     := expression ( "|" expression )*
    expression := (INCLUDE | EXCLUDE) ItemID WHERE where [ IF user_cond ( AND user_cond )* ]
    where      := and ( OR and )*                       -- AND binds tighter than OR
    and        := atom ( AND atom )*
    atom       := "(" where ")" | condition             -- parentheses are optional
    condition  := Dataset.FIELD ( [NOT] IN values | BETWEEN scalar AND scalar | op scalar )
    op         := "=" | "!=" | "<>" | "<" | "<=" | ">" | ">="
    values     := "(" value ( "," value )* ")" | $PARAM | CurrentUser.FIELD
    value      := "string" | number | $PARAM | CurrentUser.FIELD
    scalar     := value | "(" value ")"

Strings are double-quoted with backslash escapes (``\\"``, ``\\\\``); numbers are int or float
(``-3``, ``2.5``, ``1e3``). Datasets: ``Items``, ``Interactions`` (field ``EVENT_TYPE`` only,
with ``IN`` / ``NOT IN``), ``Users`` and ``CurrentUser`` (both mean the current user's row of
the Users dataset). ``CurrentItem`` (related-items filters) and ``UserID`` / ``ActionID``
filters are rejected with a message.

Semantics (as close to Amazon Personalize's documented behaviour as the brief allows):

* ``INCLUDE`` keeps only the items that satisfy the WHERE condition; ``EXCLUDE`` removes them.
  Expressions chained with ``|`` are applied in order: an item must pass every one of them.
* ``Items.F IN (v, ...)``: categorical fields may hold ``|``-separated multi-values
  (``"Comedy|Drama"``); the item matches when ANY of its values is in the list. Matching is
  exact and case-sensitive (Personalize ignores case only for event types). Numbers are
  compared by value where both sides are numeric (``20`` matches ``20.0``).
* ``NOT IN`` is the negation of ``IN``: the item matches when NONE of its values is in the
  list, and an item with no value (missing / empty) matches ``NOT IN`` (it "does not have"
  any listed value) but never ``IN``. ``!=`` is the negation of ``=`` in the same way.
* ``<``, ``<=``, ``>``, ``>=`` and ``BETWEEN lo AND hi`` (inclusive) need a numeric field and
  numeric values; a missing value never matches. ``=`` compares numbers when both sides are
  numeric, else strings (with multi-values: any value equal).
* ``Interactions.EVENT_TYPE IN ("click", ...)`` matches the items the current user has an
  interaction with whose event type is listed (case-insensitive); ``IN ("*")`` means any
  event type. ``NOT IN`` is its negation (items the user never had such an interaction
  with). All interactions in the context count (Personalize caps this at the most recent
  100 per event type). Interactions and Items conditions may be mixed in one expression
  (Personalize requires chaining them with ``|``; both forms give the same result here).
* ``Items.F IN (CurrentUser.G)`` / ``Items.F = CurrentUser.G``: per user, the item matches when
  its values and the current user's values of ``G`` (also ``|``-split) share one; ``<`` etc.
  with ``CurrentUser.G`` compare numbers per user. A user with no value matches nothing
  (``NOT IN`` / ``!=``: everything).
* User conditions — ``Users.F ...`` or ``CurrentUser.F ...`` as a WHERE conjunct, or
  Personalize's ``IF CurrentUser.F ...`` clause at the end — do not filter items: they choose
  the users the expression applies to. For a user who satisfies every user condition the
  expression's item part (its other conditions) is applied; for any other user the expression
  has no effect. So ``INCLUDE ItemID WHERE Items.TIER IN ("premium") AND Users.MEMBERSHIP IN
  ("premium")`` gives premium users only premium items and leaves other users' items
  unfiltered — the same as Personalize's ``... IF CurrentUser.MEMBERSHIP IN ("premium")``.
  As in Personalize, user conditions can only be combined with AND (never under OR), and an
  expression needs at least one Items or Interactions condition.
* Unknown users (user code -1) have no interactions and no user metadata: user conditions
  see missing values (``IN``/``=``/comparisons false, ``NOT IN``/``!=`` true), and an
  ``INCLUDE ... Interactions`` expression leaves them no items.
* ``$NAME`` placeholders are filled from ``values`` (Personalize's ``filterValues``; names are
  case-sensitive). For an IN list the value is a comma-separated list of quoted strings
  (``"\\"Comedy\\",\\"Drama\\""``), a JSON list (``'["Comedy", "Drama"]'``), a Python list, or a
  plain unquoted string (one value). For comparisons it is a number (``"20"``, quotes allowed).
  As in Personalize, an INCLUDE expression needs every value; in an EXCLUDE expression a
  condition whose values are all missing is left out (an IN list drops just the missing
  parameters; a user condition left out no longer restricts the users), and an EXCLUDE
  expression left with no item condition removes nothing.
  ``None`` or a blank string counts as missing. Unlike Personalize, placeholders are allowed
  with NOT IN, and there is no limit on the number of fields or chained expressions.

Evaluation is vectorised: an item condition becomes one ``[n_items]`` bool vector per
(condition, values) and context — cached on the context, so chunks of users reuse it — and
is broadcast; a user condition becomes one ``[n_users]`` vector likewise, indexed by the
requested codes. Interactions conditions gather the requested users' events from a copy of
the event arrays grouped by user (concatenated index ranges: no loop over users or events;
``EXCLUDE ... IN`` clears the (user, item) pairs directly). ``CurrentUser`` values go
through a sparse value-by-item incidence matrix: a sparse product when the values match few
items (brands), else one vectorised OR per distinct value among the requested users
(genres). The result and the 2-D intermediates are ``len(user_codes) x n_items`` bools:
choose the chunk size accordingly (8192 users x 100k items = 800 MB per matrix).
Errors about the expression or the values are :class:`InputError` with one line:
``filter expression: position N: reason`` (N = 1-based character offset in the whole
expression; placeholder values: ``filter value for $NAME: ...``).

API: ``parse_filter``; ``Filter.expression`` / ``.parameters`` / ``.fields`` /
``.check(context)`` (fail fast on unknown fields) / ``.mask(context, user_codes, values)``;
``FilterContext(...)`` or ``FilterContext.from_history(...)`` (per-user CSR histories as a
solution version stores them).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from .errors import InputError

__all__ = ["Filter", "FilterContext", "parse_filter"]

_COMPARISONS = ("<", "<=", ">", ">=")
_NUMERIC_OPS = _COMPARISONS + ("BETWEEN",)
_NEGATED = {"NOT IN": "IN", "!=": "="}
_DATASETS = {"items": "Items", "interactions": "Interactions", "users": "Users", "currentuser": "CurrentUser"}


# --- context -------------------------------------------------------------------------------------
@dataclass
class FilterContext:
    """What filters are evaluated against: catalogue, metadata and interactions, by code.

    Treat it as immutable once built: derived data (vectors per condition, sorted events)
    is cached on it, so build it once per job and pass it to every ``mask`` call.
    """

    item_ids: np.ndarray  # code -> ITEM_ID (str), length n_items
    items: pd.DataFrame | None  # raw item metadata, one row per item code (None: no Items dataset)
    user_ids: np.ndarray  # code -> USER_ID
    users: pd.DataFrame | None  # raw user metadata, one row per user code (None: no Users dataset)
    interaction_users: np.ndarray  # int user code per event
    interaction_items: np.ndarray  # int item code per event
    interaction_event_types: np.ndarray | None  # str per event (None if no EVENT_TYPE)
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.item_ids = np.asarray(self.item_ids)
        self.user_ids = np.asarray(self.user_ids)
        self.interaction_users = np.asarray(self.interaction_users, dtype=np.int64).ravel()
        self.interaction_items = np.asarray(self.interaction_items, dtype=np.int64).ravel()
        n_events = len(self.interaction_users)
        if len(self.interaction_items) != n_events:
            raise ValueError(
                f"FilterContext: {n_events} interaction users but {len(self.interaction_items)} interaction items"
            )
        if self.interaction_event_types is not None and len(self.interaction_event_types) != n_events:
            raise ValueError(
                f"FilterContext: {n_events} interactions but {len(self.interaction_event_types)} event types"
            )
        if n_events and (
            self.interaction_users.max() >= len(self.user_ids) or self.interaction_items.max() >= len(self.item_ids)
        ):
            raise ValueError("FilterContext: interaction user/item codes out of range")
        for name, frame, n in (("items", self.items, len(self.item_ids)), ("users", self.users, len(self.user_ids))):
            if frame is not None and len(frame) != n:
                raise ValueError(f"FilterContext: {name} metadata has {len(frame)} rows, expected {n}")

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @classmethod
    def from_history(
        cls,
        item_ids: np.ndarray,
        items: pd.DataFrame | None,
        user_ids: np.ndarray,
        users: pd.DataFrame | None,
        indptr: np.ndarray,
        history_items: np.ndarray,
        event_types: np.ndarray | None = None,
    ) -> FilterContext:
        """From per-user CSR histories (``history_items[indptr[u]:indptr[u+1]]``, as a
        solution version stores them) and optional event types aligned with ``history_items``."""
        indptr = np.asarray(indptr, dtype=np.int64)
        users_per_event = np.repeat(np.arange(len(indptr) - 1, dtype=np.int64), np.diff(indptr))
        return cls(item_ids, items, user_ids, users, users_per_event, np.asarray(history_items), event_types)

    # cached derived data -------------------------------------------------------------------------
    def _cached(self, key: tuple, build):
        try:
            return self._cache[key]
        except KeyError:
            value = self._cache[key] = build()
            return value

    def _events(self) -> _Events:
        return self._cached(("events",), lambda: _Events.build(self))


@dataclass
class _Events:
    """Events sorted by user: user u's events are ``[indptr[u], indptr[u+1])``."""

    indptr: np.ndarray
    items: np.ndarray
    type_codes: np.ndarray | None  # per sorted event, -1 = missing
    type_names: np.ndarray | None  # lower-cased distinct event types

    @staticmethod
    def build(ctx: FilterContext) -> _Events:
        users = ctx.interaction_users
        keep = users >= 0
        n_keep = int(keep.sum())
        if n_keep == len(users) and (len(users) < 2 or bool(np.all(users[1:] >= users[:-1]))):
            order = None  # already grouped by user (e.g. from_history)
        else:
            order = np.argsort(np.where(keep, users, len(ctx.user_ids)))[:n_keep]
        counts = np.bincount(users[keep], minlength=len(ctx.user_ids))
        indptr = np.zeros(len(ctx.user_ids) + 2, dtype=np.int64)  # + 1 spare entry for _ranges
        np.cumsum(counts, out=indptr[1:-1])
        indptr[-1] = indptr[-2]
        type_codes = type_names = None
        types = ctx.interaction_event_types
        if types is not None:
            if isinstance(types, pd.Categorical) or isinstance(getattr(types, "dtype", None), pd.CategoricalDtype):
                cat = pd.Categorical(types)
                codes, uniques = cat.codes, cat.categories
            else:
                codes, uniques = pd.factorize(np.asarray(types, dtype=object))  # before reordering: faster
            type_codes = np.asarray(codes, dtype=np.int64)
            type_codes = type_codes if order is None else type_codes[order]
            type_names = np.array([str(u).lower() for u in uniques], dtype=object)
        items = ctx.interaction_items if order is None else ctx.interaction_items[order]
        return _Events(indptr, items, type_codes, type_names)


# --- tokens --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Token:
    kind: str  # string number param name op ( ) , | end
    text: str  # source text (string: the unescaped content)
    pos: int  # 0-based offset in the expression

    def describe(self) -> str:
        if self.kind == "end":
            return "the end of the expression"
        if self.kind == "string":
            return json.dumps(self.text)
        return f"'{self.text}'"


_SCAN = re.compile(
    r"(?P<ws>\s+)"
    r"|(?P<number>[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)"
    r"|(?P<param>\$[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]*)?)"
    r"|(?P<op><=|>=|!=|<>|=|<|>)"
    r"|(?P<punct>[(),|])"
)


def _fail(text: str, where: str, pos: int, reason: str) -> InputError:
    return InputError(f"{where}: position {pos + 1}: {reason}")


def _tokenize(text: str, where: str = "filter expression") -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == '"':
            j, out = i + 1, []
            while j < n and text[j] != '"':
                if text[j] == "\\" and j + 1 < n:
                    j += 1
                out.append(text[j])
                j += 1
            if j >= n:
                raise _fail(text, where, i, 'unterminated string (missing closing ")')
            tokens.append(_Token("string", "".join(out), i))
            i = j + 1
            continue
        m = _SCAN.match(text, i)
        if m is None:
            if ch == "$":
                raise _fail(text, where, i, "expected a parameter name after $ (like $GENRES)")
            raise _fail(text, where, i, f"unexpected character {ch!r}")
        kind = m.lastgroup
        if kind == "name" and m.group().endswith("."):
            raise _fail(text, where, m.end(), f"expected a field name after '{m.group()}'")
        if kind != "ws":
            tokens.append(_Token(m.group() if kind == "punct" else kind, m.group(), i))
        i = m.end()
    tokens.append(_Token("end", "", n))
    return tokens


# --- syntax tree ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Value:
    kind: str  # str num param user
    text: str  # string content, number text, parameter name, or CurrentUser field
    pos: int


@dataclass(frozen=True)
class _Cond:
    dataset: str  # Items Interactions Users
    field: str
    op: str  # IN, NOT IN, BETWEEN, =, !=, <, <=, >, >=
    values: tuple[_Value, ...]
    pos: int
    label: str  # as written, e.g. CurrentUser.AGE

    @property
    def params(self) -> list[str]:
        return [v.text for v in self.values if v.kind == "param"]


@dataclass(frozen=True)
class _Bool:
    op: str  # AND OR
    children: tuple


@dataclass(frozen=True)
class _Expression:
    include: bool
    where: Any  # _Cond | _Bool: the item part
    user_conds: tuple[_Cond, ...]
    pos: int


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens = _tokenize(text)
        self.i = 0

    # helpers
    def peek(self) -> _Token:
        return self.tokens[self.i]

    def next(self) -> _Token:
        tok = self.tokens[self.i]
        if tok.kind != "end":
            self.i += 1
        return tok

    def error(self, tok: _Token | int, reason: str) -> InputError:
        pos = tok if isinstance(tok, int) else tok.pos
        return _fail(self.text, "filter expression", pos, reason)

    def is_kw(self, tok: _Token, *words: str) -> bool:
        return tok.kind == "name" and tok.text.upper() in words

    # grammar
    def parse(self) -> tuple[_Expression, ...]:
        if self.peek().kind == "end":
            raise InputError("filter expression is empty")
        expressions = [self.expression()]
        while self.peek().kind == "|":
            self.next()
            expressions.append(self.expression())
        tok = self.peek()
        if tok.kind != "end":
            raise self.error(
                tok,
                f"unexpected {tok.describe()} after the condition (expected AND, OR, IF, | or the end of the expression)",
            )
        return tuple(expressions)

    def expression(self) -> _Expression:
        start = self.next()
        if not self.is_kw(start, "INCLUDE", "EXCLUDE"):
            raise self.error(start, f"expected INCLUDE or EXCLUDE, got {start.describe()}")
        tok = self.next()
        if self.is_kw(tok, "USERID", "ACTIONID"):
            raise self.error(tok, f"only ItemID filters (item recommendations) are supported, got {tok.text}")
        if not self.is_kw(tok, "ITEMID"):
            raise self.error(tok, f"expected ItemID after {start.text.upper()}, got {tok.describe()}")
        tok = self.next()
        if not self.is_kw(tok, "WHERE"):
            raise self.error(tok, f"expected WHERE after ItemID, got {tok.describe()}")
        where = self.or_()
        user_conds, item_part = _split_user_conditions(where, self)
        if self.is_kw(self.peek(), "IF"):
            self.next()
            while True:
                cond = self.condition()
                if cond.dataset != "Users":
                    raise self.error(cond.pos, f"IF conditions must be on CurrentUser fields, got {cond.label}")
                user_conds.append(cond)
                if self.is_kw(self.peek(), "OR"):
                    raise self.error(self.peek(), "IF conditions can only be combined with AND")
                if not self.is_kw(self.peek(), "AND"):
                    break
                self.next()
        if item_part is None:
            raise self.error(
                start,
                "the expression needs an Items or Interactions condition; Users/CurrentUser conditions only choose the users it applies to",
            )
        return _Expression(start.text.upper() == "INCLUDE", item_part, tuple(user_conds), start.pos)

    def or_(self):
        children = [self.and_()]
        while self.is_kw(self.peek(), "OR"):
            self.next()
            children.append(self.and_())
        return children[0] if len(children) == 1 else _Bool("OR", tuple(children))

    def and_(self):
        children = [self.atom()]
        while self.is_kw(self.peek(), "AND"):
            self.next()
            children.append(self.atom())
        return children[0] if len(children) == 1 else _Bool("AND", tuple(children))

    def atom(self):
        if self.peek().kind == "(":
            open_ = self.next()
            node = self.or_()
            tok = self.next()
            if tok.kind != ")":
                raise self.error(tok, f"expected ) to close the ( at position {open_.pos + 1}, got {tok.describe()}")
            return node
        return self.condition()

    def reference(self, tok: _Token, what: str) -> tuple[str, str, str]:
        """(dataset, field, label) of a Dataset.FIELD token."""
        if tok.kind != "name" or "." not in tok.text:
            raise self.error(tok, f"expected {what}, got {tok.describe()}")
        ds, fld = tok.text.split(".", 1)
        canonical = _DATASETS.get(ds.lower())
        if canonical is None:
            if ds.lower() == "currentitem":
                raise self.error(tok, f"{tok.text}: CurrentItem (related-items filters) is not supported")
            raise self.error(
                tok, f"unknown dataset '{ds}' in {tok.text} (expected Items, Interactions, Users or CurrentUser)"
            )
        return canonical, fld, f"{canonical}.{fld}"

    def condition(self) -> _Cond:
        tok = self.next()
        if tok.kind == "end" or (tok.kind == "name" and "." not in tok.text):
            raise self.error(tok, f"expected a condition like Items.FIELD IN (...), got {tok.describe()}")
        dataset, fld, label = self.reference(tok, "a condition like Items.FIELD IN (...)")
        if dataset == "CurrentUser":
            dataset = "Users"
        if dataset == "Interactions" and fld.upper() != "EVENT_TYPE":
            raise self.error(tok, f"only Interactions.EVENT_TYPE can be used in filters, got {label}")
        op_tok = self.next()
        if self.is_kw(op_tok, "NOT"):
            nxt = self.next()
            if not self.is_kw(nxt, "IN"):
                raise self.error(nxt, f"expected IN after NOT, got {nxt.describe()}")
            op, values = "NOT IN", self.in_values(nxt)
        elif self.is_kw(op_tok, "IN"):
            op, values = "IN", self.in_values(op_tok)
        elif self.is_kw(op_tok, "BETWEEN"):
            lo = self.scalar(op_tok, "BETWEEN")
            and_tok = self.next()
            if not self.is_kw(and_tok, "AND"):
                raise self.error(and_tok, f"expected AND in {label} BETWEEN ... AND ..., got {and_tok.describe()}")
            op, values = "BETWEEN", (lo, self.scalar(and_tok, "BETWEEN ... AND"))
        elif op_tok.kind == "op":
            op = "!=" if op_tok.text == "<>" else op_tok.text
            values = (self.scalar(op_tok, op),)
        else:
            raise self.error(
                op_tok, f"expected IN, NOT IN, BETWEEN or a comparison after {label}, got {op_tok.describe()}"
            )
        if op in _NUMERIC_OPS:
            for v in values:
                if v.kind == "str" and _to_float(v.text) is None:
                    raise self.error(v.pos, f"{label} {op} needs a number, got {json.dumps(v.text)}")
        if dataset == "Interactions":
            if op not in ("IN", "NOT IN"):
                raise self.error(op_tok, f"only IN and NOT IN can be used with Interactions.EVENT_TYPE, got {op}")
            fld = "EVENT_TYPE"
        if dataset != "Items":
            for v in values:
                if v.kind == "user":
                    raise self.error(v.pos, f"CurrentUser values can only be compared with Items fields, not {label}")
        return _Cond(dataset, fld, op, tuple(values), tok.pos, label)

    def in_values(self, in_tok: _Token) -> tuple[_Value, ...]:
        tok = self.peek()
        if tok.kind != "(":
            if tok.kind == "param" or (tok.kind == "name" and tok.text.lower().startswith("currentuser.")):
                return (self.value("after IN"),)
            raise self.error(tok, f"expected ( after IN, got {tok.describe()}")
        open_ = self.next()
        if self.peek().kind == ")":
            raise self.error(open_, "empty IN list: give at least one value")
        values = [self.value("in the IN list")]
        while True:
            tok = self.next()
            if tok.kind == ")":
                return tuple(values)
            if tok.kind != ",":
                if tok.kind == "end":
                    raise self.error(
                        tok, f"unclosed IN list: expected , or ) to close the ( at position {open_.pos + 1}"
                    )
                raise self.error(tok, f"expected , or ) in the IN list, got {tok.describe()}")
            values.append(self.value("in the IN list"))

    def value(self, where: str) -> _Value:
        tok = self.next()
        if tok.kind == "string":
            return _Value("str", tok.text, tok.pos)
        if tok.kind == "number":
            return _Value("num", tok.text, tok.pos)
        if tok.kind == "param":
            return _Value("param", tok.text[1:], tok.pos)
        if tok.kind == "name" and "." in tok.text:
            dataset, fld, _ = self.reference(tok, "a value")
            if dataset == "CurrentUser":
                return _Value("user", fld, tok.pos)
            raise self.error(tok, f"{tok.text}: only CurrentUser fields can be used as values")
        raise self.error(
            tok, f"expected a quoted string, a number, a $PARAMETER or CurrentUser.FIELD {where}, got {tok.describe()}"
        )

    def scalar(self, after: _Token, op: str) -> _Value:
        if self.peek().kind == "(":
            open_ = self.next()
            v = self.scalar(open_, op)
            tok = self.next()
            if tok.kind != ")":
                raise self.error(tok, f"expected ) to close the ( at position {open_.pos + 1}, got {tok.describe()}")
            return v
        return self.value(f"after {op}")


def _contains_user(node) -> _Cond | None:
    if isinstance(node, _Cond):
        return node if node.dataset == "Users" else None
    for child in node.children:
        found = _contains_user(child)
        if found is not None:
            return found
    return None


def _split_user_conditions(node, parser: _Parser) -> tuple[list[_Cond], Any]:
    """Top-level AND conjuncts on Users are user conditions; anywhere else they are an error."""
    if isinstance(node, _Cond) and node.dataset == "Users":
        return [node], None
    if isinstance(node, _Bool) and node.op == "AND":
        users, rest = [], []
        for child in node.children:
            u, r = _split_user_conditions(child, parser)
            users.extend(u)
            if r is not None:
                rest.append(r)
        item = None if not rest else rest[0] if len(rest) == 1 else _Bool("AND", tuple(rest))
        return users, item
    bad = _contains_user(node)
    if bad is not None:
        raise parser.error(
            bad.pos,
            f"{bad.label}: Users conditions can only be combined with Items or Interactions conditions using AND, not OR",
        )
    return [], node


# --- filter --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Filter:
    """A parsed filter expression (immutable; safe to share between jobs and threads)."""

    expression: str
    parameters: frozenset[str]  # the $NAMEs used (without $)
    _expressions: tuple[_Expression, ...] = field(repr=False, compare=False)

    @property
    def fields(self) -> frozenset[str]:
        """``Dataset.FIELD`` names the filter reads (Users for CurrentUser too)."""
        out = set()
        for e in self._expressions:
            for c in _conditions(e):
                out.add(f"{c.dataset}.{c.field}")
                out.update(f"Users.{v.text}" for v in c.values if v.kind == "user")
        return frozenset(out)

    def check(self, context: FilterContext) -> None:
        """Raise InputError now if a field the filter reads is not in the context."""
        for e in self._expressions:
            for c in _conditions(e):
                if c.dataset == "Interactions":
                    continue
                _column(context, c.dataset, c.field, c)
                for v in c.values:
                    if v.kind == "user":
                        _column(context, "Users", v.text, c, v.pos)

    def mask(self, context: FilterContext, user_codes: np.ndarray, values: dict[str, Any] | None = None) -> np.ndarray:
        """bool [len(user_codes), n_items]: True = the item may be recommended to that user.
        User code -1 = unknown user (no interactions, no user metadata)."""
        codes = np.asarray(user_codes, dtype=np.int64).reshape(-1)
        if len(codes) and (codes.min() < -1 or codes.max() >= len(context.user_ids)):
            raise ValueError(f"user codes must be -1 or in [0, {len(context.user_ids)})")
        out = np.ones((len(codes), context.n_items), dtype=bool)
        for expression in self._expressions:
            _Evaluator(self.expression, context, values or {}, expression.include).apply(expression, codes, out)
        return out

    def __str__(self) -> str:
        return self.expression


def parse_filter(expression: str) -> Filter:
    """Parse a Personalize filter expression; InputError (one line, with position) if malformed."""
    if not isinstance(expression, str):
        raise InputError(f"filter expression must be a string, got {type(expression).__name__}")
    expressions = _Parser(expression).parse()
    params = {v.text for e in expressions for c in _conditions(e) for v in c.values if v.kind == "param"}
    return Filter(expression, frozenset(params), expressions)


def _conditions(e: _Expression) -> list[_Cond]:
    out: list[_Cond] = []

    def walk(node):
        if isinstance(node, _Cond):
            out.append(node)
        else:
            for child in node.children:
                walk(child)

    walk(e.where)
    out.extend(e.user_conds)
    return out


# --- values --------------------------------------------------------------------------------------
def _to_float(text: Any) -> float | None:
    if isinstance(text, bool):
        return None
    if isinstance(text, (int, float, np.integer, np.floating)):
        return float(text)
    try:
        value = float(str(text).strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _canonical_number(v: float) -> str:
    if math.isfinite(v) and v == int(v) and abs(v) < 1e16:
        return str(int(v))
    return repr(float(v))


def _scalar_text(v: Any) -> str:
    """Canonical string of one metadata value (numbers: 20.0 -> "20")."""
    if isinstance(v, (bool, np.bool_)):
        return "True" if v else "False"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return _canonical_number(float(v))
    return str(v)


def _is_missing(v: Any) -> bool:
    if v is None:
        return True
    if isinstance(v, str):
        return v == ""
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def _parse_list_value(name: str, raw: Any) -> list[str]:
    """Values of a placeholder used in an IN list."""
    where = f"filter value for ${name}"
    if isinstance(raw, (list, tuple, np.ndarray)):
        items = list(raw)
    else:
        text = _scalar_text(raw).strip() if not isinstance(raw, str) else raw.strip()
        items = None
        if text.startswith("["):
            try:
                parsed = json.loads(text)
                if isinstance(parsed, list):
                    items = parsed
            except json.JSONDecodeError:
                pass
        if items is None:
            if text.startswith('"'):
                tokens = _tokenize(text, where)
                items = []
                for k, tok in enumerate(tokens[:-1]):
                    if k % 2 == 0 and tok.kind not in ("string", "number"):
                        raise _fail(text, where, tok.pos, f"expected a quoted string, got {tok.describe()}")
                    if k % 2 == 1 and tok.kind != ",":
                        raise _fail(text, where, tok.pos, f"expected , between quoted values, got {tok.describe()}")
                    if k % 2 == 0:
                        items.append(tok.text if tok.kind == "string" else _canonical_number(float(tok.text)))
                if len(tokens) % 2 == 1:  # ends with a comma (tokens include "end")
                    raise _fail(text, where, tokens[-1].pos, "expected a quoted string after the last ,")
            else:
                numbers = [p.strip() for p in text.split(",")]
                if len(numbers) > 1 and all(_to_float(p) is not None for p in numbers):
                    items = [_canonical_number(_to_float(p)) for p in numbers]
                else:
                    items = [text]
    out = []
    for item in items:
        if isinstance(item, (list, dict)) or item is None:
            raise InputError(f"{where}: list entries must be strings or numbers, got {json.dumps(item)}")
        out.append(item if isinstance(item, str) else _scalar_text(item))
    return out


def _parse_number_value(name: str, raw: Any, label: str, op: str) -> float:
    text = raw if isinstance(raw, str) else _scalar_text(raw)
    stripped = text.strip()
    if len(stripped) >= 2 and stripped[0] == stripped[-1] == '"':
        stripped = stripped[1:-1]
    value = _to_float(stripped)
    if value is None:
        raise InputError(f"filter value for ${name} must be a number ({label} {op}), got {json.dumps(text)}")
    return value


# --- columns -------------------------------------------------------------------------------------
class _Column:
    """One metadata field, prepared for matching: canonical strings split on "|", numbers."""

    def __init__(self, name: str, series: pd.Series):
        self.name = name  # Dataset.FIELD
        s = series.reset_index(drop=True)
        self.n = n = len(s)
        self.typed_numeric = False  # a numeric (or datetime) column, not numbers in strings
        self._numbers: np.ndarray | None = None
        if pd.api.types.is_bool_dtype(s.dtype):
            flags = s.to_numpy(dtype=object, na_value=None)
            strings = np.array([None if v is None else ("True" if v else "False") for v in flags], dtype=object)
        elif pd.api.types.is_datetime64_any_dtype(s.dtype):
            ts = pd.to_datetime(s, utc=True)
            numbers = ((ts - pd.Timestamp("1970-01-01", tz="UTC")) / pd.Timedelta(seconds=1)).to_numpy(
                dtype=np.float64, na_value=np.nan
            )
            strings = np.array([None if math.isnan(x) else _canonical_number(x) for x in numbers], dtype=object)
            self.typed_numeric, self._numbers = True, numbers
        elif pd.api.types.is_numeric_dtype(s.dtype):
            numbers = pd.to_numeric(s, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
            integral = np.isfinite(numbers) & (np.floor(numbers) == numbers) & (np.abs(numbers) < 1e16)
            strings = np.empty(n, dtype=object)
            strings[integral] = [str(v) for v in numbers[integral].astype(np.int64).tolist()]
            rest = ~integral & ~np.isnan(numbers)
            strings[rest] = [repr(float(x)) for x in numbers[rest]]
            self.typed_numeric, self._numbers = True, numbers
        else:
            values = s.to_numpy(dtype=object)
            is_str = np.fromiter((isinstance(v, str) for v in values), dtype=bool, count=n)
            strings = values.copy()
            for k in np.flatnonzero(~is_str):
                strings[k] = None if _is_missing(values[k]) else _scalar_text(values[k])
            if n:
                strings[strings == ""] = None
        self.strings = strings
        self.missing = pd.isna(pd.Series(strings, dtype=object)).to_numpy()
        lists = pc.split_pattern(pa.array(strings, type=pa.string(), from_pandas=True), "|")
        flat = lists.flatten()
        parent = np.asarray(pc.list_parent_indices(lists).to_numpy(zero_copy_only=False), dtype=np.int64)
        nonempty = np.asarray(pc.not_equal(flat, "").to_numpy(zero_copy_only=False), dtype=bool)
        if not nonempty.all():
            flat, parent = flat.filter(pa.array(nonempty)), parent[nonempty]
        self.flat = flat  # every (row, value) pair's value, rows ascending
        self.parent = parent  # the row of each flat value
        self._numbers_done = self._numbers is not None
        self._bad: str | None = None
        self._rows = None
        self._atoms = None

    @property
    def numbers(self) -> np.ndarray | None:
        """Float per row (NaN = missing), or None when some value is not a number."""
        if not self._numbers_done:
            self._numbers_done = True
            present = ~self.missing
            values = pd.Series(self.strings[present], dtype=object).str.strip()
            converted = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
            failed = np.isnan(converted)
            if failed.any():
                self._bad = str(self.strings[present][np.argmax(failed)])
            else:
                self._numbers = np.full(self.n, np.nan)
                self._numbers[present] = converted
        return self._numbers

    def any_in(self, values: Iterable[str]) -> np.ndarray:
        """Per row: does any of its values equal one of ``values``?"""
        out = np.zeros(self.n, dtype=bool)
        values = list(dict.fromkeys(values))
        if values and len(self.flat):
            hit = np.asarray(
                pc.is_in(self.flat, value_set=pa.array(values, type=pa.string())).to_numpy(zero_copy_only=False),
                dtype=bool,
            )
            out[self.parent[hit]] = True
        return out

    def require_numbers(self, label: str, op: str, pos: int) -> np.ndarray:
        numbers = self.numbers
        if numbers is None:
            raise InputError(
                f"filter expression: position {pos + 1}: {op} needs a numeric field, but {label} has the non-numeric value {json.dumps(self._bad)}"
            )
        return numbers

    def atoms(self) -> tuple[np.ndarray, pd.Index]:
        """(value code per flat value, distinct values)."""
        if self._atoms is None:
            codes, uniques = pd.factorize(np.asarray(self.flat.to_numpy(zero_copy_only=False), dtype=object))
            self._atoms = codes.astype(np.int64), pd.Index(uniques, dtype=object)
        return self._atoms

    def rows_values(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(request row, value) for every value of the rows ``codes`` (code -1: none)."""
        if self._rows is None:
            self._rows = (
                np.searchsorted(self.parent, np.arange(self.n + 2)),
                np.asarray(self.flat.to_numpy(zero_copy_only=False), dtype=object),
            )
        indptr, flat = self._rows
        rows, positions = _ranges(indptr, codes)
        return rows, flat[positions]


def _ranges(indptr: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(request row, position) for every position in ``[indptr[c], indptr[c+1])`` of each code
    (code -1: none) — the concatenated ranges, built without a Python loop.
    ``indptr`` has at least ``max(codes) + 2`` entries."""
    valid = codes >= 0
    safe = np.where(valid, codes, 0)
    starts = np.where(valid, indptr[safe], 0)
    lengths = np.where(valid, indptr[safe + 1] - indptr[safe], 0)
    total = int(lengths.sum())
    rows = np.repeat(np.arange(len(codes), dtype=np.int64), lengths)
    offsets = np.cumsum(lengths) - lengths
    positions = np.arange(total, dtype=np.int64) - np.repeat(offsets - starts, lengths)
    return rows, positions


def _column(context: FilterContext, dataset: str, name: str, cond: _Cond, pos: int | None = None) -> _Column:
    pos = cond.pos if pos is None else pos

    def fail(reason: str) -> InputError:
        return InputError(f"filter expression: position {pos + 1}: {reason}")

    frame = context.items if dataset == "Items" else context.users
    id_name, ids = ("ITEM_ID", context.item_ids) if dataset == "Items" else ("USER_ID", context.user_ids)
    columns = [] if frame is None else [str(c) for c in frame.columns]
    resolved = name if name in columns else None
    if resolved is None:
        folded = [c for c in columns if c.lower() == name.lower()]
        resolved = folded[0] if len(folded) == 1 else None
    if resolved is None and name.upper() == id_name:
        return context._cached(
            ("column", dataset, id_name), lambda: _Column(f"{dataset}.{id_name}", pd.Series(ids, dtype=object))
        )
    if resolved is None:
        if frame is None:
            raise fail(f"{dataset}.{name}: there is no {dataset} dataset (no {dataset.lower()} metadata) to filter on")
        shown = ", ".join(columns[:40]) + (", ..." if len(columns) > 40 else "")
        raise fail(f"{dataset}.{name} is not a field of the {dataset} dataset (fields: {shown})")
    return context._cached(("column", dataset, resolved), lambda: _Column(f"{dataset}.{resolved}", frame[resolved]))


# --- evaluation ----------------------------------------------------------------------------------
_MISSING = object()


class _Evaluator:
    def __init__(self, expression: str, context: FilterContext, values: dict[str, Any], include: bool):
        self.expression = expression
        self.ctx = context
        self.values = values
        self.include = include

    def raw(self, name: str, pos: int) -> Any:
        raw = self.values.get(name)
        if raw is None or (isinstance(raw, str) and not raw.strip()) or (isinstance(raw, (list, tuple)) and not raw):
            if self.include:
                raise InputError(
                    f"filter expression: position {pos + 1}: missing filter value for ${name} (INCLUDE expressions need a value for every parameter)"
                )
            return _MISSING
        return raw

    # pruning for omitted EXCLUDE values ------------------------------------------------------------
    def prune(self, node):
        if isinstance(node, _Bool):
            kept = [c for c in (self.prune(ch) for ch in node.children) if c is not None]
            return None if not kept else kept[0] if len(kept) == 1 else _Bool(node.op, tuple(kept))
        params = [v for v in node.values if v.kind == "param"]
        if not params:
            return node
        missing = {v for v in params if self.raw(v.text, v.pos) is _MISSING}
        if not missing:
            return node
        if node.op in ("IN", "NOT IN"):
            rest = tuple(v for v in node.values if v not in missing)
            return _Cond(node.dataset, node.field, node.op, rest, node.pos, node.label) if rest else None
        return None

    def apply(self, e: _Expression, codes: np.ndarray, out: np.ndarray) -> None:
        where = self.prune(e.where)
        user_conds = [c for c in (self.prune(c) for c in e.user_conds) if c is not None]
        if where is None:
            return  # EXCLUDE whose values were all omitted: removes nothing
        gate = np.ones(len(codes), dtype=bool)
        for cond in user_conds:
            gate &= self.user_condition(cond, codes)
        if not gate.any():
            return
        everyone = bool(gate.all())
        sub = codes if everyone else codes[gate]
        if isinstance(where, _Cond) and where.dataset == "Interactions" and (where.op == "IN") != self.include:
            # EXCLUDE ... IN / INCLUDE ... NOT IN on interactions: clear the (user, item) pairs
            rows, items = self.interaction_pairs(where, sub)
            out[rows if everyone else np.flatnonzero(gate)[rows], items] = False
            return
        matched = self.eval(where, sub)
        if self.include:
            allowed = matched
        elif matched.ndim == 2:  # 2-D results are fresh arrays: negate in place
            allowed = np.logical_not(matched, out=matched)
        else:  # 1-D item vectors may be cached: never modify them
            allowed = ~matched
        if everyone:
            out &= allowed
        else:
            out[gate] &= allowed

    def eval(self, node, codes: np.ndarray) -> np.ndarray:
        """[n_items] (same for every user) or [len(codes), n_items] bool."""
        if isinstance(node, _Bool):
            parts = [self.eval(ch, codes) for ch in node.children]
            parts.sort(key=lambda a: a.ndim)  # combine the item vectors first
            combine = np.logical_and if node.op == "AND" else np.logical_or
            result = parts[0].copy() if parts[0].ndim == 1 else parts[0]  # 1-D ones may be cached
            for p in parts[1:]:
                if result.ndim == 1 and p.ndim == 2:
                    result = combine(p, result, out=p)  # 2-D results are fresh: reuse them
                else:
                    combine(result, p, out=result)
            return result
        if node.dataset == "Interactions":
            return self.interactions(node, codes)
        return self.items_condition(node, codes)

    # one condition over a metadata column ----------------------------------------------------------
    def resolved_strings(self, cond: _Cond) -> list[str]:
        out: list[str] = []
        for v in cond.values:
            if v.kind == "str":
                out.append(v.text)
            elif v.kind == "num":
                out.append(_canonical_number(float(v.text)))
            elif v.kind == "param":
                out.extend(_parse_list_value(v.text, self.raw(v.text, v.pos)))
        return out

    def number(self, cond: _Cond, v: _Value) -> float:
        if v.kind == "param":
            return _parse_number_value(v.text, self.raw(v.text, v.pos), cond.label, cond.op)
        value = _to_float(v.text)
        if value is None:  # only a string literal can get here; the parser checks them
            raise InputError(
                f"filter expression: position {v.pos + 1}: {cond.label} {cond.op} needs a number, got {json.dumps(v.text)}"
            )
        return value

    def column_vector(self, cond: _Cond, dataset: str) -> np.ndarray:
        """Bool per row of the Items or Users dataset, for a condition without CurrentUser values."""
        col = _column(self.ctx, dataset, cond.field, cond)
        op = _NEGATED.get(cond.op, cond.op)
        if op in ("IN", "="):
            strings = self.resolved_strings(cond)
            if op == "=" and len(strings) != 1:
                raise InputError(
                    f"filter expression: position {cond.values[0].pos + 1}: {cond.label} {cond.op} needs one value, got {len(strings)}"
                )
            number = _to_float(strings[0]) if op == "=" else None
            # numbers compare by value in numeric columns, and unquoted numbers in columns of
            # numbers held as strings; quoted values in string columns compare as strings ("02134")
            numeric = number is not None and (
                col.typed_numeric or (cond.values[0].kind == "num" and col.numbers is not None)
            )
            if col.typed_numeric and op == "IN":
                strings = [s if _to_float(s) is None else _canonical_number(_to_float(s)) for s in strings]
            if numeric:
                key = ("vec", col.name, "=num", number)
                vec = self.ctx._cached(key, lambda: col.numbers == number)
            else:
                key = ("vec", col.name, "in", tuple(sorted(set(strings))))
                vec = self.ctx._cached(key, lambda: col.any_in(strings))
            return ~vec if cond.op in _NEGATED else vec
        numbers = [self.number(cond, v) for v in cond.values]
        key = ("vec", col.name, op, tuple(numbers))

        def build() -> np.ndarray:
            x = col.require_numbers(cond.label, cond.op, cond.pos)
            with np.errstate(invalid="ignore"):
                if op == "BETWEEN":
                    return (x >= numbers[0]) & (x <= numbers[1])
                return _compare(x, op, numbers[0])

        return self.ctx._cached(key, build)

    def user_condition(self, cond: _Cond, codes: np.ndarray) -> np.ndarray:
        vec = self.column_vector(cond, "Users")
        missing_result = cond.op in _NEGATED  # NOT IN / != hold for a missing value
        if not len(vec):
            return np.full(len(codes), missing_result)
        return np.where(codes >= 0, vec[np.maximum(codes, 0)], missing_result)

    def items_condition(self, cond: _Cond, codes: np.ndarray) -> np.ndarray:
        user_values = [v for v in cond.values if v.kind == "user"]
        if not user_values:
            return self.column_vector(cond, "Items")
        col = _column(self.ctx, "Items", cond.field, cond)
        op = _NEGATED.get(cond.op, cond.op)
        if op == "IN" or (op == "=" and not self._numeric_pair(col, cond, user_values[0])):
            literal = [v for v in cond.values if v.kind != "user"]
            result = self.shared_values(col, cond, user_values, codes)
            if literal:
                result |= self.column_vector(
                    _Cond("Items", cond.field, "IN", tuple(literal), cond.pos, cond.label), "Items"
                )
            return ~result if cond.op in _NEGATED else result
        x = col.require_numbers(cond.label, cond.op, cond.pos)[None, :]
        bounds = []
        for v in cond.values:
            if v.kind == "user":
                ucol = _column(self.ctx, "Users", v.text, cond, v.pos)
                u = ucol.require_numbers(f"CurrentUser.{v.text}", cond.op, v.pos)
                bounds.append(np.where(codes >= 0, u[np.maximum(codes, 0)], np.nan)[:, None])
            else:
                bounds.append(self.number(cond, v))
        with np.errstate(invalid="ignore"):
            if op == "BETWEEN":
                result = (x >= bounds[0]) & (x <= bounds[1])
            else:
                result = _compare(x, op, bounds[0])
        shape = (len(codes), self.ctx.n_items)
        if result.shape != shape:  # callers may modify 2-D results in place: give a fresh array
            result = np.broadcast_to(result, shape).copy()
        return np.logical_not(result, out=result) if cond.op in _NEGATED else result

    def _numeric_pair(self, col: _Column, cond: _Cond, v: _Value) -> bool:
        ucol = _column(self.ctx, "Users", v.text, cond, v.pos)
        return col.typed_numeric and ucol.typed_numeric

    def shared_values(self, col: _Column, cond: _Cond, user_values: list[_Value], codes: np.ndarray) -> np.ndarray:
        """[len(codes), n_items]: the item shares a value with the user's value(s) of CurrentUser fields."""
        n = len(codes)
        result = np.zeros((n, self.ctx.n_items), dtype=bool)

        def incidence():
            atom_codes, uniques = col.atoms()
            pairs = np.unique(atom_codes * col.n + col.parent)
            data = np.ones(len(pairs), dtype=bool)
            return sp.csr_matrix((data, (pairs // col.n, pairs % col.n)), shape=(len(uniques), col.n)), uniques

        matrix, uniques = self.ctx._cached(("atoms", col.name), incidence)
        for v in user_values:
            ucol = _column(self.ctx, "Users", v.text, cond, v.pos)
            rows, atoms = ucol.rows_values(codes)
            idx = uniques.get_indexer(pd.Index(atoms, dtype=object)) if len(atoms) else np.zeros(0, dtype=np.int64)
            found = idx >= 0
            rows, idx = rows[found], idx[found]
            if not len(rows):
                continue
            distinct, inverse = np.unique(idx, return_inverse=True)
            per_value = matrix[distinct]  # [distinct user values, n_items]
            sizes = np.diff(per_value.indptr)
            if sizes[inverse].sum() <= 0.05 * result.size:
                # values that match few items (brands, authors): a sparse product
                # (request rows x distinct values) @ (distinct values x items)
                per_user = sp.csr_matrix(
                    (np.ones(len(rows), dtype=np.float32), (rows, inverse)), shape=(n, len(distinct))
                )
                product = (per_user @ per_value.astype(np.float32)).tocoo()
                result[product.row, product.col] = True
            else:
                # values that match many items (genres, tiers): one vectorised OR per distinct value
                dense = per_value.toarray()
                order = np.argsort(inverse, kind="stable")
                bounds = np.searchsorted(inverse[order], np.arange(len(distinct) + 1))
                for k in range(len(distinct)):
                    result[rows[order[bounds[k] : bounds[k + 1]]]] |= dense[k]
        return result

    # interactions --------------------------------------------------------------------------------
    def interactions(self, cond: _Cond, codes: np.ndarray) -> np.ndarray:
        rows, items = self.interaction_pairs(cond, codes)
        seen = np.zeros((len(codes), self.ctx.n_items), dtype=bool)
        seen[rows, items] = True
        return np.logical_not(seen, out=seen) if cond.op == "NOT IN" else seen

    def interaction_pairs(self, cond: _Cond, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(request row, item) of every event of the requested users with a listed event type."""
        types = [t.lower() for t in self.resolved_strings(cond)]
        ev = self.ctx._events()
        any_type = "*" in types
        if not any_type and ev.type_codes is None:
            raise InputError(
                f'filter expression: position {cond.pos + 1}: Interactions.EVENT_TYPE: the interactions have no EVENT_TYPE field; only IN ("*") can be used'
            )
        rows, positions = _ranges(ev.indptr, codes)  # every event of every requested user
        if not any_type:
            type_ok = np.isin(ev.type_names, np.array(types, dtype=object))
            tc = ev.type_codes[positions]
            keep = (tc >= 0) & type_ok[np.maximum(tc, 0)]
            rows, positions = rows[keep], positions[keep]
        return rows, ev.items[positions]


def _compare(x, op: str, y):
    if op == "<":
        return x < y
    if op == "<=":
        return x <= y
    if op == ">":
        return x > y
    if op == ">=":
        return x >= y
    return x == y
