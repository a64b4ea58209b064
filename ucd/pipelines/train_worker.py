"""The Ray Train worker loop: set up, resume, then epoch by epoch train, validate, report.

Each worker trains on its own shard of users and validates on its shard of the validation
users (sums all-reduced, so every rank sees the same score and takes the same stopping
decision); rank 0 writes the checkpoint (:mod:`ucd.train.checkpoints`) and logs the epoch's
metrics to the driver's MLflow run.
"""

from __future__ import annotations

import copy
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ucd.data.tensors import ProfileTable, SequenceData
from ucd.train.checkpoints import early_stopped, is_new_best, new_progress, resume_from, save_checkpoint
from ucd.train.config import TrainConfig
from ucd.train.epoch import StudentWithHead, evaluate, make_optimizer, train_epoch

VAL_KEYS = ("ndcg@10", "recall@10", "mrr@10")


def load_profiles(cfg: TrainConfig, data: SequenceData) -> ProfileTable | None:
    if not cfg.distill.enabled:
        return None
    if not cfg.profiles:
        raise ValueError("distill.enabled is true but `profiles` (profile_embeddings.parquet) is not set")
    return ProfileTable.load(cfg.profiles, data.n_users, cfg.profile_coverage, cfg.seed, data.fingerprint)


@dataclass
class _Worker:
    """What one worker holds for the whole run."""

    cfg: TrainConfig
    rank: int
    world: int
    device: torch.device
    data: SequenceData
    core: StudentWithHead
    module: nn.Module  # core, or its DDP wrapper
    optimizer: torch.optim.Optimizer
    train_seq: Tensor
    train_users: Tensor
    profiles: ProfileTable | None
    mlflow: Any = None  # rank 0's client of the driver's run, when there is one
    mlflow_run_id: str | None = None
    started: float = 0.0  # when this process began its first epoch, for the ETA
    epochs_here: int = 0  # epochs this process has run (a resumed run starts again at 0)


