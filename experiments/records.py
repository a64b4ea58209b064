"""Run records: one JSON file per finished training run, named by its run key.

The key is ``ucd.train.run_key.record_key`` of the run's config, the prepared data's fingerprint
and the profiles' identity: the same settings on the same inputs find the same record wherever
the folders live, and profiles that changed (a resumed profile job, another LLM) make another
key, so the run trains again. Each record keeps the resolved config, both input identities and
the key version, so a later change of the key rule migrates the records by recomputing it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from ucd import schema
from ucd.errors import DataError
from ucd.train.config import TrainConfig
from ucd.train.run_key import RunKeys, record_key, run_keys


def record_path(cache: Path, keys: RunKeys) -> Path:
    return cache / f"{keys.record}.json"


def read_record(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(
            f"{path}: unreadable run record ({e.msg}, line {e.lineno}); delete it to train that run again"
        ) from e


def identity(cfg: TrainConfig, keys: RunKeys) -> dict:
    """What a record's key was computed from, stored in the record."""
    return {
        "run_key_version": keys.version,
        "config": cfg.model_dump(mode="json"),
        "data_fingerprint": keys.data_fingerprint,
        "profiles_used": keys.profiles_id,
    }


def train_cached(
    cfg: TrainConfig, cache: Path, label: str, log=print, train: bool = True
) -> tuple[Path, dict]:
    """The record of ``cfg``'s run and its file: read when there is one, else trained and
    written (or, with ``train=False``, an error naming the run)."""
    keys = run_keys(cfg)
    path = record_path(cache, keys)
    if path.exists():
        return path, read_record(path)
    if not train:
        raise DataError(f"{path}: no run record of {label!r} seed {cfg.seed} (and training is off)")
    from ucd.pipelines.train_job import run_training

    t = time.perf_counter()
    log(f"[experiments] training {label} seed {cfg.seed} -> {path}")
    res = run_training(cfg.model_copy(update={"run_name": f"quality-{label}-s{cfg.seed}"}))
    rec = {
        "label": label,
        "seed": cfg.seed,
        "seconds": time.perf_counter() - t,
        # Wall time above is short for a run restored from its Ray checkpoint; this one is not.
        "train_seconds": sum(h["train_seconds"] for h in res.history),
        "best_epoch": res.best_epoch,
        "epochs_run": len(res.history),
        "test": res.test,
        "per_user_ndcg@10": res.per_user["ndcg@10"].tolist(),
        "curves": {
            k: [h[k] for h in res.history] for k in ("train_rec_loss", "train_distill_loss", "val_ndcg@10")
        },
        **identity(cfg, keys),
    }
    cache.mkdir(parents=True, exist_ok=True)
    # A run is tens of minutes of training: a kill while writing must not leave a record
    # that breaks every later report.
    schema.atomic_write_text(path, json.dumps(rec))
    return path, rec


def recomputed_key(rec: dict) -> str:
    """The key a record's stored config and inputs give under today's rule."""
    cfg = TrainConfig.model_validate(rec["config"])
    return record_key(cfg, rec["data_fingerprint"], rec["profiles_used"])
