"""The ``namex-bench`` command line.

    namex-bench validate SUITE          check a suite file without running anything
    namex-bench run SUITE [...]         run a suite (resumable), then write its report
    namex-bench report SUITE            regenerate a suite's leaderboards from its run records
    namex-bench list methods            every registered merging method
    namex-bench list compression        every registered compression method
    namex-bench bench layers [...]      forward+backward time per method vs a dense FFN
    namex-bench bench nbs [...]         nash_bargaining vs the Nash-MTL reference (cvxpy/ECOS)
    namex-bench bench calibration [...] tokens/s and peak memory of the compression calibration pass
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tabulate import tabulate


class UsageError(Exception):
    """A problem with what the user asked for: printed as one line, exit status 2."""


def _cmd_validate(args: argparse.Namespace) -> None:
    from .suite.expand import expand
    from .suite.loader import load_suite

    suite, path = load_suite(args.suite)
    runs = expand(suite)
    pairs = sum(len(suite.task_models(t)) for t in suite.tasks if t.type != "compression")
    compression = sum(1 for r in runs if r.task.type == "compression")
    parts = [f"{len(suite.methods)} methods × {pairs} task/model pairs ({len(suite.tasks)} tasks, {len(suite.models)} models) × {len(suite.seeds)} seeds"] if pairs else []
    parts += [f"{compression} compression runs"] if compression else []
    print(f"{path}: OK — {' + '.join(parts)} = {len(runs)} runs")


def _cmd_run(args: argparse.Namespace) -> int:
    from .runner.records import results_folder
    from .runner.runner import run_suite
    from .suite.expand import parse_shard
    from .suite.loader import load_suite
    from .tasks import distributed

    suite, path = load_suite(args.suite)
    shard_spec = parse_shard(args.shard) if args.shard is not None else None
    results = Path(args.results)
    # smoke runs (--limit) keep their records apart, so they never mix with real ones in a leaderboard
    folder = results_folder(suite.name, args.limit)
    try:
        summary = run_suite(suite, results, shard_spec=shard_spec, limit=args.limit, device=args.device, fail_fast=args.fail_fast)
    except KeyboardInterrupt:
        print(f"namex-bench: interrupted; finished runs are kept in {results / folder / 'runs'} — rerun to resume", file=sys.stderr)
        return 130
    if not distributed.is_main():
        return 0
    print(
        f"{suite.name}: {len(summary.finished)} runs finished, {summary.skipped} already done, "
        f"{len(summary.failed)} failed (of {summary.total}); records in {results / folder / 'runs'}"
    )
    for name in summary.failed:
        print(f"  failed: {name}")
    if not args.no_report:
        written = _write_report(results, folder, None)
        print(f"leaderboard: {written}")
    return 1 if summary.failed else 0


def _write_report(results: Path, suite: str, reference: str | None) -> Path:
    from .report.write import write_report

    write_report(results, suite, reference)
    return results / suite / "leaderboard.md"


def _cmd_report(args: argparse.Namespace) -> int:
    if args.check:
        from .report.write import check_report

        stale = check_report(Path(args.results), args.suite, args.reference)
        where = Path(args.results) / args.suite
        if stale:
            print(f"{where}: the report is stale — these files differ from what the records give: {', '.join(stale)}; "
                  f"regenerate with `namex-bench report {args.suite}`", file=sys.stderr)
            return 1
        print(f"{where}: the report is up to date with its records")
        return 0
    print(f"leaderboard: {_write_report(Path(args.results), args.suite, args.reference)}")
    if args.readme:
        from .report.write import update_readme

        changed = update_readme(Path(args.readme), Path(args.results), args.suite, args.reference)
        print(f"{args.readme}: {'updated' if changed else 'already up to date'}")
    return 0


def _cmd_list_methods(args: argparse.Namespace) -> None:
    from .methods.registry import available_methods

    rows = []
    for name, cls in available_methods().items():
        rows.append([name, ", ".join(cls.pooling_units), cls.base_expert.value, cls.description()])
        if args.verbose:
            rows.append(["", "", "", (cls.__doc__ or "").strip()])
    print(tabulate(rows, headers=["method", "pooling", "base expert", "description"], tablefmt="github"))


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
    from .bench.layers import LayerBenchConfig, run_layer_bench
    from .device import autocast_dtype, resolve_device
    from .methods.registry import UnknownMethodError, get_method

    for name in args.methods or ():
        try:
            get_method(name)
        except UnknownMethodError as exc:
            raise UsageError(f"--methods: {exc}") from None
    device = resolve_device(args.device)
    cfg = LayerBenchConfig(
        batch=args.batch, seq_len=args.seq_len, d_model=args.d_model, d_hidden=args.d_hidden,
        experts=args.experts, kind=args.kind, methods=tuple(args.methods or ()), repeats=args.repeats,
        warmup=args.warmup,
    )
    rows, setup = run_layer_bench(cfg, device, autocast_dtype(device, args.precision))
    _print_rows(rows, setup, args.json)


def _cmd_bench_nbs(args: argparse.Namespace) -> None:
    from .device import resolve_device

    try:
        from .bench.nbs import run_nbs_bench
        from .nash.reference import _require_cvxpy

        _require_cvxpy()
    except ImportError as exc:
        raise UsageError(str(exc)) from None
    rows, setup = run_nbs_bench(args.sizes, args.problems, resolve_device(args.device), dim=args.dim)
    _print_rows(rows, setup, args.json)


def _cmd_bench_corruptions(args: argparse.Namespace) -> None:
    from .bench.corruptions import run_corruption_bench
    from .corruptions.engine import ALL_CORRUPTIONS

    unknown = [n for n in args.names or () if n not in ALL_CORRUPTIONS]
    if unknown:
        raise UsageError(f"--names: unknown corruption(s) {', '.join(unknown)}; known: {', '.join(ALL_CORRUPTIONS)}")
    rows, setup = run_corruption_bench(size=args.size, images=args.images, names=args.names, workers=args.workers)
    _print_rows(rows, setup, args.json)


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="namex-bench", description="Benchmark and robustness suite for expert merging in sparse MoE models.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    validate = commands.add_parser("validate", help="check a suite file without running anything")
    validate.add_argument("suite", help="a suite name (suites/NAME.yaml) or a path")
    validate.set_defaults(func=_cmd_validate)

    run = commands.add_parser("run", help="run a suite (finished runs are skipped), then write its report")
    run.add_argument("suite", help="a suite name (suites/NAME.yaml) or a path")
    run.add_argument("--shard", metavar="I/N", help="run only shard I of N (1-based; shards never overlap)")
    run.add_argument("--limit", type=_positive, help="shrink every data split to at most this many examples (a smoke run; recorded)")
    run.add_argument("--device", help="override the suite's device: auto, cpu, cuda, cuda:1, ...")
    run.add_argument("--fail-fast", action="store_true", help="stop at the first failed run (default: record it and go on)")
    run.add_argument("--results", default="results", help="the results folder (default ./results)")
    run.add_argument("--no-report", action="store_true", help="do not regenerate the leaderboards afterwards")
    run.set_defaults(func=_cmd_run)

    report = commands.add_parser("report", help="regenerate a suite's leaderboards, tables and plots from its records")
    report.add_argument("suite", help="the suite's name (its folder under --results)")
    report.add_argument("--results", default="results", help="the results folder (default ./results)")
    report.add_argument("--reference", help="compare against this method instead of the suite's reference")
    report.add_argument("--check", action="store_true", help="write nothing; exit 1 if the tables on disk differ from what the records give")
    report.add_argument("--readme", metavar="FILE", help="also rewrite the suite's generated leaderboard block in FILE (e.g. README.md)")
    report.set_defaults(func=_cmd_report)

    list_cmd = commands.add_parser("list", help="list registered things")
    list_what = list_cmd.add_subparsers(dest="what", required=True, metavar="WHAT")
    methods = list_what.add_parser("methods", help="every registered merging method, with a one-line description")
    methods.add_argument("-v", "--verbose", action="store_true", help="also print each method's options")
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
    layers.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto", help="auto: bf16 autocast on GPUs that support it")
    layers.add_argument("--json", metavar="PATH", help="also write the table as JSON")
    layers.set_defaults(func=_cmd_bench_layers)

    nbs = bench_what.add_parser("nbs", help="nash_bargaining vs the Nash-MTL reference procedure (needs namex_bench[reference])")
    nbs.add_argument("--sizes", type=_positive, nargs="+", default=[4, 8, 16, 32, 64], help="N values (default 4 8 16 32 64)")
    nbs.add_argument("--problems", type=_positive, default=32, help="problems per N (default 32)")
    nbs.add_argument("--dim", type=_positive, default=1024, help="dimension of the random vectors (default 1024)")
    nbs.add_argument("--device", default="auto", help="where nash_bargaining runs (the reference is CPU-only)")
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
    return parser


def main(argv: list[str] | None = None) -> int:
    from .suite.loader import SuiteError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except (UsageError, SuiteError, ValueError, FileNotFoundError) as exc:
        print(f"namex-bench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("namex-bench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
