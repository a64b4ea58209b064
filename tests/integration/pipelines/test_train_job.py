"""Real training on ML-100K with Ray Train (2 CPU workers), resume, and the MLflow round trip."""

from __future__ import annotations

import numpy as np
import pytest
import ray
import torch
from train_helpers import write_profiles

from ucd.data.tensors import SequenceData
from ucd.evaluate.offline import evaluate_most_popular
from ucd.pipelines.train_job import run_training
from ucd.train.config import TrainConfig
from ucd.train.epoch import epoch_order


@pytest.fixture(scope="module")
def ray_local():
    ray.init(num_cpus=2, object_store_memory=200 * 1024**2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _cfg(tmp_path, data, **over) -> TrainConfig:
    base = {
        "data": str(data),
        "model": {"max_len": 50, "hidden": 64, "n_blocks": 2, "n_heads": 1, "dropout": 0.2},
        "optim": {"batch_size": 64, "lr": 3e-3},
        "epochs": 6,
        "patience": 10,
        "ray": {"num_workers": 2, "storage_path": str(tmp_path / "ray")},
        "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db", "experiment": "test"},
        "output": str(tmp_path / "model"),
    }
    for k, v in over.items():
        if isinstance(v, dict):
            base[k] = {**base.get(k, {}), **v}
        else:
            base[k] = v
    return TrainConfig.model_validate(base)


def test_epoch_order_gives_disjoint_equal_shards():
    shards = [epoch_order(103, seed=1, epoch=4, rank=r, world=3) for r in range(3)]
    assert {len(s) for s in shards} == {34}
    assert len(set(np.concatenate(shards))) == 102
    assert not np.array_equal(epoch_order(103, 1, 4), epoch_order(103, 1, 5))


