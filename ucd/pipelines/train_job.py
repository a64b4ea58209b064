"""Distributed training on Ray Train: TorchTrainer + DDP, checkpoints, early stopping, resume.

The driver (:func:`run_training`) opens the MLflow run, starts the trainer, then evaluates the
best epoch on the test split, saves the model folder, logs it and registers it. Workers
(:func:`train_loop_per_worker`) each train on their own shard of users, validate on their
shard of validation users (summed across ranks), and rank 0 writes the checkpoint holding
both the latest state (for resume) and the best weights so far.
"""

from __future__ import annotations

import copy
import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ucd import schema
from ucd.config import default_home
from ucd.data.prepare import load_manifest
from ucd.data.tensors import ProfileTable, SequenceData, profiles_identity
from ucd.tracking import runs as tracking
from ucd.train.config import TrainConfig
from ucd.train.epoch import (
    StudentWithHead,
    evaluate,
    make_optimizer,
    save_state,
    train_epoch,
)

VAL_KEYS = ("ndcg@10", "recall@10", "mrr@10")
STATE = "state.pt"
BEST = "best.pt"


def _load_profiles(cfg: TrainConfig, data: SequenceData) -> ProfileTable | None:
    if not cfg.distill.enabled:
        return None
    if not cfg.profiles:
        raise ValueError("distill.enabled is true but `profiles` (profile_embeddings.parquet) is not set")
    return ProfileTable.load(cfg.profiles, data.n_users, cfg.profile_coverage, cfg.seed, data.fingerprint)


def _validate(
    core: StudentWithHead, data: SequenceData, cfg: TrainConfig, rank: int, world: int, device
) -> dict:
    """Validation metrics over all ranks' shards: sums and counts all-reduced, then divided."""
    shard = data.valid.subset(np.arange(rank, len(data.valid), world))
    ev = evaluate(
        core.student,
        shard,
        data.n_items,
        cfg.model.max_len,
        cfg.exclude_seen,
        cfg.eval_batch_size,
        device=device,
    )
    per_user = ev.per_user() if len(shard) else {k: torch.zeros(0) for k in VAL_KEYS}
    sums = torch.tensor(
        [float(per_user[k].sum()) for k in VAL_KEYS] + [float(len(shard))], dtype=torch.float64
    )
    if world > 1:
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


