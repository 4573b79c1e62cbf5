"""``make demo``: materialize every configured solution's graph once (its FULL job) on the
demo dataset, recorded in the Dagster instance under $DAGSTER_HOME so that ``make ui``
shows the runs."""

from __future__ import annotations

import sys

import dagster as dg

from personalize_pipeline.locations import Location

from .definitions import defs
from .jobs import run_config as solution_run_config
from .settings import settings

STAGES = ("featurized_dataset", "solution_version", "solution_metrics", "batch_inference_output")


def _print_failure(result) -> None:
    for event in result.all_events:
        if event.is_failure or (
            event.event_type_value == "ASSET_CHECK_EVALUATION" and not event.event_specific_data.evaluation.passed
        ):
            print(f"  {event.step_key or ''}: {event.message}", file=sys.stderr)


def _print_outputs(result, name: str) -> None:
    for key in (dg.AssetKey("validated_interactions"), *(dg.AssetKey([name, s]) for s in STAGES)):
        mats = [m for m in result.get_asset_materialization_events() if m.asset_key == key]
        if not mats:
            continue
        md = mats[-1].materialization.metadata
        path = md.get("path") or md.get("solution_version_path")
        extra = ""
        if key.path[-1] == "solution_metrics":
            precision = md["precision_at_25"].value
            ndcg = md["normalized_discounted_cumulative_gain_at_10"].value
            extra = f"  precision_at_25={precision:.4f} ndcg_at_10={ndcg:.4f}"
        print(f"  {key.to_user_string():<32} {path.value if path else ''}{extra}")


def main() -> int:
    instance = dg.DagsterInstance.get()
    config = settings()
    job_input = Location(config.locations.dataset).child("batch-input", "users.jsonl")
    failed = []
    for solution in config.solutions:
        name = solution.name
        job = defs.resolve_job_def(f"{name}__full_retrain")
        # what the weekly schedule would send (an op's config given at launch replaces its defaults whole)
        run_config = {
            **solution_run_config(solution, "FULL"),
            "loggers": {"console": {"config": {"log_level": "INFO"}}},
        }
        if (
            not solution.batch_inference.input
            and solution.recipe_type() == "USER_PERSONALIZATION"
            and job_input.exists()
        ):
            # the demo generator writes a Personalize batch job input: use it unless one is configured
            run_config["ops"][f"{name}__batch_inference_output"]["config"]["input"] = job_input.url
        result = job.execute_in_process(instance=instance, raise_on_error=False, run_config=run_config)
        if not result.success:
            _print_failure(result)
            print(f"demo run of {name} FAILED", file=sys.stderr)
            failed.append(name)
            continue
        print(f"\nDemo run of solution {name} ({solution.recipe}) succeeded:")
        _print_outputs(result, name)
    print(f"\nDagster instance: {instance.root_directory}  (make ui to browse the runs)")
    print(f"Outputs under: {config.locations.output}/<solution>/")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
