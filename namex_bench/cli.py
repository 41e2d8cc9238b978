"""The ``namex-bench`` command line.

    namex-bench validate SUITE          check a suite file without running anything
    namex-bench run SUITE [...]         run a suite (resumable), then write its report; --executor local|slurm submits it as jobs
    namex-bench status SUITE            per run: done, failed, running, queued, pending; the results folder's health
    namex-bench report SUITE            regenerate a suite's leaderboards from its run records
    namex-bench verify SUITE            rerun the cheapest record of each task family and compare its metrics
    namex-bench list methods            every registered merging method
    namex-bench list compression        every registered compression method
    namex-bench bench layers [...]      forward+backward time per method vs a dense FFN (--eval: evaluation throughput)
    namex-bench bench nbs [...]         nash_bargaining vs the Nash-MTL reference (cvxpy/ECOS)
    namex-bench selfcheck [--device D]  the first thing to run on a new machine: a pass/fail table
    namex-bench bench calibration [...] tokens/s and peak memory of the compression calibration pass
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import signal
import sys
import threading
from pathlib import Path

from tabulate import tabulate


class UsageError(Exception):
    """A problem with what the user asked for: printed as one line, exit status 2."""


def _cmd_validate(args: argparse.Namespace) -> None:
    from .data.paths import without_data_checks
    from .device import describe_precision
    from .suite.expand import expand, machine_precision
    from .suite.loader import load_suite, read_suite_data
    from .suite.requirements import data_paths, environment_variables

    suite, path = load_suite(args.suite, check_data=not args.no_data)
    try:  # a GPU suite validates on a laptop too
        precision = machine_precision(suite)
        here = f"on this machine its runs compute in {describe_precision(precision)}"
    except ValueError as exc:
        precision, here = {"unresolved": suite.precision}, f"it cannot run on this machine ({exc})"
    with without_data_checks() if args.no_data else contextlib.nullcontext():
        runs = expand(suite, precision=precision)
        paths = data_paths(suite)
    pairs = sum(len(suite.task_models(t)) for t in suite.tasks if t.type != "compression")
    compression = sum(1 for r in runs if r.task.type == "compression")
    parts = [f"{len(suite.methods)} methods × {pairs} task/model pairs ({len(suite.tasks)} tasks, {len(suite.models)} models) × {len(suite.seeds)} seeds"] if pairs else []
    parts += [f"{compression} compression runs"] if compression else []
    print(f"{path}: OK{' (data not checked)' if args.no_data else ''} — {' + '.join(parts)} = {len(runs)} runs; {here}")
    variables = environment_variables(read_suite_data(args.suite)[0])
    if variables:
        print("environment variables it reads:")
        for var in variables:
            state = f"set: {var.value}" if var.value is not None else "unset" + (f", default {var.default!r}" if var.default is not None else " — required")
            print(f"  {var.name} ({state}) — {', '.join(var.fields)}")
    if paths:
        print("data paths it needs:")
        for field, value in paths:
            print(f"  {field}: {value} ({'exists' if value.exists() else 'missing'})")


def _selection(args: argparse.Namespace, suite):
    """The subset of runs asked for with --methods/--models/--tasks/--seeds (None: all of them)."""
    from .suite.expand import Selection

    chosen = {name: getattr(args, name) for name in ("methods", "models", "tasks", "seeds")}
    if all(v is None for v in chosen.values()):
        return None
    return Selection(**chosen).check(suite)


class Terminated(KeyboardInterrupt):
    """SIGTERM (what schedulers and ``kill`` send), raised where Ctrl-C raises ``KeyboardInterrupt``,
    so that it stops the runner the same way: finished runs kept, one line, exit status 143."""


@contextlib.contextmanager
def sigterm_stops_like_ctrl_c():
    """For the block, SIGTERM raises :class:`Terminated` in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stopped(stop: KeyboardInterrupt, where: Path) -> int:
    """One line for Ctrl-C or SIGTERM during ``run``; exit status 130 or 143."""
    what, code = ("terminated (SIGTERM)", 143) if isinstance(stop, Terminated) else ("interrupted", 130)
    print(f"namex-bench: {what}; finished runs are kept in {where / 'runs'} — rerun to resume", file=sys.stderr)
    return code


