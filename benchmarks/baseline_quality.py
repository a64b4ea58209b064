"""Quality sanity of the baseline student against a published figure on the same data.

Default: SASRec on Amazon Beauty 5-core, `loo`, full ranking, seen items kept, against the
eSASRec benchmark's SASRec NDCG@10 0.0531 / Recall@10 0.0921 (DESIGN.md §1). Long-running
(tens of minutes on 2 CPU cores). Prints a table and writes JSON.

    .venv/bin/python benchmarks/baseline_quality.py --config configs/train/beauty-sasrec.yaml
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ucd.config import build_config, default_data_dir, default_home
from ucd.data.prepare import prepare_named
from ucd.pipelines.evaluate import evaluate_most_popular
from ucd.pipelines.train import run_training
from ucd.seqdata import SequenceData
from ucd.training import TrainConfig


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="beauty")
    ap.add_argument("--config", default="configs/train/beauty-sasrec.yaml")
    ap.add_argument("--target-ndcg", type=float, default=0.0531)
    ap.add_argument("--target-recall", type=float, default=0.0921)
    ap.add_argument("--seeds", type=int, nargs="+", default=[42])
    ap.add_argument("--set", action="append", default=[], help="TrainConfig override")
    ap.add_argument("--json", default="benchmarks/results/baseline_quality.json")
    args = ap.parse_args()

    prepared = prepare_named(args.dataset, default_home() / "prepared" / f"{args.dataset}-loo", data_dir=default_data_dir())
    data = SequenceData.load(prepared)
    pop = evaluate_most_popular(data, "test").metrics
    rows = []
    for seed in args.seeds:
        cfg = build_config(TrainConfig, args.config, [f"data={prepared}", f"seed={seed}", *args.set])
        t = time.perf_counter()
        res = run_training(cfg)
        rows.append({"seed": seed, "seconds": time.perf_counter() - t, "best_epoch": res.best_epoch,
                     "epochs_run": len(res.history), **res.test})
    ndcg = sum(r["test_ndcg@10"] for r in rows) / len(rows)
    recall = sum(r["test_recall@10"] for r in rows) / len(rows)
    print(f"\n{args.dataset} loo, full ranking, seen items {'removed' if cfg.exclude_seen else 'kept'}; config {args.config}")
    print(f"{'model':14s} {'NDCG@10':>8s} {'Recall@10':>10s} {'best ep':>8s} {'minutes':>8s}")
    print(f"{'most-popular':14s} {pop['ndcg@10']:8.4f} {pop['recall@10']:10.4f}")
    for r in rows:
        print(f"{'seed ' + str(r['seed']):14s} {r['test_ndcg@10']:8.4f} {r['test_recall@10']:10.4f} {r['best_epoch']:8d} {r['seconds'] / 60:8.1f}")
    print(f"{'published':14s} {args.target_ndcg:8.4f} {args.target_recall:10.4f}")
    gap = ndcg / args.target_ndcg - 1
    print(f"mean NDCG@10 {ndcg:.4f} = {gap:+.1%} vs published; within 5%: {abs(gap) <= 0.05 or gap > 0}")
    out = {"benchmark": "baseline_quality", "dataset": args.dataset, "config": args.config,
           "overrides": args.set, "exclude_seen": cfg.exclude_seen, "most_popular": pop, "runs": rows,
           "mean_ndcg@10": ndcg, "mean_recall@10": recall, "target_ndcg@10": args.target_ndcg,
           "target_recall@10": args.target_recall, "relative_gap": gap,
           "date": time.strftime("%Y-%m-%d")}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
