"""Raw datasets (external, owned by whoever drops files) and their validated snapshots,
shared by every solution of the dataset group."""

import dagster as dg

from personalize_pipeline.dataset_profile import profile_markdown
from personalize_pipeline.datasets import read_one, save_snapshot
from personalize_pipeline.measure import measured

from .metadata import CODE_VERSION, column_schema, retry_policy, step_failure_on_bad_input
from .resources import ArtifactStore, DatasetSource

DATASET_TYPES = ("interactions", "items", "users")
DATASET_GROUP = "dataset_group"  # the validated datasets, shared by every solution
VALIDATED_KEYS = [dg.AssetKey(f"validated_{t}") for t in DATASET_TYPES]

raw_assets = [
    dg.AssetSpec(
        f"raw_{t}",
        description=f"The {t} file(s) of the dataset group, as delivered (CSV or Parquet, local or S3).",
        group_name="raw",
        kinds={"csv"},
    )
    for t in DATASET_TYPES
]


def _validated_asset(dataset_type: str):
    @dg.asset(
        name=f"validated_{dataset_type}",
        deps=[f"raw_{dataset_type}"],
        group_name=DATASET_GROUP,
        code_version=CODE_VERSION,
        retry_policy=retry_policy(),
        kinds={"pandas", "parquet"},
        description=(
            f"Snapshot of the {dataset_type} dataset as read, with its schema. The blocking Great "
            "Expectations check on it must pass before anything downstream runs."
        ),
    )
    def _asset(
        context: dg.AssetExecutionContext, dataset_source: DatasetSource, artifact_store: ArtifactStore
    ) -> dg.MaterializeResult:
        with measured() as stage:
            with step_failure_on_bad_input():
                dataset = read_one(dataset_source.root(), dataset_type)
            if dataset is not None:
                location = save_snapshot(dataset, artifact_store.validated(dataset_type, context.run.run_id))
        if dataset is None:
            if dataset_type == "interactions":
                raise dg.Failure(description="no interactions dataset found", allow_retries=False)
            return dg.MaterializeResult(
                metadata={"present": False, "source": dataset_source.location, **stage.as_dict()}
            )
        return dg.MaterializeResult(
            metadata={
                "present": True,
                "path": dg.MetadataValue.path(location.url),
                "source": dg.MetadataValue.path(dataset.source),
                "fingerprint": dataset.fingerprint,
                "schema_from_file": dataset.schema.from_file,
                "dagster/row_count": dataset.num_rows,
                "dagster/column_schema": column_schema(dataset),
                "profile": dg.MetadataValue.md(profile_markdown(dataset)),
                **stage.as_dict(),
            },
            data_version=dg.DataVersion(dataset.fingerprint),
        )

    return _asset


validated_assets = [_validated_asset(t) for t in DATASET_TYPES]
