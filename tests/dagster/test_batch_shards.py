"""Batch inference over input shards: the sensor adds one dynamic partition per new *.jsonl
shard and requests one run for it; each partition writes its own .out next to the others."""

import json

import dagster as dg
from pipeline_resources import key, pipeline_defs


def test_shards_become_partitions_and_outputs(demo_small, tmp_path):
    defs = pipeline_defs(demo_small, tmp_path / "artifacts", tmp_path / "output", batch_input=tmp_path / "shards")
    resources = defs.resources
    batch_job_shards = defs.resolve_sensor_def("demo__batch_job_shards")
    instance = dg.DagsterInstance.ephemeral()
    assert defs.resolve_job_def("demo__full_retrain").execute_in_process(instance=instance).success

    users = [
        json.loads(line)["userId"] for line in (demo_small / "batch-input" / "users.jsonl").read_text().splitlines()
    ]
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / "part-0.jsonl").write_text("".join(json.dumps({"userId": u}) + "\n" for u in users[:60]))
    (tmp_path / "shards" / "part-1.jsonl").write_text(
        "".join(json.dumps({"userId": u}) + "\n" for u in users[60:]) + "not json\n"
    )

    with dg.build_sensor_context(instance=instance, resources=resources) as context:
        result = batch_job_shards(context)
    assert sorted(r.partition_key for r in result.run_requests) == ["part-0.jsonl", "part-1.jsonl"]
    [add] = result.dynamic_partitions_requests
    assert sorted(add.partition_keys) == ["part-0.jsonl", "part-1.jsonl"]
    assert add.partitions_def_name == "demo__batch_input_shards"
    instance.add_dynamic_partitions(add.partitions_def_name, list(add.partition_keys))

    job = defs.resolve_job_def("demo__batch_jobs")
    for request in result.run_requests:
        assert dg.validate_run_config(job, request.run_config)
        assert job.execute_in_process(
            instance=instance, partition_key=request.partition_key, run_config=request.run_config
        ).success
    outputs = sorted((tmp_path / "output").glob("demo/*/jobs/*.out"))
    assert [p.name for p in outputs] == ["part-0.jsonl.out", "part-1.jsonl.out"]
    lines = [json.loads(x) for p in outputs for x in p.read_text().splitlines()]
    assert len(lines) == len(users) + 1
    assert sum(1 for x in lines if x["error"]) == 1  # the bad line is reported, the shard still finishes
    md = instance.get_latest_materialization_event(key("demo", "batch_job_output")).asset_materialization
    assert md.partition in ("part-0.jsonl", "part-1.jsonl") and md.metadata["lines"].value > 0

    # a second look with the cursor: nothing new; a changed shard runs again
    with dg.build_sensor_context(instance=instance, resources=resources, cursor=result.cursor) as context:
        assert isinstance(batch_job_shards(context), dg.SkipReason)
    (tmp_path / "shards" / "part-0.jsonl").write_text(json.dumps({"userId": users[0]}) + "\n")
    with dg.build_sensor_context(instance=instance, resources=resources, cursor=result.cursor) as context:
        again = batch_job_shards(context)
    assert [r.partition_key for r in again.run_requests] == ["part-0.jsonl"]


def test_each_solution_watches_its_own_shard_folder(tmp_path):
    from assets.batch_jobs import shard_files

    shards = tmp_path / "shards"
    for folder in ("popular", "foryou", "."):
        (shards / folder).mkdir(parents=True, exist_ok=True)
    (shards / "popular" / "a.jsonl").write_text('{"userId": "u1"}\n')
    (shards / "foryou" / "b.jsonl").write_text('{"userId": "u2"}\n')
    (shards / "loose.jsonl").write_text('{"userId": "u3"}\n')
    solutions = [{"name": "popular"}, {"name": "foryou"}]
    defs = pipeline_defs(tmp_path / "d", tmp_path / "a", tmp_path / "o", batch_input=shards, solutions=solutions)
    batch_inputs = defs.resources["batch_inputs"]
    assert list(shard_files(batch_inputs, "popular", only_solution=False)) == ["a.jsonl"]
    assert list(shard_files(batch_inputs, "foryou", only_solution=False)) == ["b.jsonl"]
    assert list(shard_files(batch_inputs, "popular", only_solution=True)) == [
        "a.jsonl",
        "loose.jsonl",
    ]  # the only solution also reads the root
    instance = dg.DagsterInstance.ephemeral()
    for name, shard in (("popular", "a.jsonl"), ("foryou", "b.jsonl")):
        with dg.build_sensor_context(instance=instance, resources=defs.resources) as context:
            result = defs.resolve_sensor_def(f"{name}__batch_job_shards")(context)
        [request] = result.run_requests
        assert request.partition_key == shard
        assert result.dynamic_partitions_requests[0].partitions_def_name == f"{name}__batch_input_shards"
        assert dg.validate_run_config(defs.resolve_job_def(f"{name}__batch_jobs"), request.run_config)
