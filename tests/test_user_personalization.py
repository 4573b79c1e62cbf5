"""aws-user-personalization: item tower, impressions, exploration, cheap UPDATE."""

import dataclasses
import json
import shutil

import numpy as np
import pandas as pd
import pytest

from personalize_pipeline.batch import run_batch_job
from personalize_pipeline.datasets import read_dataset_group
from personalize_pipeline.demo_data import DemoSpec, generate
from personalize_pipeline.errors import InputError
from personalize_pipeline.features import featurize
from personalize_pipeline.recipes import HRNN, ExplorationConfig, UserBatch, UserPersonalization
from personalize_pipeline.recipes.repeats import RECENCY_FALLBACK, RECENCY_WEIGHTS
from personalize_pipeline.recipes.user_personalization import merge_lists
from personalize_pipeline.simulation import split_as_of
from personalize_pipeline.store import load_solution_version
from personalize_pipeline.training import SolutionConfig, train

FAST = {"hidden_dimension": 32, "epochs": 4}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    path = tmp_path_factory.mktemp("up-demo")
    generate(path, DemoSpec(users=400, items=300, interactions=8000, seed=5))
    return path


@pytest.fixture(scope="module")
def features(demo):
    return featurize(read_dataset_group(demo))


@pytest.fixture(scope="module")
def model(features):
    return UserPersonalization(**FAST).fit(features)


def _batch(features, n=120):
    return UserBatch.from_histories(np.arange(n), *features.sequences())


@pytest.mark.slow
def test_weight_zero_is_pure_relevance_and_lists_are_full(model, features):
    batch = _batch(features)
    plain = model.recommend(batch, 25)
    zero = model.recommend(batch, 25, exploration=ExplorationConfig(0.0))
    np.testing.assert_array_equal(plain[0], zero[0])
    for w in (0.3, 0.8, 1.0):
        items, scores = model.recommend(batch, 25, exploration=ExplorationConfig(w))
        assert (items >= 0).all()
        assert all(len(set(row)) == 25 for row in items.tolist())  # no duplicates
        assert np.isfinite(scores).all() and (scores > 0).all()


@pytest.mark.slow
def test_exploration_share_grows_with_weight_among_young_items(model, features):
    batch = _batch(features)
    relevance, _ = model.recommend(batch, 25)
    young = np.zeros(features.n_items, dtype=bool)
    young[model.exploration_candidates(ExplorationConfig(0.3, 30.0))] = True
    assert 0 < young.sum() < features.n_items
    shares = {}
    for w in (0.0, 0.3, 0.8):
        items, _ = model.recommend(batch, 25, exploration=ExplorationConfig(w, 30.0))
        # items that the pure relevance list did not have
        changed = ~np.array([np.isin(row, rel) for row, rel in zip(items, relevance, strict=True)])
        assert young[items[changed]].all()  # exploration only brings young items
        shares[w] = changed.mean()
    assert shares[0.0] == 0.0
    assert 0.08 <= shares[0.3] <= 0.2  # about w / 2 of the list
    assert shares[0.8] > 2 * shares[0.3]
    # deterministic for the same request
    again, _ = model.recommend(batch, 25, exploration=ExplorationConfig(0.8, 30.0))
    np.testing.assert_array_equal(again, model.recommend(batch, 25, exploration=ExplorationConfig(0.8, 30.0))[0])


@pytest.mark.slow
def test_exploration_respects_filters_and_seen_items(model, features):
    batch = _batch(features, 50)
    allowed = np.zeros((50, features.n_items), dtype=bool)
    allowed[:, ::3] = True
    items, _ = model.recommend(batch, 25, exclude_seen=True, allowed=allowed, exploration=ExplorationConfig(0.8))
    assert (items[items >= 0] % 3 == 0).all()
    rows, cols = batch.seen_mask_rows_cols()
    seen = set(zip(rows.tolist(), cols.tolist(), strict=True))
    assert not any((r, i) in seen for r, row in enumerate(items.tolist()) for i in row if i >= 0)


