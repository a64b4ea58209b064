"""The quickstart's stage record and its default budget: a finished training stage is reused
only under the same record key (settings, budget, data and profiles), and the default run
profiles a seeded share of the users with a shorter training budget, ``full`` everything
(training itself is covered by test_train_ray.py)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from train_helpers import fake_prepared, write_profiles

from ucd.pipelines import quickstart
from ucd.profiles.config import load_profile_config

quiet = lambda *_: None  # noqa: E731


@pytest.fixture
def trained(tmp_path, monkeypatch) -> list:
    """run_training replaced by a recorder that writes an empty model folder."""
    calls = []

    def fake_run_training(cfg, log=print):
        out = tmp_path / f"model{len(calls)}"
        out.mkdir()
        (out / "model.json").write_text("{}")
        calls.append(cfg)
        hist = [{"val_ndcg@10": 0.1, "train_rec_loss": 1.0}]
        return SimpleNamespace(
            model_dir=out, run_id=None, model_version=None, best_epoch=0, history=hist, test={}
        )

    import ucd.pipelines.train_job as train_mod

    monkeypatch.setattr(train_mod, "run_training", fake_run_training)
    return calls


def test_distilled_stage_trains_again_when_the_profile_stage_rewrote_its_profiles(tmp_path, trained):
    emb = tmp_path / "profiles" / "profile_embeddings.parquet"
    stages = quickstart._Stages(tmp_path / "stages.json")
    cfg = "ml-100k-sasrec"
    over = [f"data={fake_prepared(tmp_path / 'data')}", f"profiles={emb}", "distill.enabled=true", "seed=1"]

    write_profiles(emb, [1, 2], run="smollm2-run")
    first = quickstart._train("distilled", cfg, over, stages, quiet)
    assert quickstart._train("distilled", cfg, over, stages, quiet) == first and len(trained) == 1

    write_profiles(emb, [1, 2], run="other-llm-run")  # rerun with other profile settings
    again = quickstart._train("distilled", cfg, over, stages, quiet)
    assert len(trained) == 2 and again["model_dir"] != first["model_dir"]

    write_profiles(emb, [1, 2, 3], run="other-llm-run")  # a larger share of the users profiled
    quickstart._train("distilled", cfg, over, stages, quiet)
    assert len(trained) == 3


def test_a_stage_trains_again_for_another_budget_or_dataset_only(tmp_path, trained):
    stages = quickstart._Stages(tmp_path / "stages.json")
    data = f"data={fake_prepared(tmp_path / 'data')}"
    over = [data, "distill.enabled=false", "epochs=30"]
    quickstart._train("baseline", "ml-100k-sasrec", over, stages, quiet)
    # Plumbing is no reason to train again.
    quickstart._train("baseline", "ml-100k-sasrec", [*over, "ray.num_workers=1"], stages, quiet)
    assert len(trained) == 1
    quickstart._train("baseline", "ml-100k-sasrec", [*over, "epochs=200"], stages, quiet)
    assert len(trained) == 2
    other = f"data={fake_prepared(tmp_path / 'data2', 'another-preparation')}"
    quickstart._train("baseline", "ml-100k-sasrec", [other, *over[1:]], stages, quiet)
    assert len(trained) == 3


def _both(cfg: quickstart.QuickstartConfig, tmp_path: Path, trained: list):
    emb = write_profiles(tmp_path / "profiles" / "profile_embeddings.parquet", [1, 2], run="r")
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    quickstart._train_both(cfg, fake_prepared(tmp_path / "data"), emb, out, quiet)
    return trained[-2:]


def test_the_default_run_profiles_a_seeded_share_and_trains_a_short_budget(tmp_path, trained):
    cfg = quickstart.load_quickstart_config(None, [])
    pcfg = load_profile_config(cfg.profile_config, cfg.profile_job_overrides())
    assert pcfg.user_share == cfg.quick.user_share < 1 and pcfg.user_seed == cfg.quick.user_seed
    base, dist = _both(cfg, tmp_path, trained)
    assert (
        (base.epochs, base.patience) == (dist.epochs, dist.patience) == (cfg.quick.epochs, cfg.quick.patience)
    )
    assert not base.distill.enabled and dist.distill.enabled
    # Partial coverage is what weight_by_coverage is for: the distilled run keeps it on.
    assert dist.distill.weight_by_coverage


def test_full_profiles_every_user_with_the_model_configs_budget(tmp_path, trained):
    cfg = quickstart.load_quickstart_config(None, ["full=true"])
    assert load_profile_config(cfg.profile_config, cfg.profile_job_overrides()).user_share is None
    base, dist = _both(cfg, tmp_path, trained)
    assert (base.epochs, base.patience) == (dist.epochs, dist.patience) == (200, 20)


def test_explicit_overrides_win_over_the_quick_budget(tmp_path, trained):
    over = ["profile_overrides=[user_share=0.5]", "train_overrides=[epochs=3]"]
    cfg = quickstart.load_quickstart_config(None, over)
    assert load_profile_config(cfg.profile_config, cfg.profile_job_overrides()).user_share == 0.5
    base, dist = _both(cfg, tmp_path, trained)
    assert base.epochs == dist.epochs == 3 and base.patience == cfg.quick.patience


def test_the_cli_flag_selects_the_full_run(monkeypatch):
    from ucd import cli

    seen = []
    monkeypatch.setattr(quickstart, "run_quickstart", lambda cfg, data_dir=None: seen.append(cfg))
    assert cli.main(["quickstart", "--full", "--no-serve"]) == 0
    assert cli.main(["quickstart"]) == 0
    assert [c.full for c in seen] == [True, False] and not seen[0].serve
