"""The Dagster UI as a person sees it: a materialized demo pipeline served by
``dagster-webserver`` on a free local port, opened in headless Chromium (Debian's
``chromium``, installed here with apt-get when missing); the asset graph must show every
asset and the solution_metrics page the metrics with their baseline and plots.

Screenshots go to a temporary folder (``tools/ui_screenshots.py`` refreshes docs/). Skipped,
saying why, only when Chromium is absent and cannot be installed."""

import sys
from pathlib import Path

import dagster as dg
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import ui_screenshots  # noqa: E402
from pipeline_resources import pipeline_defs  # noqa: E402

ASSETS = (
    "validated_interactions",
    "validated_items",
    "validated_users",
    "featurized_dataset",
    "solution_version",
    "solution_metrics",
    "batch_inference_output",
)


@pytest.fixture(scope="module")
def chromium():
    found = ui_screenshots.ensure_chromium()
    if not found:
        pytest.skip("Debian's chromium is not installed and `apt-get install -y chromium` was not possible here")
    return found


def test_asset_graph_and_metrics_page_show_the_pipeline(chromium, demo_small, tmp_path, monkeypatch):
    env = ui_screenshots.ui_env(tmp_path / "ui", demo_small, "aws-popularity-count")
    defs = pipeline_defs(env["PERSONALIZE_DATASET"], env["PERSONALIZE_ARTIFACTS"], env["PERSONALIZE_OUTPUT"])
    monkeypatch.setenv("DAGSTER_HOME", env["DAGSTER_HOME"])
    instance = dg.DagsterInstance.get()
    try:
        for _ in range(2):  # two FULL versions: the second is compared with the first
            assert (
                defs.resolve_job_def("demo__full_retrain")
                .execute_in_process(instance=instance, raise_on_error=False)
                .success
            )
    finally:
        instance.dispose()

    shots = tmp_path / "shots"
    with ui_screenshots.webserver(env) as url:
        doms = ui_screenshots.capture(chromium, url, shots)

    graph, metrics = doms["asset-graph"], doms["solution-metrics"]
    for name in ASSETS:
        assert name in graph, f"{name} missing from the asset graph page"
    assert "Materialized" in graph and "Join the Dagster community" not in graph
    for key in (
        "precision_at_25",
        "normalized_discounted_cumulative_gain_at_10",
        "baseline/precision_at_25",
        "lift/precision_at_25",
        "metrics_by_k",
        "lift_over_popularity",
        "previous/comparison",
    ):
        assert key in metrics, f"{key} missing from the solution_metrics page"
    for name in ui_screenshots.PAGES:
        png = (shots / f"ui-{name}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