@pytest.mark.slow
def test_thompson_sampling_prefers_uncertain_over_often_ignored(model, features):
    """Among young items with equal relevance, one shown 1000 times and never clicked is
    almost never explored; one never shown often is."""
    m = UserPersonalization.from_state(model.params, model.state())
    young = m.exploration_candidates(ExplorationConfig())
    a, b = young[:2]
    m.clicks[[a, b]] = 0.0
    m.ignored[a], m.ignored[b] = 1000.0, 0.0
    log_p = np.full((400, features.n_items), -50.0, dtype=np.float32)
    log_p[:, [a, b]] = -5.0
    relevant = np.full((400, 1), -1)
    picks = m.explore(
        log_p, relevant, 1, ExplorationConfig(1.0), UserBatch.from_histories(np.arange(400), *features.sequences())
    )
    assert (picks[:, 0] == b).mean() > 0.9


@pytest.mark.slow
def test_impressions_demote_items_shown_and_ignored(demo, tmp_path):
    """Ten items with ordinary click counts are added to most impression lists, so users
    keep ignoring them: trained with impressions, they sink down the lists."""
    shutil.copytree(demo, tmp_path / "shown")
    inter = pd.read_csv(demo / "interactions.csv", dtype=str)
    counts = inter["ITEM_ID"].value_counts()
    target = counts[(counts >= counts.quantile(0.6)) & (counts <= counts.quantile(0.8))].index[:10].to_numpy()
    rng = np.random.default_rng(0)
    rows = rng.random(len(inter)) < 0.6
    extra = rng.choice(target, size=len(inter))
    inter.loc[rows, "IMPRESSION"] = inter.loc[rows, "IMPRESSION"] + "|" + extra[rows]
    inter.to_csv(tmp_path / "shown" / "interactions.csv", index=False)
    features = featurize(read_dataset_group(tmp_path / "shown"))
    with_imp = UserPersonalization(**FAST).fit(features)
    without = UserPersonalization(**FAST, impression_negatives=0).fit(features)
    codes = features.item_ids.searchsorted(target)
    assert (with_imp.ignored[codes] > 100).all()
    batch = _batch(features, 300)

    def mean_rank(model):
        ranks = (-model.logits(batch)).argsort(axis=1).argsort(axis=1)
        return ranks[:, codes].mean()

    assert mean_rank(with_imp) > mean_rank(without) * 1.1  # pushed down the lists
    assert with_imp.training_stats()["impressions_used"]


@pytest.mark.slow
def test_new_items_without_interactions_get_metadata_scores(model, features):
    new = model.clicks == 0
    assert new.any()
    logits = model.logits(_batch(features, 40))
    assert np.isfinite(logits[:, new]).all() and logits[:, new].std() > 0


def test_exploration_is_a_batch_setting_not_a_hyperparameter():
    with pytest.raises(InputError, match="exploration_weight is a campaign / batch inference setting"):
        UserPersonalization(exploration_weight=0.5)
    with pytest.raises(InputError, match="between 0 and 1"):
        ExplorationConfig(1.5)
    with pytest.raises(InputError, match="positive"):
        ExplorationConfig(0.3, 0.0)


def test_merge_interleaves_and_fills():
    relevant = np.array([[10, 11, 12, 13, 14, 15]])
    explored = np.array([[20, -1]])
    merged = merge_lists(relevant, explored, 6)
    assert sorted(merged[0].tolist()) == [10, 11, 12, 13, 14, 20]
    assert merged[0].tolist().index(20) not in (0, 5)  # spread into the list, not at an end
    assert merge_lists(relevant, np.array([[-1, -1]]), 6).tolist() == [relevant[0].tolist()]