def train_loop_per_worker(config: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch

    cfg = TrainConfig.model_validate(config["cfg"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    torch.manual_seed(cfg.seed)  # same initial weights everywhere (DDP also broadcasts rank 0's)

    data = SequenceData.load(cfg.data)
    profiles = _load_profiles(cfg, data)
    core = StudentWithHead(cfg, profiles.dim if profiles else None)
    module = ray.train.torch.prepare_model(
        core, parallel_strategy_kwargs={"find_unused_parameters": cfg.distill.enabled}
    )
    optimizer = make_optimizer(module.parameters(), cfg.optim)

    state = {
        "epoch": -1,
        "best": -1.0,
        "best_epoch": -1,
        "history": [],
        "restarts": [],
    }
    best_weights = None
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            saved = torch.load(Path(d) / STATE, map_location=device, weights_only=False)
            best_weights = torch.load(Path(d) / BEST, map_location="cpu", weights_only=True)
        core.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        state = saved["state"]
        state["restarts"].append(state["epoch"] + 1)
        # The stopping rule is the current config's, not the one the checkpoint was written
        # under: a run stopped early goes on if patience or min_epochs grew.
        if _early_stopped(state["epoch"], state["best_epoch"], cfg):
            return  # a rerun of an early-stopped run: the checkpoint already holds the result
    start_epoch = state["epoch"] + 1

    train_seq = data.train_tensor(cfg.model.max_len)
    train_users = torch.from_numpy(data.train_users)
    prof = profiles.vectors if profiles else None
    has = profiles.has if profiles else None

    mlflow_client = None
    if rank == 0 and config.get("mlflow_run_id"):
        import mlflow

        mlflow_client = mlflow.MlflowClient(tracking_uri=config["tracking_uri"])

    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        # Dropout and masking draw from a per-epoch seed, so a resumed run repeats exactly.
        torch.manual_seed(cfg.seed * 7919 + epoch * 31 + rank)
        stats = train_epoch(
            module, core, optimizer, train_seq, train_users, prof, has, cfg, epoch, rank, world, device
        )
        train_seconds = time.perf_counter() - t0
        stats = _mean_across(stats, world)
        val = _validate(core, data, cfg, rank, world, device)
        score = val["val_ndcg@10"]
        if epoch >= cfg.select_from_epoch and score > state["best"]:
            state.update(best=score, best_epoch=epoch)
            best_weights = copy.deepcopy(core.student.state_dict())
        state["epoch"] = epoch
        stop = _early_stopped(epoch, state["best_epoch"], cfg) or epoch == cfg.epochs - 1
        metrics = {
            "epoch": epoch,
            **{f"train_{k}": v for k, v in stats.items() if k != "batches"},
            **val,
            "best_val_ndcg@10": state["best"],
            "best_epoch": state["best_epoch"],
            "train_seconds": train_seconds,
            "sequences_per_second": (len(train_seq) // world) * world / max(train_seconds, 1e-9),
            "stopped": float(stop),
        }
        state["history"].append(metrics)
        if rank == 0:
            with tempfile.TemporaryDirectory() as d:
                save_state(
                    Path(d) / STATE, model=core.state_dict(), optimizer=optimizer.state_dict(), state=state
                )
                torch.save(best_weights, Path(d) / BEST)
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))
            if mlflow_client is not None:
                from mlflow.entities import Metric

                now = int(time.time() * 1000)
                mlflow_client.log_batch(
                    config["mlflow_run_id"],
                    metrics=[
                        Metric(k.replace("@", "_at_"), float(v), now, epoch)
                        for k, v in metrics.items()
                        if k != "epoch"
                    ],
                )
        else:
            ray.train.report(metrics)
        fail_at = config.get("fail_at_epoch")
        if fail_at is not None and epoch == fail_at and start_epoch <= fail_at and rank == 0:
            # Fault injection for tests of Ray Train's restart-from-checkpoint path.
            raise RuntimeError(f"injected failure after epoch {epoch}")
        if stop:
            break


@dataclass
class TrainResult:
    run_name: str
    run_id: str | None
    model_dir: Path
    best_epoch: int
    history: list[dict]
    test: dict[str, float]
    model_version: str | None = None
    restarts: list[int] = field(default_factory=list)  # epochs resumed at, from checkpoints
    per_user: dict[str, np.ndarray] = field(default_factory=dict)


def _early_stopped(epoch: int, best_epoch: int, cfg: TrainConfig) -> bool:
    """Patience is used up: the epochs after the best one, counted from min_epochs on (and from
    select_from_epoch on, since no earlier epoch can be the best one)."""
    return epoch - max(best_epoch, cfg.min_epochs - 1, cfg.select_from_epoch - 1) >= cfg.patience


# (section or None for a top-level setting, setting, the value every run recorded before the
# setting existed had); see train_key.
_ADDED_LATER = (("distill", "weight_by_coverage", False), (None, "select_from_epoch", 0))


def train_key(cfg: TrainConfig) -> str:
    """Identity of a run for resume: settings that change the result, not its length or plumbing."""
    d = cfg.model_dump(mode="json")
    for k in (
        "epochs",
        "patience",
        "min_epochs",
        "ray",
        "tracking",
        "registry",
        "output",
        "run_name",
        "eval_batch_size",
    ):
        d.pop(k, None)
    # Settings added after runs were recorded join the key only when moved off the value those
    # runs had, so their checkpoints and benchmark records keep their identity.
    for section, k, historical in _ADDED_LATER:
        where = d if section is None else d[section]
        if where.get(k) == historical:
            where.pop(k)
    return schema.fingerprint(d)[:10]


def profiles_id(cfg: TrainConfig) -> str | None:
    """Identity of the profiles a distilled run learns from (None for a baseline).

    Kept out of :func:`train_key` on purpose: the config names the profiles' folder only, and
    what the folder holds changes under a resumed or another profile job, so callers that cache
    or resume runs add this to the key themselves.
    """
    return profiles_identity(cfg.profiles) if cfg.distill.enabled and cfg.profiles else None


def run_training(cfg: TrainConfig, log=print, fail_at_epoch: int | None = None) -> TrainResult:
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    manifest = load_manifest(cfg.data)
    items = schema.read_table(Path(cfg.data) / "items.parquet", "items", columns=["item_id"])
    cfg = cfg.model_copy(deep=True)
    cfg.model.n_items = int(max(items.column("item_id").to_pylist()))
    cfg.data = str(Path(cfg.data).resolve())
    if cfg.profiles and "://" not in cfg.profiles:
        cfg.profiles = str(Path(cfg.profiles).resolve())
    run_name = cfg.resolved_run_name(manifest["dataset"])
    key = train_key(cfg)
    # Ray Train resumes a run by its name: a run on other profiles must not continue this one.
    pid = profiles_id(cfg)
    ray_name = f"{run_name}-{key}" + (f"-p{pid[:8]}" if pid else "")
    storage = cfg.ray.storage_path or str(default_home() / "ray_results")
    if "://" not in storage:
        Path(storage).mkdir(parents=True, exist_ok=True)
    if not ray.is_initialized():
        ray.init(log_to_driver=True)

    params = {
        "config": cfg.model_dump(mode="json"),
        "dataset": manifest["dataset"],
        "data_fingerprint": manifest["fingerprint"],
    }
    tags = {"ucd.job": "train", "ucd.train_key": key, "ucd.dataset": manifest["dataset"]}
    if pid:
        tags["ucd.profiles_id"] = pid
    with tracking.run(cfg.tracking, run_name, params=params, tags=tags) as active:
        run_id = active.info.run_id if active is not None else None
        scaling = ScalingConfig(
            num_workers=cfg.ray.num_workers,
            use_gpu=cfg.ray.use_gpu,
            resources_per_worker={"CPU": cfg.ray.cpus_per_worker, **({"GPU": 1} if cfg.ray.use_gpu else {})},
            accelerator_type=cfg.ray.accelerator_type,
        )
        trainer = TorchTrainer(
            train_loop_per_worker,
            train_loop_config={
                "cfg": cfg.model_dump(mode="json"),
                "mlflow_run_id": run_id,
                "tracking_uri": cfg.tracking.resolved_uri(),
                "fail_at_epoch": fail_at_epoch,
            },
            scaling_config=scaling,
            run_config=RunConfig(
                name=ray_name,
                storage_path=storage,
                failure_config=FailureConfig(max_failures=cfg.ray.max_failures),
                checkpoint_config=CheckpointConfig(num_to_keep=2),
            ),
        )
        log(
            f"[train] {run_name}: {cfg.ray.num_workers} worker(s), gpu={cfg.ray.use_gpu}, ray run {ray_name} in {storage}"
        )
        result = trainer.fit()
        if result.checkpoint is None:
            raise RuntimeError(f"training of {run_name} produced no checkpoint: {result.error}")
        with result.checkpoint.as_directory() as d:
            saved = torch.load(Path(d) / STATE, map_location="cpu", weights_only=False)
            best = torch.load(Path(d) / BEST, map_location="cpu", weights_only=True)
        history = saved["state"]["history"]
        best_epoch = saved["state"]["best_epoch"]
        for h in history:
            log(
                f"[train] epoch {h['epoch']:3d}  loss {h['train_loss']:.4f}  rec {h['train_rec_loss']:.4f}  "
                f"distill {h['train_distill_loss']:.4f}  val ndcg@10 {h['val_ndcg@10']:.4f}  "
                f"({h['train_seconds']:.1f}s)"
            )

        from ucd.train.model_dir import load_student, save_student

        out = Path(cfg.output) if cfg.output else default_home() / "models" / ray_name
        meta = {
            "dataset": manifest["dataset"],
            "data_fingerprint": manifest["fingerprint"],
            "protocol": manifest["protocol"],
            "run_name": run_name,
            "train_key": key,
            "profiles_id": pid,
            "best_epoch": best_epoch,
            "mlflow_run_id": run_id,
            "distill": cfg.distill.model_dump(mode="json"),
        }
        save_student(out, best, cfg.model, meta, Path(cfg.data) / "items.parquet")
        data = SequenceData.load(cfg.data)
        ev = evaluate(
            load_student(out).model,
            data.test,
            data.n_items,
            cfg.model.max_len,
            cfg.exclude_seen,
            cfg.eval_batch_size,
        )
        test = {f"test_{k}": v for k, v in ev.compute().items()}
        per_user = {k: v.numpy() for k, v in ev.per_user().items()}
        log(
            "[train] test ("
            + ("seen items removed" if cfg.exclude_seen else "seen items kept")
            + "): "
            + "  ".join(f"{k.removeprefix('test_')} {v:.4f}" for k, v in test.items() if "@10" in k)
        )
        version = None
        if active is not None:
            import mlflow

            mlflow.log_metrics({k.replace("@", "_at_"): v for k, v in test.items()})
            mlflow.log_metric("best_epoch", best_epoch)
            mlflow.set_tag("ucd.exclude_seen", str(cfg.exclude_seen))
            with tempfile.TemporaryDirectory() as d:
                (Path(d) / "history.json").write_text(json.dumps(history, indent=1))
                import pyarrow as pa
                import pyarrow.parquet as pq

                pq.write_table(
                    pa.table({"user_id": data.test.user_ids, **{k: v for k, v in per_user.items()}}),
                    Path(d) / "test_per_user.parquet",
                )
                mlflow.log_artifacts(d, artifact_path="eval")
            if cfg.registry.enabled:
                version = tracking.log_student_model(out, cfg.registry.model_name, cfg.registry.alias)
                log(
                    f"[train] registered {cfg.registry.model_name} version {version} as @{cfg.registry.alias}"
                )
            else:
                tracking.log_student_model(out, None, None)
    return TrainResult(
        run_name, run_id, out, best_epoch, history, test, version, saved["state"]["restarts"], per_user
    )