def _cmd_run(args: argparse.Namespace) -> int:
    from .runner.records import results_folder
    from .runner.runner import run_suite
    from .suite.expand import parse_shard
    from .suite.loader import load_suite
    from .tasks import distributed

    suite, path = load_suite(args.suite)
    shard_spec = parse_shard(args.shard) if args.shard is not None else None
    selection = _selection(args, suite)
    results = Path(args.results)
    if not args.allow_dirty:
        _refuse_committed_results_from_a_dirty_tree(results)
    # smoke runs (--limit) keep their records apart, so they never mix with real ones in a leaderboard
    folder = results_folder(suite.name, args.limit)
    if args.executor is not None:
        return _submit(args, suite, results, folder, shard_spec, selection)
    try:
        summary = run_suite(suite, results, shard_spec=shard_spec, selection=selection, limit=args.limit, device=args.device,
                            fail_fast=args.fail_fast, skip_damaged=args.skip_damaged)
    except KeyboardInterrupt as stop:
        return _stopped(stop, results / folder)
    if not distributed.is_main():
        return 0
    elsewhere = f", {len(summary.elsewhere)} left to another process running them" if summary.elsewhere else ""
    print(
        f"{suite.name}: {len(summary.finished)} runs finished, {summary.skipped} already done, "
        f"{len(summary.failed)} failed{elsewhere} (of {summary.total}); records in {results / folder / 'runs'}"
    )
    for name in summary.failed:
        print(f"  failed: {name}")
    if not args.no_report:
        written = _write_report(results, folder, None, args.skip_damaged)
        print(f"leaderboard: {written}")
    return 1 if summary.failed else 0


def _submit(args: argparse.Namespace, suite, results: Path, folder: str, shard_spec, selection) -> int:
    """``run --executor local|slurm``: submit the pending runs as jobs (executors/submit.py)."""
    from .executors.options import cluster_options
    from .executors.status import suite_status
    from .executors.submit import SubmitOptions, submit_suite

    if args.fail_fast:
        raise UsageError("--fail-fast stops a suite run in this process; it does not apply to --executor")
    cluster = cluster_options(
        suite.cluster, partition=args.partition, account=args.account, qos=args.qos, gpus_per_run=args.gpus_per_run,
        cpus_per_run=args.cpus_per_run, mem_gb=args.mem, time_min=args.time, max_parallel=args.max_parallel, runs_per_job=args.runs_per_job,
    )
    options = SubmitOptions(args.executor, cluster, retries=args.retries)
    where = results / folder
    try:
        submission = submit_suite(suite, results, options, limit=args.limit, device=args.device, shard_spec=shard_spec, selection=selection)
    except KeyboardInterrupt as stop:  # the local executor's workers are stopped first (executors/submit.py)
        return _stopped(stop, where)
    print(
        f"{suite.name}: {submission.total} runs, {submission.done} already done, {len(submission.in_flight)} already queued or running, "
        f"{submission.submitted} submitted in {submission.job_count} {args.executor} job(s); logs in {where / 'jobs'}"
    )
    for note in submission.died:
        print(f"  {note}")
    if args.executor == "slurm":
        if submission.jobs:
            print(f"follow them with `namex-bench status {args.suite} --results {results}`{f' --limit {args.limit}' if args.limit else ''}")
        return 0
    status = suite_status(suite, results, limit=args.limit, selection=selection)
    names = {name for job in submission.jobs.values() for name in job}
    unfinished = [r for r in status.runs if r.name in names and r.state != "done"]
    for r in unfinished:
        print(f"  {r.state}: {r.name}{f' — {r.detail}' if r.detail else ''}")
    if not args.no_report:  # also when every run was done already: the leaderboard is regenerated, as without --executor
        print(f"leaderboard: {_write_report(results, folder, None)}")
    return 1 if unfinished else 0


def _cmd_status(args: argparse.Namespace) -> int:
    from .executors.status import suite_status
    from .suite.loader import load_suite

    suite, _ = load_suite(args.suite)
    status = suite_status(suite, Path(args.results), limit=args.limit, selection=_selection(args, suite))
    rows = [[r.state, r.name, r.key, r.detail] for r in status.runs]
    print(f"{suite.name}: runs in {Path(args.results) / status.folder / 'runs'}")
    print(tabulate(rows, headers=["state", "run", "key", "detail"], tablefmt="github"))
    totals = status.totals
    print(f"total {len(status.runs)}: " + ", ".join(f"{n} {state}" for state, n in totals.items()))
    left = len(status.runs) - totals["done"]
    print(
        f"device-hours (run time × processes, from the records): {status.hours_done:.2f} in the {totals['done']} done runs; "
        f"≈ {status.hours_left:.2f} more for the other {left} at the mean of their task and model"
        + (f" ({status.unestimated} with no done run of their task and model not counted)" if status.unestimated else "")
    )
    if status.health:
        print("results folder:")
        for line in status.health:
            print(f"  - {line}")
    else:
        print("results folder: healthy")
    return 0
