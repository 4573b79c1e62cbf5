"""The ``personalize-pipeline`` command line (the contract in DESIGN.md).

Results go to stdout, progress to stderr. Bad input gives one line on stderr and exit
code 2, never a traceback (set PERSONALIZE_DEBUG=1 to see one for internal errors).
Progress lines are printed once a command has succeeded, so that a failure at any stage
is that one line; PERSONALIZE_PROGRESS=1 prints them as they happen. Output locations
are checked (writable, bucket reachable with the credentials) before any data is read.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from .errors import InputError

# Arrow's default allocator (mimalloc) and torch in one process make the interpreter abort
# at exit ("terminate called without an active exception", exit code 134) in about half of
# the runs after a failed Parquet decode, so a corrupt file would not give exit code 2. The
# system allocator has no such problem and reads as fast here; it must be chosen before
# pyarrow is first imported.
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _progress(notes: list[str], msg: str) -> None:
    """A progress line: kept until the command succeeds (so that a failure is exactly one
    line on stderr), or printed at once with PERSONALIZE_PROGRESS=1 (long trainings)."""
    if os.environ.get("PERSONALIZE_PROGRESS"):
        _log(msg)
    else:
        notes.append(msg)


def _hyperparameters(pairs: Sequence[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--hp {pair!r}: expected KEY=VALUE")
        out[key.strip()] = value.strip()
    return out


def _solution_config(args) -> Any:
    from .training import SolutionConfig

    config = SolutionConfig(
        recipe=args.recipe,
        hyperparameters=_hyperparameters(args.hp),
        event_type=getattr(args, "event_type", None),
        event_value_threshold=getattr(args, "event_value_threshold", None),
    )
    config.resolved_hyperparameters()  # reject unknown names / bad values before reading data
    return config


def _train_config(args) -> Any:
    """The solution config of ``train``: a CreateSolution file (``--solution-config``), then
    the flags on top of it (``--recipe``, ``--hp``, event filters, ``--hpo N``, ``--automl``)."""
    from .create_solution import MAX_TRAINING_JOBS, AutoMLConfig, HPOConfig, read_solution_config
    from .recipes import get_recipe, recipe_name
    from .training import SolutionConfig

    kwargs: dict[str, Any] = (
        read_solution_config(args.solution_config) if args.solution_config else {"hyperparameters": {}}
    )
    if args.automl and kwargs.get("recipe"):
        raise InputError(f"--automl chooses the recipe: {args.solution_config} gives recipeArn; give one or the other")
    automl_candidate = None
    if args.recipe is not None:
        if args.automl or kwargs.get("perform_automl"):
            automl_candidate = recipe_name(args.recipe)  # AutoML chooses; --recipe joins the candidates
            get_recipe(automl_candidate)
        else:
            kwargs["recipe"] = args.recipe
    kwargs["hyperparameters"] = {**kwargs.get("hyperparameters", {}), **_hyperparameters(args.hp)}
    if args.event_type is not None:
        kwargs["event_type"] = args.event_type
    if args.event_value_threshold is not None:
        kwargs["event_value_threshold"] = args.event_value_threshold
    if args.hpo is not None:
        if not 1 <= args.hpo <= MAX_TRAINING_JOBS:
            raise InputError(
                f"--hpo N: the number of training jobs must be between 1 and {MAX_TRAINING_JOBS}, got {args.hpo}"
            )
        kwargs["perform_hpo"] = True
        kwargs["hpo"] = kwargs.get("hpo") or HPOConfig()
        kwargs["hpo"].max_training_jobs = args.hpo
    if args.automl:
        kwargs["perform_automl"] = True
        kwargs["automl"] = kwargs.get("automl") or AutoMLConfig()
    if automl_candidate is not None:
        kwargs["automl"] = kwargs.get("automl") or AutoMLConfig()
        kwargs["automl"].include.append(automl_candidate)
    if not kwargs.get("perform_automl") and kwargs.get("recipe") is None:
        raise InputError(
            "train needs --recipe NAME, --automl, or --solution-config FILE with recipeArn or performAutoML"
        )
    config = SolutionConfig(**kwargs)
    config.resolved_hyperparameters()  # unknown names / bad values / bad ranges before reading data
    return config


def _failure_line(report) -> str:
    first = report.failures[0].message()
    more = (
        f" (and {len(report.failures) - 1} more; run validate for the full report)" if len(report.failures) > 1 else ""
    )
    return f"validation failed: {first}{more}"


def _load_valid(dataset: str, validate_first: bool = True, notes: list[str] | None = None):
    """Read (and validate) a dataset group. Progress lines go to ``notes`` (the caller logs
    them once the command has succeeded, so that a failure gives exactly one line)."""
    from .datasets import read_dataset_group
    from .measure import release_memory
    from .validation import validate

    notes = [] if notes is None else notes
    t = time.perf_counter()
    group = read_dataset_group(dataset)
    _progress(
        notes,
        f"read {dataset}: "
        + ", ".join(f"{d.dataset_type} {d.num_rows} rows" for d in group.datasets())
        + f" ({time.perf_counter() - t:.1f}s)",
    )
    if validate_first:
        report = validate(group)
        if not report.success:
            raise InputError(_failure_line(report))
        _progress(notes, report.summary())
        del report
        release_memory()  # what validation freed goes back to the OS before featurization allocates
    return group


def _check_writable(location: str, option: str) -> None:
    """Fail now, before any data is read or progress logged, when ``location`` cannot take
    output: a file is in the way, a folder cannot be created or written, the S3 bucket does
    not exist or the credentials are refused. Leaves nothing behind."""
    import uuid

    from .locations import as_location

    loc = as_location(location)
    if loc.exists() and not loc.is_dir():
        raise InputError(f"{loc.url}: {option} is a file, not a folder")
    if loc.is_s3:
        loc.makedirs()  # checks the bucket (and so the endpoint and credentials)
        loc.listdir()
        return
    missing = []
    path = loc.path
    while not os.path.isdir(path):  # the folders that would be created, deepest first
        if os.path.lexists(path):
            raise InputError(f"{loc.url}: {option}: {path} is a file, not a folder")
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    probe = os.path.join(loc.path, f".write-test-{uuid.uuid4().hex[:8]}")
    try:
        os.makedirs(loc.path, exist_ok=True)
        with open(probe, "wb") as fh:
            fh.write(b"x")
        os.remove(probe)
    except OSError as exc:
        raise InputError(f"{loc.url}: {option} is not writable ({exc.strerror or exc})") from None
    finally:
        for folder in missing:  # created only to test: remove again
            try:
                os.rmdir(folder)
            except OSError:
                pass


def _check_solution_out(out: str) -> None:
    from .store import read_index

    _check_writable(out, "--out")
    read_index(out)  # an existing solution index must be readable before training into it


def _check_update_base(base: str, config) -> None:
    """The checks ``train`` makes for UPDATE, before any data is read or progress logged."""
    from .store import read_manifest, resolve_version

    try:
        version = resolve_version(base, full_only=True)
        manifest = read_manifest(version)
    except InputError as exc:
        raise InputError(f"UPDATE needs a FULL solution version to start from: {exc}") from None
    name = config.recipe_class().name
    if manifest.get("recipe") != name:
        raise InputError(
            f"UPDATE with recipe {name} cannot start from {version.url}, which was trained with "
            f"{manifest.get('recipe')}"
        )


def cmd_demo_data(args) -> int:
    from .demo_data import DemoSpec, generate

    defaults = DemoSpec()
    spec = DemoSpec(
        users=args.users or defaults.users,
        items=args.items or defaults.items,
        interactions=args.interactions or defaults.interactions,
        seed=defaults.seed if args.seed is None else args.seed,
    )
    try:
        spec.validate()
    except ValueError as exc:
        raise InputError(f"demo-data: {exc}") from None
    _check_writable(args.out, "--out")
    try:
        summary = generate(args.out, spec)
    except OSError as exc:
        raise InputError(f"{args.out}: cannot write the demo dataset ({exc.strerror or exc})") from None
    print(json.dumps(summary, default=str))
    return 0


def cmd_validate(args) -> int:
    from .datasets import read_dataset_group
    from .validation import validate

    report = validate(read_dataset_group(args.dataset))
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        print(report.to_text())
    if not report.success:
        _log(f"error: {_failure_line(report)}")
        return 2
    return 0


def cmd_train(args) -> int:
    from .features import featurize
    from .training import describe, train

    if args.training_mode == "UPDATE" and not args.base:
        raise InputError("--training-mode UPDATE needs --base SOLUTION (a solution with a FULL version)")
    config = _train_config(args)
    if args.training_mode == "UPDATE" and (config.perform_hpo or config.perform_automl):
        raise InputError(
            "HPO and AutoML choose a model for FULL training; an UPDATE keeps the FULL version's recipe and "
            "hyperparameters"
        )
    _check_solution_out(args.out)
    if args.training_mode == "UPDATE":
        _check_update_base(args.base, config)
    notes: list[str] = []
    if args.training_mode == "UPDATE":
        from .increments import update_features

        features, increment = update_features(
            args.dataset,
            args.base,
            config.featurize_options(),
            not args.no_validate,
            log=lambda msg: _progress(notes, msg),
        )
    else:
        group = _load_valid(args.dataset, not args.no_validate, notes)
        features = featurize(group, config.featurize_options())
    _progress(
        notes, f"featurized {features.n_interactions} interactions, {features.n_users} users, {features.n_items} items"
    )
    _progress(
        notes, f"training {config.recipe_class().name if config.recipe else 'with AutoML'} ({args.training_mode})"
    )
    version = train(
        features,
        config,
        args.out,
        training_mode=args.training_mode,
        base=args.base,
        seed=args.seed,
        log=lambda msg: _progress(notes, msg),
    )
    for note in notes:  # only now: a run that fails says one line, whatever stage fails
        _log(note)
    summary = describe(version)
    if args.training_mode == "UPDATE":
        summary.update(new_files=increment.plan.new_files, redelivered=[p for p, _ in increment.plan.redelivered])
    print(json.dumps(summary))
    return 0


def cmd_evaluate(args) -> int:
    from .features import featurize
    from .metrics import evaluate, parse_cutoff

    config = _solution_config(args)
    cutoff = parse_cutoff(args.cutoff)
    if cutoff is not None and args.protocol != "time":
        raise InputError("--cutoff applies to --protocol time only")
    notes: list[str] = []
    group = _load_valid(args.dataset, not args.no_validate, notes)
    features = featurize(group, config.featurize_options())
    result = evaluate(
        features,
        config.recipe_class(),
        config.hyperparameters,
        protocol=args.protocol,
        exclude_seen=args.exclude_seen,
        seed=args.seed,
        cutoff=cutoff,
    )
    for note in notes:  # only now: a run that fails says one line, whatever stage fails
        _log(note)
    if args.json:
        print(json.dumps(result.to_json()))
        return 0
    where = f", cut-off {cutoff:.0f}" if result.cutoff is not None else ""
    print(
        f"{result.recipe} ({result.protocol} protocol{where}, {result.test_users} test users, {result.train_events} "
        "training events)"
    )
    base, lift = result.baseline or {}, result.lift
    print(f"  {'metric':<45} {'value':>8} {'popularity':>10} {'lift':>8}")
    for name, value in result.metrics.items():
        change = f"{100 * gain:+.0f}%" if (gain := lift.get(name)) is not None else "n/a"
        print(f"  {name:<45} {value:8.4f} {base.get(name, float('nan')):10.4f} {change:>8}")
    for family, rows in (result.segments or {}).items():
        print(f"  {family.replace('_', ' ')} (K=10; recipe / popularity):")
        base_rows = {r["segment"]: r for r in (result.baseline_segments or {}).get(family, [])}
        for row in rows:
            cells = []
            for key, value in row.items():
                if key == "segment":
                    continue
                other = base_rows.get(row["segment"], {}).get(key)
                cells.append(
                    f"{key} {value:.4f}" + (f" / {other:.4f}" if isinstance(value, float) and other is not None else "")
                    if isinstance(value, float)
                    else f"{key} {value}"
                )
            print(f"    {row['segment']:<16} " + ", ".join(cells))
    print(
        f"  train_seconds {result.train_seconds}  events/s {result.train_events_per_second}  peak_rss_mb "
        f"{result.peak_rss_mb}"
    )
    return 0


def _max_results(solution: str) -> int:
    """numResults at most for the solution (version)'s recipe type, from its batch handler
    (batch segment jobs take up to 5M users per line)."""
    from .batch import HANDLERS, MAX_RESULTS
    from .store import load_manifest

    handler = HANDLERS.get(load_manifest(solution).get("recipe_type", ""))
    return handler.max_results if handler is not None else MAX_RESULTS


def cmd_batch_infer(args) -> int:
    from .batch import MAX_RESULTS, run_batch_job
    from .segments import MAX_SEGMENT_USERS

    if not 1 <= args.num_results <= MAX_RESULTS and (
        args.num_results < 1 or args.num_results > _max_results(args.solution)
    ):
        raise InputError(
            f"--num-results must be between 1 and {MAX_RESULTS} (batch segment jobs: {MAX_SEGMENT_USERS:,} users), "
            f"got {args.num_results}"
        )
    if args.filter is not None and not args.filter.strip():
        raise InputError("--filter is empty: give a filter expression or leave the option out")
    if args.exploration_item_age_cut_off is not None and not args.exploration_item_age_cut_off > 0:
        raise InputError(
            f"--exploration-item-age-cut-off must be a positive number of days, got {args.exploration_item_age_cut_off}"
        )
    values = None
    if args.filter_values is not None:
        try:
            values = json.loads(args.filter_values)
        except json.JSONDecodeError as exc:
            raise InputError(f"--filter-values is not valid JSON ({exc.msg})") from None
        if args.filter is None:
            raise InputError("--filter-values given without --filter")
        if not isinstance(values, dict):
            raise InputError(
                '--filter-values must be a JSON object of parameter names to values, e.g. {"GENRES": "\\"Comedy\\""}'
            )
    result = run_batch_job(
        args.solution,
        args.input,
        args.output,
        num_results=args.num_results,
        filter_expression=args.filter,
        filter_values=values,
        exploration_weight=args.exploration_weight,
        exploration_item_age_cut_off=args.exploration_item_age_cut_off,
        device=args.device,
        scoring_precision=args.scoring_precision,
    )
    _log(
        f"wrote {result.output}: {result.lines} lines, {result.errors} with errors, {result.users_per_second} users/s"
        f" after {result.startup_seconds:.1f} s of start-up"
    )
    print(json.dumps(result.to_dict()))
    return 0


def cmd_delete_users(args) -> int:
    from .deletion import delete_users, read_user_ids, remove_versions, versions_holding

    if args.remove_versions and not args.solution:
        raise InputError("--remove-versions needs --solution SOLUTION (the solutions whose versions to check)")
    ids = read_user_ids(args.users)
    record = delete_users(args.dataset, ids)
    summary = {k: record[k] for k in ("deleted_at", "dataset", "users_requested", "rows_deleted", "record")}
    summary["solution_versions_holding_users"] = {}
    for solution in args.solution or []:
        holding = versions_holding(solution, ids)
        summary["solution_versions_holding_users"][solution] = holding
        if args.remove_versions and holding:
            remove_versions(solution, holding)
            _log(f"removed {len(holding)} solution version(s) of {solution}: {', '.join(holding)}")
        elif holding:
            _log(
                f"{solution}: {len(holding)} solution version(s) still hold these users ({', '.join(holding)}); "
                "--remove-versions deletes them"
            )
    summary["solution_versions_removed"] = bool(args.remove_versions)
    _log(
        f"deleted {sum(record['rows_deleted'].values())} rows of {record['users_requested']} users; record "
        f"{record['record']}"
    )
    print(json.dumps(summary))
    return 0


def _add_recipe_args(sp: argparse.ArgumentParser, recipe_required: bool = True) -> None:
    """The dataset, recipe and event-filter options that ``train`` and ``evaluate`` share."""
    sp.add_argument("--dataset", required=True)
    sp.add_argument("--recipe", required=recipe_required)
    sp.add_argument("--hp", action="append", metavar="KEY=VALUE")
    sp.add_argument("--event-type")
    sp.add_argument("--event-value-threshold", type=float)
    sp.add_argument("--seed", type=int, default=42)
    sp.add_argument("--no-validate", action="store_true", help="skip validation (the data was validated before)")


def _add_demo_data_parser(sub) -> None:
    d = sub.add_parser("demo-data", help="generate the built-in demo dataset group")
    d.add_argument("--out", required=True)
    d.add_argument("--users", type=int)
    d.add_argument("--items", type=int)
    d.add_argument("--interactions", type=int)
    d.add_argument("--seed", type=int)
    d.set_defaults(func=cmd_demo_data)


def _add_validate_parser(sub) -> None:
    v = sub.add_parser("validate", help="validate a dataset group with the generated GE suites")
    v.add_argument("--dataset", required=True)
    v.add_argument("--json", action="store_true")
    v.set_defaults(func=cmd_validate)


def _add_train_parser(sub) -> None:
    t = sub.add_parser("train", help="train a solution version")
    _add_recipe_args(t, recipe_required=False)  # --automl or --solution-config may choose it
    t.add_argument("--training-mode", choices=["FULL", "UPDATE"], default="FULL", type=str.upper)
    t.add_argument("--base")
    t.add_argument("--automl", action="store_true", help="choose the recipe on the validation split (autoMLConfig)")
    t.add_argument(
        "--hpo", type=int, metavar="N", help="tune the tunable hyperparameters with N training jobs (1 to 40)"
    )
    t.add_argument(
        "--solution-config",
        metavar="FILE",
        help="CreateSolution request as JSON or YAML (recipeArn, performHPO, performAutoML, solutionConfig)",
    )
    t.add_argument("--out", required=True)
    t.set_defaults(func=cmd_train)


def _add_evaluate_parser(sub) -> None:
    e = sub.add_parser("evaluate", help="offline metrics of a recipe on a dataset group")
    _add_recipe_args(e)
    e.add_argument("--protocol", choices=["personalize", "leave-last-out", "time"], default="personalize")
    e.add_argument(
        "--cutoff",
        metavar="TIME",
        help=(
            "time protocol: train before TIME (epoch seconds or ISO date), test after; default: the 90%% quantile of "
            "event times"
        ),
    )
    e.add_argument("--exclude-seen", action="store_true")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=cmd_evaluate)


def _add_batch_infer_parser(sub) -> None:
    b = sub.add_parser("batch-infer", help="run a batch inference job")
    b.add_argument("--solution", required=True)
    b.add_argument("--input", required=True)
    b.add_argument("--output", required=True)
    b.add_argument("--num-results", type=int, default=25)
    b.add_argument("--filter")
    b.add_argument("--filter-values")
    b.add_argument("--exploration-weight", type=float)
    b.add_argument("--exploration-item-age-cut-off", type=float)
    b.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        help="where the neural recipes score: auto (default: a CUDA GPU when torch sees one), cpu or cuda",
    )
    b.add_argument(
        "--scoring-precision",
        choices=("float32", "bf16"),
        help="float32 (default) or bf16: a bf16 product on CPUs with native bf16, top items rescored in float32 "
        "(items as float32's, scores within 0.2%%; bench/README.md)",
    )
    b.set_defaults(func=cmd_batch_infer)


def _add_delete_users_parser(sub) -> None:
    x = sub.add_parser(
        "delete-users", help="remove users' rows from the interactions and users datasets (data deletion job)"
    )
    x.add_argument("--dataset", required=True)
    x.add_argument("--users", required=True, help="CSV file with the header USER_ID")
    x.add_argument(
        "--solution", action="append", help="a solution whose versions to check for these users (repeatable)"
    )
    x.add_argument(
        "--remove-versions", action="store_true", help="delete the solution versions that still hold these users"
    )
    x.set_defaults(func=cmd_delete_users)


def build_parser() -> argparse.ArgumentParser:
    """The ``personalize-pipeline`` parser: one sub-command per ``_add_<command>_parser``."""
    p = _Parser(prog="personalize-pipeline", description="Amazon Personalize custom recipes, self-hosted.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_demo_data_parser(sub)
    _add_validate_parser(sub)
    _add_train_parser(sub)
    _add_evaluate_parser(sub)
    _add_batch_infer_parser(sub)
    _add_delete_users_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except InputError as exc:
        _log(f"error: {exc.message}")
        return 2
    except KeyboardInterrupt:
        _log("interrupted")
        return 130
    except Exception as exc:  # a bug: still one line unless debugging
        if os.environ.get("PERSONALIZE_DEBUG"):
            raise
        text = str(exc).splitlines()[0] if str(exc) else ""
        _log(f"internal error: {type(exc).__name__}: {text} (set PERSONALIZE_DEBUG=1 for a traceback)")
        return 1


if __name__ == "__main__":
    sys.exit(main())
