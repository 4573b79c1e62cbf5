"""Filter evaluation: exact masks and evaluation errors on small hand-built contexts."""

import dataclasses

import numpy as np
import pandas as pd
import pytest

from personalize_pipeline.errors import InputError
from personalize_pipeline.filters import FilterContext, parse_filter

#           i0               i1        i2            i3        i4        i5
GENRE = ["Comedy|Drama", "Horror", None, "Drama", "Comedy", ""]
PRICE = [5.0, 25.0, np.nan, 15.0, 20.0, 10.0]
TIER = ["basic", "premium", "basic", "premium", "basic", "premium"]
BRAND = ["acme", "zeta", "acme|zeta", "nova", None, "zeta"]
#                u0          u1          u2     u3
MEMBERSHIP = ["premium", "basic", None, "premium"]
FAV_BRAND = ["acme", "zeta|nova", None, "other"]
MAX_PRICE = [12.0, 20.0, np.nan, 100.0]
AGE = [30, 17, None, 45]
# events: u0: i1 click, i2 purchase, i1 view; u1: i3 CLICK, i0 view; u2: none; u3: i5 purchase
EVENTS = [(0, 1, "click"), (0, 2, "purchase"), (1, 3, "CLICK"), (0, 1, "view"), (1, 0, "view"), (3, 5, "purchase")]
ALL = list(range(6))
CODES = np.array([0, 1, 2, 3, -1])  # -1: a user the solution does not know


@pytest.fixture
def ctx() -> FilterContext:
    items = pd.DataFrame(
        {"ITEM_ID": [f"i{k}" for k in range(6)], "GENRE": GENRE, "PRICE": PRICE, "TIER": TIER, "BRAND": BRAND}
    )
    users = pd.DataFrame(
        {
            "USER_ID": ["u0", "u1", "u2", "u3"],
            "MEMBERSHIP": MEMBERSHIP,
            "FAV_BRAND": FAV_BRAND,
            "MAX_PRICE": MAX_PRICE,
            "AGE": pd.array(AGE, dtype="Int64"),
        }
    )
    u, i, t = zip(*EVENTS, strict=True)
    return FilterContext(
        items["ITEM_ID"].to_numpy(),
        items,
        users["USER_ID"].to_numpy(),
        users,
        np.array(u),
        np.array(i),
        np.array(t, dtype=object),
    )


def allowed(mask: np.ndarray) -> list[list[int]]:
    """Allowed item codes per requested user."""
    assert mask.dtype == bool
    return [np.flatnonzero(row).tolist() for row in mask]


def run(ctx, expression, values=None, codes=CODES):
    mask = parse_filter(expression).mask(ctx, codes, values)
    assert mask.shape == (len(codes), ctx.n_items)
    return allowed(mask)


def same_for_all(items):
    return [items] * len(CODES)


# --- Interactions ------------------------------------------------------------------------------
def test_exclude_interacted_event_types_case_insensitive(ctx):
    got = run(ctx, 'EXCLUDE ItemID WHERE Interactions.EVENT_TYPE IN ("click", "purchase")')
    assert got == [[0, 3, 4, 5], [0, 1, 2, 4, 5], ALL, [0, 1, 2, 3, 4], ALL]


def test_exclude_any_event_type_star(ctx):
    got = run(ctx, 'EXCLUDE ItemID WHERE Interactions.EVENT_TYPE IN ("*")')
    assert got == [[0, 3, 4, 5], [1, 2, 4, 5], ALL, [0, 1, 2, 3, 4], ALL]


def test_include_interacted_only_and_unknown_user_gets_nothing(ctx):
    got = run(ctx, 'INCLUDE ItemID WHERE Interactions.EVENT_TYPE IN ("view")')
    assert got == [[1], [0], [], [], []]


def test_interactions_not_in_is_the_negation(ctx):
    got = run(ctx, 'INCLUDE ItemID WHERE Interactions.EVENT_TYPE NOT IN ("click")')
    assert got == [[0, 2, 3, 4, 5], [0, 1, 2, 4, 5], ALL, ALL, ALL]