def _setup(config: dict[str, Any]) -> _Worker:
    import ray.train
    import ray.train.torch

    cfg = TrainConfig.model_validate(config["cfg"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(cfg.seed)  # same initial weights everywhere (DDP also broadcasts rank 0's)
    data = SequenceData.load(cfg.data)
    profiles = load_profiles(cfg, data)
    core = StudentWithHead(cfg, profiles.dim if profiles else None)
    module = ray.train.torch.prepare_model(
        core, parallel_strategy_kwargs={"find_unused_parameters": cfg.distill.enabled}
    )
    w = _Worker(
        cfg=cfg,
        rank=rank,
        world=world,
        device=ray.train.torch.get_device(),
        data=data,
        core=core,
        module=module,
        optimizer=make_optimizer(module.parameters(), cfg.optim),
        train_seq=data.train_tensor(cfg.model.max_len),
        train_users=torch.from_numpy(data.train_users),
        profiles=profiles,
    )
    if rank == 0 and config.get("mlflow_run_id"):
        import mlflow

        w.mlflow = mlflow.MlflowClient(tracking_uri=config["tracking_uri"])
        w.mlflow_run_id = config["mlflow_run_id"]
    return w


def _resume(w: _Worker) -> tuple[dict, dict | None]:
    """The progress and best weights to go on from: the latest checkpoint's, or a fresh start."""
    import ray.train

    ckpt = ray.train.get_checkpoint()
    if ckpt is None:
        return new_progress(), None
    with ckpt.as_directory() as d:
        return resume_from(Path(d), w.core, w.optimizer, w.device)


def _validate(w: _Worker) -> dict:
    """Validation metrics over all ranks' shards: sums and counts all-reduced, then divided."""
    cfg = w.cfg
    shard = w.data.valid.subset(np.arange(w.rank, len(w.data.valid), w.world))
    ev = evaluate(
        w.core.student,
        shard,
        w.data.n_items,
        cfg.model.max_len,
        cfg.exclude_seen,
        cfg.eval_batch_size,
        device=w.device,
    )
    per_user = ev.per_user() if len(shard) else {k: torch.zeros(0) for k in VAL_KEYS}
    sums = torch.tensor(
        [float(per_user[k].sum()) for k in VAL_KEYS] + [float(len(shard))], dtype=torch.float64
    )
    if w.world > 1:
        torch.distributed.all_reduce(sums)
    n = max(sums[-1].item(), 1.0)
    return {f"val_{k}": sums[i].item() / n for i, k in enumerate(VAL_KEYS)}


def _mean_across(stats: dict[str, float], world: int) -> dict[str, float]:
    if world == 1:
        return stats
    keys = sorted(stats)
    t = torch.tensor([stats[k] for k in keys], dtype=torch.float64)
    torch.distributed.all_reduce(t)
    return {k: t[i].item() / world for i, k in enumerate(keys)}


def _epoch(w: _Worker, epoch: int, progress: dict, best_weights: dict | None) -> tuple[dict, dict | None]:
    """Train one epoch, validate, update the progress; returns the epoch's metrics and the best
    weights so far."""
    cfg = w.cfg
    t0 = time.perf_counter()
    # Dropout and masking draw from a per-epoch seed, so a resumed run repeats exactly.
    torch.manual_seed(cfg.seed * 7919 + epoch * 31 + w.rank)
    prof = w.profiles.vectors if w.profiles else None
    has = w.profiles.has if w.profiles else None
    stats = train_epoch(
        w.module,
        w.core,
        w.optimizer,
        w.train_seq,
        w.train_users,
        prof,
        has,
        cfg,
        epoch,
        w.rank,
        w.world,
        w.device,
    )
    train_seconds = time.perf_counter() - t0
    stats = _mean_across(stats, w.world)
    val = _validate(w)
    if is_new_best(epoch, val["val_ndcg@10"], progress, cfg):
        progress.update(best=val["val_ndcg@10"], best_epoch=epoch)
        best_weights = copy.deepcopy(w.core.student.state_dict())
    progress["epoch"] = epoch
    stop = early_stopped(epoch, progress["best_epoch"], cfg) or epoch == cfg.epochs - 1
    metrics = {
        "epoch": epoch,
        **{f"train_{k}": v for k, v in stats.items() if k != "batches"},
        **val,
        "best_val_ndcg@10": progress["best"],
        "best_epoch": progress["best_epoch"],
        "train_seconds": train_seconds,
        "sequences_per_second": (len(w.train_seq) // w.world) * w.world / max(train_seconds, 1e-9),
        "stopped": float(stop),
    }
    progress["history"].append(metrics)
    return metrics, best_weights


def progress_line(metrics: dict, epochs: int, seconds_per_epoch: float) -> str:
    """Rank 0's line for the console after an epoch. The ETA is the remaining epoch budget at
    the pace so far: an upper bound, since early stopping may end the run sooner."""
    left = (epochs - metrics["epoch"] - 1) * seconds_per_epoch
    eta = "done" if metrics["stopped"] else f"ETA <= {int(left // 60)}m{int(left % 60):02d}s"
    return (
        f"[train] epoch {metrics['epoch'] + 1}/{epochs}  loss {metrics['train_loss']:.4f}  "
        f"rec {metrics['train_rec_loss']:.4f}  distill {metrics['train_distill_loss']:.4f}  "
        f"val ndcg@10 {metrics['val_ndcg@10']:.4f} (best {metrics['best_val_ndcg@10']:.4f} at "
        f"epoch {metrics['best_epoch'] + 1})  {seconds_per_epoch:.1f}s/epoch  {eta}"
    )


def _report(w: _Worker, metrics: dict, progress: dict, best_weights: dict | None) -> None:
    """Report the epoch to Ray Train: rank 0 with the checkpoint, and to MLflow and the console."""
    import ray.train

    if w.rank != 0:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as d:
        save_checkpoint(Path(d), w.core, w.optimizer, progress, best_weights)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))
    w.epochs_here += 1
    print(progress_line(metrics, w.cfg.epochs, (time.perf_counter() - w.started) / w.epochs_here), flush=True)
    if w.mlflow is not None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        step = metrics["epoch"]
        batch = [
            Metric(k.replace("@", "_at_"), float(v), now, step) for k, v in metrics.items() if k != "epoch"
        ]
        w.mlflow.log_batch(w.mlflow_run_id, metrics=batch)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    w = _setup(config)
    progress, best_weights = _resume(w)
    # The stopping rule is the current config's, not the one the checkpoint was written under:
    # a run stopped early goes on if patience or min_epochs grew.
    if progress["epoch"] >= 0 and early_stopped(progress["epoch"], progress["best_epoch"], w.cfg):
        return  # a rerun of an early-stopped run: the checkpoint already holds the result
    start = progress["epoch"] + 1
    fail_at = config.get("fail_at_epoch")
    w.started = time.perf_counter()
    for epoch in range(start, w.cfg.epochs):
        metrics, best_weights = _epoch(w, epoch, progress, best_weights)
        _report(w, metrics, progress, best_weights)
        if fail_at is not None and epoch == fail_at and start <= fail_at and w.rank == 0:
            # Fault injection for tests of Ray Train's restart-from-checkpoint path.
            raise RuntimeError(f"injected failure after epoch {epoch}")
        if metrics["stopped"]:
            break