def _refuse_committed_results_from_a_dirty_tree(results: Path) -> None:
    """Records in the repository's own ``results/`` must come from committed code."""
    from .runner.environment import git_state, project_root

    if results.resolve() != project_root() / "results":
        return
    commit, changes = git_state()
    if commit is not None and changes:
        files = ", ".join(line[3:] for line in changes[:3]) + (", …" if len(changes) > 3 else "")
        raise UsageError(
            f"{results} holds the repository's committed records, and this checkout has uncommitted changes ({files}): "
            "commit them, write elsewhere with --results DIR, or pass --allow-dirty"
        )


def _cmd_verify(args: argparse.Namespace) -> int:
    from .runner.verify import OTHER_STACK, REPRODUCED, verify
    from .suite.loader import load_suite

    suite, _ = load_suite(args.suite)
    checks = verify(suite, Path(args.results), per_family=args.per_family, limit=args.limit, tolerance=args.tolerance)
    allowed = {REPRODUCED, OTHER_STACK} if args.skip_other_stacks else {REPRODUCED}
    for check in checks:
        print(f"{check.status:>11}  {check.name}: {check.detail}")
    bad = [c for c in checks if c.status not in allowed]
    compared = sum(c.status == REPRODUCED for c in checks)
    print(f"{suite.name}: {compared} of {len(checks)} records reproduced" + (f"; {len(bad)} did not" if bad else ""))
    return 1 if bad else 0


def _write_report(results: Path, suite: str, reference: str | None, skip_damaged: bool = False) -> Path:
    from .report.write import write_report

    write_report(results, suite, reference, skip_damaged=skip_damaged)
    return results / suite / "leaderboard.md"


def _cmd_report(args: argparse.Namespace) -> int:
    from .runner.records import check_folder_name

    check_folder_name(args.suite, "suite name (its folder under --results)")
    if args.check:
        from .report.write import check_report, report_inputs

        where = Path(args.results) / args.suite
        inputs = report_inputs(Path(args.results), args.suite, args.skip_damaged)
        if inputs.outdated:
            print(f"{where}: {inputs.outdated_summary()}; the leaderboard is not up to date with the suite — rerun the suite "
                  f"(every shard), then `namex-bench report {args.suite}`", file=sys.stderr)
            return 1
        stale = check_report(Path(args.results), args.suite, args.reference, skip_damaged=args.skip_damaged)
        if stale:
            print(f"{where}: the report is stale — these files differ from what the records give: {', '.join(stale)}; "
                  f"regenerate with `namex-bench report {args.suite}`", file=sys.stderr)
            return 1
        print(f"{where}: the report is up to date with its records")
        return 0
    print(f"leaderboard: {_write_report(Path(args.results), args.suite, args.reference, args.skip_damaged)}")
    if args.readme:
        from .report.write import update_readme

        changed = update_readme(Path(args.readme), Path(args.results), args.suite, args.reference, skip_damaged=args.skip_damaged)
        print(f"{args.readme}: {'updated' if changed else 'already up to date'}")
    return 0


def _cmd_list_methods(args: argparse.Namespace) -> None:
    from .methods.base import MergingMethod
    from .methods.registry import PluginError, available_methods, broken_entry_points, load_plugins

    try:
        load_plugins(args.plugins or [])
    except PluginError as exc:
        raise UsageError(f"--plugins: {exc}") from None
    methods = available_methods()
    rows = [[name, ", ".join(cls.pooling_units), cls.base_expert.value, ", ".join(cls.presets) or "—", cls.description()] for name, cls in methods.items()]
    print(tabulate(rows, headers=["method", "pooling", "base expert", "presets", "description"], tablefmt="github"))
    for reason in broken_entry_points().values():
        print(f"namex-bench: warning: {reason}", file=sys.stderr)
    if not args.verbose:
        return
    show = lambda options: ", ".join(f"{k}={v!r}" for k, v in options.items())  # noqa: E731
    for name, cls in methods.items():
        print(f"\n{name}\n{'-' * len(name)}\n{inspect.cleandoc(cls.__doc__ or '')}\n")
        print(f"options (defaults): {show(cls.option_defaults())}")
        for preset, spec in cls.presets.items():
            print(f"preset {preset!r}: {show(spec.options)}\n    {spec.description}")
    routing_doc = inspect.cleandoc(MergingMethod.__doc__ or "")
    print("\nevery method\n------------\n" + routing_doc[routing_doc.index("Routing options") :])