def test_interactions_without_event_types(ctx):
    plain = dataclasses.replace(ctx, interaction_event_types=None)
    assert run(plain, 'EXCLUDE ItemID WHERE Interactions.EVENT_TYPE IN ("*")')[0] == [0, 3, 4, 5]
    with pytest.raises(
        InputError, match=r"position 22: Interactions.EVENT_TYPE: the interactions have no EVENT_TYPE field"
    ):
        run(plain, 'EXCLUDE ItemID WHERE Interactions.EVENT_TYPE IN ("click")')


def test_from_history_matches_event_arrays(ctx):
    order = np.argsort(ctx.interaction_users, kind="stable")
    indptr = np.r_[0, np.cumsum(np.bincount(ctx.interaction_users, minlength=4))]
    hist = FilterContext.from_history(
        ctx.item_ids,
        ctx.items,
        ctx.user_ids,
        ctx.users,
        indptr,
        ctx.interaction_items[order],
        ctx.interaction_event_types[order],
    )
    expr = 'EXCLUDE ItemID WHERE Interactions.EVENT_TYPE IN ("click", "purchase")'
    assert run(hist, expr) == run(ctx, expr)


def test_categorical_event_types(ctx):
    cat = dataclasses.replace(ctx, interaction_event_types=pd.Categorical(ctx.interaction_event_types))
    expr = 'EXCLUDE ItemID WHERE Interactions.EVENT_TYPE IN ("click", "purchase")'
    assert run(cat, expr) == run(ctx, expr)


def test_chunks_give_the_same_mask_as_one_call(ctx):
    f = parse_filter(
        'EXCLUDE ItemID WHERE Interactions.EVENT_TYPE IN ("view") '
        '| INCLUDE ItemID WHERE Items.BRAND IN (CurrentUser.FAV_BRAND, "nova") AND Users.AGE > 18'
    )
    whole = f.mask(ctx, CODES)
    parts = np.vstack([f.mask(ctx, CODES[k : k + 2]) for k in range(0, len(CODES), 2)])
    assert np.array_equal(whole, parts)
    assert np.array_equal(f.mask(ctx, CODES), whole)  # cached vectors are not modified by a call


# --- Items ---------------------------------------------------------------------------------------
def test_in_matches_any_of_the_multi_values(ctx):
    assert run(ctx, 'INCLUDE ItemID WHERE Items.GENRE IN ("Comedy", "Drama")') == same_for_all([0, 3, 4])
    assert run(ctx, 'INCLUDE ItemID WHERE Items.GENRE IN ("Drama")') == same_for_all([0, 3])
    assert run(ctx, 'INCLUDE ItemID WHERE Items.BRAND IN ("zeta")') == same_for_all([1, 2, 5])
    # exact, case-sensitive matching of whole values
    assert run(ctx, 'INCLUDE ItemID WHERE Items.GENRE IN ("comedy", "Com")') == same_for_all([])


def test_not_in_none_of_the_values_and_missing_matches(ctx):
    # i2 (None) and i5 ("") have no genre: they "do not have" Horror
    assert run(ctx, 'INCLUDE ItemID WHERE Items.GENRE NOT IN ("Horror")') == same_for_all([0, 2, 3, 4, 5])
    assert run(ctx, 'EXCLUDE ItemID WHERE Items.GENRE NOT IN ("Horror")') == same_for_all([1])
    assert run(ctx, 'INCLUDE ItemID WHERE Items.GENRE NOT IN ("Drama", "Horror")') == same_for_all([2, 4, 5])


def test_include_and_exclude_are_complements(ctx):
    conditions = [
        'Items.GENRE IN ("Comedy")',
        "Items.PRICE >= 15",
        'Interactions.EVENT_TYPE IN ("click")',
        'Interactions.EVENT_TYPE NOT IN ("click")',
        "Items.BRAND IN (CurrentUser.FAV_BRAND)",
        "Items.PRICE <= CurrentUser.MAX_PRICE",
        "Items.PRICE != CurrentUser.MAX_PRICE",
        'Items.GENRE IN ("Drama") OR Items.PRICE <= CurrentUser.MAX_PRICE AND Interactions.EVENT_TYPE IN ("*")',
    ]
    for cond in conditions:
        inc = parse_filter(f"INCLUDE ItemID WHERE {cond}").mask(ctx, CODES)
        exc = parse_filter(f"EXCLUDE ItemID WHERE {cond}").mask(ctx, CODES)
        assert np.array_equal(inc, ~exc), cond


