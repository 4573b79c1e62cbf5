"""Amazon Personalize recommendation filters: parse filter expressions, evaluate them to masks.

``parse_filter(text)`` turns a filter expression into an immutable :class:`Filter`;
``Filter.mask(context, user_codes, values)`` gives a bool matrix ``[len(user_codes), n_items]``
(True = the item may be recommended to that user). The caller ranks only allowed items.

Errors about the expression or the values are :class:`InputError` with one line:
``filter expression: position N: reason`` (N = 1-based character offset in the whole
expression; placeholder values: ``filter value for $NAME: ...``).

API: ``parse_filter``; ``Filter.expression`` / ``.parameters`` / ``.fields`` /
``.check(context)`` (fail fast on unknown fields) / ``.mask(context, user_codes, values)``;
``FilterContext(...)`` or ``FilterContext.from_history(...)`` (per-user CSR histories as a
solution version stores them).

The package: ``syntax`` (tokens, syntax tree, the hand-written parser and the placeholder
values), ``context`` (:class:`FilterContext`: the catalogue, metadata and events filters read)
and ``evaluate`` (:class:`Filter`: a parsed expression turned into masks).
"""

from .context import FilterContext
from .evaluate import Filter, parse_filter

__all__ = ["Filter", "FilterContext", "parse_filter"]
