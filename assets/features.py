"""The featurized dataset of one solution: its event filters, history-length percentiles,
id maps, metadata."""

import dagster as dg
import numpy as np

from personalize_pipeline.config import Solution
from personalize_pipeline.datasets import DatasetGroup, load_snapshot
from personalize_pipeline.features import featurize, fingerprint, save_features
from personalize_pipeline.measure import measured

from .datasets import DATASET_TYPES, VALIDATED_KEYS
from .metadata import CODE_VERSION, ReadsUpstream, floats, retry_policy, step_failure_on_bad_input, upstream_location
from .plots import popularity_long_tail
from .resources import ArtifactStore, training_config


def featurized_dataset_asset(solution: Solution) -> dg.AssetsDefinition:
    @dg.asset(
        name="featurized_dataset",
        key_prefix=[solution.name],
        deps=VALIDATED_KEYS,
        group_name=solution.name,
        code_version=CODE_VERSION,
        retry_policy=retry_policy(),
        kinds={"pandas", "parquet"},
        description=(
            f"Interactions of solution {solution.name} (its event filters) as dense codes sorted by user and time, "
            "with encoded item/user/context metadata (Parquet), from the validated snapshots of this run."
        ),
    )
    def _asset(
        context: dg.AssetExecutionContext, config: ReadsUpstream, artifact_store: ArtifactStore
    ) -> dg.MaterializeResult:
        s3 = artifact_store.s3.options()
        with measured() as stage:
            snapshots = {
                t: upstream_location(context, key, s3, config.upstream_paths)
                for t, key in zip(DATASET_TYPES, VALIDATED_KEYS, strict=True)
            }
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
                features = featurize(group, training_config(solution).featurize_options())
            del group, datasets  # the string tables: only the codes are written
            location = save_features(features, artifact_store.features(solution.name, context.run.run_id))
        counts = features.info["counts"]
        return dg.MaterializeResult(
            metadata={
                "path": dg.MetadataValue.path(location.url),
                "snapshots": dg.MetadataValue.json(
                    {t: (loc.url if loc is not None else None) for t, loc in snapshots.items()}
                ),
                "dagster/row_count": features.n_interactions,
                **floats(counts, "count/"),
                **stage.as_dict(),
                "featurize_seconds": features.info["seconds"],
                "interactions_per_second": round(features.n_interactions / max(features.info["seconds"], 1e-9), 1),
                "options": dg.MetadataValue.json(features.info["options"]),
                "item_metadata_columns": ", ".join(c for c in features.items.columns if c != "ITEM_ID") or "none",
                "user_metadata_columns": ", ".join(c for c in features.users.columns if c != "USER_ID") or "none",
                "context_columns": ", ".join(features.info["context_columns"]) or "none",
                "popularity_long_tail": popularity_long_tail(
                    np.bincount(features.interactions["item"].to_numpy(), minlength=features.n_items)
                ),
            },
            data_version=dg.DataVersion(fingerprint(features)),
        )

    return _asset