@pytest.mark.parametrize(
    "condition, expected",
    [
        ("Items.PRICE < 20", [0, 3, 5]),
        ("Items.PRICE <= 20", [0, 3, 4, 5]),
        ("Items.PRICE > 15", [1, 4]),
        ("Items.PRICE >= 15", [1, 3, 4]),
        ("Items.PRICE = 20", [4]),
        ("Items.PRICE = 20.0", [4]),
        ("Items.PRICE != 20", [0, 1, 2, 3, 5]),  # != is NOT =: the missing price passes
        ("Items.PRICE <> 20", [0, 1, 2, 3, 5]),
        ("Items.PRICE BETWEEN 10 AND 20", [3, 4, 5]),
        ("Items.PRICE BETWEEN 20 AND 10", []),
        ("Items.PRICE > -1.5e1", [0, 1, 3, 4, 5]),
        ("Items.PRICE < (10)", [0]),
        ('Items.PRICE < "10"', [0]),
        ("Items.PRICE IN (20, 5)", [0, 4]),
        ('Items.PRICE IN ("25")', [1]),
        ('Items.TIER = "premium"', [1, 3, 5]),
        ('Items.GENRE = "Drama"', [0, 3]),
        ('Items.GENRE != "Drama"', [1, 2, 4, 5]),
        ('Items.ITEM_ID IN ("i4", "i1")', [1, 4]),
    ],
)
def test_item_operators(ctx, condition, expected):
    assert run(ctx, f"INCLUDE ItemID WHERE {condition}") == same_for_all(expected)


def test_and_binds_tighter_than_or_and_parentheses(ctx):
    a, b, c = 'Items.GENRE IN ("Horror")', 'Items.TIER IN ("premium")', "Items.PRICE < 12"
    # Horror OR (premium AND cheap)
    assert run(ctx, f"INCLUDE ItemID WHERE {a} OR {b} AND {c}") == same_for_all([1, 5])
    # (Horror OR premium) AND cheap
    assert run(ctx, f"INCLUDE ItemID WHERE ({a} OR {b}) AND {c}") == same_for_all([5])
    assert run(ctx, 'INCLUDE ItemID WHERE Items.GENRE IN ("Comedy") AND Items.PRICE < 20') == same_for_all([0])
    assert run(ctx, 'INCLUDE ItemID WHERE Items.GENRE IN ("Comedy") OR Items.PRICE < 11') == same_for_all([0, 4, 5])


def test_items_and_interactions_in_one_expression(ctx):
    got = run(ctx, 'EXCLUDE ItemID WHERE Interactions.EVENT_TYPE IN ("*") OR Items.TIER IN ("premium")')
    assert got == [[0, 4], [2, 4], [0, 2, 4], [0, 2, 4], [0, 2, 4]]


def test_keywords_case_insensitive_and_escaped_strings(ctx):
    items = ctx.items.copy()
    items.loc[4, "GENRE"] = 'Say "hi"|Comedy'
    c2 = FilterContext(
        ctx.item_ids,
        items,
        ctx.user_ids,
        ctx.users,
        ctx.interaction_users,
        ctx.interaction_items,
        ctx.interaction_event_types,
    )
    assert run(
        c2, r'include itemid where ITEMS.GENRE in ("Say \"hi\"") and items.price between 1 and 100'
    ) == same_for_all([4])
    assert run(ctx, "iNcLuDe ItemId WhErE items.genre NoT iN ('x')".replace("'", '"')) == same_for_all(
        [0, 1, 2, 3, 4, 5]
    )


def test_field_names_fall_back_to_case_insensitive(ctx):
    assert run(ctx, 'INCLUDE ItemID WHERE Items.genre IN ("Horror")') == same_for_all([1])


def test_bool_and_int_columns(ctx):
    items = pd.DataFrame(
        {
            "ON_SALE": [True, False, None, True, False, True],
            "YEAR": pd.array([2001, 2002, None, 2001, 1999, 2020], dtype="Int64"),
        }
    )
    c2 = FilterContext(ctx.item_ids, items, ctx.user_ids, None, np.zeros(0, int), np.zeros(0, int), None)
    assert run(c2, 'INCLUDE ItemID WHERE Items.ON_SALE IN ("True")') == same_for_all([0, 3, 5])
    assert run(c2, "INCLUDE ItemID WHERE Items.YEAR IN (2001) OR Items.YEAR > 2019") == same_for_all([0, 3, 5])
    assert run(c2, 'INCLUDE ItemID WHERE Items.YEAR IN ("1999.0")') == same_for_all([4])


