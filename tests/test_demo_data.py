"""Tests of the synthetic Amazon Personalize dataset generator."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from personalize_pipeline.demo_data import (
    AGE_GROUPS,
    DEVICES,
    EVENT_TYPES,
    MEMBERSHIPS,
    DemoSpec,
    build_world,
    category_names,
    generate,
)

FILES = (
    "interactions.csv",
    "items.csv",
    "users.csv",
    "schemas/interactions.json",
    "schemas/items.json",
    "schemas/users.json",
    "batch-input/users.jsonl",
)
INTERACTION_COLUMNS = ["USER_ID", "ITEM_ID", "TIMESTAMP", "EVENT_TYPE", "EVENT_VALUE", "IMPRESSION", "DEVICE"]
ITEM_COLUMNS = ["ITEM_ID", "GENRE", "PRICE", "CREATION_TIMESTAMP"]
USER_COLUMNS = ["USER_ID", "AGE_GROUP", "MEMBERSHIP"]
SMALL = DemoSpec(users=150, items=120, interactions=2_000, seed=7)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The default dataset group, the one `make demo` uses."""
    out = tmp_path_factory.mktemp("demo")
    summary = generate(out)
    inter = pd.read_csv(out / "interactions.csv", dtype={"USER_ID": str, "ITEM_ID": str})
    items = pd.read_csv(out / "items.csv", dtype={"ITEM_ID": str})
    users = pd.read_csv(out / "users.csv", dtype=str)
    return out, summary, inter, items, users


def _read_all(path: Path) -> dict[str, bytes]:
    return {name: (path / name).read_bytes() for name in FILES}


def test_summary_and_files(demo):
    out, summary, inter, items, users = demo
    spec = DemoSpec()
    assert set(summary) == {"path", "interactions", "users", "items", "seconds"}
    assert summary["path"] == str(out)
    assert (summary["interactions"], summary["users"], summary["items"]) == (spec.interactions, spec.users, spec.items)
    assert summary["seconds"] >= 0
    for name in FILES:
        assert (out / name).is_file(), name
    leftovers = [p.name for p in out.rglob("*") if ".tmp" in p.name]
    assert leftovers == []
    assert len(inter) == spec.interactions
    assert len(items) == spec.items
    assert len(users) == spec.users


