"""Run the experiments of a grid file: train the runs its records lack, then write each report.

    python -m experiments.run experiments/grids/ml-100k-loo.yaml --report ml100k-qwen-5seeds
    python -m experiments.run GRID --report NAME --variants baseline --seeds 1 2   # part of a grid
    python -m experiments.run GRID --report NAME --no-train                      # report from records

Per experiment and student it trains, with the same seeds: the baseline; the baseline with the
distilled runs' epoch budget (no early stopping), so a gain from training longer is not taken for
a distillation gain; a distilled student per profile source; the ablations, each distilled from
the experiment's ``primary_profiles``. References use the same metric code: most-popular and, per
profile source, profile-only (cosine between profile and item-text embeddings). Writes
``<results>/reports/<report>.json``, ``.md`` and ``-gains.png``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from experiments.compare import as_eval, coverage_split, seed_comparisons
from experiments.grid import (
    ABLATIONS,
    BASELINE,
    ablation_variants,
    load_grid,
    needed_sources,
    planned_runs,
    same_budget_runs,
    select,
    shared_overrides,
)
from experiments.inputs import prepare, profile_source_info, profile_sources
from experiments.records import train_cached
from experiments.report import plot_gains, write_report
from ucd.config import build_config, find_config
from ucd.data.tensors import SequenceData
from ucd.errors import UcdError
from ucd.evaluate.offline import (
    compare,
    evaluate_most_popular,
    evaluate_profile_only_reference,
    format_comparison,
)
from ucd.train.config import TrainConfig

RUN_FIELDS = ("seed", "seconds", "train_seconds", "best_epoch", "epochs_run", "curves")


def run_label(grid: dict, student: str, variant: str) -> str:
    return f"{grid['dataset']}-{grid['protocol']}-{student}-{variant}"


def run_configs(
    grid: dict, exp: dict, student: str, prepared: Path, plan: list[tuple], extra: list[str] | None = None
) -> list[tuple[str, str, TrainConfig]]:
    """(variant, label, config) of each planned run: the student's shipped config, then the
    grid's and the experiment's overrides, then the run's seed and variant."""
    cfg_path = find_config("train", exp["students"][student])
    common = shared_overrides(grid, exp, prepared, extra)
    return [
        (
            name,
            run_label(grid, student, name),
            build_config(TrainConfig, cfg_path, [*common, f"seed={seed}", *ov]),
        )
        for name, ov, seed in plan
    ]


def train_runs(
    grid: dict,
    exp: dict,
    student: str,
    prepared: Path,
    sources: dict[str, str],
    *,
    seeds: list[int] | None = None,
    only: list[str] | None = None,
    train: bool = True,
    extra: list[str] | None = None,
    log=print,
) -> dict[str, list[dict]]:
    """Every run of one experiment and student (of ``seeds`` and the variants ``only`` names,
    when given), found in the records or trained: variant -> its records, in training order.
    Each record gets the name of its file under ``"record"``."""
    cache = Path(grid["results"]) / "runs"
    runs: dict[str, list[dict]] = {}

    def train_all(plan: list[tuple]) -> None:
        plan = [run for run in plan if only is None or run[0] in only]
        for name, label, cfg in run_configs(grid, exp, student, prepared, plan, extra):
            path, rec = train_cached(cfg, cache, label, log, train)
            runs.setdefault(name, []).append({**rec, "record": path.stem})

    chosen = [s for s in exp["seeds"] if seeds is None or s in seeds]
    train_all(planned_runs(exp, sources, chosen))
    # The budget of the longest distilled run; fixed in the grid when seeds are split over
    # processes, as each would otherwise see only its own runs.
    longest = exp.get("same_budget_epochs")
    if longest is None and seeds is None and only is None and len(runs) > 1:
        longest = max(r["epochs_run"] for n, rs in runs.items() if n != BASELINE for r in rs)
    if longest:
        train_all(same_budget_runs(longest, chosen))
    return runs


