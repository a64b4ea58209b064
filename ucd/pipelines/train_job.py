"""Distributed training on Ray Train: TorchTrainer + DDP, checkpoints, early stopping, resume.

:func:`run_training` runs four steps: resolve the config against its data (catalogue size,
absolute paths, the run key), fit on Ray Train (:mod:`ucd.pipelines.train_worker`), finalise
(the best epoch's weights as a model folder, evaluated on the test split), and log the result
to MLflow and its registry. Ray Train resumes a run from its checkpoints by name: the name
carries the run's resume key (:mod:`ucd.train.run_key`), so only the same settings on the same
data and profiles continue one another.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ucd import schema
from ucd.config import default_home
from ucd.data.prepare import load_manifest
from ucd.data.tensors import SequenceData
from ucd.pipelines.console import job_console, route_worker_output
from ucd.tracking import runs as tracking
from ucd.train.checkpoints import load_checkpoint
from ucd.train.config import TrainConfig
from ucd.train.epoch import evaluate
from ucd.train.run_key import RUN_KEY_VERSION, RunKeys, run_keys


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
    keys: RunKeys | None = None


@dataclass
class _Run:
    """A config resolved against its data: what every later step reads."""

    cfg: TrainConfig
    manifest: dict
    run_name: str
    keys: RunKeys
    ray_name: str  # Ray Train's run name, under which its checkpoints live
    storage: str


def _resolve(cfg: TrainConfig) -> _Run:
    """Fill in what the data decides (catalogue size) and make paths absolute for the workers."""
    manifest = load_manifest(cfg.data)
    items = schema.read_table(Path(cfg.data) / "items.parquet", "items", columns=["item_id"])
    cfg = cfg.model_copy(deep=True)
    cfg.model.n_items = int(max(items.column("item_id").to_pylist()))
    cfg.data = str(Path(cfg.data).resolve())
    if cfg.profiles and "://" not in cfg.profiles:
        cfg.profiles = str(Path(cfg.profiles).resolve())
    run_name = cfg.resolved_run_name(manifest["dataset"])
    keys = run_keys(cfg)
    storage = cfg.ray.storage_path or str(default_home() / "ray_results")
    if "://" not in storage:
        Path(storage).mkdir(parents=True, exist_ok=True)
    return _Run(cfg, manifest, run_name, keys, f"{run_name}-{keys.resume}", storage)


def _tracking_fields(run: _Run) -> tuple[dict, dict]:
    """MLflow params and tags of the run."""
    params = {
        "config": run.cfg.model_dump(mode="json"),
        "dataset": run.manifest["dataset"],
        "data_fingerprint": run.keys.data_fingerprint,
    }
    tags = {
        "ucd.job": "train",
        "ucd.dataset": run.manifest["dataset"],
        "ucd.resume_key": run.keys.resume,
        "ucd.record_key": run.keys.record,
        "ucd.run_key_version": str(RUN_KEY_VERSION),
    }
    if run.keys.profiles_id:
        tags["ucd.profiles_id"] = run.keys.profiles_id
    return params, tags


def _fit(run: _Run, run_id: str | None, fail_at_epoch: int | None, log) -> tuple[dict, dict]:
    """Train on Ray Train; returns the final checkpoint's progress and best weights."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from ucd.pipelines.train_worker import train_loop_per_worker

    cfg = run.cfg
    gpu = {"GPU": 1} if cfg.ray.use_gpu else {}
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "cfg": cfg.model_dump(mode="json"),
            "mlflow_run_id": run_id,
            "tracking_uri": cfg.tracking.resolved_uri(),
            "fail_at_epoch": fail_at_epoch,
        },
        scaling_config=ScalingConfig(
            num_workers=cfg.ray.num_workers,
            use_gpu=cfg.ray.use_gpu,
            resources_per_worker={"CPU": cfg.ray.cpus_per_worker, **gpu},
            accelerator_type=cfg.ray.accelerator_type,
        ),
        run_config=RunConfig(
            name=run.ray_name,
            storage_path=run.storage,
            failure_config=FailureConfig(max_failures=cfg.ray.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
    )
    log(
        f"[train] {run.run_name}: {cfg.ray.num_workers} worker(s), gpu={cfg.ray.use_gpu}, "
        f"ray run {run.ray_name} in {run.storage}"
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"training of {run.run_name} produced no checkpoint: {result.error}")
    with result.checkpoint.as_directory() as d:
        saved, best = load_checkpoint(Path(d))
    return saved["state"], best


def _log_outcome(progress: dict, log) -> None:
    """One line for the whole fit; the epochs were shown live by rank 0 (train_worker)."""
    h = progress["history"]
    log(
        f"[train] {len(h)} epochs run, best validation ndcg@10 {progress['best']:.4f} at epoch "
        f"{progress['best_epoch'] + 1}"
        + (f" (resumed at epochs {progress['restarts']})" if progress["restarts"] else "")
    )


def _connect_quietly(log_path: Path, console):
    """Ray up (a caller's instance, else a local one) with worker output in the log file but
    rank 0's ``[train]`` progress lines; returns the undo."""
    import ray

    if not ray.is_initialized():
        ray.init(log_to_driver=True)
    restore = route_worker_output(log_path, passthrough="[train]")
    console.quiet_libraries()  # Ray Train sets its console handlers up when first imported
    return restore


def _train_and_log(run: _Run, fail_at_epoch: int | None, log) -> TrainResult:
    params, tags = _tracking_fields(run)
    with tracking.run(run.cfg.tracking, run.run_name, params=params, tags=tags) as active:
        run_id = active.info.run_id if active is not None else None
        progress, best = _fit(run, run_id, fail_at_epoch, log)
        _log_outcome(progress, log)
        out, test, per_user, users = _finalise(run, best, progress["best_epoch"], run_id, log)
        version = None
        if active is not None:
            version = _log_results(run, out, progress, test, per_user, users, log)
    return TrainResult(
        run_name=run.run_name,
        run_id=run_id,
        model_dir=out,
        best_epoch=progress["best_epoch"],
        history=progress["history"],
        test=test,
        model_version=version,
        restarts=progress["restarts"],
        per_user=per_user,
        keys=run.keys,
    )


def _finalise(run: _Run, best: dict, best_epoch: int, run_id: str | None, log):
    """Write the best epoch's model folder and evaluate it on the test split.

    Returns ``(model folder, test metrics, per-user test metrics, test user ids)``.
    """
    from ucd.train.model_dir import load_student, save_student

    cfg = run.cfg
    out = Path(cfg.output) if cfg.output else default_home() / "models" / run.ray_name
    meta = {
        "dataset": run.manifest["dataset"],
        "data_fingerprint": run.keys.data_fingerprint,
        "protocol": run.manifest["protocol"],
        "run_name": run.run_name,
        "resume_key": run.keys.resume,
        "record_key": run.keys.record,
        "run_key_version": RUN_KEY_VERSION,
        "profiles_id": run.keys.profiles_id,
        "best_epoch": best_epoch,
        "mlflow_run_id": run_id,
        "distill": cfg.distill.model_dump(mode="json"),
    }
    save_student(out, best, cfg.model, meta, Path(cfg.data) / "items.parquet")
    data = SequenceData.load(cfg.data)
    model = load_student(out).model
    ev = evaluate(model, data.test, data.n_items, cfg.model.max_len, cfg.exclude_seen, cfg.eval_batch_size)
    test = {f"test_{k}": v for k, v in ev.compute().items()}
    per_user = {k: v.numpy() for k, v in ev.per_user().items()}
    seen = "seen items removed" if cfg.exclude_seen else "seen items kept"
    at10 = "  ".join(f"{k.removeprefix('test_')} {v:.4f}" for k, v in test.items() if "@10" in k)
    log(f"[train] test ({seen}): {at10}")
    return out, test, per_user, data.test.user_ids


def _log_results(run: _Run, out: Path, progress: dict, test: dict, per_user: dict, users, log) -> str | None:
    """Test metrics, history and per-user scores into the active MLflow run; the model logged and,
    when the registry is on, registered. Returns the registered version."""
    import mlflow
    import pyarrow as pa
    import pyarrow.parquet as pq

    cfg = run.cfg
    mlflow.log_metrics({k.replace("@", "_at_"): v for k, v in test.items()})
    mlflow.log_metric("best_epoch", progress["best_epoch"])
    mlflow.set_tag("ucd.exclude_seen", str(cfg.exclude_seen))
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "history.json").write_text(json.dumps(progress["history"], indent=1))
        pq.write_table(pa.table({"user_id": users, **per_user}), Path(d) / "test_per_user.parquet")
        mlflow.log_artifacts(d, artifact_path="eval")
    if not cfg.registry.enabled:
        tracking.log_student_model(out, None, None)
        return None
    version = tracking.log_student_model(out, cfg.registry.model_name, cfg.registry.alias)
    log(f"[train] registered {cfg.registry.model_name} version {version} as @{cfg.registry.alias}")
    return version


def run_training(cfg: TrainConfig, log=print, fail_at_epoch: int | None = None) -> TrainResult:
    run = _resolve(cfg)
    log_path = default_home() / "logs" / f"{run.ray_name}.log"
    with job_console(log_path, log) as console:
        console.log(f"[train] Ray, Ray Train and MLflow output of this run: {log_path}")
        restore = _connect_quietly(log_path, console)
        try:
            return _train_and_log(run, fail_at_epoch, console.log)
        finally:
            restore()
