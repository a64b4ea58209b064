"""The quality experiments' grid: which runs it trains, in which order, with which overrides.

Training itself is replaced by a recorder here (the grid logic is what is under test; the
training path has its own tests, and the committed run records theirs in test_quality_records).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from experiments import compare, grid, inputs, records, report, run
from ucd import schema
from ucd.data.tensors import profiles_identity
from ucd.errors import ConfigError, DataError
from ucd.evaluate.metrics import paired_test
from ucd.evaluate.offline import EvalResult

ROOT = Path(__file__).resolve().parents[3]
GRIDS = sorted((ROOT / "experiments/grids").glob("*.yaml"))


def _grid(tmp_path: Path, **exp_keys) -> tuple[dict, dict]:
    g = {
        "dataset": "ml-100k",
        "protocol": "loo",
        "results": str(tmp_path / "results"),
        "work": str(tmp_path / "work"),
        "profiles": {"llm": grid.source_spec(str(tmp_path / "profiles"))},
        "experiments": [],
    }
    exp = {"report": "r", "students": {"sasrec": "ml-100k-sasrec"}, "seeds": [1, 2], "profiles": ["llm"]}
    exp |= {"primary_profiles": "llm", **exp_keys}
    g["experiments"].append(exp)
    return g, exp


@pytest.fixture
def trained(ml100k_loo, tmp_path, monkeypatch):
    """run_experiment on real prepared ML-100K with training recorded, not run.

    Returns ``run(kw, **experiment_keys) -> calls``; each call is (variant, seed, epochs,
    pooling) of one training run asked for, in order.
    """
    calls: list[tuple[str, int, int, str]] = []

    def fake_train(cfg, cache, label, log=None, train=True):
        calls.append((label.split("-sasrec-", 1)[1], cfg.seed, cfg.epochs, str(cfg.distill.pooling)))
        return cache / "x.json", {"seed": cfg.seed}

    monkeypatch.setattr(run, "train_cached", fake_train)
    monkeypatch.setattr(run, "prepare", lambda *a, **k: ml100k_loo)
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "profile_embeddings.parquet").write_bytes(b"")  # only its existence is checked

    def go(kw: dict, **exp_keys):
        g, exp = _grid(tmp_path, **exp_keys)
        g["profiles"] |= {k: grid.source_spec(v) for k, v in exp_keys.pop("sources", {}).items()}
        calls.clear()
        assert run.run_experiment(g, exp, log=lambda *_: None, **kw) == []  # a partial run reports nothing
        return list(calls)

    return go


def test_ablations_run_one_after_another_not_seed_by_seed(trained):
    calls = trained({"seeds": [1, 2]}, ablations=["pooling=last", "alpha=0.8"], same_budget_epochs=0)
    assert [(v, s) for v, s, _, _ in calls] == [
        ("baseline", 1),
        ("distilled[llm]", 1),
        ("baseline", 2),
        ("distilled[llm]", 2),
        ("pooling=last [llm]", 1),
        ("pooling=last [llm]", 2),
        ("alpha=0.8 [llm]", 1),
        ("alpha=0.8 [llm]", 2),
    ]
    assert [p for v, _, _, p in calls if v.startswith("pooling")] == ["last", "last"]


def test_variants_filter_and_same_budget(trained):
    calls = trained(
        {"only": ["pooling=last [llm]", "baseline, same budget"]},
        ablations=["pooling=last"],
        ablation_seeds=[2],
        same_budget_epochs=98,
    )
    assert [(v, s, e) for v, s, e, _ in calls] == [
        ("pooling=last [llm]", 2, 200),
        ("baseline, same budget", 1, 98),
        ("baseline, same budget", 2, 98),
    ]
    # 0 turns the same-budget baseline off.
    assert trained({"only": ["baseline, same budget"]}, same_budget_epochs=0) == []


def test_a_missing_llm_profile_folder_stops_the_experiment_before_training(trained, tmp_path):
    # Skipping it would write a report without that source's rows that looks complete.
    gone = tmp_path / "gone"
    with pytest.raises(FileNotFoundError, match=rf"profiles\.qwen: {gone} holds no"):
        trained({}, sources={"qwen": str(gone)}, profiles=["qwen"], primary_profiles="qwen")
    calls = trained({"seeds": [1]}, same_budget_epochs=0)
    assert calls == [("baseline", 1, 200, "mean"), ("distilled[llm]", 1, 200, "mean")]
    # Variants that do not distil from it still train: baselines need no profiles.
    calls = trained(
        {"only": ["baseline"]}, sources={"qwen": str(gone)}, profiles=["qwen"], primary_profiles="qwen"
    )
    assert calls == [("baseline", 1, 200, "mean"), ("baseline", 2, 200, "mean")]
    with pytest.raises(FileNotFoundError, match=r"profiles\.qwen"):
        trained(
            {"only": ["pooling=last [qwen]"]},
            sources={"qwen": str(gone)},
            profiles=["qwen"],
            primary_profiles="qwen",
            ablations=["pooling=last"],
        )


def test_a_list_of_primary_profiles_runs_every_ablation_on_each_source(trained, tmp_path):
    # So one experiment can ask an ablation of two sources (Qwen at 2% and 5%).
    exp = {
        "seeds": [1],
        "profiles": ["a", "b", "c"],
        "primary_profiles": ["a", "b"],
        "ablations": ["pooling=last"],
    }
    plan = grid.planned_runs(exp, {"a": "/pa", "b": "/pb", "c": "/pc"}, [1])
    ablations = {
        (v, next(x for x in o if x.startswith("profiles=")))
        for v, o, _ in plan
        if not v.startswith(("baseline", "distilled"))
    }
    assert ablations == {("pooling=last [a]", "profiles=/pa"), ("pooling=last [b]", "profiles=/pb")}
    assert "pooling=last [c]" not in grid.variant_names(exp)
    assert grid.needed_sources(exp, ["pooling=last [b]"]) == ["b"]
    # A single name still means that one source only.
    assert grid.planned_runs(exp | {"primary_profiles": "c"}, {"c": "/pc"}, [1])[-1][0] == "pooling=last [c]"

    # End to end: the second source's ablation trains without the first source's folder.
    other = tmp_path / "other"
    other.mkdir()
    (other / "profile_embeddings.parquet").write_bytes(b"")
    calls = trained(
        {"only": ["pooling=last [other]"]},
        sources={"gone": str(tmp_path / "gone"), "other": str(other)},
        profiles=["gone", "other"],
        primary_profiles=["gone", "other"],
        ablations=["pooling=last"],
    )
    assert calls == [("pooling=last [other]", 1, 200, "last"), ("pooling=last [other]", 2, 200, "last")]


@pytest.mark.parametrize("path", GRIDS, ids=lambda p: p.name)
def test_committed_grids_pass_the_check(path, monkeypatch):
    monkeypatch.chdir(ROOT)
    g = grid.load_grid(path)
    assert g["experiments"] and all(e.get("about") for e in g["experiments"])


def test_one_grid_per_dataset_and_protocol_and_the_historical_mean_pinned():
    """A grid is one dataset x protocol; every committed distilled run averaged the distillation
    term over the profiled users, so each grid says so where a reader sees it."""
    pairs = []
    for path in GRIDS:
        g = yaml.safe_load(path.read_text())
        pairs.append((g["dataset"], g["protocol"]))
        assert path.stem == f"{g['dataset']}-{g['protocol']}"
        assert "distill.weight_by_coverage=false" in g["train_overrides"], path.name
    assert sorted(pairs) == [("beauty", "loo"), ("ml-100k", "loo"), ("ml-100k", "temporal")]


def _bad(**kw) -> dict:
    g, _ = _grid(Path("/nowhere"), **kw)
    g["profiles"] = {"llm": "x"}
    return g


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"ablations": ["pooling=last", "pooling=max"]}, r"\.ablations: unknown \['pooling=max'\]"),
        ({"ablation_seed": [1]}, r": unknown keys \['ablation_seed'\]"),
        ({"ablation_seeds": [1, 3]}, r"\.ablation_seeds: \[3\] are not in seeds"),
        ({"seeds": []}, r"\.seeds: a non-empty list"),
        ({"students": {"sasrec": "nope.yaml"}}, r"\.students\.sasrec: nope.yaml: no such file"),
        ({"profiles": ["llm", "qwen"]}, r"\.profiles: \['qwen'\] are not among the grid's profiles"),
        ({"primary_profiles": "qwen"}, r"\.primary_profiles: 'qwen' is not one of profiles \['llm'\]"),
        ({"primary_profiles": 3}, r"\.primary_profiles: a source name or a list of them, got 3"),
    ],
)
def test_bad_experiment_is_named_before_anything_trains(change, message):
    with pytest.raises(ConfigError, match=r"^g\.yaml: experiments\[0\] \(r\)" + message):
        grid.check_grid(_bad(**change), "g.yaml")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"protocol": "time"}, r"protocol: unknown 'time'"),
        ({"out": "x"}, r"top level: unknown keys \['out'\]"),
        ({"profiles": {"a": {"share_of": "b", "user_share": 0.1}}}, r"profiles\.a\.share_of: 'b' is not"),
        ({"profiles": {"a": "x", "b": {"share_of": "a", "user_share": 2}}}, r"profiles\.b\.user_share"),
        ({"profiles": {"a": {"path": "x", "share_of": "x"}}}, r"profiles\.a: exactly one of"),
    ],
)
def test_bad_grid_is_named(change, message):
    g = _bad() | change
    if "profiles" in change:
        g["experiments"][0]["profiles"] = []
        g["experiments"][0].pop("primary_profiles")
    with pytest.raises(ConfigError, match=r"^g\.yaml: " + message):
        grid.check_grid(g, "g.yaml")


def test_variant_names_cover_every_run_the_grid_trains(trained):
    keys = {"ablations": ["pooling=last", "alpha=0.8"], "same_budget_epochs": 98}
    calls = trained({"seeds": [1, 2]}, **keys)
    names = grid.variant_names({"profiles": ["llm"], "primary_profiles": "llm", **keys})
    assert {v for v, *_ in calls} == set(names)
    assert "baseline, same budget" not in grid.variant_names({"same_budget_epochs": 0})


def test_unknown_report_variant_or_seed_on_the_command_line_is_an_error():
    g = _bad(ablations=["pooling=last"])
    assert grid.select(g, "g.yaml", ["r"], ["pooling=last [llm]", "baseline"], None) == g["experiments"]
    with pytest.raises(ConfigError, match=r"--variants: unknown \['distilled\[qwen\]'\]"):
        grid.select(g, "g.yaml", None, ["distilled[qwen]"], None)
    with pytest.raises(ConfigError, match=r"--report: g.yaml has no experiment \['beauty'\]"):
        grid.select(g, "g.yaml", ["beauty"], None, None)
    with pytest.raises(ConfigError, match=r"--seeds: \[7\] not in g.yaml's seeds \[1, 2\]"):
        grid.select(g, "g.yaml", None, None, [2, 7])


def _embeddings(users, path: Path, meta: dict | None = None, model: str = "e"):
    import pyarrow as pa

    emb = pa.table(
        {
            "user_id": pa.array(users, pa.int32()),
            "embedding": [[1.0, 0.0]] * len(users),
            "model": [model] * len(users),
        },
        schema=schema.profile_embeddings_schema(2),
    )
    schema.write_table(emb, path, "profile_embeddings", meta or {}, schema=emb.schema)
    return emb


def test_profile_sources_report_what_the_checks_flagged(tmp_path):
    import datetime

    import pyarrow as pa
    import pyarrow.parquet as pq

    llm = tmp_path / "llm"
    llm.mkdir()
    statuses = ["ok", "truncated", "truncated", "failed"]
    now = datetime.datetime.now(datetime.UTC)
    rows = [
        {"user_id": u, "profile": "x", "status": s, "n_history": 3, "prompt_tokens": 9, "output_tokens": 9}
        | {"model": "Tiny-LM", "prompt_version": "v1", "created_at": now}
        for u, s in enumerate(statuses, 1)
    ]
    pq.write_table(pa.Table.from_pylist(rows, schema=schema.PROFILES), llm / "profiles.parquet")
    _embeddings([1, 2, 3], llm / "profile_embeddings.parquet")
    _embeddings([1, 2], tmp_path / "tpl" / "profile_embeddings.parquet")

    info = inputs.profile_source_info(str(llm))
    assert info == {"model": "Tiny-LM", "users": 4, "ok": 1, "failed": 1, "truncated": 2, "embedded": 3}
    tpl = inputs.profile_source_info(str(tmp_path / "tpl" / "profile_embeddings.parquet"))
    assert tpl == {"model": "template (non-LLM)", "users": 2, "embedded": 2}
    md = report.profiles_table({"profile_sources": {"qwen": info, "template": tpl}})
    assert "| qwen | Tiny-LM | 4 | 1 (25.0%) | 1 (25.0%) | 2 (50.0%) | 3 |" in md
    assert "| template | template (non-LLM) | 2 | - | - | - | 2 |" in md


def test_coverage_split_compares_profiled_and_unprofiled_users_apart(tmp_path):
    from types import SimpleNamespace

    import pyarrow as pa
    import pyarrow.compute as pc

    emb = _embeddings([1, 2, 3], tmp_path / "profile_embeddings.parquet", {"data_fingerprint": "f"})
    users = np.arange(1, 7)
    data = SimpleNamespace(test=SimpleNamespace(user_ids=users), n_users=6, fingerprint="f")

    def res(name, *per_user):
        return [EvalResult(name, {}, {"ndcg@10": np.array(p)}, users, False) for p in per_user]

    variants = {
        "baseline": res("baseline", [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]),
        # Two seeds whose mean is the baseline + 0.1 for the profiled users only.
        "distilled[llm]": res("d", [0.1, 0.2, 0.3, 0.3, 0.5, 0.7], [0.3, 0.4, 0.5, 0.5, 0.5, 0.5]),
        "profile-only[llm]": res("p", [0.5, 0.5, 0.5, 0.0, 0.0, 0.0]),
    }
    split = compare.coverage_split(variants, {"llm": str(tmp_path)}, data)["llm"]
    with_p, without = split["with a profile"], split["without a profile"]
    assert with_p["n"] == 3 and without["n"] == 3
    assert with_p["baseline"] == pytest.approx(0.2) and with_p["distilled[llm]"] == pytest.approx(0.3)
    assert with_p["rel_change"] == pytest.approx(0.5) and with_p["profile-only[llm]"] == pytest.approx(0.5)
    assert without["rel_change"] == pytest.approx(0.0) and without["p_value"] == 1.0
    assert without["profile-only[llm]"] == 0.0
    assert "| llm | with a profile | 3 | 0.2000 | 0.3000 | +50.0% |" in report.coverage_table(
        {"by_coverage": {"llm": split}}
    )

    # A second source that profiled users 2 and 3 only: both meet on those two users.
    small = emb.filter(pc.is_in(emb.column("user_id"), pa.array([2, 3], pa.int32())))
    schema.write_table(
        small, tmp_path / "b" / "profile_embeddings.parquet", "profile_embeddings", {}, schema=emb.schema
    )
    variants["distilled[b]"] = res("d", [0.1, 0.4, 0.1, 0.4, 0.5, 0.6])
    variants["profile-only[b]"] = res("p", [0.0, 0.2, 0.2, 0.0, 0.0, 0.0])
    both = compare.coverage_split(variants, {"llm": str(tmp_path), "b": str(tmp_path / "b")}, data)
    same = both["llm"]["profiled by every source"]
    assert same["n"] == 2 and same["baseline"] == pytest.approx(0.25)
    assert same["distilled[llm]"] == pytest.approx(0.35) and same["profile-only[llm]"] == pytest.approx(0.5)
    assert "profiled by every source" not in both["b"]  # its own profiled users are those already
    assert both["b"]["with a profile"]["distilled[b]"] == pytest.approx(0.25)
    assert both["llm"]["with a profile"] == with_p  # the other groups are unchanged

    # An ablation on a source is split by that source's users, in a row of its own.
    variants["alpha=0.2 [llm]"] = res("a", [0.2, 0.3, 0.4, 0.4, 0.5, 0.6])
    split = compare.coverage_split(variants, {"llm": str(tmp_path)}, data, {"alpha=0.2 [llm]": "llm"})
    assert split["alpha=0.2 [llm]"]["with a profile"]["alpha=0.2 [llm]"] == pytest.approx(0.3)
    assert split["alpha=0.2 [llm]"]["without a profile"]["rel_change"] == pytest.approx(0.0)
    assert split["llm"]["with a profile"] == with_p
    md = report.coverage_table({"by_coverage": split})
    assert "| alpha=0.2 [llm] | with a profile | 3 | 0.2000 | 0.3000 | +50.0% |" in md

    # Users without a profile that both variants all miss (4 on ML-100K): no change to print.
    variants = {k: res(k, [0.1, 0.2, 0.3, 0.0, 0.0, 0.0]) for k in ("baseline", "distilled[llm]")}
    variants["profile-only[llm]"] = res("p", [0.5, 0.5, 0.5, 0.0, 0.0, 0.0])
    zero = compare.coverage_split(variants, {"llm": str(tmp_path)}, data)
    assert "| llm | without a profile | 3 | 0.0000 | 0.0000 | – |" in report.coverage_table(
        {"by_coverage": zero}
    )


def test_ablations_are_compared_with_their_distilled_variant_on_the_seeds_both_ran():
    users = np.arange(1, 5)

    def res(*per_user):
        return [EvalResult("r", {}, {"ndcg@10": np.array(p)}, users, False) for p in per_user]

    # The default ran seeds 1-3, the ablation 3 and 1 (in that order): seed 2 must not enter.
    variants = {
        "distilled[llm]": res([0.2, 0.2, 0.2, 0.2], [9.0, 9.0, 9.0, 9.0], [0.4, 0.4, 0.4, 0.4]),
        "alpha=0.2 [llm]": res([0.3, 0.5, 0.6, 0.6], [0.3, 0.3, 0.3, 0.3]),
        "pooling=last [llm]": res([0.1, 0.1, 0.1, 0.1]),
    }
    seeds = {"distilled[llm]": [1, 2, 3], "alpha=0.2 [llm]": [3, 1], "pooling=last [llm]": [7]}
    parents = {n: "distilled[llm]" for n in ("alpha=0.2 [llm]", "pooling=last [llm]", "layer=1 [llm]")}
    out = compare.paired_comparison(variants, seeds, parents)
    # No shared seed (7) or no runs at all (layer=1): no row rather than a wrong one.
    assert list(out) == ["alpha=0.2 [llm]"]
    c = out["alpha=0.2 [llm]"]
    assert c["seeds"] == [3, 1] and c["against"] == "distilled[llm]"
    assert c["distilled[llm]"] == pytest.approx(0.3) and c["alpha=0.2 [llm]"] == pytest.approx(0.4)
    assert c["rel_change"] == pytest.approx(1 / 3)
    # Seed 3: 0.5 vs 0.4; seed 1: 0.3 vs 0.2.
    assert c["per_seed_rel_change"] == {3: pytest.approx(0.25), 1: pytest.approx(0.5)}
    want = paired_test([0.3] * 4, [0.3, 0.4, 0.45, 0.45])
    assert c["p_value"] == pytest.approx(want["p_value"])
    assert c["wilcoxon_p"] == pytest.approx(want["wilcoxon_p"])
    md = report.ablation_table({"vs_distilled": out})
    assert "| alpha=0.2 [llm] | distilled[llm] | 3 1 | 0.3000 | 0.4000 | +33.3% |" in md
    assert md.rstrip().endswith("those means).") and "| +25.0% / +50.0% |" in md

    # Seed by seed against the baseline: above it on one seed of two.
    variants["baseline"] = res([0.2, 0.2, 0.2, 0.2], [0.5, 0.5, 0.5, 0.5])
    seeds["baseline"] = [1, 3]
    by_seed = compare.paired_comparison(variants, seeds, {"alpha=0.2 [llm]": "baseline"})
    assert by_seed["alpha=0.2 [llm]"]["per_seed_rel_change"] == {3: pytest.approx(0.0), 1: pytest.approx(0.5)}
    md = report.per_seed_table({"vs_baseline_by_seed": by_seed})
    assert "| alpha=0.2 [llm] | 3 1 | +0.0% / +50.0% | 1 of 2 |" in md
    # Over seeds: per-seed means 0.5 vs 0.5 and 0.3 vs 0.2, the seed as the unit.
    seeds_p = paired_test([0.5, 0.2], [0.5, 0.3])["p_value"]
    assert by_seed["alpha=0.2 [llm]"]["seeds_t_p"] == pytest.approx(seeds_p) and seeds_p < 1.0
    assert md.splitlines()[2].endswith(f"| {seeds_p:.3g} |")
    # One seed: no test over seeds (not the p = 1 that paired_test returns for it).
    one = {"x": {"seeds": [1], "per_seed_rel_change": {1: 0.1}, "seeds_t_p": 1.0}}
    assert (
        report.per_seed_table({"vs_baseline_by_seed": one}).splitlines()[2]
        == "| x | 1 | +10.0% | 1 of 1 | - |"
    )


def test_ablation_parents_come_from_the_names():
    names = [
        "baseline",
        "distilled[qwen]",
        "distilled[template]",
        "pooling=last [qwen]",
        "weight=coverage [smollm2]",  # its distilled variant is not in the experiment
        "baseline, same budget",
    ]
    assert compare.ablation_parents(names) == {"pooling=last [qwen]": "distilled[qwen]"}
    name = grid.ablation_name("coverage=25%", "qwen")
    assert compare.ablation_parents([grid.distilled_name("qwen"), name]) == {name: "distilled[qwen]"}


def _fake_training(trained: list):
    from types import SimpleNamespace

    def fake_run_training(cfg):
        trained.append(cfg.run_name)
        hist = [{"train_seconds": 1.0, "train_rec_loss": 1.0, "train_distill_loss": 0.0, "val_ndcg@10": 0.1}]
        return SimpleNamespace(
            history=hist, best_epoch=1, test={"test_ndcg@10": 0.1}, per_user={"ndcg@10": np.zeros(2)}
        )

    return fake_run_training


def test_a_distilled_run_is_trained_again_when_its_profiles_change(ml100k_loo, tmp_path, monkeypatch):
    """The config names the profiles' folder only: a resumed profile job that embeds more users
    (or another LLM writing the folder over) gives the run another key, so it trains again."""
    import ucd.pipelines.train_job as train_mod
    from ucd.config import build_config, find_config
    from ucd.data.prepare import prepare_named
    from ucd.train.config import TrainConfig

    trained: list = []
    monkeypatch.setattr(train_mod, "run_training", _fake_training(trained))

    def cfg(data):
        overrides = [f"data={data}", "distill.enabled=true", f"profiles={tmp_path}", "seed=1"]
        return build_config(TrainConfig, find_config("train", "ml-100k-sasrec"), overrides)

    def cached(data=ml100k_loo, train=True):
        return records.train_cached(cfg(data), tmp_path / "runs", "x", log=lambda *_: None, train=train)

    _embeddings([1, 2], tmp_path / "profile_embeddings.parquet", {"fingerprint": "llm-run-1"})
    path, first = cached()
    assert cached() == (path, first)
    assert len(trained) == 1  # same profiles: the record is reused
    # The record carries what its key was computed from, and the key recomputes from it.
    assert first["profiles_used"] == profiles_identity(tmp_path)
    assert first["data_fingerprint"] == inputs.data_fingerprint(ml100k_loo)
    assert records.recomputed_key(json.loads(path.read_text())) == path.stem

    _embeddings([1, 2, 3], tmp_path / "profile_embeddings.parquet", {"fingerprint": "llm-run-1"})
    cached()
    _embeddings([1, 2], tmp_path / "profile_embeddings.parquet", {"fingerprint": "llm-run-2"})
    cached()
    # Another preparation of the data (the temporal split): trained again too.
    temporal = prepare_named("ml-100k", tmp_path / "t", protocol="temporal", log=lambda *_: None)
    cached(temporal)
    assert len(trained) == 4 and len(list((tmp_path / "runs").glob("*.json"))) == 4
    # The same settings and inputs from another folder find the same record.
    moved = tmp_path / "moved"
    moved.symlink_to(temporal)
    assert cached(moved)[0].name == cached(temporal)[0].name and len(trained) == 4
    # Training off: a missing record is named, not trained.
    _embeddings([1], tmp_path / "profile_embeddings.parquet", {"fingerprint": "llm-run-3"})
    with pytest.raises(DataError, match="no run record of 'x' seed 1"):
        cached(train=False)
    assert len(trained) == 4


def test_a_run_record_is_replaced_whole_or_left_as_it_was(tmp_path, monkeypatch):
    """Records are hours of training: a write cut short must leave the old one readable."""
    path = tmp_path / "run.json"
    schema.atomic_write_text(path, '{"seed": 1}')

    def killed(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(schema.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        schema.atomic_write_text(path, '{"seed": 2}')
    assert path.read_text() == '{"seed": 1}'
    assert [f.name for f in tmp_path.iterdir()] == ["run.json"]  # no temporary file left behind
    monkeypatch.undo()
    schema.atomic_write_text(path, '{"seed": 2}')
    assert path.read_text() == '{"seed": 2}'


def test_an_unreadable_run_record_is_named_not_trained_over(ml100k_loo, tmp_path, monkeypatch):
    import ucd.pipelines.train_job as train_mod
    from ucd.config import build_config, find_config
    from ucd.train.config import TrainConfig
    from ucd.train.run_key import run_keys

    monkeypatch.setattr(train_mod, "run_training", lambda cfg: pytest.fail("trained over a record"))
    cfg = build_config(TrainConfig, find_config("train", "ml-100k-sasrec"), ["seed=1", f"data={ml100k_loo}"])
    cache = tmp_path / "runs"
    cache.mkdir()
    path = records.record_path(cache, run_keys(cfg))
    path.write_text('{"label": "x", "seed": 1, "test": {"test_ndcg')  # cut short by hand
    with pytest.raises(DataError, match=re.escape(str(path)) + ".*delete it to train"):
        records.train_cached(cfg, cache, "x", log=lambda *_: None)
    assert path.read_text().endswith("test_ndcg")  # left for the user to look at


@pytest.mark.slow  # embeds ML-100K's 943 template profiles
def test_template_identity_is_that_of_the_written_template_profiles(ml100k_loo, tmp_path):
    """The records test finds template runs without embedding every user: the identity it uses
    must be the one the runner's written template profiles have."""
    written = inputs.template_embeddings(ml100k_loo, tmp_path / "tpl")
    assert inputs.template_identity(ml100k_loo) == profiles_identity(written)
