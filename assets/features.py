"""The featurized dataset: event filters, history-length percentiles, id maps, metadata."""


import dagster as dg
import numpy as np

from personalize_pipeline.datasets import DatasetGroup, load_snapshot
from personalize_pipeline.features import featurize, fingerprint, save_features
from personalize_pipeline.measure import measured

from .metadata import CODE_VERSION, floats, location_of, retry_policy, step_failure_on_bad_input
from .plots import popularity_long_tail
from .resources import ArtifactStore, SolutionResource


@dg.asset(
    deps=["validated_interactions", "validated_items", "validated_users"],
    group_name="personalize",
    code_version=CODE_VERSION,
    retry_policy=retry_policy(),
    kinds={"pandas", "parquet"},
    description="Interactions as dense codes sorted by user and time, with encoded item/user/context metadata (Parquet).",
)
def featurized_dataset(context: dg.AssetExecutionContext, artifact_store: ArtifactStore, solution: SolutionResource) -> dg.MaterializeResult:
    s3 = artifact_store.s3.options()
    with measured() as stage:
        snapshots = {t: location_of(context, f"validated_{t}", s3) for t in ("interactions", "items", "users")}
        datasets = {t: load_snapshot(loc) if loc is not None else None for t, loc in snapshots.items()}
        if datasets["interactions"] is None:
            raise dg.Failure(description="validated_interactions has no snapshot", allow_retries=False)
        group = DatasetGroup(
            location=datasets["interactions"].source.rsplit("/", 1)[0],
            interactions=datasets["interactions"],
            items=datasets["items"],
            users=datasets["users"],
        )
        with step_failure_on_bad_input():
            features = featurize(group, solution.config().featurize_options())
        del group, datasets  # the string tables: only the codes are written
        location = save_features(features, artifact_store.features(solution.name, context.run_id))
    counts = features.info["counts"]
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(location.url),
            "dagster/row_count": features.n_interactions,
            **floats(counts, "count/"),
            **stage.as_dict(),
            "featurize_seconds": features.info["seconds"],
            "interactions_per_second": round(features.n_interactions / max(features.info["seconds"], 1e-9), 1),
            "options": dg.MetadataValue.json(features.info["options"]),
            "item_metadata_columns": ", ".join(c for c in features.items.columns if c != "ITEM_ID") or "none",
            "user_metadata_columns": ", ".join(c for c in features.users.columns if c != "USER_ID") or "none",
            "context_columns": ", ".join(features.info["context_columns"]) or "none",
            "popularity_long_tail": popularity_long_tail(np.bincount(features.interactions["item"].to_numpy(), minlength=features.n_items)),
        },
        data_version=dg.DataVersion(fingerprint(features)),
    )