def compare_block(
    exp: dict, student: str, prepared: Path, sources: dict[str, str], runs: dict[str, list[dict]]
) -> dict:
    """One report block: the trained variants and the references compared, by coverage, seed by
    seed and ablation by ablation, with what each run cost."""
    data = SequenceData.load(prepared)
    users = data.test.user_ids
    variants = {n: [as_eval(n, r, users) for r in rs] for n, rs in runs.items()}
    variants["most-popular"] = [evaluate_most_popular(data)]
    # Every source, so an LLM's profiles and the template's can be compared on their own too.
    for src, path in sources.items():
        name = f"profile-only[{src}]"
        variants[name] = [evaluate_profile_only_reference(prepared, data, path, name=name)]
    block = compare(variants)
    # A coverage ablation distils from a subset of its source's users: its split would be wrong.
    split_ablations = {
        variant: src
        for variant, (a, src) in ablation_variants(exp).items()
        if not any(o.startswith("profile_coverage=") for o in ABLATIONS[a])
    }
    block["by_coverage"] = coverage_split(variants, sources, data, split_ablations)
    block.update(seed_comparisons(variants, runs))
    return block


def run_experiment(
    grid: dict, exp: dict, *, seeds=None, only=None, train=True, extra=None, log=print
) -> list[dict]:
    """Train what ``exp`` lacks and compare, student by student; no blocks for a partial run
    (``seeds`` or ``only``), which a later full run reports."""
    prepared = prepare(grid, log)
    sources = profile_sources(grid, needed_sources(exp, only), prepared)
    blocks = []
    for student, ref in exp["students"].items():
        log(f"\n### {exp['report']}: {grid['dataset']} / {grid['protocol']} / {student}")
        kw = {"seeds": seeds, "only": only, "train": train, "extra": extra, "log": log}
        runs = train_runs(grid, exp, student, prepared, sources, **kw)
        if seeds is not None or only is not None:
            continue
        block = compare_block(exp, student, prepared, sources, runs)
        cfg = build_config(
            TrainConfig, find_config("train", ref), shared_overrides(grid, exp, prepared, extra)
        )
        block.update(
            dataset=grid["dataset"],
            protocol=grid["protocol"],
            student=student,
            config=ref,
            distill_epochs=cfg.distill.epochs,
            profile_sources={src: profile_source_info(path) for src, path in sources.items()},
            runs={n: [{k: r.get(k) for k in (*RUN_FIELDS, "record")} for r in rs] for n, rs in runs.items()},
        )
        log(format_comparison(block))
        blocks.append(block)
    return blocks


def report_command(grid_path: str, report: str, overrides: list[str]) -> str:
    return " ".join(
        ["python -m experiments.run", grid_path, "--report", report, *(f"--set {o}" for o in overrides)]
    )


def write_experiment(grid: dict, grid_path: str, exp: dict, blocks: list[dict], overrides: list[str]) -> Path:
    out = Path(grid["results"]) / "reports"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{exp['report']}.json"
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "grid": grid_path,
        "report": exp["report"],
        "command": report_command(grid_path, exp["report"], overrides),
        "blocks": blocks,
    }
    write_report(path, report)
    plot_gains(blocks, out / f"{exp['report']}-gains.png")
    return path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("grid", help="a grid file, e.g. experiments/grids/ml-100k-loo.yaml")
    ap.add_argument("--report", nargs="+", help="the experiments to run, by report name (default: all)")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        dest="overrides",
        metavar="KEY=VALUE",
        help="training-config override for every run, e.g. tracking.uri=sqlite:///q.db",
    )
    ap.add_argument(
        "--seeds",
        nargs="+",
        type=int,
        help="train only these seeds' runs and write no report (split a grid over processes)",
    )
    ap.add_argument(
        "--variants",
        nargs="+",
        help="train only these variants (names as in the report, e.g. baseline "
        "'distilled[qwen]' 'pooling=last [qwen]') and write no report, like --seeds",
    )
    ap.add_argument(
        "--no-train",
        action="store_true",
        help="train nothing: a run without a record is an error (a report from the records)",
    )
    args = ap.parse_args(argv)
    try:
        run_grid(args)
    except (UcdError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}") from None


def run_grid(args: argparse.Namespace) -> None:
    grid = load_grid(args.grid)
    chosen = select(grid, args.grid, args.report, args.variants, args.seeds)
    for exp in chosen:
        blocks = run_experiment(
            grid, exp, seeds=args.seeds, only=args.variants, train=not args.no_train, extra=args.overrides
        )
        if args.seeds is None and args.variants is None:
            path = write_experiment(grid, args.grid, exp, blocks, args.overrides)
            print(f"wrote {path}, {path.with_suffix('.md').name}, {exp['report']}-gains.png")
    if args.seeds is not None or args.variants is not None:
        print(
            f"trained seeds {args.seeds or 'all'}, variants {args.variants or 'all'}: records in {grid['results']}/runs"
        )


if __name__ == "__main__":
    main()
