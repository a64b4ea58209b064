"""Training throughput on Beauty: single-process loop vs Ray Train (1 and 2 CPU workers),
baseline vs distilled. Prints a table and writes JSON.

    .venv/bin/python benchmarks/train_throughput.py [--profiles out/profiles/beauty] [--epochs 3]

Without ``--profiles`` the distilled runs use random unit vectors as profile embeddings: the
vectors' content does not change the work done per step, so this measures the distillation
overhead honestly, but says so in the output. All variants run in one invocation so their
ratios are comparable on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from ucd import schema
from ucd.config import default_data_dir
from ucd.data.prepare import prepare_named
from ucd.data.tensors import ProfileTable, SequenceData
from ucd.train.config import TrainConfig
from ucd.train.epoch import StudentWithHead, make_optimizer, train_epoch

MODEL = {"kind": "sasrec", "max_len": 50, "hidden": 64, "n_blocks": 2, "n_heads": 1, "dropout": 0.2}
DISTILL = {"enabled": True, "layer": 2, "pooling": "mean", "distance": "cosine", "alpha": 0.4, "epochs": 1000}


def random_profiles(folder: Path, data: SequenceData, dim: int = 384) -> Path:
    rng = np.random.default_rng(0)
    users = data.train_users.astype(np.int32)
    vec = rng.standard_normal((len(users), dim)).astype(np.float32)
    vec /= np.linalg.norm(vec, axis=1, keepdims=True)
    table = pa.table(
        {
            "user_id": pa.array(users, pa.int32()),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vec.reshape(-1)), dim),
            "model": pa.array(["random-unit-vectors"] * len(users)),
        }
    )
    path = folder / "profile_embeddings.parquet"
    schema.write_table(
        table,
        path,
        "profile_embeddings",
        {"dataset": data.dataset, "data_fingerprint": data.fingerprint},
        schema=schema.profile_embeddings_schema(dim),
    )
    return path


def _steady(rates: list[float]) -> float:
    """Mean rate over the epochs after the first (which pays for warm-up and lazy init)."""
    return float(np.mean(rates[1:] if len(rates) > 1 else rates))


def single_process(cfg: TrainConfig, data: SequenceData, epochs: int) -> float:
    torch.set_num_threads(2)
    torch.manual_seed(cfg.seed)
    profiles = (
        ProfileTable.load(cfg.profiles, data.n_users, expected_fingerprint=data.fingerprint)
        if cfg.distill.enabled
        else None
    )
    core = StudentWithHead(cfg, profiles.dim if profiles else None)
    opt = make_optimizer(core.parameters(), cfg.optim)
    seq = data.train_tensor(cfg.model.max_len)
    users = torch.from_numpy(data.train_users)
    rates = []
    for ep in range(epochs):
        t = time.perf_counter()
        train_epoch(
            core, core, opt, seq, users, profiles and profiles.vectors, profiles and profiles.has, cfg, ep
        )
        rates.append(len(seq) / (time.perf_counter() - t))
    return _steady(rates)


def ray_train(cfg: TrainConfig, workers: int, tmp: Path) -> float:
    from ucd.pipelines.train_job import run_training

    cfg = cfg.model_copy(
        update={
            "ray": cfg.ray.model_copy(
                update={
                    "num_workers": workers,
                    "cpus_per_worker": 2 / workers,
                    "storage_path": str(tmp / "ray"),
                }
            ),
            "output": str(tmp / f"model-{workers}-{cfg.distill.enabled}"),
            "run_name": f"throughput-{workers}-{cfg.distill.enabled}-{time.time_ns()}",
        }
    )
    res = run_training(cfg, log=lambda *_: None)
    return _steady([h["sequences_per_second"] for h in res.history])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="beauty")
    ap.add_argument("--profiles", help="real profile_embeddings.parquet; default: random unit vectors")
    ap.add_argument("--epochs", type=int, default=3, help="epochs per variant; all but the first are timed")
    ap.add_argument("--json", default="benchmarks/results/train_throughput.json")
    args = ap.parse_args()

    import ray

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        prepared = prepare_named(args.dataset, tmp / "data", data_dir=default_data_dir(), log=lambda *_: None)
        data = SequenceData.load(prepared)
        profiles = args.profiles or str(random_profiles(tmp, data))
        base = TrainConfig.model_validate(
            {
                "data": str(prepared),
                "profiles": profiles,
                "model": {**MODEL, "n_items": data.n_items},
                "optim": {"batch_size": 128, "lr": 1e-3},
                "epochs": args.epochs,
                "tracking": {"enabled": False},
                "registry": {"enabled": False},
            }
        )
        distilled = base.model_copy(update={"distill": base.distill.model_validate(DISTILL)})
        rows = []
        # A private instance: never attach to another job's cluster on this machine.
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        # Baseline and distilled back to back within each mode, so a change in the machine's
        # load between modes does not show up as distillation overhead.
        for mode, workers in (("single process", 0), ("ray train, 1 worker", 1), ("ray train, 2 workers", 2)):
            for name, cfg in (("baseline", base), ("distilled", distilled)):
                rate = (
                    single_process(cfg, data, args.epochs) if workers == 0 else ray_train(cfg, workers, tmp)
                )
                rows.append({"mode": mode, "variant": name, "seq_per_s": rate})
                print(f"{mode:26s} {name:10s} {rate:8.0f} seq/s", flush=True)
        ray.shutdown()

    by = {(r["mode"], r["variant"]): r["seq_per_s"] for r in rows}
    modes = list(dict.fromkeys(r["mode"] for r in rows))
    print(f"dataset {args.dataset}: {len(data.train_users):,} training sequences, SASRec {MODEL}")
    print("profiles:", args.profiles or "random unit vectors (speed only)")
    print(
        f"{'mode':26s} {'baseline seq/s':>15s} {'distilled seq/s':>16s} {'overhead':>9s} {'vs single':>10s}"
    )
    single = by[("single process", "baseline")]
    summary = []
    for m in modes:
        b, dd = by[(m, "baseline")], by[(m, "distilled")]
        overhead = b / dd - 1
        summary.append(
            {
                "mode": m,
                "baseline": b,
                "distilled": dd,
                "distill_overhead": overhead,
                "baseline_vs_single": b / single,
            }
        )
        print(f"{m:26s} {b:15.0f} {dd:16.0f} {overhead:9.1%} {b / single:10.2f}")
    out = {
        "benchmark": "train_throughput",
        "dataset": args.dataset,
        "model": MODEL,
        "distill": DISTILL,
        "profiles": args.profiles or "random-unit-vectors",
        "epochs": args.epochs,
        "rows": summary,
        "date": time.strftime("%Y-%m-%d"),
        "cpu_count": os.cpu_count(),
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
