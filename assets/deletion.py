"""The ``delete_users`` job (Personalize's data deletion job): remove the users a deletion
file names from every file of the interactions and users datasets (local or S3, staged then
committed: ``personalize_pipeline.deletion``), and list the versions of every configured
solution that still hold them; with ``remove_versions: true`` those versions are deleted
(``latest`` moves to the newest remaining one). The next FULL of each solution trains
without them.

Run config: ``ops: delete_user_data: config: {users_file: ..., remove_versions: false}``.
The run's metadata shows counts, the versions and the record's path, never an id: the
record itself holds only salted hashes of the ids."""

import dagster as dg

from personalize_pipeline.deletion import delete_users, read_user_ids, remove_versions, versions_holding
from personalize_pipeline.locations import Location
from personalize_pipeline.measure import measured
from personalize_pipeline.store import INDEX

from .metadata import step_failure_on_bad_input
from .resources import ArtifactStore, DatasetSource


class DeleteUsersConfig(dg.Config):
    """``users_file``: CSV with the header USER_ID (local path or s3:// URL);
    ``remove_versions``: also delete the solution versions that hold those users."""

    users_file: str
    remove_versions: bool = False


def delete_users_job(solutions: list[str]) -> dg.JobDefinition:
    """The job for the configured solutions (their stores: ``<artifacts>/solutions/<name>``)."""

    @dg.op(
        name="delete_user_data",
        description=(
            "Delete the users of a deletion file from the dataset group; list (or remove) the solution versions "
            "holding them."
        ),
    )
    def delete_users_op(
        context: dg.OpExecutionContext,
        config: DeleteUsersConfig,
        dataset_source: DatasetSource,
        artifact_store: ArtifactStore,
    ) -> dg.Output[dict]:
        with measured() as stage, step_failure_on_bad_input():
            ids = read_user_ids(Location(config.users_file, dataset_source.s3.options()))
            context.log.info(f"deleting the rows of {len(ids)} users from {dataset_source.location}")
            record = delete_users(dataset_source.root(), ids)
            holding: dict[str, list[str]] = {}
            for name in solutions:
                store = artifact_store.solution(name)
                if not store.child(INDEX).exists():
                    continue  # never trained: nothing to check
                holding[name] = versions_holding(store, ids)
                if config.remove_versions and holding[name]:
                    remove_versions(store, holding[name])
                    context.log.info(f"removed {len(holding[name])} version(s) of {name}: {', '.join(holding[name])}")
                elif holding[name]:
                    context.log.warning(
                        f"{name}: {len(holding[name])} version(s) still hold these users "
                        f"({', '.join(holding[name])}); run with remove_versions: true to delete them"
                    )
        summary = {
            "record": record["record"],
            "users_requested": record["users_requested"],
            "rows_deleted": record["rows_deleted"],
            "files_changed": sum(1 for f in record["files"] if f["rows_deleted"]),
            "solution_versions_holding_users": holding,
            "solution_versions_removed": config.remove_versions,
        }
        context.log.info(f"deleted {sum(record['rows_deleted'].values())} rows; record {record['record']}")
        metadata = {
            "record": dg.MetadataValue.path(record["record"]),
            "users_requested": record["users_requested"],
            "interactions_rows_deleted": record["rows_deleted"]["interactions"],
            "users_rows_deleted": record["rows_deleted"]["users"],
            "files_changed": summary["files_changed"],
            "solution_versions_holding_users": dg.MetadataValue.json(holding),
            "solution_versions_removed": sum(len(v) for v in holding.values()) if config.remove_versions else 0,
            **stage.as_dict(),
        }
        return dg.Output(summary, metadata=metadata)

    @dg.job(
        name="delete_users",
        description=(
            "Data deletion: remove the users of a CSV (header USER_ID) from the interactions and users datasets, "
            "with a record that holds hashes only; list (remove_versions: remove) the solution versions that hold them."
        ),
    )
    def job():
        delete_users_op()

    return job
