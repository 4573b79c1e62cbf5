"""Filter expressions: tokens, the syntax tree and the hand-written parser.

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

``$NAME`` placeholders are filled from ``values`` (Personalize's ``filterValues``; names are
case-sensitive). For an IN list the value is a comma-separated list of quoted strings
(``"\\"Comedy\\",\\"Drama\\""``), a JSON list (``'["Comedy", "Drama"]'``), a Python list, or a
plain unquoted string (one value). For comparisons it is a number (``"20"``, quotes allowed).
What a missing value does is evaluation: see ``evaluate``.

Every error is an :class:`InputError` with one line and the 1-based character position:
``filter expression: position N: reason`` (``filter value for $NAME: position N: ...``).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError

_COMPARISONS = ("<", "<=", ">", ">=")
_NUMERIC_OPS = _COMPARISONS + ("BETWEEN",)
_DATASETS = {"items": "Items", "interactions": "Interactions", "users": "Users", "currentuser": "CurrentUser"}


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


def _fail(where: str, pos: int, reason: str) -> InputError:
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
                raise _fail(where, i, 'unterminated string (missing closing ")')
            tokens.append(_Token("string", "".join(out), i))
            i = j + 1
            continue
        m = _SCAN.match(text, i)
        if m is None:
            if ch == "$":
                raise _fail(where, i, "expected a parameter name after $ (like $GENRES)")
            raise _fail(where, i, f"unexpected character {ch!r}")
        kind = m.lastgroup
        assert kind is not None  # every alternative of _SCAN is a named group
        if kind == "name" and m.group().endswith("."):
            raise _fail(where, m.end(), f"expected a field name after '{m.group()}'")
        if kind != "ws":
            tokens.append(_Token(m.group() if kind == "punct" else kind, m.group(), i))
        i = m.end()
    tokens.append(_Token("end", "", n))
    return tokens


# --- syntax tree ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Value:
    kind: str  # str num param user
    text: str  # string content, number text, parameter name, or CurrentUser field
    pos: int


@dataclass(frozen=True)
class Condition:
    dataset: str  # Items Interactions Users
    field: str
    op: str  # IN, NOT IN, BETWEEN, =, !=, <, <=, >, >=
    values: tuple[Value, ...]
    pos: int
    label: str  # as written, e.g. CurrentUser.AGE

    @property
    def params(self) -> list[str]:
        return [v.text for v in self.values if v.kind == "param"]


@dataclass(frozen=True)
class BoolOp:
    op: str  # AND OR
    children: tuple


@dataclass(frozen=True)
class Expression:
    include: bool
    where: Any  # Condition | BoolOp: the item part
    user_conds: tuple[Condition, ...]
    pos: int


class _Parser:
    def __init__(self, text: str):
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
        return _fail("filter expression", pos, reason)

    def is_kw(self, tok: _Token, *words: str) -> bool:
        return tok.kind == "name" and tok.text.upper() in words

    # grammar
    def parse(self) -> tuple[Expression, ...]:
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
                f"unexpected {tok.describe()} after the condition "
                "(expected AND, OR, IF, | or the end of the expression)",
            )
        return tuple(expressions)

    def expression(self) -> Expression:
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
                "the expression needs an Items or Interactions condition; "
                "Users/CurrentUser conditions only choose the users it applies to",
            )
        return Expression(start.text.upper() == "INCLUDE", item_part, tuple(user_conds), start.pos)

    def or_(self):
        children = [self.and_()]
        while self.is_kw(self.peek(), "OR"):
            self.next()
            children.append(self.and_())
        return children[0] if len(children) == 1 else BoolOp("OR", tuple(children))

    def and_(self):
        children = [self.atom()]
        while self.is_kw(self.peek(), "AND"):
            self.next()
            children.append(self.atom())
        return children[0] if len(children) == 1 else BoolOp("AND", tuple(children))

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

    def condition(self) -> Condition:
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
            op, values = "NOT IN", self.in_values()
        elif self.is_kw(op_tok, "IN"):
            op, values = "IN", self.in_values()
        elif self.is_kw(op_tok, "BETWEEN"):
            lo = self.scalar("BETWEEN")
            and_tok = self.next()
            if not self.is_kw(and_tok, "AND"):
                raise self.error(and_tok, f"expected AND in {label} BETWEEN ... AND ..., got {and_tok.describe()}")
            op, values = "BETWEEN", (lo, self.scalar("BETWEEN ... AND"))
        elif op_tok.kind == "op":
            op = "!=" if op_tok.text == "<>" else op_tok.text
            values = (self.scalar(op),)
        else:
            raise self.error(
                op_tok, f"expected IN, NOT IN, BETWEEN or a comparison after {label}, got {op_tok.describe()}"
            )
        if op in _NUMERIC_OPS:
            for v in values:
                if v.kind == "str" and to_float(v.text) is None:
                    raise self.error(v.pos, f"{label} {op} needs a number, got {json.dumps(v.text)}")
        if dataset == "Interactions":
            if op not in ("IN", "NOT IN"):
                raise self.error(op_tok, f"only IN and NOT IN can be used with Interactions.EVENT_TYPE, got {op}")
            fld = "EVENT_TYPE"
        if dataset != "Items":
            for v in values:
                if v.kind == "user":
                    raise self.error(v.pos, f"CurrentUser values can only be compared with Items fields, not {label}")
        return Condition(dataset, fld, op, tuple(values), tok.pos, label)

    def in_values(self) -> tuple[Value, ...]:
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

    def value(self, where: str) -> Value:
        tok = self.next()
        if tok.kind == "string":
            return Value("str", tok.text, tok.pos)
        if tok.kind == "number":
            return Value("num", tok.text, tok.pos)
        if tok.kind == "param":
            return Value("param", tok.text[1:], tok.pos)
        if tok.kind == "name" and "." in tok.text:
            dataset, fld, _ = self.reference(tok, "a value")
            if dataset == "CurrentUser":
                return Value("user", fld, tok.pos)
            raise self.error(tok, f"{tok.text}: only CurrentUser fields can be used as values")
        raise self.error(
            tok, f"expected a quoted string, a number, a $PARAMETER or CurrentUser.FIELD {where}, got {tok.describe()}"
        )

    def scalar(self, op: str) -> Value:
        if self.peek().kind == "(":
            open_ = self.next()
            v = self.scalar(op)
            tok = self.next()
            if tok.kind != ")":
                raise self.error(tok, f"expected ) to close the ( at position {open_.pos + 1}, got {tok.describe()}")
            return v
        return self.value(f"after {op}")


def _contains_user(node) -> Condition | None:
    if isinstance(node, Condition):
        return node if node.dataset == "Users" else None
    for child in node.children:
        found = _contains_user(child)
        if found is not None:
            return found
    return None


def _split_user_conditions(node, parser: _Parser) -> tuple[list[Condition], Any]:
    """Top-level AND conjuncts on Users are user conditions; anywhere else they are an error."""
    if isinstance(node, Condition) and node.dataset == "Users":
        return [node], None
    if isinstance(node, BoolOp) and node.op == "AND":
        users, rest = [], []
        for child in node.children:
            u, r = _split_user_conditions(child, parser)
            users.extend(u)
            if r is not None:
                rest.append(r)
        item = None if not rest else rest[0] if len(rest) == 1 else BoolOp("AND", tuple(rest))
        return users, item
    bad = _contains_user(node)
    if bad is not None:
        raise parser.error(
            bad.pos,
            f"{bad.label}: Users conditions can only be combined with Items or Interactions conditions "
            "using AND, not OR",
        )
    return [], node


def parse_expressions(expression: str) -> tuple[Expression, ...]:
    """The ``|``-chained expressions of a filter; InputError (one line, with position) if malformed."""
    if not isinstance(expression, str):
        raise InputError(f"filter expression must be a string, got {type(expression).__name__}")
    return _Parser(expression).parse()


def conditions(e: Expression) -> list[Condition]:
    out: list[Condition] = []

    def walk(node):
        if isinstance(node, Condition):
            out.append(node)
        else:
            for child in node.children:
                walk(child)

    walk(e.where)
    out.extend(e.user_conds)
    return out


# --- values --------------------------------------------------------------------------------------
def to_float(text: Any) -> float | None:
    if isinstance(text, bool):
        return None
    if isinstance(text, (int, float, np.integer, np.floating)):
        return float(text)
    try:
        value = float(str(text).strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def canonical_number(v: float) -> str:
    if math.isfinite(v) and v == int(v) and abs(v) < 1e16:
        return str(int(v))
    return repr(float(v))


def scalar_text(v: Any) -> str:
    """Canonical string of one metadata value (numbers: 20.0 -> "20")."""
    if isinstance(v, (bool, np.bool_)):
        return "True" if v else "False"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return canonical_number(float(v))
    return str(v)


def parse_list_value(name: str, raw: Any) -> list[str]:
    """Values of a placeholder used in an IN list."""
    where = f"filter value for ${name}"
    if isinstance(raw, (list, tuple, np.ndarray)):
        items = list(raw)
    else:
        text = scalar_text(raw).strip() if not isinstance(raw, str) else raw.strip()
        items = _list_items_from_text(text, where)
    out = []
    for item in items:
        if isinstance(item, (list, dict)) or item is None:
            raise InputError(f"{where}: list entries must be strings or numbers, got {json.dumps(item)}")
        out.append(item if isinstance(item, str) else scalar_text(item))
    return out


def _list_items_from_text(text: str, where: str) -> list[Any]:
    """Entries of a list value given as text: a JSON list, quoted strings, or comma-separated numbers."""
    if text.startswith("["):
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError:
            parsed = None
        if isinstance(parsed, list):
            return parsed
    if text.startswith('"'):
        tokens = _tokenize(text, where)
        items: list[Any] = []
        for k, tok in enumerate(tokens[:-1]):
            if k % 2 == 0 and tok.kind not in ("string", "number"):
                raise _fail(where, tok.pos, f"expected a quoted string, got {tok.describe()}")
            if k % 2 == 1 and tok.kind != ",":
                raise _fail(where, tok.pos, f"expected , between quoted values, got {tok.describe()}")
            if k % 2 == 0:
                items.append(tok.text if tok.kind == "string" else canonical_number(float(tok.text)))
        if len(tokens) % 2 == 1:  # ends with a comma (tokens include "end")
            raise _fail(where, tokens[-1].pos, "expected a quoted string after the last ,")
        return items
    numbers = [p.strip() for p in text.split(",")]
    floats = [f for p in numbers if (f := to_float(p)) is not None]
    if len(numbers) > 1 and len(floats) == len(numbers):
        return [canonical_number(f) for f in floats]
    return [text]


def parse_number_value(name: str, raw: Any, label: str, op: str) -> float:
    text = raw if isinstance(raw, str) else scalar_text(raw)
    stripped = text.strip()
    if len(stripped) >= 2 and stripped[0] == stripped[-1] == '"':
        stripped = stripped[1:-1]
    value = to_float(stripped)
    if value is None:
        raise InputError(f"filter value for ${name} must be a number ({label} {op}), got {json.dumps(text)}")
    return value