def test_deterministic_bytes(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    generate(a, SMALL)
    generate(b, SMALL)
    generate(c, DemoSpec(users=150, items=120, interactions=2_000, seed=8))
    first, second, other = _read_all(a), _read_all(b), _read_all(c)
    assert first == second
    for name in ("interactions.csv", "items.csv", "users.csv"):
        assert first[name] != other[name], name
    # Schemas do not depend on the seed.
    assert first["schemas/items.json"] == other["schemas/items.json"]


def test_world_reconstructible_and_consistent_with_files(tmp_path):
    w1, w2 = build_world(SMALL), build_world(SMALL)
    for field in ("user_ids", "item_ids", "item_category", "item_created", "item_quality", "user_interests"):
        np.testing.assert_array_equal(getattr(w1, field), getattr(w2, field))
    # The world does not depend on the number of interactions.
    w3 = build_world(DemoSpec(users=150, items=120, interactions=5_000, seed=7))
    np.testing.assert_array_equal(w1.user_interests, w3.user_interests)
    assert not np.array_equal(w1.item_quality, build_world(DemoSpec(seed=8, users=150, items=120)).item_quality)

    assert w1.user_ids.dtype.kind == "U" and w1.item_ids.dtype.kind == "U"
    assert len(set(w1.user_ids)) == SMALL.users and len(set(w1.item_ids)) == SMALL.items
    assert w1.user_interests.shape == (SMALL.users, SMALL.categories)
    np.testing.assert_allclose(w1.user_interests.sum(axis=1), 1.0)
    # Interests are concentrated: the top 3 categories hold most of the mass.
    top3 = np.sort(w1.user_interests, axis=1)[:, -3:].sum(axis=1)
    assert np.all(top3 > 0.9)
    assert w1.item_category.min() >= 0 and w1.item_category.max() < SMALL.categories
    assert np.all(w1.item_quality > 0)

    generate(tmp_path, SMALL)
    items = pd.read_csv(tmp_path / "items.csv", dtype={"ITEM_ID": str})
    np.testing.assert_array_equal(items.ITEM_ID.to_numpy(), w1.item_ids)
    np.testing.assert_array_equal(items.CREATION_TIMESTAMP.to_numpy(), w1.item_created)
    names = np.array(category_names(SMALL.categories))
    np.testing.assert_array_equal(items.GENRE.str.split("|").str[0].to_numpy(), names[w1.item_category])


def test_affinity(demo):
    world = build_world(DemoSpec())
    users = np.arange(world.spec.users)
    items = np.arange(world.spec.items)
    aff = world.affinity(users[:, None], items[None, :])
    assert aff.shape == (world.spec.users, world.spec.items)
    assert aff.min() >= 0.0 and aff.max() <= 1.0
    assert aff.max() > 0.5 and np.median(aff) < 0.1
    # Element-wise call agrees with the broadcast one.
    u, i = np.array([0, 5, 9]), np.array([3, 1, 7])
    np.testing.assert_allclose(world.affinity(u, i), aff[u, i])
    # Users prefer items of their favourite category.
    fav = world.user_interests.argmax(axis=1)
    in_fav = world.item_category[None, :] == fav[:, None]
    assert aff[in_fav].mean() > 3 * aff[~in_fav].mean()
    # Observed interactions are far more likely on high-affinity pairs.
    _, _, inter, _, _ = demo
    uidx = pd.Index(world.user_ids).get_indexer(inter.USER_ID)
    iidx = pd.Index(world.item_ids).get_indexer(inter.ITEM_ID)
    assert world.affinity(uidx, iidx).mean() > 2 * aff.mean()


def test_interaction_columns_and_types(demo):
    _, _, inter, items, users = demo
    assert list(inter.columns) == INTERACTION_COLUMNS
    assert inter.TIMESTAMP.dtype == np.int64
    assert inter.EVENT_VALUE.dtype == np.float64
    assert inter.notna().all().all()
    assert inter.USER_ID.isin(set(users.USER_ID)).all()
    assert inter.ITEM_ID.isin(set(items.ITEM_ID)).all()
    assert set(inter.EVENT_TYPE) == set(EVENT_TYPES)
    assert set(inter.DEVICE) == set(DEVICES)
    shares = inter.EVENT_TYPE.value_counts(normalize=True)
    assert abs(shares["click"] - 0.70) < 0.05
    assert abs(shares["watch"] - 0.25) < 0.05
    assert abs(shares["purchase"] - 0.05) < 0.02
    spec = DemoSpec()
    assert inter.TIMESTAMP.min() >= spec.start
    assert inter.TIMESTAMP.max() < spec.start + spec.days * 86_400
    assert inter.TIMESTAMP.is_monotonic_increasing


def test_event_values(demo):
    _, _, inter, items, _ = demo
    clicks = inter[inter.EVENT_TYPE == "click"]
    watches = inter[inter.EVENT_TYPE == "watch"]
    purchases = inter[inter.EVENT_TYPE == "purchase"]
    assert (clicks.EVENT_VALUE == 1.0).all()
    assert watches.EVENT_VALUE.between(0.0, 1.0, inclusive="right").all()
    assert 0.2 < (watches.EVENT_VALUE > 0.8).mean() < 0.8  # a threshold filter is selective
    price = items.set_index("ITEM_ID").PRICE
    np.testing.assert_allclose(purchases.EVENT_VALUE.to_numpy(), purchases.ITEM_ID.map(price).to_numpy())


def test_impressions(demo):
    _, _, inter, items, _ = demo
    lists = inter.IMPRESSION.str.split("|")
    lengths = lists.str.len()
    assert lengths.min() >= 3 and lengths.max() <= 10
    assert 5 < lengths.mean() < 8
    assert all(item in shown for item, shown in zip(inter.ITEM_ID, lists, strict=True))
    assert (lists.map(lambda s: len(set(s))) == lengths).all()  # no duplicates
    # The interacted item is not always in the same slot.
    first = lists.str[0] == inter.ITEM_ID
    assert 0.2 < first.mean() < 0.8
    # Shown items exist in the catalogue and already existed at event time.
    created = items.set_index("ITEM_ID").CREATION_TIMESTAMP
    shown = lists.explode()
    assert shown.isin(set(items.ITEM_ID)).all()
    assert (shown.map(created).to_numpy() <= inter.TIMESTAMP.loc[shown.index].to_numpy()).all()


def test_items_created_before_events(demo):
    _, _, inter, items, _ = demo
    created = items.set_index("ITEM_ID").CREATION_TIMESTAMP
    assert (inter.ITEM_ID.map(created) <= inter.TIMESTAMP).all()
    spec = DemoSpec()
    end = spec.start + spec.days * 86_400
    assert 0.4 < (items.CREATION_TIMESTAMP < spec.start).mean() < 0.8
    recent = items.CREATION_TIMESTAMP >= end - 28 * 86_400
    assert recent.sum() >= 20  # new items keep arriving at the end of the timeline
    # ... and they do get interactions.
    assert inter.ITEM_ID.isin(set(items.ITEM_ID[recent])).sum() > 0


def test_user_activity_and_personalize_minimums(demo):
    _, _, inter, _, users = demo
    counts = inter.USER_ID.value_counts()
    assert set(counts.index) == set(users.USER_ID)
    assert counts.min() >= 3
    assert counts.max() > 8 * counts.median()  # heavy tail
    assert len(inter) >= 1000 and (counts >= 2).sum() >= 25


def test_long_tail_popularity(demo):
    _, _, inter, items, _ = demo
    pop = inter.ITEM_ID.value_counts()
    top = pop.iloc[: len(items) // 10].sum() / len(inter)
    assert top > 0.35
    assert pop.iloc[0] > 20 * pop.median()


def test_sessions_keep_category_and_are_predictable(demo):
    _, _, inter, items, _ = demo
    category = items.set_index("ITEM_ID").GENRE.str.split("|").str[0]
    s = inter.sort_values(["USER_ID", "TIMESTAMP"], kind="stable").reset_index(drop=True)
    cat = s.ITEM_ID.map(category).to_numpy()
    same_user = s.USER_ID.to_numpy()[1:] == s.USER_ID.to_numpy()[:-1]
    gap = np.diff(s.TIMESTAMP.to_numpy())
    close = same_user & (gap < 3600)
    assert close.sum() > 0.5 * same_user.sum()  # mostly in sessions
    assert np.median(gap[close]) < 600  # minutes apart inside a session
    assert np.median(gap[same_user & ~close]) > 86_400  # sessions are days apart
    assert (cat[1:] == cat[:-1])[close].mean() > 0.7

    # Next-item prediction on a time split: "most frequent successor of the
    # previous item" beats global popularity clearly.
    s["PREV"] = s.groupby("USER_ID").ITEM_ID.shift(1)
    pairs = s.dropna(subset=["PREV"])
    cut = inter.TIMESTAMP.quantile(0.9)
    train, test = pairs[pairs.TIMESTAMP <= cut], pairs[pairs.TIMESTAMP > cut]
    top10 = set(s[s.TIMESTAMP <= cut].ITEM_ID.value_counts().index[:10])
    successors = (
        train.groupby(["PREV", "ITEM_ID"])
        .size()
        .rename("n")
        .reset_index()
        .sort_values(["PREV", "n"], ascending=[True, False], kind="stable")
        .groupby("PREV")
        .head(10)
    )
    hits_seq = test.merge(successors, on=["PREV", "ITEM_ID"], how="inner")
    hr_seq = len(hits_seq) / len(test)
    hr_pop = test.ITEM_ID.isin(top10).mean()
    assert hr_seq > 2 * hr_pop and hr_seq > 0.2


def test_items_and_users_files(demo):
    _, _, _, items, users = demo
    assert list(items.columns) == ITEM_COLUMNS
    assert items.ITEM_ID.is_unique
    assert items.PRICE.dtype == np.float64 and (items.PRICE > 0).all()
    assert items.CREATION_TIMESTAMP.dtype == np.int64
    genres = items.GENRE.str.split("|")
    assert genres.str.len().between(1, 3).all()
    assert (genres.str.len() > 1).mean() > 0.2
    assert set(genres.explode()) <= set(category_names(DemoSpec().categories))
    assert (genres.map(lambda g: len(set(g))) == genres.str.len()).all()

    assert list(users.columns) == USER_COLUMNS
    assert users.USER_ID.is_unique
    assert set(users.AGE_GROUP) <= set(AGE_GROUPS)
    assert set(users.MEMBERSHIP) == set(MEMBERSHIPS)


def test_schemas(demo):
    out, _, inter, items, users = demo
    expected = {"interactions": list(inter.columns), "items": list(items.columns), "users": list(users.columns)}
    for name, columns in expected.items():
        schema = json.loads((out / "schemas" / f"{name}.json").read_text())
        assert schema["type"] == "record"
        assert schema["namespace"] == "com.amazonaws.personalize.schema"
        assert schema["version"] == "1.0"
        assert [f["name"] for f in schema["fields"]] == columns
    fields = {f["name"]: f for f in json.loads((out / "schemas" / "interactions.json").read_text())["fields"]}
    assert fields["TIMESTAMP"]["type"] == "long"
    assert fields["EVENT_VALUE"]["type"] == "float"
    assert fields["DEVICE"]["categorical"] is True
    fields = {f["name"]: f for f in json.loads((out / "schemas" / "items.json").read_text())["fields"]}
    assert fields["GENRE"] == {"name": "GENRE", "type": ["null", "string"], "categorical": True}
    assert fields["CREATION_TIMESTAMP"]["type"] == "long"
    fields = {f["name"]: f for f in json.loads((out / "schemas" / "users.json").read_text())["fields"]}
    assert fields["AGE_GROUP"]["categorical"] and fields["MEMBERSHIP"]["categorical"]


def test_batch_input(demo):
    out, _, _, _, users = demo
    lines = (out / "batch-input" / "users.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert all(set(r) == {"userId"} and isinstance(r["userId"], str) for r in records)
    ids = [r["userId"] for r in records]
    assert len(ids) == len(set(ids)) == 202
    known = set(users.USER_ID)
    assert sum(uid in known for uid in ids) == 200
    assert sum(uid not in known for uid in ids) == 2


def test_invalid_specs():
    with pytest.raises(ValueError):
        build_world(DemoSpec(users=100, interactions=299))
    with pytest.raises(ValueError):
        build_world(DemoSpec(items=5, categories=12))
    with pytest.raises(ValueError):
        build_world(DemoSpec(seed=-1))


def test_tiny_spec_still_valid(tmp_path):
    spec = DemoSpec(users=4, items=3, interactions=12, categories=1, seed=3, days=1)
    generate(tmp_path, spec)
    inter = pd.read_csv(tmp_path / "interactions.csv", dtype={"USER_ID": str, "ITEM_ID": str})
    assert len(inter) == 12
    assert inter.USER_ID.value_counts().min() >= 3
    lists = inter.IMPRESSION.str.split("|")
    assert (lists.str.len() == 3).all()
    assert all(item in shown for item, shown in zip(inter.ITEM_ID, lists, strict=True))
    lines = (tmp_path / "batch-input" / "users.jsonl").read_text().splitlines()
    assert len(lines) == 4 + 2