# --- placeholders --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "value",
    ['"Comedy","Horror"', ' "Comedy" , "Horror" ', '["Comedy", "Horror"]', ["Comedy", "Horror"], ("Horror", "Comedy")],
)
def test_in_list_placeholder_forms(ctx, value):
    f = parse_filter("INCLUDE ItemID WHERE Items.GENRE IN ($GENRES)")
    assert f.parameters == {"GENRES"}
    assert allowed(f.mask(ctx, CODES, {"GENRES": value})) == same_for_all([0, 1, 4])


def test_plain_string_placeholder_is_one_value(ctx):
    f = parse_filter("INCLUDE ItemID WHERE Items.GENRE IN ($G)")
    assert allowed(f.mask(ctx, CODES, {"G": "Drama"})) == same_for_all([0, 3])
    assert allowed(f.mask(ctx, CODES, {"G": "Drama,Horror"})) == same_for_all([])  # unquoted: one value
    assert allowed(f.mask(ctx, CODES, {"G": '"Drama"'})) == same_for_all([0, 3])


def test_placeholder_without_parentheses_mixed_with_literals_and_numbers(ctx):
    assert run(ctx, "INCLUDE ItemID WHERE Items.GENRE IN $G", {"G": '"Horror"'}) == same_for_all([1])
    assert run(ctx, 'INCLUDE ItemID WHERE Items.GENRE IN ("Horror", $G)', {"G": '"Drama"'}) == same_for_all([0, 1, 3])
    f = parse_filter("INCLUDE ItemID WHERE Items.PRICE BETWEEN $LO AND $HI AND Items.PRICE != $NOT")
    assert f.parameters == {"LO", "HI", "NOT"}
    assert allowed(f.mask(ctx, CODES, {"LO": "10", "HI": '"20"', "NOT": 15})) == same_for_all([4, 5])
    assert run(ctx, "INCLUDE ItemID WHERE Items.PRICE < ($P)", {"P": "12.5"}) == same_for_all([0, 5])
    assert run(ctx, "INCLUDE ItemID WHERE Items.PRICE IN ($P)", {"P": "20,5"}) == same_for_all([0, 4])
    assert run(ctx, "INCLUDE ItemID WHERE Interactions.EVENT_TYPE IN ($E)", {"E": '"*"'}) == [
        [1, 2],
        [0, 3],
        [],
        [5],
        [],
    ]


def test_missing_value_is_an_error_for_include(ctx):
    f = parse_filter("INCLUDE ItemID WHERE Items.GENRE IN ($GENRES) AND Items.PRICE < 20")
    for values in (None, {}, {"GENRES": None}, {"GENRES": "  "}, {"OTHER": '"Drama"'}):
        with pytest.raises(InputError) as exc:
            f.mask(ctx, CODES, values)
        assert str(exc.value) == (
            "filter expression: position 38: missing filter value for $GENRES "
            "(INCLUDE expressions need a value for every parameter)"
        )


def test_missing_value_leaves_the_condition_out_for_exclude(ctx):
    # Personalize: EXCLUDE expressions may omit filter values; that part is not used
    f = parse_filter("EXCLUDE ItemID WHERE Items.GENRE IN ($GENRES)")
    assert allowed(f.mask(ctx, CODES, {})) == same_for_all(ALL)
    f = parse_filter("EXCLUDE ItemID WHERE Items.GENRE IN ($GENRES) OR Items.PRICE > $P")
    assert allowed(f.mask(ctx, CODES, {"P": "20"})) == same_for_all([0, 2, 3, 4, 5])
    assert allowed(f.mask(ctx, CODES, {"GENRES": '"Drama"'})) == same_for_all([1, 2, 4, 5])
    f = parse_filter('EXCLUDE ItemID WHERE Items.GENRE IN ("Horror", $MORE)')
    assert allowed(f.mask(ctx, CODES, {})) == same_for_all([0, 2, 3, 4, 5])
    # the omitted part is a whole expression of a chain: the others still apply
    f = parse_filter("EXCLUDE ItemID WHERE Items.GENRE IN ($G) | INCLUDE ItemID WHERE Items.PRICE < $P")
    assert allowed(f.mask(ctx, CODES, {"P": 12})) == same_for_all([0, 5])