@pytest.fixture(scope="module")
def trained(ray_local, ml100k_loo, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("train")
    return tmp, run_training(_cfg(tmp, ml100k_loo), log=lambda *_: None)


def test_two_workers_learn_and_beat_most_popular(trained, ml100k_loo):
    _, res = trained
    losses = [h["train_rec_loss"] for h in res.history]
    assert len(losses) == 6 and losses[-1] < losses[0] - 0.5, losses
    data = SequenceData.load(ml100k_loo)
    pop = evaluate_most_popular(data, "valid").metrics["ndcg@10"]
    best_val = max(h["val_ndcg@10"] for h in res.history)
    assert best_val > 1.3 * pop, (best_val, pop)
    # The test split is evaluated for every user.
    assert res.test["test_n_users"] == 943 and res.test["test_ndcg@10"] > 0


def test_evaluate_cli_compares_variants(trained, ml100k_loo, tmp_path):
    import json

    from ucd.cli import main

    _, res = trained
    model = str(res.model_dir)
    out, md = tmp_path / "cmp.json", tmp_path / "cmp.md"
    args = ["evaluate", "--data", str(ml100k_loo), "--compare", f"a={model}", f"b={model},{model}"]
    assert main([*args, "--most-popular", "--out", str(out), "--md", str(md)]) == 0
    report = json.loads(out.read_text())
    assert report["baseline"] == "a" and report["models"] == {"a": [model], "b": [model, model]}
    ndcg = {r["run"]: r for r in report["rows"] if r["metric"] == "ndcg@10"}
    assert ndcg["a"]["mean"] == pytest.approx(res.test["test_ndcg@10"]) and ndcg["b"]["n"] == 2
    assert report["paired_tests"]["b"]["p_value"] == 1.0  # the same model: no difference
    assert report["paired_tests"]["most-popular"]["n"] == 943
    table = md.read_text()
    assert table.startswith("| variant | n | ndcg@10") and "| most-popular | 1 |" in table


def test_mlflow_round_trip_same_top10(trained, ml100k_loo):
    import mlflow

    tmp, res = trained
    from ucd.train.model_dir import load_student, resolve_model_dir

    mlflow.set_tracking_uri(f"sqlite:///{tmp}/mlflow.db")
    assert res.model_version is not None
    uri = "models:/ucd-student@candidate"
    reloaded = load_student(resolve_model_dir(uri))
    in_memory = load_student(res.model_dir)
    data = SequenceData.load(ml100k_loo)
    from ucd.data.tensors import left_pad

    x = torch.from_numpy(left_pad(data.test.histories[:64], 50))
    with torch.no_grad():
        a, b = in_memory.model.score_last(x), reloaded.model.score_last(x)
    assert torch.equal(torch.topk(a, 10).indices, torch.topk(b, 10).indices)
    assert torch.allclose(a, b)
    # The pyfunc flavour answers the same top-10.
    import pandas as pd

    pyf = mlflow.pyfunc.load_model(uri)
    out = pyf.predict(
        pd.DataFrame({"history": [h.tolist() for h in data.test.histories[:8]]}), params={"k": 10}
    )
    assert out["items"].tolist() == torch.topk(a[:8], 10).indices.tolist()
    run = mlflow.get_run(res.run_id)
    assert run.data.metrics["test_ndcg_at_10"] == pytest.approx(res.test["test_ndcg@10"])
    history = mlflow.MlflowClient().get_metric_history(res.run_id, "val_ndcg_at_10")
    assert [m.step for m in history] == list(range(6))
    # The run is found by its versioned key, in MLflow and in the model folder.
    from ucd.train.run_key import RUN_KEY_VERSION

    assert run.data.tags["ucd.resume_key"] == res.keys.resume
    assert run.data.tags["ucd.record_key"] == res.keys.record
    assert run.data.tags["ucd.run_key_version"] == str(RUN_KEY_VERSION)
    assert in_memory.meta["record_key"] == res.keys.record


def test_promote_alias(trained):
    from ucd.cli import main

    tmp, res = trained
    uri = f"sqlite:///{tmp}/mlflow.db"
    assert main(["registry", "promote", "--from-alias", "candidate", "--tracking-uri", uri]) == 0
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    assert str(client.get_model_version_by_alias("ucd-student", "production").version) == res.model_version


def _compare_histories(a, b):
    keys = ["train_loss", "val_ndcg@10", "val_recall@10"]
    assert [h["epoch"] for h in a] == [h["epoch"] for h in b]
    for x, y in zip(a, b, strict=True):
        for k in keys:
            assert x[k] == pytest.approx(y[k], rel=1e-6, abs=1e-9), (k, x["epoch"])


def test_resume_after_worker_failure_and_after_restart(ray_local, ml100k_loo, tmp_path):
    one = {"ray": {"num_workers": 1}, "epochs": 3, "registry": {"enabled": False}}
    ref = run_training(_cfg(tmp_path / "ref", ml100k_loo, **one), log=lambda *_: None)
    assert ref.restarts == []

    # A worker dies after epoch 1; Ray Train restarts it from the latest checkpoint.
    crash = _cfg(tmp_path / "crash", ml100k_loo, **{**one, "ray": {"num_workers": 1, "max_failures": 1}})
    res = run_training(crash, log=lambda *_: None, fail_at_epoch=1)
    assert res.restarts == [2]
    _compare_histories(res.history, ref.history)  # same epoch counter, same optimizer state

    # The job is stopped after 2 epochs and started again with the full budget: it continues.
    short = _cfg(tmp_path / "restart", ml100k_loo, **{**one, "epochs": 2})
    first = run_training(short, log=lambda *_: None)
    assert [h["epoch"] for h in first.history] == [0, 1]
    again = run_training(short.model_copy(update={"epochs": 3}), log=lambda *_: None)
    assert again.restarts == [2]
    _compare_histories(again.history, ref.history)
    assert again.test == pytest.approx(ref.test)


# An lr far below float32 resolution leaves the weights as they are: every epoch scores the
# same, so no epoch beats epoch 0 and every later one counts against patience.
_FROZEN = {
    "ray": {"num_workers": 1},
    "epochs": 8,
    "patience": 2,
    "registry": {"enabled": False},
    "optim": {"lr": 1e-12},
}


def test_min_epochs_holds_early_stopping_back_also_on_resume(ray_local, ml100k_loo, tmp_path):
    cfg = _cfg(tmp_path / "stop", ml100k_loo, **_FROZEN)
    stopped = run_training(cfg, log=lambda *_: None)
    assert [h["epoch"] for h in stopped.history] == [0, 1, 2]

    held = run_training(_cfg(tmp_path / "held", ml100k_loo, **_FROZEN, min_epochs=4), log=lambda *_: None)
    assert [h["epoch"] for h in held.history] == [0, 1, 2, 3, 4, 5]  # bad epochs: 4 and 5

    # The stopped run, rerun under the new rule, goes on from its checkpoint to the same stop.
    again = run_training(cfg.model_copy(update={"min_epochs": 4}), log=lambda *_: None)
    assert again.restarts == [3]
    _compare_histories(again.history, held.history)


def test_select_from_epoch_keeps_no_earlier_weights_and_holds_stopping_back(ray_local, ml100k_loo, tmp_path):
    # Frozen weights: without the setting epoch 0 stays the best and the run stops at epoch 2;
    # with it the best can only be epoch 3.
    res = run_training(_cfg(tmp_path, ml100k_loo, **_FROZEN, select_from_epoch=3), log=lambda *_: None)
    assert res.best_epoch == 3
    assert [h["epoch"] for h in res.history] == [0, 1, 2, 3, 4, 5]
    assert [h["best_epoch"] for h in res.history] == [-1, -1, -1, 3, 3, 3]


def test_resume_only_onto_the_same_profiles(ray_local, ml100k_loo, tmp_path):
    """The config names the profiles' folder, not what it holds: after a resumed profile job
    embedded more users, a restarted training starts over instead of continuing a checkpoint
    that learned from the smaller set."""
    profiles = write_profiles(tmp_path / "profiles" / "profile_embeddings.parquet", list(range(1, 301)))
    one = {
        "ray": {"num_workers": 1},
        "epochs": 2,
        "registry": {"enabled": False},
        "distill": {"enabled": True},
        "profiles": str(profiles.parent),
    }
    cfg = _cfg(tmp_path, ml100k_loo, **one)
    first = run_training(cfg, log=lambda *_: None)
    assert [h["epoch"] for h in first.history] == [0, 1] and first.history[0]["train_distill_loss"] > 0
    again = run_training(cfg.model_copy(update={"epochs": 3}), log=lambda *_: None)
    assert again.restarts == [2]  # same profiles: the checkpoint goes on

    write_profiles(profiles, list(range(1, 601)))
    grown = run_training(cfg.model_copy(update={"epochs": 3}), log=lambda *_: None)
    assert grown.restarts == [] and [h["epoch"] for h in grown.history] == [0, 1, 2]
    assert grown.keys.resume != again.keys.resume == first.keys.resume
