"""The quickstart's stage record: a finished training stage is reused only for the same
settings and the same profiles (training itself is covered by test_train_ray.py)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa

from ucd import schema
from ucd.pipelines import quickstart

ROOT = Path(__file__).resolve().parents[1]


def _write_profiles(path: Path, users: list[int], run: str) -> Path:
    table = pa.table(
        {
            "user_id": pa.array(users, pa.int32()),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(np.ones(2 * len(users), np.float32)), 2),
            "model": ["e"] * len(users),
        }
    )
    meta = {"fingerprint": run, "embed_model": "e"}
    return schema.write_table(table, path, "profile_embeddings", meta, schema.profile_embeddings_schema(2))


def test_distilled_stage_trains_again_when_the_profile_stage_rewrote_its_profiles(tmp_path, monkeypatch):
    trained = []

    def fake_run_training(cfg, log=print):
        out = tmp_path / f"model{len(trained)}"
        out.mkdir()
        (out / "model.json").write_text("{}")
        trained.append(cfg)
        hist = [{"val_ndcg@10": 0.1, "train_rec_loss": 1.0}]
        return SimpleNamespace(
            model_dir=out, run_id=None, model_version=None, best_epoch=0, history=hist, test={}
        )

    import ucd.pipelines.train_job as train_mod

    monkeypatch.setattr(train_mod, "run_training", fake_run_training)
    emb = tmp_path / "profiles" / "profile_embeddings.parquet"
    stages = quickstart._Stages(tmp_path / "stages.json")
    cfg = "ml-100k-sasrec"
    over = [f"profiles={emb}", "distill.enabled=true", "seed=1"]
    quiet = lambda *_: None  # noqa: E731

    _write_profiles(emb, [1, 2], run="smollm2-run")
    first = quickstart._train("distilled", cfg, over, stages, quiet)
    assert quickstart._train("distilled", cfg, over, stages, quiet) == first and len(trained) == 1

    _write_profiles(emb, [1, 2], run="other-llm-run")  # rerun with other profile settings
    again = quickstart._train("distilled", cfg, over, stages, quiet)
    assert len(trained) == 2 and again["model_dir"] != first["model_dir"]