@pytest.mark.slow
def test_update_brings_new_items_into_recommendations_cheaply(demo, tmp_path):
    ts = pd.read_csv(demo / "interactions.csv", usecols=["TIMESTAMP"])["TIMESTAMP"]
    cut = int(ts.quantile(0.9))
    split_as_of(demo, tmp_path / "before", cut)
    config = SolutionConfig("aws-user-personalization", {"hidden_dimension": 32, "epochs": 6})
    full = train(featurize(read_dataset_group(tmp_path / "before")), config, tmp_path / "sol", "FULL")
    update = train(featurize(read_dataset_group(demo)), config, tmp_path / "sol", "UPDATE")
    assert update.manifest["base_version"] == full.version_id
    new_items = set(update.item_ids) - set(full.item_ids)
    assert len(new_items) >= 5
    # much cheaper than FULL: one pass over the windows with new events only
    assert update.manifest["training"]["epochs_run"] == 1
    assert update.manifest["training"]["windows"] < 0.5 * full.manifest["training"]["windows"]
    assert update.manifest["timings"]["train_seconds"] < 0.5 * full.manifest["timings"]["train_seconds"]

    job = tmp_path / "users.jsonl"
    job.write_text("".join(json.dumps({"userId": u}) + "\n" for u in update.user_ids[:200]))
    shown = {}
    for w in (0.0, 0.3):
        result = run_batch_job(tmp_path / "sol", job, tmp_path / f"out-{w}", exploration_weight=w)
        lines = [json.loads(x) for x in open(result.output)]
        recs = [i for line in lines for i in line["output"]["recommendedItems"]]
        shown[w] = sum(i in new_items for i in recs) / len(recs)
    assert shown[0.3] > shown[0.0] and shown[0.3] > 0.03
    # users without new events keep their state exactly (only the item side moved)
    since = full.recipe.fit_state.latest_time
    inter = featurize(read_dataset_group(demo)).interactions
    active = set(update.user_ids[inter["user"].to_numpy()[inter["timestamp"].to_numpy() > since]])
    quiet = [u for u in full.user_ids if u not in active][:50]
    a = full.recipe.fit_state.user_state[full.user_codes(np.array(quiet, dtype=object))]
    b = update.recipe.fit_state.user_state[update.user_codes(np.array(quiet, dtype=object))]
    np.testing.assert_allclose(a, b, atol=1e-6)
    fresh = update.recipe.logits(
        UserBatch.from_histories(
            update.user_codes(np.array(quiet, dtype=object)),
            update.history_indptr,
            update.history_items,
            context=update.history_context,
        )
    )
    np.testing.assert_allclose(
        fresh, update.recipe.logits(update.user_batch(update.user_codes(np.array(quiet, dtype=object)))), atol=5e-3
    )
    # the UPDATE version loads back with its exploration statistics
    loaded = load_solution_version(tmp_path / "sol")
    assert (
        loaded.version_id == update.version_id
        and loaded.recipe.clicks.sum() == update.recipe.training_set(featurize(read_dataset_group(demo))).n_interactions
    )


def test_exploration_options_need_a_user_personalization_solution(demo_small, tmp_path):
    train(featurize(read_dataset_group(demo_small)), SolutionConfig("aws-popularity-count"), tmp_path / "pop")
    job = tmp_path / "job.jsonl"
    job.write_text('{"userId": "u000001"}\n')
    with pytest.raises(InputError, match="applies to aws-user-personalization"):
        run_batch_job(tmp_path / "pop", job, tmp_path / "out", exploration_weight=0.3)
    assert not (tmp_path / "out").exists()