def test_bad_placeholder_values(ctx):
    with pytest.raises(InputError, match=r'^filter value for \$P must be a number \(Items.PRICE <\), got "cheap"$'):
        run(ctx, "INCLUDE ItemID WHERE Items.PRICE < $P", {"P": "cheap"})
    with pytest.raises(InputError, match=r"^filter value for \$G: position 1: unterminated string"):
        run(ctx, "INCLUDE ItemID WHERE Items.GENRE IN ($G)", {"G": '"Drama'})
    with pytest.raises(InputError, match=r"^filter value for \$G: position 9: expected , between quoted values"):
        run(ctx, "INCLUDE ItemID WHERE Items.GENRE IN ($G)", {"G": '"Drama" "Horror"'})
    with pytest.raises(InputError, match=r"Items.TIER = needs one value, got 2"):
        run(ctx, "INCLUDE ItemID WHERE Items.TIER = $T", {"T": '"a","b"'})


# --- CurrentUser ---------------------------------------------------------------------------------
def test_current_user_value_in_list(ctx):
    got = run(ctx, "INCLUDE ItemID WHERE Items.BRAND IN (CurrentUser.FAV_BRAND)")
    # u0 acme; u1 zeta|nova; u2 none; u3 "other" (no item); unknown: none
    assert got == [[0, 2], [1, 2, 3, 5], [], [], []]
    assert run(ctx, "INCLUDE ItemID WHERE Items.BRAND IN CurrentUser.FAV_BRAND") == got
    assert run(ctx, "INCLUDE ItemID WHERE Items.BRAND = CurrentUser.FAV_BRAND") == got
    not_in = run(ctx, "INCLUDE ItemID WHERE Items.BRAND NOT IN (CurrentUser.FAV_BRAND)")
    assert not_in == [[1, 3, 4, 5], [0, 4], ALL, ALL, ALL]


def test_current_user_mixed_with_literals(ctx):
    got = run(ctx, 'INCLUDE ItemID WHERE Items.BRAND IN ("nova", CurrentUser.FAV_BRAND)')
    assert got == [[0, 2, 3], [1, 2, 3, 5], [3], [3], [3]]


def test_current_user_numeric_comparison(ctx):
    got = run(ctx, "INCLUDE ItemID WHERE Items.PRICE <= CurrentUser.MAX_PRICE")
    assert got == [[0, 5], [0, 3, 4, 5], [], [0, 1, 3, 4, 5], []]
    got = run(ctx, "INCLUDE ItemID WHERE Items.PRICE BETWEEN 10 AND CurrentUser.MAX_PRICE")
    assert got == [[5], [3, 4, 5], [], [1, 3, 4, 5], []]


def test_current_user_per_user_evaluation_is_by_user_not_by_position(ctx):
    codes = np.array([3, 3, 0, -1, 1, 0])
    f = parse_filter("INCLUDE ItemID WHERE Items.BRAND IN (CurrentUser.FAV_BRAND)")
    assert allowed(f.mask(ctx, codes)) == [[], [], [0, 2], [], [1, 2, 3, 5], [0, 2]]


# --- Users conditions ----------------------------------------------------------------------------
def test_users_condition_chooses_the_users_the_expression_applies_to(ctx):
    # premium users (u0, u3) get only premium items; everyone else is unfiltered
    expected = [[1, 3, 5], ALL, ALL, [1, 3, 5], ALL]
    assert run(ctx, 'INCLUDE ItemID WHERE Items.TIER IN ("premium") AND Users.MEMBERSHIP IN ("premium")') == expected
    assert run(ctx, 'INCLUDE ItemID WHERE Users.MEMBERSHIP IN ("premium") AND Items.TIER IN ("premium")') == expected
    # Personalize's own syntax: IF CurrentUser...
    assert run(ctx, 'INCLUDE ItemID WHERE Items.TIER IN ("premium") IF CurrentUser.MEMBERSHIP = "premium"') == expected
    assert (
        run(
            ctx, 'INCLUDE ItemID WHERE Items.TIER IN ("premium") AND CurrentUser.MEMBERSHIP IN ($M)', {"M": '"premium"'}
        )
        == expected
    )


