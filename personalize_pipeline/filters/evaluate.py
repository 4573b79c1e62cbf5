"""Filter evaluation: a parsed expression and a :class:`FilterContext` give a bool mask.

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
* ``$NAME`` placeholders are filled from ``values`` (Personalize's ``filterValues``, in the
  forms ``syntax`` reads; names are case-sensitive). As in Personalize, an INCLUDE
  expression needs every value; in an EXCLUDE expression a condition whose values are all
  missing is left out (an IN list drops just the missing parameters; a user condition left
  out no longer restricts the users), and an EXCLUDE expression left with no item condition
  removes nothing.
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
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import InputError
from .context import Column, FilterContext, csr_ranges, find_column
from .syntax import (
    BoolOp,
    Condition,
    Expression,
    Value,
    canonical_number,
    conditions,
    parse_expressions,
    parse_list_value,
    parse_number_value,
    to_float,
)

_NEGATED = {"NOT IN": "IN", "!=": "="}


# --- evaluation ----------------------------------------------------------------------------------
_MISSING = object()


class _Evaluator:
    def __init__(self, context: FilterContext, values: dict[str, Any], include: bool):
        self.ctx = context
        self.values = values
        self.include = include

    def raw(self, name: str, pos: int) -> Any:
        raw = self.values.get(name)
        if raw is None or (isinstance(raw, str) and not raw.strip()) or (isinstance(raw, (list, tuple)) and not raw):
            if self.include:
                raise InputError(
                    f"filter expression: position {pos + 1}: missing filter value for ${name} "
                    "(INCLUDE expressions need a value for every parameter)"
                )
            return _MISSING
        return raw

    # pruning for omitted EXCLUDE values ------------------------------------------------------------
    def prune(self, node):
        if isinstance(node, BoolOp):
            kept = [c for c in (self.prune(ch) for ch in node.children) if c is not None]
            return None if not kept else kept[0] if len(kept) == 1 else BoolOp(node.op, tuple(kept))
        params = [v for v in node.values if v.kind == "param"]
        if not params:
            return node
        missing = {v for v in params if self.raw(v.text, v.pos) is _MISSING}
        if not missing:
            return node
        if node.op in ("IN", "NOT IN"):
            rest = tuple(v for v in node.values if v not in missing)
            return Condition(node.dataset, node.field, node.op, rest, node.pos, node.label) if rest else None
        return None

    def apply(self, e: Expression, codes: np.ndarray, out: np.ndarray) -> None:
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
        if isinstance(where, Condition) and where.dataset == "Interactions" and (where.op == "IN") != self.include:
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
        if isinstance(node, BoolOp):
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
    def resolved_strings(self, cond: Condition) -> list[str]:
        out: list[str] = []
        for v in cond.values:
            if v.kind == "str":
                out.append(v.text)
            elif v.kind == "num":
                out.append(canonical_number(float(v.text)))
            elif v.kind == "param":
                out.extend(parse_list_value(v.text, self.raw(v.text, v.pos)))
        return out

    def number(self, cond: Condition, v: Value) -> float:
        if v.kind == "param":
            return parse_number_value(v.text, self.raw(v.text, v.pos), cond.label, cond.op)
        value = to_float(v.text)
        if value is None:  # only a string literal can get here; the parser checks them
            raise InputError(
                f"filter expression: position {v.pos + 1}: "
                f"{cond.label} {cond.op} needs a number, got {json.dumps(v.text)}"
            )
        return value

    def column_vector(self, cond: Condition, dataset: str) -> np.ndarray:
        """Bool per row of the Items or Users dataset, for a condition without CurrentUser values."""
        col = find_column(self.ctx, dataset, cond.field, cond)
        op = _NEGATED.get(cond.op, cond.op)
        if op in ("IN", "="):
            strings = self.resolved_strings(cond)
            if op == "=" and len(strings) != 1:
                raise InputError(
                    f"filter expression: position {cond.values[0].pos + 1}: "
                    f"{cond.label} {cond.op} needs one value, got {len(strings)}"
                )
            number = to_float(strings[0]) if op == "=" else None
            # numbers compare by value in numeric columns, and unquoted numbers in columns of
            # numbers held as strings; quoted values in string columns compare as strings ("02134")
            numeric = number is not None and (
                col.typed_numeric or (cond.values[0].kind == "num" and col.numbers is not None)
            )
            if col.typed_numeric and op == "IN":
                strings = [s if (f := to_float(s)) is None else canonical_number(f) for s in strings]
            key: tuple[Any, ...]
            if numeric:
                key = ("vec", col.name, "=num", number)
                column_numbers = col.numbers
                assert column_numbers is not None  # typed numeric, or checked just above
                vec = self.ctx._cached(key, lambda: column_numbers == number)
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

    def user_condition(self, cond: Condition, codes: np.ndarray) -> np.ndarray:
        vec = self.column_vector(cond, "Users")
        missing_result = cond.op in _NEGATED  # NOT IN / != hold for a missing value
        if not len(vec):
            return np.full(len(codes), missing_result)
        return np.where(codes >= 0, vec[np.maximum(codes, 0)], missing_result)

    def items_condition(self, cond: Condition, codes: np.ndarray) -> np.ndarray:
        user_values = [v for v in cond.values if v.kind == "user"]
        if not user_values:
            return self.column_vector(cond, "Items")
        col = find_column(self.ctx, "Items", cond.field, cond)
        op = _NEGATED.get(cond.op, cond.op)
        if op == "IN" or (op == "=" and not self._numeric_pair(col, cond, user_values[0])):
            literal = [v for v in cond.values if v.kind != "user"]
            result = self.shared_values(col, cond, user_values, codes)
            if literal:
                result |= self.column_vector(
                    Condition("Items", cond.field, "IN", tuple(literal), cond.pos, cond.label), "Items"
                )
            return ~result if cond.op in _NEGATED else result
        x = col.require_numbers(cond.label, cond.op, cond.pos)[None, :]
        bounds: list[np.ndarray | float] = []
        for v in cond.values:
            if v.kind == "user":
                ucol = find_column(self.ctx, "Users", v.text, cond, v.pos)
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

    def _numeric_pair(self, col: Column, cond: Condition, v: Value) -> bool:
        ucol = find_column(self.ctx, "Users", v.text, cond, v.pos)
        return col.typed_numeric and ucol.typed_numeric

    def shared_values(self, col: Column, cond: Condition, user_values: list[Value], codes: np.ndarray) -> np.ndarray:
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
            ucol = find_column(self.ctx, "Users", v.text, cond, v.pos)
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
    def interactions(self, cond: Condition, codes: np.ndarray) -> np.ndarray:
        rows, items = self.interaction_pairs(cond, codes)
        seen = np.zeros((len(codes), self.ctx.n_items), dtype=bool)
        seen[rows, items] = True
        return np.logical_not(seen, out=seen) if cond.op == "NOT IN" else seen

    def interaction_pairs(self, cond: Condition, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(request row, item) of every event of the requested users with a listed event type."""
        types = [t.lower() for t in self.resolved_strings(cond)]
        ev = self.ctx._events()
        any_type = "*" in types
        if not any_type and ev.type_codes is None:
            raise InputError(
                f"filter expression: position {cond.pos + 1}: Interactions.EVENT_TYPE: "
                'the interactions have no EVENT_TYPE field; only IN ("*") can be used'
            )
        rows, positions = csr_ranges(ev.indptr, codes)  # every event of every requested user
        if not any_type:
            assert ev.type_codes is not None and ev.type_names is not None  # checked above
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


