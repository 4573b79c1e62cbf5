"""aws-hrnn vs RecBole's GRU4Rec and SASRec, same data, same split (run by hand, not in CI).

Setup once (RecBole lives in its OWN venv, never in the project's .venv / pyproject;
RecBole 1.2.1 calls ``np.float_`` & co. and needs numpy < 2)::

    python3 -m venv /tmp/recbole
    /tmp/recbole/bin/pip install recbole==1.2.1 torch==2.13.0 numpy==1.26.4 \\
        pandas==2.2.3 scipy==1.13.1 scikit-learn==1.5.2

Run (from the repository root; the script itself runs in the project's .venv and starts
RecBole as a subprocess of the RecBole venv, ``--recbole-python`` or $RECBOLE_PYTHON)::

    OMP_NUM_THREADS=1 PYTHONPATH=$PWD .venv/bin/python bench/recbole_compare.py
    # options: --threads 1 --datasets movielens-poc,movielens-poc-watch,movielens-poc-watch-dense
    #          --models aws-hrnn,GRU4Rec,SASRec --max-epochs 300 --stopping-step 10
    #          --max-train-seconds S   (cap RecBole's training time per model; 0 = none)
    #          --keep-data DIR   (keep the exported RecBole atomic files)
    #          --extra-dataset ml100k-watch=/path/to/ml100k:watch --datasets ml100k-watch

Writes bench/recbole_results.json (merged with what is already there, keyed by dataset and
model, so one model or dataset can be re-run alone) and prints a markdown table.

Protocol — identical on both sides, checked by construction:

- The data is featurized by OUR pipeline (``featurize`` with aws-hrnn's default history
  percentiles 0.0 / 0.99, eventType as the variant says), then users with fewer than 4
  events are dropped, so that RecBole's leave-one-out (which, for sequential models,
  splits each user's *augmented* prefix→next rows: a user with n events has n-1 rows, the
  last goes to test, the one before to validation, and users with n < 4 get no validation
  and n = 2 no test row at all) and our ``leave_last_out_split`` (last event = test, the one
  before = validation, the rest = training) give every user the same test event, the same
  test input (every earlier event) and the same training events (the first n-2). Each
  RecBole row records ``same_test_and_validation_events``: its test and validation (user,
  item) pairs compared with ours.
- Those exact events are written as RecBole atomic files: ``<name>.inter`` with
  ``user_id:token item_id:token timestamp:float``, where the timestamp is the event's rank
  in our (user, TIMESTAMP) stable order — so RecBole's sort by (user, time) reproduces our
  order exactly, ties in TIMESTAMP in file order — and ``<name>.item`` with every item of
  our catalogue, so both sides rank over the same full item set.
- RecBole: ``eval_args = {split: {LS: valid_and_test}, order: TO, group_by: user, mode:
  full}``, metrics NDCG / Hit / MRR @10, early stopping on validation NDCG@10. For
  sequential models RecBole's full-sort evaluation does NOT mask the user's history
  (``FullSortEvalDataLoader.collate_fn`` returns ``None`` for it), matching our default
  ``exclude_seen=False``.
- RecBole hyper-parameters are its shipped defaults for these models (overall.yaml,
  model/GRU4Rec.yaml, model/SASRec.yaml): embedding 64 (GRU4Rec hidden 128, dropout 0.3;
  SASRec 2 layers, 2 heads, inner 256, dropout 0.5), CE loss over the full catalogue
  (``train_neg_sample_args: None``), Adam lr 0.001, train_batch_size 2048,
  MAX_ITEM_LIST_LENGTH 50, up to 300 epochs with stopping_step 10, seed 2020.
- aws-hrnn: its defaults, via ``personalize_pipeline.metrics.evaluate(...,
  protocol="leave-last-out")`` (popularity from the same call as the baseline).
- CPU only, the same ``torch.set_num_threads(--threads)`` and OMP_NUM_THREADS on both sides.

Throughput: ``train_events`` is the number of training events of the split (the same on both
sides); ``train_s`` is the time spent in training epochs only (RecBole's ``_train_epoch``
calls; RecBole's per-epoch validation is reported apart as ``fit_s``, the whole
``trainer.fit``); ``events_x_epochs_per_s`` = train_events x epochs / train_s
is the speed of one pass over the data (= train_events / seconds_per_epoch), and
``events_per_train_s`` = train_events / train_s is the speed of the whole training (what
one waits for: it also counts how many epochs each model needs). For aws-hrnn ``train_s`` is ``model.fit``'s wall time
(it trains a fixed number of epochs, no validation).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "data"
RESULTS = HERE / "recbole_results.json"
MIN_USER_EVENTS = 4  # below this RecBole's leave-one-out and ours hold out different events
DENSE_MIN_ITEM_EVENTS = 20

# name -> (source folder, eventType filter, minimum events per item)
DATASETS = {
    "movielens-poc": ("movielens-poc", None, 0),
    "movielens-poc-watch": ("movielens-poc", "watch", 0),
    # ML-1M-like (denser, smaller catalogue): the watch events of the movies with 20+ watch
    # events, catalogue = those movies (no Items file); built from the local file only
    "movielens-poc-watch-dense": ("movielens-poc", "watch", DENSE_MIN_ITEM_EVENTS),
}
RECBOLE_MODELS = ("GRU4Rec", "SASRec")
OURS = "aws-hrnn"
KEYS = {
    "ndcg@10": "normalized_discounted_cumulative_gain_at_10",
    "hit@10": "hit_rate_at_10",
    "mrr@10": "mean_reciprocal_rank_at_10",
}


# --------------------------------------------------------------------------------------------
# our side (project .venv)
# --------------------------------------------------------------------------------------------
def derive_dense(folder: str, event_type: str | None, min_item_events: int, root: Path) -> Path:
    """A dataset group of the events (of ``event_type``) of the items with ``min_item_events``+
    such events, without the Items file: its catalogue is those items only."""
    import pandas as pd

    df = pd.read_csv(SHARED / folder / "interactions.csv", dtype=str, keep_default_na=False)
    if event_type is not None:
        df = df[df["EVENT_TYPE"] == event_type]
    counts = df["ITEM_ID"].map(df["ITEM_ID"].value_counts())
    out = root / "_derived" / f"{folder}-{event_type or 'all'}-items{min_item_events}"
    out.mkdir(parents=True, exist_ok=True)
    df[counts >= min_item_events].to_csv(out / "interactions.csv", index=False)
    return out


def prepare(name: str, root: Path):
    """Our Features for the variant, restricted to users with MIN_USER_EVENTS+ events."""
    import numpy as np

    from personalize_pipeline.datasets import read_dataset_group
    from personalize_pipeline.features import FeaturizeOptions, featurize
    from personalize_pipeline.recipes import HRNN

    folder, event_type, min_item_events = DATASETS[name]
    source = derive_dense(folder, event_type, min_item_events, root) if min_item_events else SHARED / folder
    hp = HRNN.resolve_hyperparameters({})
    options = FeaturizeOptions(
        event_type=event_type,
        min_user_history_length_percentile=hp["min_user_history_length_percentile"],
        max_user_history_length_percentile=hp["max_user_history_length_percentile"],
    )
    features = featurize(read_dataset_group(source), options)
    inter = features.interactions
    lengths = np.bincount(inter["user"].to_numpy(), minlength=features.n_users)
    dropped_users = int(((lengths > 0) & (lengths < MIN_USER_EVENTS)).sum())
    inter = inter[lengths[inter["user"].to_numpy()] >= MIN_USER_EVENTS]
    features = features.with_interactions(inter)
    lengths = np.bincount(inter["user"].to_numpy(), minlength=features.n_users)
    active = lengths[lengths > 0]
    info = {
        "events": int(len(inter)),
        "users": int(len(active)),
        "items_with_events": int((np.bincount(inter["item"].to_numpy(), minlength=features.n_items) > 0).sum()),
        "catalogue_items": int(features.n_items),
        "median_events_per_user": float(np.median(active)),
        "users_dropped_below_4_events": dropped_users,
        "train_events": int((active - 2).sum()),
        "test_users": int(len(active)),
    }
    return features, info


def export_atomic(features, name: str, root: Path) -> Path:
    """RecBole atomic files <root>/<name>/<name>.inter and .item; timestamp = rank in our order."""
    import numpy as np

    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    inter = features.interactions  # sorted by (user, TIMESTAMP), ties in file order
    users = features.user_ids[inter["user"].to_numpy()]
    items = features.item_ids[inter["item"].to_numpy()]
    rank = np.arange(len(inter), dtype=np.int64)
    with open(folder / f"{name}.inter", "w") as fh:
        fh.write("user_id:token\titem_id:token\ttimestamp:float\n")
        fh.writelines(f"{u}\t{i}\t{t}\n" for u, i, t in zip(users, items, rank, strict=True))
    with open(folder / f"{name}.item", "w") as fh:
        fh.write("item_id:token\n")
        fh.writelines(f"{i}\n" for i in features.item_ids)
    return folder


def run_ours(features, threads: int) -> dict:
    import torch

    from personalize_pipeline.metrics import evaluate
    from personalize_pipeline.recipes import HRNN

    torch.set_num_threads(threads)

    class Recorded(HRNN):  # the same recipe; keeps the fitted instance for its training stats
        last = None

        def fit(self, *args, **kwargs):
            Recorded.last = self
            return super().fit(*args, **kwargs)

    start = time.perf_counter()
    result = evaluate(features, Recorded, {}, protocol="leave-last-out", with_baseline=True)
    stats = Recorded.last.training_stats()
    epochs = int(stats.get("epochs_run") or 0)
    out = {
        "model": OURS,
        **{k: round(result.metrics[v], 4) for k, v in KEYS.items()},
        "popularity": {k: round(result.baseline[v], 4) for k, v in KEYS.items()},
        "test_users": result.test_users,
        "train_events": result.train_events,
        "epochs": epochs,
        "stopped_by": "fixed epoch schedule (no validation)",
        "train_s": round(result.train_seconds, 2),
        "seconds_per_epoch": stats.get("seconds_per_epoch"),
        "total_s": round(time.perf_counter() - start, 1),
    }
    return _throughput(out)


def _throughput(row: dict) -> dict:
    row.pop("events_per_s_epoch", None)
    if row.get("epochs") and row.get("train_s"):
        # per pass over the data, and for the whole training (what a user waits for)
        row["events_x_epochs_per_s"] = round(row["train_events"] * row["epochs"] / row["train_s"], 1)
        row["events_per_train_s"] = round(row["train_events"] / row["train_s"], 1)
    return row


def run_recbole(model: str, data_root: Path, name: str, args) -> dict:
    out = data_root / f"{name}.{model}.json"
    cmd = [
        args.recbole_python,
        str(Path(__file__).resolve()),
        "--recbole-worker",
        "--model",
        model,
        "--data-root",
        str(data_root),
        "--dataset",
        name,
        "--threads",
        str(args.threads),
        "--max-epochs",
        str(args.max_epochs),
        "--stopping-step",
        str(args.stopping_step),
        "--max-train-seconds",
        str(args.max_train_seconds),
        "--out",
        str(out),
    ]
    # RecBole reloads its own best checkpoint with torch.load, which torch >= 2.6 refuses
    # without weights_only=False; the file is the one this run just wrote
    env = dict(
        os.environ,
        OMP_NUM_THREADS=str(args.threads),
        MKL_NUM_THREADS=str(args.threads),
        TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1",
    )
    env.pop("PYTHONPATH", None)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, cwd=str(data_root))
    row = json.loads(out.read_text())
    row["total_s"] = round(time.perf_counter() - start, 1)
    return _throughput(row)


def _pairs_hash(users: list, items: list) -> str:
    """Order-free fingerprint of (user id, item id) pairs, the same on both sides."""
    import hashlib

    return hashlib.sha1("\n".join(sorted(f"{u}\t{i}" for u, i in zip(users, items, strict=True))).encode()).hexdigest()


def split_hashes(features) -> dict:
    from personalize_pipeline.metrics import leave_last_out_split

    out = {}
    for stage in ("test", "validation"):
        s = leave_last_out_split(features, stage)
        out[stage] = _pairs_hash(features.user_ids[s.test_users].tolist(), features.item_ids[s.truth_items].tolist())
    return out


# --------------------------------------------------------------------------------------------
# RecBole side (runs in the RecBole venv; imports nothing from the project)
# --------------------------------------------------------------------------------------------
def recbole_worker(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, get_trainer, init_seed

    config_dict = {
        "data_path": args.data_root,
        "checkpoint_dir": os.path.join(args.data_root, "saved"),
        "use_gpu": False,
        "worker": 0,
        "show_progress": False,
        "USER_ID_FIELD": "user_id",
        "ITEM_ID_FIELD": "item_id",
        "TIME_FIELD": "timestamp",
        "load_col": {"inter": ["user_id", "item_id", "timestamp"], "item": ["item_id"]},
        "user_inter_num_interval": "[0,inf)",
        "item_inter_num_interval": "[0,inf)",
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "full"},
        "metrics": ["NDCG", "Hit", "MRR"],
        "topk": [10],
        "valid_metric": "NDCG@10",
        "train_neg_sample_args": None,
        "loss_type": "CE",
        "epochs": args.max_epochs,
        "stopping_step": args.stopping_step,
    }
    config = Config(model=args.model, dataset=args.dataset, config_dict=config_dict)
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    init_seed(config["seed"], config["reproducibility"])
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)

    epoch_seconds: list[float] = []
    train_epoch, valid_epoch = trainer._train_epoch, trainer._valid_epoch

    class OutOfBudget(Exception):
        pass

    def timed_train(*a, **k):
        # checked at the start of the next epoch, so the last validated epoch's checkpoint is saved
        if args.max_train_seconds and sum(epoch_seconds) >= args.max_train_seconds:
            raise OutOfBudget
        t = time.perf_counter()
        loss = train_epoch(*a, **k)
        epoch_seconds.append(time.perf_counter() - t)
        print(
            f"[{args.model} {args.dataset}] epoch {len(epoch_seconds)} loss {float(loss):.4f} {epoch_seconds[-1]:.1f}s",
            file=sys.stderr,
            flush=True,
        )
        return loss

    def logged_valid(*a, **k):
        score, result = valid_epoch(*a, **k)
        print(f"[{args.model} {args.dataset}]   valid {dict(result)}", file=sys.stderr, flush=True)
        return score, result

    trainer._train_epoch, trainer._valid_epoch = timed_train, logged_valid
    start = time.perf_counter()
    capped = False
    try:
        trainer.fit(train_data, valid_data, saved=True, show_progress=False)
    except OutOfBudget:
        capped = True
    fit_s = time.perf_counter() - start
    early_stopped = not capped and len(epoch_seconds) < args.max_epochs
    test = trainer.evaluate(test_data, load_best_model=True, show_progress=False)
    split_hashes = {
        stage: _pairs_hash(
            dataset.id2token(config["USER_ID_FIELD"], d.inter_feat[config["USER_ID_FIELD"]].numpy()).tolist(),
            dataset.id2token(config["ITEM_ID_FIELD"], d.inter_feat[config["ITEM_ID_FIELD"]].numpy()).tolist(),
        )
        for stage, d in (("test", test_data._dataset), ("validation", valid_data._dataset))
    }
    train_ds = train_data._dataset
    users = train_ds.inter_feat[config["USER_ID_FIELD"]].numpy()
    row = {
        "model": args.model,
        "ndcg@10": round(float(test["ndcg@10"]), 4),
        "hit@10": round(float(test["hit@10"]), 4),
        "mrr@10": round(float(test["mrr@10"]), 4),
        "valid_ndcg@10": round(float(trainer.best_valid_result["ndcg@10"]), 4),
        "test_users": len(test_data._dataset),
        # training events of the split = training prefix rows + one first event per user
        "train_events": int(len(train_ds) + len(set(users.tolist()))),
        "train_examples": int(len(train_ds)),
        "epochs": len(epoch_seconds),
        "best_epoch": len(epoch_seconds) - int(trainer.cur_step),  # cur_step = epochs since the best
        "stopped_by": "early stopping" if early_stopped else ("--max-train-seconds" if capped else "--max-epochs"),
        "train_s": round(sum(epoch_seconds), 2),
        "seconds_per_epoch": round(sum(epoch_seconds) / max(1, len(epoch_seconds)), 3),
        "fit_s": round(fit_s, 2),
        "n_items": int(dataset.item_num - 1),
        "threads": torch.get_num_threads(),
        "split_hashes": split_hashes,
    }
    Path(args.out).write_text(json.dumps(row))


# --------------------------------------------------------------------------------------------
def versions(recbole_python: str) -> dict:
    import numpy
    import pandas
    import torch

    code = (
        "import recbole, torch, numpy, pandas, scipy; print(recbole.__version__, torch.__version__, "
        "numpy.__version__, pandas.__version__, scipy.__version__)"
    )
    try:
        rb = subprocess.run([recbole_python, "-c", code], check=True, capture_output=True, text=True).stdout.split()
        recbole = dict(zip(("recbole", "torch", "numpy", "pandas", "scipy"), rb, strict=True))
    except (OSError, subprocess.CalledProcessError) as exc:
        recbole = {"error": str(exc)}
    return {
        "ours": {"torch": torch.__version__, "numpy": numpy.__version__, "pandas": pandas.__version__},
        "recbole_venv": recbole,
    }


def table(results: dict) -> str:
    cols = [
        "dataset",
        "model",
        "ndcg@10",
        "hit@10",
        "mrr@10",
        "epochs",
        "stopped_by",
        "train_s",
        "seconds_per_epoch",
        "events_x_epochs_per_s",
        "events_per_train_s",
        "train_events",
        "test_users",
    ]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for ds, block in results.get("datasets", {}).items():
        for model, row in block.get("models", {}).items():
            lines.append(
                "| " + " | ".join(str({"dataset": ds, "model": model}.get(c, row.get(c, ""))) for c in cols) + " |"
            )
        pop = block.get("models", {}).get(OURS, {}).get("popularity")
        if pop:
            lines.append(
                "| "
                + " | ".join(
                    [ds, "popularity", str(pop["ndcg@10"]), str(pop["hit@10"]), str(pop["mrr@10"])]
                    + [""] * (len(cols) - 5)
                )
                + " |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--datasets", default=",".join(DATASETS))
    p.add_argument(
        "--extra-dataset",
        action="append",
        default=[],
        metavar="NAME=FOLDER[:EVENT_TYPE]",
        help=(
            "another dataset group in the Personalize format (e.g. MovieLens 100k converted like the POC data); add "
            "NAME to --datasets"
        ),
    )
    p.add_argument("--models", default=",".join((OURS, *RECBOLE_MODELS)))
    p.add_argument("--max-epochs", type=int, default=300)
    p.add_argument("--stopping-step", type=int, default=10)
    p.add_argument(
        "--max-train-seconds",
        type=float,
        default=0.0,
        help="RecBole: stop after the first epoch that ends past this many training seconds (0 = no cap)",
    )
    p.add_argument("--recbole-python", default=os.environ.get("RECBOLE_PYTHON", "/tmp/recbole/bin/python"))
    p.add_argument("--keep-data", default=None, help="folder for the atomic files (default: a temporary folder)")
    p.add_argument("--results", default=str(RESULTS))
    # worker mode (RecBole venv)
    p.add_argument("--recbole-worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--data-root", help=argparse.SUPPRESS)
    p.add_argument("--dataset", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.recbole_worker:
        recbole_worker(args)
        return 0

    for spec in args.extra_dataset:
        name, _, source = spec.partition("=")
        folder, _, event_type = source.partition(":")
        if not name or not folder:
            print(f"--extra-dataset {spec!r}: expected NAME=FOLDER[:EVENT_TYPE]", file=sys.stderr)
            return 2
        DATASETS[name] = (str(Path(folder).resolve()), event_type or None, 0)
    names = [n for n in args.datasets.split(",") if n]
    models = [m for m in args.models.split(",") if m]
    unknown = [n for n in names if n not in DATASETS] + [m for m in models if m not in (OURS, *RECBOLE_MODELS)]
    if unknown:
        print(f"unknown dataset or model: {', '.join(unknown)}", file=sys.stderr)
        return 2
    path = Path(args.results)
    results = json.loads(path.read_text()) if path.exists() else {}
    results.update(
        {
            "command": "OMP_NUM_THREADS=1 PYTHONPATH=$PWD .venv/bin/python bench/recbole_compare.py "
            + " ".join(sys.argv[1:] if argv is None else argv),
            "threads": args.threads,
            "versions": versions(args.recbole_python),
            "protocol": (
                "leave-last-out / RecBole LS valid_and_test + TO, full ranking over the catalogue, seen items not "
                "excluded, users with 4+ events"
            ),
        }
    )
    results.setdefault("datasets", {})
    for block in results["datasets"].values():
        for row in block.get("models", {}).values():
            _throughput(row)
    tmp = tempfile.TemporaryDirectory() if args.keep_data is None else None
    root = Path(tmp.name if tmp else args.keep_data).resolve()
    root.mkdir(parents=True, exist_ok=True)
    try:
        for name in names:
            features, info = prepare(name, root)
            export_atomic(features, name, root)
            block = results["datasets"].setdefault(name, {})
            ours_hashes = split_hashes(features)
            block["data"] = info
            block.pop("command", None)
            block.setdefault("models", {})
            print(f"== {name}: {json.dumps(info)}", file=sys.stderr, flush=True)
            for model in models:
                row = run_ours(features, args.threads) if model == OURS else run_recbole(model, root, name, args)
                if "split_hashes" in row:  # RecBole's test and validation (user, item) pairs = ours
                    row["same_test_and_validation_events"] = row.pop("split_hashes") == ours_hashes
                row["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                row["command"] = results["command"]
                block["models"][model] = row
                print(json.dumps({"dataset": name, **row}), file=sys.stderr, flush=True)
                path.write_text(json.dumps(results, indent=2) + "\n")
    finally:
        if tmp:
            tmp.cleanup()
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