def test_users_condition_with_exclude_numbers_and_several_conditions(ctx):
    # minors (u1, AGE 17) lose Horror; users without AGE (u2, unknown) are not minors
    got = run(ctx, 'EXCLUDE ItemID WHERE Items.GENRE IN ("Horror") IF CurrentUser.AGE < 18')
    assert got == [ALL, [0, 2, 3, 4, 5], ALL, ALL, ALL]
    got = run(
        ctx, 'EXCLUDE ItemID WHERE Items.PRICE > 12 AND Users.AGE >= 18 AND Users.MEMBERSHIP IN ("premium", "basic")'
    )
    assert got == [[0, 2, 5], ALL, ALL, [0, 2, 5], ALL]
    got = run(
        ctx,
        'EXCLUDE ItemID WHERE Items.PRICE > 12 IF CurrentUser.AGE >= 18 AND CurrentUser.MEMBERSHIP NOT IN ("premium")',
    )
    assert got == same_for_all(ALL)  # u0 and u3 are premium, u1 is 17
    # NOT IN holds for users without metadata (missing value), as for items
    got = run(ctx, 'EXCLUDE ItemID WHERE Items.TIER IN ("premium") AND Users.MEMBERSHIP NOT IN ("premium")')
    assert got == [ALL, [0, 2, 4], [0, 2, 4], ALL, [0, 2, 4]]


def test_users_condition_with_interactions(ctx):
    got = run(ctx, 'EXCLUDE ItemID WHERE Interactions.EVENT_TYPE IN ("*") AND Users.MEMBERSHIP IN ("basic")')
    assert got == [ALL, [1, 2, 4, 5], ALL, ALL, ALL]


# --- chaining ------------------------------------------------------------------------------------
def test_chained_expressions_all_apply(ctx):
    expr = (
        'EXCLUDE ItemID WHERE Items.GENRE IN ("Horror") '
        '| EXCLUDE ItemID WHERE Interactions.EVENT_TYPE IN ("*") '
        "| INCLUDE ItemID WHERE Items.PRICE < 21"
    )
    assert run(ctx, expr) == [[0, 3, 4, 5], [4, 5], [0, 3, 4, 5], [0, 3, 4], [0, 3, 4, 5]]
    many = " | ".join(f'EXCLUDE ItemID WHERE Items.ITEM_ID IN ("i{k}")' for k in range(6))
    assert run(ctx, many) == same_for_all([])
    # "|" inside a string is a value, not a chain
    assert run(ctx, 'INCLUDE ItemID WHERE Items.GENRE IN ("Comedy|Drama")') == same_for_all([])


# --- errors --------------------------------------------------------------------------------------
def test_unknown_field_at_mask_time_lists_the_fields(ctx):
    f = parse_filter('INCLUDE ItemID WHERE Items.COLOUR IN ("red")')  # parsing does not know the schema
    with pytest.raises(InputError) as exc:
        f.mask(ctx, CODES)
    assert str(exc.value) == (
        "filter expression: position 22: Items.COLOUR is not a field of the Items dataset "
        "(fields: ITEM_ID, GENRE, PRICE, TIER, BRAND)"
    )
    with pytest.raises(InputError, match=r"position 22: Items.COLOUR is not a field"):
        f.check(ctx)
    with pytest.raises(
        InputError,
        match=r"^filter expression: position 38: Users.NOPE is not a field of the Users dataset "
        r"\(fields: USER_ID, MEMBERSHIP, FAV_BRAND, MAX_PRICE, AGE\)$",
    ):
        parse_filter("INCLUDE ItemID WHERE Items.BRAND IN (CurrentUser.NOPE)").check(ctx)


def test_no_metadata_dataset(ctx):
    bare = dataclasses.replace(ctx, items=None, users=None)
    with pytest.raises(InputError, match=r"^filter expression: position 22: Items.GENRE: there is no Items dataset"):
        run(bare, 'INCLUDE ItemID WHERE Items.GENRE IN ("a")')
    with pytest.raises(InputError, match=r"position 50: Users.M: there is no Users dataset"):
        run(bare, 'INCLUDE ItemID WHERE Items.ITEM_ID IN ("i1") AND Users.M IN ("x")')
    # ITEM_ID is always there (from item_ids)
    assert run(bare, 'EXCLUDE ItemID WHERE Items.ITEM_ID IN ("i1")') == same_for_all([0, 2, 3, 4, 5])