def _cmd_list_compression(args: argparse.Namespace) -> None:
    from .compression.registry import available_compressors, compressor_options

    rows = []
    for name, cls in available_compressors().items():
        options = ", ".join(f"{k}={v!r}" for k, v in compressor_options(name).items())
        rows.append([name, cls.kind, options or "—", cls.description()])
        if args.verbose:
            rows.append(["", "", "", (cls.__doc__ or "").strip()])
    print(tabulate(rows, headers=["compression method", "kind", "options", "description"], tablefmt="github"))


def _print_rows(rows: list[dict], setup: str, json_path: str | None) -> None:
    print(setup)
    print(tabulate(rows, headers="keys", tablefmt="github"))
    if json_path:
        Path(json_path).write_text(json.dumps({"setup": setup, "rows": rows}, indent=2, ensure_ascii=False) + "\n")
        print(f"wrote {json_path}")


def _cmd_bench_layers(args: argparse.Namespace) -> None:
    from .bench.layers import LayerBenchConfig, run_layer_bench, run_layer_eval_bench
    from .device import autocast_dtype, resolve_device

    methods = _check_methods(args.methods, "--methods")
    device = resolve_device(args.device)
    cfg = LayerBenchConfig(
        batch=args.batch, seq_len=args.seq_len, d_model=args.d_model, d_hidden=args.d_hidden,
        experts=args.experts, kind=args.kind, methods=methods, repeats=args.repeats,
        warmup=args.warmup,
    )
    bench = run_layer_eval_bench if args.eval else run_layer_bench
    rows, setup = bench(cfg, device, autocast_dtype(device, args.precision))
    _print_rows(rows, setup, args.json)


def _cmd_bench_nbs(args: argparse.Namespace) -> None:
    from .device import resolve_device

    try:
        from .bench.nbs import run_nbs_bench
        from .nash.reference import _require_cvxpy

        _require_cvxpy()
    except ImportError as exc:
        raise UsageError(str(exc)) from None
    rows, setup = run_nbs_bench(args.sizes, args.problems, resolve_device(args.device), dim=args.dim, compile=args.compile)
    _print_rows(rows, setup, args.json)


def _cmd_bench_corruptions(args: argparse.Namespace) -> None:
    from .bench.corruptions import run_corruption_bench
    from .corruptions.engine import ALL_CORRUPTIONS

    unknown = [n for n in args.names or () if n not in ALL_CORRUPTIONS]
    if unknown:
        raise UsageError(f"--names: unknown corruption(s) {', '.join(unknown)}; known: {', '.join(ALL_CORRUPTIONS)}")
    rows, setup = run_corruption_bench(size=args.size, images=args.images, names=args.names, workers=args.workers)
    _print_rows(rows, setup, args.json)


def _check_methods(names: list[str] | None, option: str) -> tuple[str, ...]:
    from .methods.registry import UnknownMethodError, get_method

    for name in names or ():
        try:
            get_method(name)
        except UnknownMethodError as exc:
            raise UsageError(f"{option}: {exc}") from None
    return tuple(names or ())


def _cmd_selfcheck(args: argparse.Namespace) -> int:
    from .device import resolve_device
    from .selfcheck.checks import run_selfcheck

    methods = _check_methods(args.methods, "--methods")
    device = resolve_device(args.device)

    def progress(check) -> None:
        print(f"[{check.result}] {check.name} ({check.seconds:.1f} s)", file=sys.stderr, flush=True)

    checks = run_selfcheck(device, methods, suites=not args.no_suites, report=progress)
    rows = [[c.name, c.result, c.detail, f"{c.seconds:.1f}"] for c in checks]
    print(tabulate(rows, headers=["check", "result", "detail", "s"], tablefmt="github"))
    failed = sum(c.passed is False for c in checks)
    skipped = sum(c.passed is None for c in checks)
    print(f"selfcheck on {device}: {len(checks) - failed - skipped} passed, {failed} failed, {skipped} skipped "
          f"in {sum(c.seconds for c in checks) / 60:.1f} min")
    return 1 if failed else 0


