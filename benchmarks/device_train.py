"""The students' training loop on one device (cpu or cuda), without Ray: per epoch the losses,
validation NDCG@10 and sequences/s; at the end test metrics and a most-popular reference.
Prints a table and writes JSON.

It checks the CUDA path of the model, loss, distillation and evaluation code on a GPU machine
where Ray cannot be installed (only torch's own stack is there); on a cluster the same
``train_epoch``/``evaluate`` run inside Ray Train workers (``ucd.pipelines.train_job``).

    python benchmarks/device_train.py --data <prepared dataset> \
        --config ml-100k-sasrec [--profiles P] \
        [--devices cuda cpu] [--epochs 5] [--set model.hidden=128 ...] [--json F]

Without ``--profiles`` the distilled run uses random unit vectors (speed and device checks
only; the output says so).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from ucd.config import build_config, find_config
from ucd.data.tensors import ProfileTable, SequenceData
from ucd.evaluate.offline import evaluate_most_popular
from ucd.train.config import TrainConfig
from ucd.train.epoch import StudentWithHead, evaluate, make_optimizer, train_epoch


def random_profiles(n_users: int, dim: int = 384) -> ProfileTable:
    vec = torch.from_numpy(np.random.default_rng(0).standard_normal((n_users + 1, dim)).astype(np.float32))
    vec = torch.nn.functional.normalize(vec, dim=1)
    has = torch.ones(n_users + 1, dtype=torch.bool)
    has[0] = False
    return ProfileTable(vec, has, "random-unit-vectors")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(cfg: TrainConfig, data: SequenceData, profiles: ProfileTable | None, device: torch.device) -> dict:
    torch.manual_seed(cfg.seed)
    core = StudentWithHead(cfg, profiles.dim if profiles else None).to(device)
    opt = make_optimizer(core.parameters(), cfg.optim)
    seq = data.train_tensor(cfg.model.max_len)
    users = torch.from_numpy(data.train_users)
    vecs = profiles.vectors if profiles else None
    has = profiles.has if profiles else None
    epochs = []
    for ep in range(cfg.epochs):
        _sync(device)
        t = time.perf_counter()
        stats = train_epoch(core, core, opt, seq, users, vecs, has, cfg, ep, device=device)
        _sync(device)
        seconds = time.perf_counter() - t
        val = evaluate(
            core.student, data.valid, data.n_items, cfg.model.max_len, cfg.exclude_seen, device=device
        ).compute()
        epochs.append(
            {
                "epoch": ep,
                "rec_loss": stats["rec_loss"],
                "distill_loss": stats["distill_loss"],
                "val_ndcg@10": val["ndcg@10"],
                "seq_per_s": len(seq) / seconds,
            }
        )
        print(
            f"  {device.type:4s} ep {ep:2d} rec {stats['rec_loss']:.4f} distill {stats['distill_loss']:.4f} "
            f"val ndcg@10 {val['ndcg@10']:.4f} {len(seq) / seconds:8.0f} seq/s",
            flush=True,
        )
    test = {
        ("removed" if ex else "kept"): evaluate(
            core.student, data.test, data.n_items, cfg.model.max_len, ex, device=device
        ).compute()
        for ex in (False, True)
    }
    rates = [e["seq_per_s"] for e in epochs]
    return {
        "device": str(device),
        "epochs": epochs,
        "test": test,
        # The first epoch pays for CUDA context, kernels' autotuning and allocator warm-up.
        "steady_seq_per_s": float(np.mean(rates[1:] if len(rates) > 1 else rates)),
        "rec_loss_decreased": epochs[-1]["rec_loss"] < epochs[0]["rec_loss"],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True, help="prepared dataset folder (`ucd prepare`)")
    ap.add_argument("--config", default="ml-100k-sasrec", help="shipped model config name or YAML path")
    ap.add_argument("--profiles", help="profile_embeddings.parquet; default: random unit vectors")
    ap.add_argument("--devices", nargs="+", default=["cuda", "cpu"])
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--set", nargs="*", default=[], dest="overrides", help="config overrides key=value")
    ap.add_argument("--json", default="benchmarks/results/device_train.json")
    args = ap.parse_args()

    data = SequenceData.load(args.data)
    common = [f"data={args.data}", f"epochs={args.epochs}", f"model.n_items={data.n_items}"]
    base, distilled = (
        build_config(
            TrainConfig,
            find_config("train", args.config),
            [*common, f"distill.enabled={on}", *args.overrides],
        )
        for on in ("false", "true")
    )
    profiles = (
        ProfileTable.load(args.profiles, data.n_users, expected_fingerprint=data.fingerprint)
        if args.profiles
        else random_profiles(data.n_users)
    )
    pop = evaluate_most_popular(data).metrics
    results = []
    for dev in args.devices:
        device = torch.device(dev)
        for name, cfg in (("baseline", base), ("distilled", distilled)):
            print(f"[device_train] {data.dataset} {cfg.model.kind} {name} on {device}", flush=True)
            rec = run(cfg, data, profiles if name == "distilled" else None, device)
            rec["variant"] = name
            rec["beats_most_popular"] = rec["test"]["kept"]["ndcg@10"] > pop["ndcg@10"]
            results.append(rec)

    print(
        f"\n{data.dataset}: {len(data.train_users):,} training sequences, {data.n_items:,} items, "
        f"{args.epochs} epochs; profiles: {args.profiles or 'random unit vectors (speed only)'}"
    )
    print(f"{'device':8s} {'variant':10s} {'seq/s':>9s} {'rec loss 0→last':>17s} {'test NDCG@10':>13s}")
    for r in results:
        e = r["epochs"]
        print(
            f"{r['device']:8s} {r['variant']:10s} {r['steady_seq_per_s']:9.0f} "
            f"{e[0]['rec_loss']:8.3f}→{e[-1]['rec_loss']:.3f} {r['test']['kept']['ndcg@10']:13.4f}"
        )
    print(f"most-popular test NDCG@10 {pop['ndcg@10']:.4f}")
    by = {(r["device"], r["variant"]): r["steady_seq_per_s"] for r in results}
    ratios = {}
    for dev in args.devices:
        if (dev, "baseline") in by:
            ratios[f"{dev} distill overhead"] = by[(dev, "baseline")] / by[(dev, "distilled")] - 1
    if "cuda" in args.devices and "cpu" in args.devices:
        ratios["cuda/cpu baseline"] = by[("cuda", "baseline")] / by[("cpu", "baseline")]
    for k, v in ratios.items():
        print(f"{k}: {v:.3f}")
    out = {
        "benchmark": "device_train",
        "dataset": data.dataset,
        "config": args.config,
        "overrides": args.overrides,
        "profiles": args.profiles or "random-unit-vectors",
        "epochs": args.epochs,
        "most_popular_test": pop,
        "results": results,
        "ratios": ratios,
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cpu_count": os.cpu_count(),
        "host": platform.node(),
        "date": time.strftime("%Y-%m-%d"),
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
