"""personalize.yaml read into one typed model: every default in one place, an unknown or
misspelt key (or a bad value) is one line naming the key path and the file, the old
one-solution form is refused with a hint, and the environment overrides the locations."""

import os

import pytest

from personalize_pipeline.config import load_config, parse_config, with_environment
from personalize_pipeline.errors import InputError


def write(tmp_path, text: str):
    path = tmp_path / "personalize.yaml"
    path.write_text(text)
    return path


def test_misspelt_key_is_one_line_naming_the_key_path_and_the_file(tmp_path):
    path = write(
        tmp_path, "solutions:\n  - name: foryou\n    recipe: aws-hrnn\n    batch_inferance: {num_results: 5}\n"
    )
    with pytest.raises(InputError) as err:
        load_config(path)
    assert err.value.message == f"{path}: solutions[0].batch_inferance: unknown key"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("locations: {datset: x}\n", "locations.datset: unknown key"),
        (
            "solutions: [{name: a, batch_inference: {num_results: 501}}]\n",
            "solutions[0].batch_inference.num_results: Input should be less than or equal to 500",
        ),
        (
            "solutions: [{name: a, schedules: {timezone: Mars/Olympus}}]\n",
            "solutions[0].schedules.timezone: unknown time zone 'Mars/Olympus'",
        ),
        (
            "solutions: [{name: a, schedules: {full: 'every sunday'}}]\n",
            "solutions[0].schedules.full: expected a cron expression with 5 fields",
        ),
        (
            "solutions: [{name: for-you}]\n",
            "solutions[0].name: 'for-you' must contain only letters, digits and underscores",
        ),
        ("solutions: [{name: a, recipe: aws-hrn}]\n", "solutions[0].recipe: unknown recipe 'aws-hrn'"),
        ("solutions: [{name: a}, {name: b}, {name: a}]\n", "solutions: solution names must be unique; repeated: a"),
        ("solutions: []\n", "solutions: List should have at least 1 item"),
        ("solutions: [{recipe: aws-hrnn}]\n", "solutions[0].name: Field required"),
        (
            "solutions: [{name: a, recipe: aws-hrnn, hyperparameters: {hiden_dimension: 64}}]\n",
            "solutions[0]: recipe aws-hrnn has no hyperparameter 'hiden_dimension'",
        ),
        (
            "solutions: [{name: a, recipe: aws-hrnn, hyperparameters: {hidden_dimension: 16}}]\n",
            "solutions[0]: hyperparameter hidden_dimension: 16 is out of range",
        ),
        (
            "solutions: [{name: a, perform_hpo: true, hpo_config: {hpoObjective: {metricName: accuracy}}}]\n",
            "solutions[0]: hpoObjective.metricName",
        ),
        (
            "runs: {executor: {kind: slurm}}\n",
            "runs.executor.kind: Input should be 'multiprocess', 'in_process', 'k8s' or 'celery'",
        ),
        (
            "sensors: {new_dataset_files: {minimum_interval_seconds: soon}}\n",
            "sensors.new_dataset_files.minimum_interval_seconds: Input should be a valid integer",
        ),
    ],
)
def test_bad_values_name_their_key(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(InputError) as err:
        load_config(path)
    assert err.value.message.startswith(f"{path}: {expected}"), err.value.message
    assert "\n" not in err.value.message


@pytest.mark.parametrize("key", ["solution", "batch_inference", "schedules"])
def test_the_one_solution_form_is_refused_with_a_hint(tmp_path, key):
    path = write(tmp_path, f"{key}: {{}}\n")
    with pytest.raises(
        InputError,
        match=rf"^{path}: {key}: the one-solution form is no longer read; list each solution under `solutions:`",
    ):
        load_config(path)


def test_defaults_live_in_the_model(tmp_path):
    config = load_config(write(tmp_path, "solutions: [{name: foryou}]\n"))
    [solution] = config.solutions
    assert (
        solution.recipe == "aws-popularity-count"
        and solution.hyperparameters == {}
        and solution.keep_full_versions == 5
    )
    assert (
        solution.event_type is None
        and solution.event_value_threshold is None
        and not solution.perform_hpo
        and not solution.perform_automl
    )
    assert solution.batch_inference.model_dump() == {
        "input": "",
        "num_results": 25,
        "filter": None,
        "filter_values": {},
        "exploration_weight": 0.3,
        "exploration_item_age_cut_off": 30.0,
    }
    assert solution.schedules.model_dump() == {"full": "0 3 * * 0", "update": "0 */2 * * *", "timezone": "UTC"}
    assert config.sensors.new_dataset_files.minimum_interval_seconds == 300
    assert config.runs.max_runtime_seconds.model_dump() == {
        "full_retrain": 21600,
        "update": 3600,
        "validate_dataset": 1800,
    }
    assert config.runs.executor.kind == "multiprocess"
    # no file at all: every default, one solution named demo
    empty = parse_config(None)
    assert [s.name for s in empty.solutions] == ["demo"] and empty.locations.dataset == ".data/demo"


def test_environment_overrides_locations_and_local_paths_are_resolved(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = parse_config(
        {"locations": {"dataset": "data/group", "output": "s3://bucket/out"}, "solutions": [{"name": "a"}]}
    )
    resolved = with_environment(
        config, env={"PERSONALIZE_ARTIFACTS": "s3://bucket/artifacts", "PERSONALIZE_BATCH_INPUT": "~/shards"}
    )
    assert resolved.locations.model_dump() == {
        "dataset": str(tmp_path / "data" / "group"),
        "artifacts": "s3://bucket/artifacts",
        "output": "s3://bucket/out",
        "batch_input": os.path.expanduser("~/shards"),
    }
    monkeypatch.setenv("PERSONALIZE_CONFIG", str(tmp_path / "absent.yaml"))
    with pytest.raises(InputError, match="absent.yaml: configuration file does not exist"):
        load_config()