@dataclass(frozen=True)
class Filter:
    """A parsed filter expression (immutable; safe to share between jobs and threads)."""

    expression: str
    parameters: frozenset[str]  # the $NAMEs used (without $)
    _expressions: tuple[Expression, ...] = field(repr=False, compare=False)

    @property
    def fields(self) -> frozenset[str]:
        """``Dataset.FIELD`` names the filter reads (Users for CurrentUser too)."""
        out = set()
        for e in self._expressions:
            for c in conditions(e):
                out.add(f"{c.dataset}.{c.field}")
                out.update(f"Users.{v.text}" for v in c.values if v.kind == "user")
        return frozenset(out)

    def check(self, context: FilterContext) -> None:
        """Raise InputError now if a field the filter reads is not in the context."""
        for e in self._expressions:
            for c in conditions(e):
                if c.dataset == "Interactions":
                    continue
                find_column(context, c.dataset, c.field, c)
                for v in c.values:
                    if v.kind == "user":
                        find_column(context, "Users", v.text, c, v.pos)

    def mask(self, context: FilterContext, user_codes: np.ndarray, values: dict[str, Any] | None = None) -> np.ndarray:
        """bool [len(user_codes), n_items]: True = the item may be recommended to that user.
        User code -1 = unknown user (no interactions, no user metadata)."""
        codes = np.asarray(user_codes, dtype=np.int64).reshape(-1)
        if len(codes) and (codes.min() < -1 or codes.max() >= len(context.user_ids)):
            raise ValueError(f"user codes must be -1 or in [0, {len(context.user_ids)})")
        out = np.ones((len(codes), context.n_items), dtype=bool)
        for expression in self._expressions:
            _Evaluator(context, values or {}, expression.include).apply(expression, codes, out)
        return out

    def __str__(self) -> str:
        return self.expression


def parse_filter(expression: str) -> Filter:
    """Parse a Personalize filter expression; InputError (one line, with position) if malformed."""
    expressions = parse_expressions(expression)
    params = {v.text for e in expressions for c in conditions(e) for v in c.values if v.kind == "param"}
    return Filter(expression, frozenset(params), expressions)
