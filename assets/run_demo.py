"""``make demo``: materialize the whole graph once (FULL) on the demo dataset, recorded in
the Dagster instance under $DAGSTER_HOME so that ``make ui`` shows the run."""

from __future__ import annotations

import sys

import dagster as dg

from personalize_pipeline.locations import Location

from .definitions import defs
from .settings import settings


def main() -> int:
    instance = dg.DagsterInstance.get()
    job = defs.resolve_job_def("full_retrain")
    job_input = Location(settings()["locations"]["dataset"]).child("batch-input", "users.jsonl")
    run_config: dict = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}
    if job_input.exists():  # the demo generator writes a Personalize batch job input
        run_config["ops"] = {"batch_inference_output": {"config": {"input": job_input.url}}}
    result = job.execute_in_process(instance=instance, raise_on_error=False, run_config=run_config)
    if not result.success:
        for event in result.all_events:
            if event.is_failure or (event.event_type_value == "ASSET_CHECK_EVALUATION" and not event.event_specific_data.evaluation.passed):
                print(f"  {event.step_key or ''}: {event.message}", file=sys.stderr)
        print("demo run FAILED", file=sys.stderr)
        return 1
    print("\nDemo run succeeded:")
    for key in ("validated_interactions", "featurized_dataset", "solution_version", "solution_metrics", "batch_inference_output"):
        mats = result.asset_materializations_for_node(key)
        if not mats:
            continue
        md = mats[-1].metadata
        path = md.get("path") or md.get("solution_version_path")
        extra = ""
        if key == "solution_metrics":
            extra = "  precision_at_25=%.4f ndcg_at_10=%.4f" % (
                md["precision_at_25"].value,
                md["normalized_discounted_cumulative_gain_at_10"].value,
            )
        print(f"  {key:<24} {path.value if path else ''}{extra}")
    print(f"\nDagster instance: {instance.root_directory}  (make ui to browse the run)")
    print(f"Outputs under: {settings()['locations']['output']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