def test_comparison_on_a_non_numeric_field(ctx):
    with pytest.raises(InputError) as exc:
        run(ctx, "INCLUDE ItemID WHERE Items.GENRE < 3")
    assert str(exc.value) == (
        "filter expression: position 22: < needs a numeric field, "
        'but Items.GENRE has the non-numeric value "Comedy|Drama"'
    )


def test_bad_user_codes_are_a_programming_error(ctx):
    with pytest.raises(ValueError):
        parse_filter('EXCLUDE ItemID WHERE Items.GENRE IN ("a")').mask(ctx, np.array([7]))
    assert parse_filter('EXCLUDE ItemID WHERE Items.GENRE IN ("a")').mask(ctx, np.array([], dtype=int)).shape == (0, 6)


# --- scale ---------------------------------------------------------------------------------------
def _reference_seen(users, items, lower_types, wanted, user, n_items):
    row = np.zeros(n_items, dtype=bool)
    sel = (users == user) & np.isin(lower_types, wanted)
    row[items[sel]] = True
    return row


def test_scale_10k_items_2k_users_200k_events():
    rng = np.random.default_rng(0)
    n_items, n_users, n_events = 10_000, 2_000, 200_000
    genres = np.array(["Comedy", "Drama", "Horror", "Action", "Kids", "Docu"])
    first, second = rng.choice(genres, n_items), rng.choice(np.r_[genres, [""] * 6], n_items)
    item_genre = np.array(
        [a if not b or b == a else f"{a}|{b}" for a, b in zip(first, second, strict=True)], dtype=object
    )
    brands = np.array([f"b{k}" for k in range(300)], dtype=object)
    items = pd.DataFrame(
        {"GENRE": item_genre, "PRICE": rng.uniform(1, 100, n_items).round(2), "BRAND": rng.choice(brands, n_items)}
    )
    fav = rng.choice(brands, (n_users, 3))
    users = pd.DataFrame(
        {"FAV": ["|".join(row) for row in fav.tolist()], "MEMBERSHIP": rng.choice(["premium", "basic"], n_users)}
    )
    ev_users = rng.integers(0, n_users, n_events)
    ev_items = rng.integers(0, n_items, n_events)
    ev_types = rng.choice(np.array(["click", "Purchase", "view"], dtype=object), n_events)
    ctx = FilterContext(
        np.array([f"i{k}" for k in range(n_items)], dtype=object),
        items,
        np.array([f"u{k}" for k in range(n_users)], dtype=object),
        users,
        ev_users,
        ev_items,
        ev_types,
    )
    f = parse_filter(
        'EXCLUDE ItemID WHERE Interactions.EVENT_TYPE IN ("click", "purchase")'
        " | INCLUDE ItemID WHERE Items.GENRE IN ($G) OR Items.BRAND IN (CurrentUser.FAV)"
        ' | EXCLUDE ItemID WHERE Items.PRICE > 80 AND Users.MEMBERSHIP IN ("basic")'
    )
    codes = np.r_[np.arange(n_users), -1]
    # (its speed is a benchmark's business, not a timed test's: bench/batch_speed.py)
    mask = f.mask(ctx, codes, {"G": '"Comedy","Kids"'})  # cold: builds every cache
    again = f.mask(ctx, codes, {"G": '"Comedy","Kids"'})  # warm: from the caches
    assert mask.shape == (n_users + 1, n_items) and np.array_equal(mask, again)
    # spot-check rows against a direct per-user computation
    lower_types = np.char.lower(ev_types.astype(str))
    genre_ok = np.array([bool({"Comedy", "Kids"} & set(g.split("|"))) for g in item_genre])
    for u in rng.choice(n_users, 25, replace=False):
        seen = _reference_seen(ev_users, ev_items, lower_types, ["click", "purchase"], u, n_items)
        fav = set(users.FAV[u].split("|"))
        ok = ~seen & (genre_ok | items.BRAND.isin(fav).to_numpy())
        if users.MEMBERSHIP[u] == "basic":
            ok &= ~(items.PRICE.to_numpy() > 80)
        assert np.array_equal(mask[u], ok), u
    assert np.array_equal(mask[-1], genre_ok)  # unknown user: no history, no favourites, no membership