def _cmd_bench_calibration(args: argparse.Namespace) -> None:
    import torch

    from .bench.calibration import CalibrationBenchConfig, run_calibration_bench
    from .device import resolve_device

    cfg = CalibrationBenchConfig(layers=args.layers, samples=args.samples, seq_len=args.seq_len, batch_size=args.batch_size,
                                 output_tokens=args.output_tokens, chunk_rows=args.chunk_rows, repeats=args.repeats)
    rows, setup = run_calibration_bench(cfg, resolve_device(args.device), getattr(torch, args.dtype))
    _print_rows(rows, setup, args.json)


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return number


def _non_negative(value: str) -> int:
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {value}")
    return number


def _names(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


def _seeds(value: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in _names(value))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {value!r}") from None


def _mem(value: str) -> float:
    from .executors.options import parse_mem

    try:
        return parse_mem(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--mem: ")) from None


def _time(value: str) -> int:
    from .executors.options import parse_time

    try:
        return parse_time(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--time: ")) from None


def _add_selection(parser: argparse.ArgumentParser) -> None:
    subset = parser.add_argument_group("subsets", "only the matching runs (their keys are unchanged: they join the suite's other records)")
    subset.add_argument("--methods", type=_names, metavar="A,B", help="methods (their labels)")
    subset.add_argument("--models", type=_names, metavar="M,N", help="models")
    subset.add_argument("--tasks", type=_names, metavar="T,U", help="tasks")
    subset.add_argument("--seeds", type=_seeds, metavar="0,1", help="seeds")


def _non_negative_number(value: str) -> float:
    number = float(value)
    if not number >= 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {value}")
    return number


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="namex-bench", description="Benchmark and robustness suite for expert merging in sparse MoE models.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    validate = commands.add_parser("validate", help="check a suite file without running anything")
    validate.add_argument("suite", help="a suite name (suites/NAME.yaml) or a path")
    validate.add_argument("--no-data", action="store_true", help="check everything but the data: paths need not exist, ${VARIABLES} need not be set")
    validate.set_defaults(func=_cmd_validate)

    run = commands.add_parser("run", help="run a suite (finished runs are skipped), then write its report")
    run.add_argument("suite", help="a suite name (suites/NAME.yaml) or a path")
    run.add_argument("--shard", metavar="I/N", help="run only shard I of N (1-based; shards never overlap)")
    run.add_argument("--limit", type=_positive, help="shrink every data split to at most this many examples (a smoke run; recorded)")
    run.add_argument("--device", help="override the suite's device: auto, cpu, cuda, cuda:1, ...")
    run.add_argument("--fail-fast", action="store_true", help="stop at the first failed run (default: record it and go on)")
    run.add_argument("--results", default="results", help="the results folder (default ./results)")
    run.add_argument("--no-report", action="store_true", help="do not regenerate the leaderboards afterwards")
    _add_selection(run)
    cluster = run.add_argument_group("executors", "where runs execute (defaults: the suite's `cluster:` block); without --executor, here, one after another")
    cluster.add_argument("--executor", choices=["local", "slurm"], help="submit the pending runs as jobs: a SLURM job array, or local worker processes")
    cluster.add_argument("--partition", help="SLURM partition")
    cluster.add_argument("--account", help="SLURM account (passed through)")
    cluster.add_argument("--qos", help="SLURM quality of service (passed through)")
    cluster.add_argument("--gpus-per-run", type=_non_negative, help="GPUs per run; more than 1 launches the run with torchrun inside its job")
    cluster.add_argument("--cpus-per-run", type=_positive, help="CPUs per run (also its torch threads)")
    cluster.add_argument("--mem", type=_mem, help="memory per job, e.g. 64G")
    cluster.add_argument("--time", type=_time, help="time limit per job: minutes or SLURM's [D-]H:M:S (a job that reaches it is requeued)")
    cluster.add_argument("--max-parallel", type=_positive, help="jobs at once: the SLURM array throttle, or the local worker processes (default 1)")
    cluster.add_argument("--runs-per-job", type=_positive, help="runs executed one after another in each job (default 1)")
    cluster.add_argument("--retries", type=_non_negative, default=1, help="local: resubmit a job whose process died this many times (default 1)")
    run.add_argument("--allow-dirty", action="store_true",
                     help="write into the repository's own results/ although the checkout has uncommitted changes (recorded as git_dirty)")
    run.add_argument("--skip-damaged", action="store_true",
                     help="treat damaged run records as failed runs (redone, and listed in the report) instead of stopping")
    run.set_defaults(func=_cmd_run)

    status = commands.add_parser("status", help="what of a suite is done, failed, running, queued or pending; the results folder's health")
    status.add_argument("suite", help="a suite name (suites/NAME.yaml) or a path")
    status.add_argument("--results", default="results", help="the results folder (default ./results)")
    status.add_argument("--limit", type=_positive, help="the --limit smoke runs' records (<suite>-limit<N>)")
    _add_selection(status)
    status.set_defaults(func=_cmd_status)

    report = commands.add_parser("report", help="regenerate a suite's leaderboards, tables and plots from its records")
    report.add_argument("suite", help="the suite's name (its folder under --results)")
    report.add_argument("--results", default="results", help="the results folder (default ./results)")
    report.add_argument("--reference", help="compare against this method instead of the suite's reference")
    report.add_argument("--check", action="store_true", help="write nothing; exit 1 if the tables on disk differ from what the records give")
    report.add_argument("--readme", metavar="FILE", help="also rewrite the suite's generated leaderboard block in FILE (e.g. README.md)")
    report.add_argument("--skip-damaged", action="store_true", help="list damaged run records as failed runs instead of stopping")
    report.set_defaults(func=_cmd_report)

    verify = commands.add_parser("verify", help="rerun the cheapest record of each task family with its recorded thread settings and compare its metrics")
    verify.add_argument("suite", help="a suite name (suites/NAME.yaml) or a path")
    verify.add_argument("--results", default="results", help="the results folder (default ./results)")
    verify.add_argument("--per-family", type=_positive, default=1, help="records to rerun per task family (default 1, the cheapest)")
    verify.add_argument("--limit", type=_positive, help="verify the records of a --limit smoke run")
    verify.add_argument("--tolerance", type=_non_negative_number, default=0.0, help="largest absolute difference accepted per metric (default 0: bit for bit)")
    verify.add_argument("--skip-other-stacks", action="store_true",
                        help="do not fail on records made with another torch version, device or CPU kernels (they are still listed)")
    verify.set_defaults(func=_cmd_verify)

    list_cmd = commands.add_parser("list", help="list registered things")
    list_what = list_cmd.add_subparsers(dest="what", required=True, metavar="WHAT")
    methods = list_what.add_parser("methods", help="every registered merging method, with a one-line description")
    methods.add_argument("-v", "--verbose", action="store_true", help="also print each method's documentation, options (with defaults) and presets")
    methods.add_argument("--plugins", nargs="+", metavar="MODULE", help="import these modules first, so that their methods register")
    methods.set_defaults(func=_cmd_list_methods)
    compression = list_what.add_parser("compression", help="every registered compression method (one-shot expert pruning and merging)")
    compression.add_argument("-v", "--verbose", action="store_true", help="also print each method's full description")
    compression.set_defaults(func=_cmd_list_compression)

    bench = commands.add_parser("bench", help="speed benchmarks (ratios measured side by side in one process)")
    bench_what = bench.add_subparsers(dest="what", required=True, metavar="WHAT")

    layers = bench_what.add_parser("layers", help="forward+backward time of one MoE layer per method, vs a dense FFN")
    layers.add_argument("--batch", type=_positive, default=8, help="B (default 8)")
    layers.add_argument("--seq-len", type=_positive, default=256, help="T (default 256)")
    layers.add_argument("--d-model", type=_positive, default=256, help="d (default 256)")
    layers.add_argument("--d-hidden", type=_positive, default=None, help="expert hidden size (default 4·d)")
    layers.add_argument("--experts", type=_positive, default=8, help="N (default 8)")
    layers.add_argument("--kind", choices=["mlp", "glu"], default="mlp", help="expert FFN kind (default mlp: GELU)")
    layers.add_argument("--methods", nargs="+", metavar="METHOD", help="methods to time (default: all registered)")
    layers.add_argument("--repeats", type=_positive, default=20, help="interleaved timing rounds (default 20)")
    layers.add_argument("--warmup", type=int, default=3, help="untimed rounds first (default 3)")
    layers.add_argument("--device", default="auto", help="auto (GPU if any), cpu, cuda, cuda:1, ...")
    layers.add_argument("--precision", choices=["auto", "bf16", "fp16", "fp32"], default="auto", help="auto: bf16 autocast on GPUs that support it")
    layers.add_argument("--eval", action="store_true", help="evaluation throughput instead: forward only, eval mode, no grad, "
                        "with the evaluation cache (and without it), relative to smoe and smear")
    layers.add_argument("--json", metavar="PATH", help="also write the table as JSON")
    layers.set_defaults(func=_cmd_bench_layers)

    nbs = bench_what.add_parser("nbs", help="nash_bargaining vs the Nash-MTL reference procedure (needs namex_bench[reference])")
    nbs.add_argument("--sizes", type=_positive, nargs="+", default=[4, 8, 16, 32, 64], help="N values (default 4 8 16 32 64)")
    nbs.add_argument("--problems", type=_positive, default=32, help="problems per N (default 32)")
    nbs.add_argument("--dim", type=_positive, default=1024, help="dimension of the random vectors (default 1024)")
    nbs.add_argument("--device", default="auto", help="where nash_bargaining runs (the reference is CPU-only)")
    nbs.add_argument("--compile", action="store_true", help="also time torch.compile(nash_bargaining) (a CUDA graph on GPUs), one problem per call and batched")
    nbs.add_argument("--json", metavar="PATH", help="also write the table as JSON")
    nbs.set_defaults(func=_cmd_bench_nbs)

    calibration = bench_what.add_parser("calibration", help="tokens/s and peak memory of the compression calibration pass on a Qwen1.5-MoE-A2.7B-shaped stand-in")
    calibration.add_argument("--layers", type=_positive, default=1, help="decoder layers of the stand-in (default 1)")
    calibration.add_argument("--samples", type=_positive, default=4, help="calibration windows (default 4)")
    calibration.add_argument("--seq-len", type=_positive, default=512, help="tokens per window (default 512)")
    calibration.add_argument("--batch-size", type=_positive, default=2, help="windows per forward pass (default 2)")
    calibration.add_argument("--output-tokens", type=_positive, default=512, help="tokens per batch every expert runs on (default 512)")
    calibration.add_argument("--chunk-rows", type=_positive, default=8192, help="expert-output rows at a time (default 8192)")
    calibration.add_argument("--repeats", type=_positive, default=3, help="interleaved timing rounds (default 3)")
    calibration.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32", help="the stand-in's dtype (default float32)")
    calibration.add_argument("--device", default="auto", help="auto (GPU if any), cpu, cuda, ...")
    calibration.add_argument("--json", metavar="PATH", help="also write the table as JSON")
    calibration.set_defaults(func=_cmd_bench_calibration)

    corruptions = bench_what.add_parser("corruptions", help="images/s per corruption: the serial imagecorruptions reference vs the engine on all cores")
    corruptions.add_argument("--size", type=_positive, default=224, help="image side (default 224)")
    corruptions.add_argument("--images", type=_positive, default=8, help="photographs per severity (default 8; ×5 severities)")
    corruptions.add_argument("--names", nargs="+", metavar="CORRUPTION", help="corruptions to time (default: all 19)")
    corruptions.add_argument("--workers", type=_positive, default=None, help="processes for the engine (default: all cores)")
    corruptions.add_argument("--json", metavar="PATH", help="also write the table as JSON")
    corruptions.set_defaults(func=_cmd_bench_corruptions)

    selfcheck = commands.add_parser(
        "selfcheck", help="check this machine: environment, every method in fp32/bf16/fp16, bench layers, a tiny suite (also under torchrun)",
    )
    selfcheck.add_argument("--device", default="auto", help="auto (GPU if any), cpu, cuda, cuda:1, ...")
    selfcheck.add_argument("--methods", nargs="+", metavar="METHOD", help="methods to check (default: all registered)")
    selfcheck.add_argument("--no-suites", action="store_true", help="skip the two tiny-suite checks (they need the MNIST archive)")
    selfcheck.set_defaults(func=_cmd_selfcheck)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .runner.records import ResultsWriteError
    from .suite.loader import SuiteError

    args = build_parser().parse_args(argv)
    try:
        with sigterm_stops_like_ctrl_c():
            return args.func(args) or 0
    except (UsageError, SuiteError, ResultsWriteError, ValueError, OSError) as exc:
        print(f"namex-bench: error: {exc}", file=sys.stderr)
        return 2
    except Terminated:
        print("namex-bench: terminated (SIGTERM)", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("namex-bench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
