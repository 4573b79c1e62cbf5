"""Filter expressions: the parser's positional error messages and what a parsed filter reports."""

import dataclasses

import pytest

from personalize_pipeline.errors import InputError
from personalize_pipeline.filters import Filter, parse_filter


@pytest.mark.parametrize(
    "expression, message",
    [
        (
            'EXCLUDE ItemID WHERE Items.GENRE foo ("x")',
            "position 34: expected IN, NOT IN, BETWEEN or a comparison after Items.GENRE, got 'foo'",
        ),
        (
            "INCLUDE ItemID WHERE Items.GENRE",
            "position 33: expected IN, NOT IN, BETWEEN or a comparison after Items.GENRE, "
            "got the end of the expression",
        ),
        (
            'INCLUDE ItemID WHERE Foo.X IN ("a")',
            "position 22: unknown dataset 'Foo' in Foo.X (expected Items, Interactions, Users or CurrentUser)",
        ),
        ('INCLUDE ItemID WHERE Items.GENRE IN ("Drama)', 'position 38: unterminated string (missing closing ")'),
        ("INCLUDE ItemID WHERE Items.GENRE IN ()", "position 37: empty IN list: give at least one value"),
        (
            'INCLUDE ItemID WHERE Items.GENRE IN ("a") xyz',
            "position 43: unexpected 'xyz' after the condition (expected AND, OR, IF, | or the end of the expression)",
        ),
        (
            'INCLUDE ItemID WHERE Items.GENRE IN ("a", "b"',
            "position 46: unclosed IN list: expected , or ) to close the ( at position 37",
        ),
        ('INCLUDE ItemID WHERE Items.GENRE IN ("a" "b")', 'position 42: expected , or ) in the IN list, got "b"'),
        ('INCLUDE ItemID WHERE Items.PRICE < "cheap"', 'position 36: Items.PRICE < needs a number, got "cheap"'),
        (
            "INCLUDE ItemID WHERE Items.PRICE BETWEEN 1 OR 2",
            "position 44: expected AND in Items.PRICE BETWEEN ... AND ..., got 'OR'",
        ),
        ('INCLUDE ItemID WHERE Items.GENRE NOT ("a")', "position 38: expected IN after NOT, got '('"),
        ('INCLUDE ItemID WHERE Items.GENRE IN "a"', 'position 37: expected ( after IN, got "a"'),
        (
            "INCLUDE ItemID WHERE Items.GENRE IN (Drama)",
            "position 38: expected a quoted string, a number, a $PARAMETER or CurrentUser.FIELD in the IN list, "
            "got 'Drama'",
        ),
        ("INCLUDE ItemID WHERE Items.GENRE IN ($)", "position 38: expected a parameter name after $ (like $GENRES)"),
        ('INCLUDE ItemID WHERE Items. IN ("a")', "position 28: expected a field name after 'Items.'"),
        ('INCLUDE ItemID WHERE Items.GENRE IN ("a") # x', "position 43: unexpected character '#'"),
        (
            "INCLUDE ItemID WHERE",
            "position 21: expected a condition like Items.FIELD IN (...), got the end of the expression",
        ),
        (
            'INCLUDE ItemID WHERE Items.GENRE IN ("a") |',
            "position 44: expected INCLUDE or EXCLUDE, got the end of the expression",
        ),
        ('KEEP ItemID WHERE Items.GENRE IN ("a")', "position 1: expected INCLUDE or EXCLUDE, got 'KEEP'"),
        ('INCLUDE Items WHERE Items.GENRE IN ("a")', "position 9: expected ItemID after INCLUDE, got 'Items'"),
        (
            "INCLUDE UserID WHERE Users.AGE > 3",
            "position 9: only ItemID filters (item recommendations) are supported, got UserID",
        ),
        ('INCLUDE ItemID Items.GENRE IN ("a")', "position 16: expected WHERE after ItemID, got 'Items.GENRE'"),
        (
            'INCLUDE ItemID WHERE (Items.GENRE IN ("a")',
            "position 43: expected ) to close the ( at position 22, got the end of the expression",
        ),
        (
            "INCLUDE ItemID WHERE Interactions.TIMESTAMP > 5",
            "position 22: only Interactions.EVENT_TYPE can be used in filters, got Interactions.TIMESTAMP",
        ),
        (
            'INCLUDE ItemID WHERE Interactions.EVENT_TYPE = "click"',
            "position 46: only IN and NOT IN can be used with Interactions.EVENT_TYPE, got =",
        ),
        (
            'INCLUDE ItemID WHERE Items.A IN ("x") OR Users.M IN ("p")',
            "position 42: Users.M: Users conditions can only be combined with Items or Interactions conditions "
            "using AND, not OR",
        ),
        (
            'INCLUDE ItemID WHERE Users.M IN ("p")',
            "position 1: the expression needs an Items or Interactions condition; "
            "Users/CurrentUser conditions only choose the users it applies to",
        ),
        (
            'INCLUDE ItemID WHERE Items.A IN ("x") IF Items.B IN ("y")',
            "position 42: IF conditions must be on CurrentUser fields, got Items.B",
        ),
        (
            'INCLUDE ItemID WHERE Items.A IN ("x") IF CurrentUser.B IN ("y") OR CurrentUser.C IN ("z")',
            "position 65: IF conditions can only be combined with AND",
        ),
        (
            'INCLUDE ItemID WHERE Users.A IN (CurrentUser.B) AND Items.C IN ("x")',
            "position 34: CurrentUser values can only be compared with Items fields, not Users.A",
        ),
        (
            "INCLUDE ItemID WHERE Items.PRICE < CurrentItem.PRICE",
            "position 36: CurrentItem.PRICE: CurrentItem (related-items filters) is not supported",
        ),
    ],
)
def test_malformed_expressions(expression, message):
    with pytest.raises(InputError) as exc:
        parse_filter(expression)
    text = str(exc.value)
    assert text == f"filter expression: {message}"
    assert "\n" not in text and "position" in text


def test_empty_expression():
    for text in ("", "   "):
        with pytest.raises(InputError, match="^filter expression is empty$"):
            parse_filter(text)


def test_filter_is_immutable_and_reports_its_parts():
    f = parse_filter(
        "EXCLUDE ItemID WHERE Items.GENRE IN ($G) IF CurrentUser.AGE > $AGE"
        ' | EXCLUDE ItemID WHERE Interactions.EVENT_TYPE IN ("*") AND Items.BRAND IN (CurrentUser.FAV)'
    )
    assert isinstance(f, Filter) and str(f) == f.expression
    assert f.parameters == {"G", "AGE"}
    assert f.fields == {"Items.GENRE", "Users.AGE", "Interactions.EVENT_TYPE", "Items.BRAND", "Users.FAV"}
    with pytest.raises(dataclasses.FrozenInstanceError):
        f.expression = "x"
