"""Quality sanity of the baseline student against a published figure on the same data.

Default: SASRec on Amazon Beauty 5-core, `loo`, full ranking, against the eSASRec benchmark's
SASRec NDCG@10 0.0531 / Recall@10 0.0921. Every model is scored twice on the test users: seen
items kept in the ranking (this project's default) and removed (RecTools' ``filter_viewed``, the
default of the library behind that benchmark). The JSON also records how many test targets occur
in their user's history: when none do, removing seen items never hides a correct answer.
Long-running (over an hour on 2 CPU cores).

    python -m experiments.baseline_quality --config beauty-sasrec --set epochs=150 --set patience=15
    # score models an earlier run trained, without training again:
    python -m experiments.baseline_quality --models ~/.cache/ucd/models/beauty-sasrec-baseline-s42-<key>
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ucd.config import build_config, default_data_dir, default_home, find_config
from ucd.data.prepare import prepare_named
from ucd.data.tensors import SequenceData
from ucd.evaluate.offline import evaluate_model, evaluate_most_popular
from ucd.train.config import TrainConfig
from ucd.train.model_dir import load_student

SETTINGS = {"kept": False, "removed": True}
METRICS = ("ndcg@10", "recall@10")


def _score(model_dir: Path, data: SequenceData) -> dict[str, dict[str, float]]:
    return {name: evaluate_model(model_dir, data, "test", excl).metrics for name, excl in SETTINGS.items()}


def _repeats(data: SequenceData) -> int:
    rows = data.test
    return sum(int(t) in set(h.tolist()) for h, t in zip(rows.histories, rows.targets, strict=True))


def score_models(models: list[str], data: SequenceData, dataset: str) -> list[dict]:
    """Rows for model folders trained earlier (on this very preparation of the data)."""
    rows = []
    for m in models:
        meta = load_student(m).meta
        if meta.get("data_fingerprint") != data.fingerprint:
            raise SystemExit(f"{m} was trained on another preparation of {dataset}")
        row = {"model": str(m), "run_name": meta.get("run_name"), "best_epoch": meta.get("best_epoch")}
        rows.append({**row, "trained": "by an earlier run", **_score(Path(m), data)})
    return rows


def train_and_score(config: str, prepared: Path, seeds: list[int], overrides: list[str], data) -> list[dict]:
    """Rows for baselines trained here, one per seed."""
    from ucd.pipelines.train_job import run_training

    rows = []
    for seed in seeds:
        cfg = build_config(
            TrainConfig, find_config("train", config), [f"data={prepared}", f"seed={seed}", *overrides]
        )
        t = time.perf_counter()
        res = run_training(cfg)
        row = {"model": str(res.model_dir), "run_name": res.run_name, "seed": seed}
        row |= {
            "seconds": time.perf_counter() - t,
            "best_epoch": res.best_epoch,
            "epochs_run": len(res.history),
        }
        rows.append({**row, "trained": "in this run", **_score(res.model_dir, data)})
    return rows


def print_table(
    args, data: SequenceData, pop: dict, rows: list[dict], mean: dict, gap: dict, n_rep: int
) -> None:
    print(f"\n{args.dataset} loo, full ranking, {len(data.test)} test users; config {args.config} {args.set}")
    print(f"{'model':16s} {'seen items':>10s} {'NDCG@10':>8s} {'Recall@10':>10s} {'best ep':>8s}")
    for s in SETTINGS:
        print(f"{'most-popular':16s} {s:>10s} {pop[s]['ndcg@10']:8.4f} {pop[s]['recall@10']:10.4f}")
        for r in rows:
            name = r["run_name"][:16]
            print(
                f"{name:16s} {s:>10s} {r[s]['ndcg@10']:8.4f} {r[s]['recall@10']:10.4f} {r['best_epoch']:8d}"
            )
    print(f"{'published':16s} {'':>10s} {args.target_ndcg:8.4f} {args.target_recall:10.4f}")
    print(f"test targets already in their user's history: {n_rep} of {len(data.test)}")
    for s in SETTINGS:
        within = abs(gap[s]) <= 0.05 or gap[s] > 0
        print(
            f"seen {s}: mean NDCG@10 {mean[s]['ndcg@10']:.4f} = {gap[s]:+.1%} vs published; within 5%: {within}"
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="beauty")
    ap.add_argument("--config", default="beauty-sasrec", help="a shipped train config's name, or a path")
    ap.add_argument("--target-ndcg", type=float, default=0.0531)
    ap.add_argument("--target-recall", type=float, default=0.0921)
    ap.add_argument("--seeds", type=int, nargs="+", default=[42])
    ap.add_argument("--set", action="append", default=[], help="TrainConfig override")
    ap.add_argument("--models", nargs="+", help="score these trained model folders instead of training")
    ap.add_argument("--json", default="experiments/results/baseline_quality.json")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    prepared = prepare_named(
        args.dataset, default_home() / "prepared" / f"{args.dataset}-loo", data_dir=default_data_dir()
    )
    data = SequenceData.load(prepared)
    pop = {name: evaluate_most_popular(data, "test", excl).metrics for name, excl in SETTINGS.items()}
    if args.models:
        rows = score_models(args.models, data, args.dataset)
    else:
        rows = train_and_score(args.config, prepared, args.seeds, args.set, data)
    mean = {s: {m: sum(r[s][m] for r in rows) / len(rows) for m in METRICS} for s in SETTINGS}
    gap = {s: mean[s]["ndcg@10"] / args.target_ndcg - 1 for s in SETTINGS}
    n_rep = _repeats(data)
    print_table(args, data, pop, rows, mean, gap, n_rep)
    out = {
        "benchmark": "baseline_quality",
        "dataset": args.dataset,
        "config": args.config,
        "overrides": args.set,
        "most_popular": pop,
        "runs": rows,
        "mean": mean,
        "targets_in_history": n_rep,
        "test_users": len(data.test),
        "target_ndcg@10": args.target_ndcg,
        "target_recall@10": args.target_recall,
        "relative_gap": gap,
        "date": time.strftime("%Y-%m-%d"),
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