def test_large_data_takes_more_and_smaller_steps_and_lighter_dropout():
    # small data: about 100 steps in each of up to 20 epochs, the dropouts as given
    model = UserPersonalization()
    assert model.schedule(5_000, 100_000, early_stopping=True) == (50, 20)
    assert model.dropout_rates(50_000) == (0.5, 0.3)
    # 1M events: 2 passes of about 350 steps each; dropouts shrink with sqrt(50k / events)
    assert model.schedule(45_000, 1_000_000, early_stopping=True) == (129, 2)
    embed, hidden = model.dropout_rates(200_000)
    assert (round(embed, 4), round(hidden, 4)) == (0.25, 0.15)
    assert UserPersonalization(dropout_reference_events=0).dropout_rates(1_000_000) == (0.5, 0.3)
    # explicit values win; an explicit epoch count still sets the automatic batch
    assert UserPersonalization(batch_size=64, epochs=3).schedule(45_000, 1_000_000, early_stopping=True) == (64, 3)
    assert UserPersonalization(epochs=7).schedule(45_000, 1_000_000, early_stopping=True) == (256, 7)
    # aws-hrnn: 1,400 steps in all (3 epochs of about 467 from 1M events), 256 at most, and
    # the same dropout rule from 250k events on
    assert HRNN().schedule(45_000, 1_000_000) == (96, 3)
    assert HRNN().schedule(450_000, 10_000_000) == (256, 3)
    assert HRNN().schedule(10_000, 600_000) == (36, 5)  # below 1M events: unchanged
    assert HRNN().dropout_rates(200_000) == (0.25, 0.1)
    embed, hidden = HRNN().dropout_rates(10_000_000)
    assert (round(embed, 4), round(hidden, 4)) == (0.0395, 0.0158)


def test_epochs_are_chosen_on_held_out_newest_events(tmp_path):
    params = UserPersonalization.resolve_hyperparameters({})
    assert params["early_stopping_patience"] == 3 and params["length_buckets"] is False
    # the automatic count is a maximum that is not cut for width when a held-out set exists
    assert UserPersonalization().schedule(1000, 100_000, early_stopping=True)[1] == 20
    assert UserPersonalization().schedule(1000, 900_000, early_stopping=True)[1] == 2  # a cost bound
    assert UserPersonalization().schedule(1000, 100_000, early_stopping=False)[1] == 6
    generate(tmp_path, DemoSpec(users=500, items=150, interactions=6000, seed=7))
    features = featurize(read_dataset_group(tmp_path))
    model = UserPersonalization(hidden_dimension=32, epochs=8, early_stopping_patience=2, validation_share=0.5)
    stats = model.fit(features).training_stats()
    scores = stats["held_out_ndcg10_by_epoch"]
    assert stats["held_out_users"] >= 200 and max(scores) > 0
    assert len(scores) == stats["epochs_run"] <= 8
    assert stats["early_stopping_best_epoch"] == int(np.argmax(scores)) + 1
    if stats["epochs_run"] < 8:  # stopped: patience epochs after the best
        assert stats["epochs_run"] - stats["early_stopping_best_epoch"] == 2
    transitions = int((np.diff(features.sequences()[0]) - 1).clip(min=0).sum())
    assert stats["training_events"] <= transitions - stats["held_out_users"]
    by_weight = stats["held_out_ndcg10_by_repeat_recency"]  # the kept weights, scored with each recency weight
    names = [*map(str, RECENCY_WEIGHTS), "unmixed"]
    assert str(stats["repeat_recency_chosen"]) == names[int(np.argmax([by_weight[n] for n in names]))]
    # training kept the best epoch's weights, scored then with the fallback weight
    assert by_weight[str(RECENCY_FALLBACK)] == pytest.approx(scores[stats["early_stopping_best_epoch"] - 1], abs=1e-4)


def test_items_of_unknown_age_read_the_mean_age_not_brand_new(features):
    # without creation times, items never seen (no interaction, no impression) have no age:
    # the tower reads the mean (0)
    items = features.items.drop(columns=["creation_timestamp"], errors="ignore")
    interactions = features.interactions.drop(columns=["impression"], errors="ignore")
    no_creation = dataclasses.replace(features, items=items, interactions=interactions)
    model = UserPersonalization(**FAST)
    model.fit_state.latest_time = float(features.interactions["timestamp"].max())
    model._prepare(no_creation, keep_layouts=False)
    age_input = model.item_meta[:, -1]
    unseen = model.clicks == 0
    assert unseen.any() and (age_input[unseen] == 0.0).all()
    assert abs(float(age_input[~unseen].mean())) < 1e-4 and abs(float(age_input[~unseen].std()) - 1.0) < 1e-3
    # exploration still counts them as new (first seen at the latest interaction)
    assert (model.item_first_seen[unseen] == model.fit_state.latest_time).all()
