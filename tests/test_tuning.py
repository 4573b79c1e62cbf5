"""HPO and AutoML (personalize_pipeline/tuning.py): ranges checked against each recipe's
declared hyperparameters, a seeded search whose trials land in the manifest, AutoML choosing
on a validation split that never sees the test item, and bad selection options rejected with
one line and exit code 2. The CreateSolution request itself: test_create_solution.py."""

from __future__ import annotations

import json

import pytest
from cli_helpers import call
from solution_requests import hpo_doc

from personalize_pipeline.create_solution import HPOConfig, parse_create_solution
from personalize_pipeline.datasets import read_dataset_group
from personalize_pipeline.errors import InputError
from personalize_pipeline.features import featurize
from personalize_pipeline.metrics import leave_last_out_split
from personalize_pipeline.recipes import HRNN, SIMS
from personalize_pipeline.store import load_manifest
from personalize_pipeline.tuning import run_hpo, search_space, validation_split

MOVIELENS = "tests/data/movielens-slice"


@pytest.fixture(scope="module")
def features():
    return featurize(read_dataset_group(MOVIELENS))


@pytest.mark.parametrize(
    "ranges, message",
    [
        (
            {"integerHyperParameterRanges": [{"name": "hidden_dim", "minValue": "32", "maxValue": "64"}]},
            "no hyperparameter 'hidden_dim'",
        ),
        (
            {"integerHyperParameterRanges": [{"name": "hidden_dimension", "minValue": "16", "maxValue": "64"}]},
            "out of range [32, 256]",
        ),
        ({"integerHyperParameterRanges": [{"name": "epochs", "minValue": "1", "maxValue": "5"}]}, "not tunable"),
        (
            {"continuousHyperParameterRanges": [{"name": "hidden_dimension", "minValue": "32", "maxValue": "64"}]},
            "integerHyperParameterRanges",
        ),
        ({"integerHyperParameterRanges": [{"name": "bptt", "minValue": "20", "maxValue": "10"}]}, "is above maxValue"),
        ({"categoricalHyperParameterRanges": [{"name": "recency_mask", "values": ["yes"]}]}, "not a valid bool"),
        (
            {"continuousHyperParameterRanges": [{"name": "learning_rate", "minValue": "0.001", "maxValue": "0.9"}]},
            "out of range",
        ),
    ],
)
def test_bad_ranges_are_rejected_against_the_recipe(ranges, message):
    kwargs = parse_create_solution(hpo_doc(**ranges))
    with pytest.raises(InputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        search_space(HRNN, kwargs["hpo"])


def test_validation_split_never_sees_the_test_item(features):
    valid, test = validation_split(features), leave_last_out_split(features, stage="test")
    assert valid.train.n_interactions == test.train.n_interactions  # both train without the last two events
    indptr, items = features.sequences()
    last = {int(u): int(items[indptr[u + 1] - 1]) for u in valid.test_users}
    second_last = {int(u): int(items[indptr[u + 1] - 2]) for u in valid.test_users}
    assert {int(u): int(i) for u, i in zip(valid.test_users, valid.truth_items, strict=True)} == second_last
    # the test truth (each user's last event) is in neither the validation input nor its training part
    inputs = {
        int(u): valid.input_items[valid.input_indptr[r] : valid.input_indptr[r + 1]]
        for r, u in enumerate(valid.test_users)
    }
    assert all(len(inputs[u]) == indptr[u + 1] - indptr[u] - 2 for u in inputs)
    assert len(last) == len(valid.test_users)


def test_hpo_is_seeded_starts_from_defaults_and_never_ends_below_them(features):
    hpo = HPOConfig(max_training_jobs=5)
    best, record = run_hpo(features, SIMS, hpo, seed=7)
    trials = record["trials"]
    assert len(trials) == 5 and trials[0]["defaults"]
    assert trials[0]["params"] == {"popularity_discount_factor": 0.5, "min_cointeraction_count": 3}
    assert all(t["seconds"] >= 0 and 0 <= t["value"] <= 1 and "precision_at_25" in t["metrics"] for t in trials)
    assert record["best"]["value"] == max(t["value"] for t in trials) >= record["default_value"]
    assert best["popularity_discount_factor"] == record["best"]["params"]["popularity_discount_factor"]
    again, record2 = run_hpo(features, SIMS, hpo, seed=7)
    assert [t["params"] for t in record2["trials"]] == [t["params"] for t in trials]


def test_cli_train_hpo_records_trials_in_the_manifest(tmp_path, capsys):
    code, out, err = call(
        capsys,
        *[
            "train",
            "--dataset",
            MOVIELENS,
            "--recipe",
            "aws-sims",
            "--hpo",
            "4",
            "--no-validate",
            "--out",
            str(tmp_path / "s"),
        ],
    )
    assert code == 0, err
    summary = json.loads(out)
    assert summary["hpo"]["trials"] == 4 and summary["hpo"]["best_value"] >= summary["hpo"]["default_value"]
    assert err.count("HPO trial") == 4
    manifest = load_manifest(tmp_path / "s")
    assert (
        manifest["solution_config"]["performHPO"]
        and manifest["hpo"]["best"]["params"]["popularity_discount_factor"]
        == manifest["hyperparameters"]["popularity_discount_factor"]
    )
    assert len(manifest["hpo"]["trials"]) == 4


def test_cli_solution_config_yaml_with_automl_picks_the_better_recipe(demo_small, tmp_path, capsys, one_torch_thread):
    """AutoML between popularity and HRNN (a tiny HRNN: fixed hyperparameters apply to the
    candidates that declare them) on the demo data, where sequences carry the signal."""
    config = tmp_path / "solution.yaml"
    config.write_text(
        "performAutoML: true\n"
        "solutionConfig:\n"
        "  algorithmHyperParameters: {epochs: '2', hidden_dimension: '32', n_sample: '64'}\n"
        "  autoMLConfig: {metricName: precision_at_25, recipeList: [aws-popularity-count, "
        "arn:aws:personalize:::recipe/aws-hrnn]}\n"
    )
    code, out, err = call(
        capsys,
        *[
            "train",
            "--dataset",
            str(demo_small),
            "--solution-config",
            str(config),
            "--no-validate",
            "--out",
            str(tmp_path / "s"),
        ],
    )
    assert code == 0, err
    manifest = load_manifest(tmp_path / "s")
    candidates = {c["recipe"]: c for c in manifest["automl"]["candidates"]}
    values = {name: c["value"] for name, c in candidates.items()}
    assert set(values) == {"aws-popularity-count", "aws-hrnn"}
    assert manifest["recipe"] == manifest["automl"]["chosen"] == max(values, key=values.get) == "aws-hrnn"
    assert values["aws-hrnn"] > values["aws-popularity-count"]
    hrnn = candidates["aws-hrnn"]["hyperparameters"]
    assert hrnn["epochs"] == 2 and hrnn["max_user_history_length_percentile"] == 1.0  # same data for every candidate
    assert manifest["hyperparameters"] == hrnn
    assert manifest["solution_config"]["autoMLConfig"]["recipeList"] == ["aws-popularity-count", "aws-hrnn"]
    assert json.loads(out)["automl"]["chosen"] == manifest["recipe"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--recipe", "aws-hrnn", "--hpo", "41"], "between 1 and 40"),
        (["--recipe", "aws-hrnn", "--hpo", "0"], "between 1 and 40"),
        (["--recipe", "aws-popularity-count", "--hpo", "3"], "no tunable hyperparameters"),
        (["--recipe", "no-such-recipe", "--automl"], "unknown recipe"),
        (["--automl", "--hp", "colour=blue"], "no AutoML candidate"),
        (["--automl", "--hp", "hidden_dimension=8"], "out of range"),
        ([], "needs --recipe NAME, --automl, or --solution-config"),
        (["--recipe", "aws-hrnn", "--hpo", "3", "--training-mode", "UPDATE", "--base", "x"], "UPDATE keeps"),
        (["--solution-config", "no/such/file.yaml"], "does not exist"),
    ],
)
def test_cli_bad_selection_options_exit_2_with_one_line(tmp_path, capsys, args, message):
    out_dir = tmp_path / "s"
    code, out, err = call(capsys, *["train", "--dataset", MOVIELENS, *args, "--out", str(out_dir)])
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and message in err, err
    assert not out_dir.exists()
