"""Look at the Dagster UI as a person would: materialize the demo pipeline into a fresh
DAGSTER_HOME, start ``dagster-webserver`` on a free local port, open the asset graph and
the solution_metrics materialization page in headless Chromium (Debian's ``chromium``),
save screenshots and return the rendered DOM of each page.

    .venv/bin/python tools/ui_screenshots.py [--out docs] [--recipe aws-popularity-count]

tests/dagster/test_ui_screenshots.py runs the same steps and checks what the pages show.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = {
    # name: (path, window size)
    "asset-graph": ("/locations/assets.definitions/asset-groups/demo", "1600,800"),
    "solution-metrics": ("/assets/demo/solution_metrics", "1400,2600"),
}


def ensure_chromium() -> str | None:
    """The chromium binary; installs Debian's package when missing and we may (root + apt)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found or not shutil.which("apt-get") or os.geteuid() != 0:
        return found
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], env=env, capture_output=True, timeout=900)
    if not shutil.which("chromium"):
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=900)
        subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], env=env, capture_output=True, timeout=900)
    return shutil.which("chromium")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ui_env(workdir: Path, dataset: Path, recipe: str = "aws-popularity-count") -> dict[str, str]:
    """The environment of the webserver (and of the demo run): a fresh DAGSTER_HOME, a
    config naming ``recipe``, the dataset and artifact locations under ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    home = workdir / "dagster_home"
    home.mkdir(exist_ok=True)
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    config = workdir / "personalize.yaml"
    config.write_text(f"solutions: [{{name: demo, recipe: {recipe}}}]\n")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "PERSONALIZE_CONFIG": str(config),
        "PERSONALIZE_DATASET": str(dataset),
        "PERSONALIZE_ARTIFACTS": str(workdir / "artifacts"),
        "PERSONALIZE_OUTPUT": str(workdir / "output"),
        "DAGSTER_DISABLE_TELEMETRY": "1",
        "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    return env


def prepare_home(
    workdir: Path, recipe: str = "aws-popularity-count", users: int = 300, items: int = 200, interactions: int = 6000
) -> dict[str, str]:
    """Demo data and one demo__full_retrain run (``python -m assets.run_demo``) recorded in a
    fresh DAGSTER_HOME under ``workdir``. Returns the environment for the webserver."""
    env = ui_env(workdir, workdir / "demo", recipe)
    py = sys.executable
    subprocess.run(
        [
            py,
            "-m",
            "personalize_pipeline.cli",
            "demo-data",
            "--out",
            env["PERSONALIZE_DATASET"],
            "--users",
            str(users),
            "--items",
            str(items),
            "--interactions",
            str(interactions),
        ],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    demo = subprocess.run([py, "-m", "assets.run_demo"], env=env, cwd=ROOT, capture_output=True, text=True)
    if demo.returncode != 0:
        raise RuntimeError(f"demo run failed: {demo.stderr[-2000:]}")
    return env


@contextlib.contextmanager
def webserver(env: dict[str, str], port: int | None = None, timeout: float = 90.0) -> Iterator[str]:
    """``dagster-webserver`` on 127.0.0.1:port serving assets.definitions; yields its URL."""
    port = port or free_port()
    exe = Path(sys.executable).with_name("dagster-webserver")
    cmd = [
        str(exe) if exe.exists() else "dagster-webserver",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "-m",
        "assets.definitions",
    ]
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"dagster-webserver exited: {log.read()[-2000:].decode(errors='replace')}")
            try:
                with urllib.request.urlopen(url + "/server_info", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("dagster-webserver did not answer in time")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _chromium(chromium: str, *args: str, timeout: float = 90.0) -> str:
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    try:
        cmd = [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=20000",
            "--run-all-compositor-stages-before-draw",
            *args,
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        return done.stdout
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def dismiss_welcome(url: str) -> None:
    """Mark the webserver's "Join the Dagster community" dialog as seen (the UI's own
    ``setNuxSeen`` mutation), so that it does not cover the screenshots."""
    import json

    body = json.dumps({"query": "mutation { setNuxSeen }"}).encode()
    req = urllib.request.Request(url + "/graphql", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        resp.read()


def capture(chromium: str, url: str, out_dir: Path) -> dict[str, str]:
    """Screenshot (``out_dir/ui-<page>.png``) and rendered DOM of every page in PAGES."""
    out_dir.mkdir(parents=True, exist_ok=True)
    dismiss_welcome(url)
    doms = {}
    for name, (path, size) in PAGES.items():  # one browser run per page: screenshot and DOM
        doms[name] = _chromium(
            chromium, f"--window-size={size}", f"--screenshot={out_dir / f'ui-{name}.png'}", "--dump-dom", url + path
        )
    return doms


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs"))
    parser.add_argument("--recipe", default="aws-popularity-count")
    args = parser.parse_args(argv)
    chromium = ensure_chromium()
    if not chromium:
        print("chromium is not installed and could not be installed (apt-get install chromium)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        env = prepare_home(Path(tmp), args.recipe)
        with webserver(env) as url:
            doms = capture(chromium, url, Path(args.out))
    for name, dom in doms.items():
        print(f"{name}: {len(dom)} characters of DOM, screenshot {Path(args.out) / f'ui-{name}.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
