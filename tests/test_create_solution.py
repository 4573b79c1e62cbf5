"""The CreateSolution request (personalize_pipeline/create_solution.py): read as Personalize
defines it, bad configs and AutoML configs rejected with one line, and solution config files
that do not parse exit with code 2."""

from __future__ import annotations

import json

import pytest
from cli_helpers import call
from solution_requests import hpo_doc

from personalize_pipeline.create_solution import AutoMLConfig, HPOConfig, parse_create_solution
from personalize_pipeline.errors import InputError
from personalize_pipeline.recipes import HRNN
from personalize_pipeline.tuning import search_space

MOVIELENS = "tests/data/movielens-slice"


def test_create_solution_request_is_read_as_personalize_defines_it():
    kwargs = parse_create_solution(
        hpo_doc(
            integerHyperParameterRanges=[{"name": "hidden_dimension", "minValue": "32", "maxValue": "64"}],
            categoricalHyperParameterRanges=[{"name": "recency_mask", "values": ["true", "false"]}],
        )
        | {"eventType": "watch"}
    )
    assert kwargs["recipe"] == "aws-hrnn" and kwargs["perform_hpo"] and kwargs["event_type"] == "watch"
    hpo = kwargs["hpo"]
    assert (hpo.metric_name, hpo.max_training_jobs, hpo.max_parallel_jobs) == ("precision_at_25", 8, 2)
    dims = {d.hp.name: d for d in search_space(HRNN, hpo)}
    assert set(dims) == {"hidden_dimension", "recency_mask"}
    assert (dims["hidden_dimension"].low, dims["hidden_dimension"].high) == (32, 64)
    assert dims["recency_mask"].values == (True, False)
    # no ranges: every tunable hyperparameter, within its declared range
    default_dims = {d.hp.name: d for d in search_space(HRNN, HPOConfig())}
    assert {"hidden_dimension", "bptt", "recency_mask", "learning_rate"} <= set(default_dims)
    assert "epochs" not in default_dims and "max_user_history_length_percentile" not in default_dims
    assert default_dims["learning_rate"].log and 1e-5 <= default_dims["learning_rate"].low


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda d: d["solutionConfig"]["hpoConfig"]["hpoResourceConfig"].update(maxNumberOfTrainingJobs="41"),
            "between 1 and 40",
        ),
        (
            lambda d: d["solutionConfig"]["hpoConfig"]["hpoResourceConfig"].update(maxParallelTrainingJobs="11"),
            "between 1 and 10",
        ),
        (lambda d: d["solutionConfig"]["hpoConfig"]["hpoObjective"].update(metricName="accuracy"), "not a metric"),
        (lambda d: d["solutionConfig"]["hpoConfig"]["hpoObjective"].update(type="Up"), "Maximize or Minimize"),
        (lambda d: d.update(performAutoML=True), "either recipeArn or performAutoML"),
        (lambda d: d.update(performHPO=False), "performHPO is not true"),
        (lambda d: d.update(recipeArn=None), "recipeArn is required"),
        (lambda d: d.update(colour="blue"), "unknown key 'colour'"),
        (lambda d: d["solutionConfig"].update(optimizationObjective={}), "not supported"),
        (lambda d: d.update(performHPO="maybe"), "true or false"),
    ],
)
def test_bad_solution_configs_are_rejected(change, message):
    doc = hpo_doc()
    change(doc)
    with pytest.raises(InputError, match=message):
        parse_create_solution(doc)


def test_automl_config_checks_recipes_and_metric():
    with pytest.raises(InputError, match="RELATED_ITEMS"):
        AutoMLConfig.from_dict({"recipeList": ["aws-sims"]})
    with pytest.raises(InputError, match="unknown recipe"):
        AutoMLConfig.from_dict({"recipeList": ["aws-nope"]})
    with pytest.raises(InputError, match="not a metric"):
        AutoMLConfig.from_dict({"metricName": "precision_at_7"})
    config = AutoMLConfig.from_dict(
        {"metricName": "precision_at_25", "recipeList": ["arn:aws:personalize:::recipe/aws-hrnn"]}
    )
    assert config.recipe_list == ["aws-hrnn"]


def test_cli_solution_config_file_errors(tmp_path, capsys):
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{not json")
    code, _, err = call(
        capsys, *["train", "--dataset", MOVIELENS, "--solution-config", str(bad_json), "--out", str(tmp_path / "s")]
    )
    assert code == 2 and "not valid JSON" in err and len(err.strip().splitlines()) == 1
    doc = hpo_doc(integerHyperParameterRanges=[{"name": "hidden_dimension", "minValue": "32", "maxValue": "999"}])
    good_shape = tmp_path / "range.json"
    good_shape.write_text(json.dumps(doc))
    code, _, err = call(
        capsys, *["train", "--dataset", MOVIELENS, "--solution-config", str(good_shape), "--out", str(tmp_path / "s")]
    )
    assert code == 2 and "hidden_dimension: 999 is out of range [32, 256]" in err
    assert not (tmp_path / "s").exists()
