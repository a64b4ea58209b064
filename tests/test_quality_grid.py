"""The quality benchmark's grid: which runs it trains, in which order, with which overrides.

Training itself is replaced by a recorder here (the grid logic is what is under test; the
training path has its own tests and the benchmark's committed run records).
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def quality():
    spec = importlib.util.spec_from_file_location("ucd_bench_quality", ROOT / "benchmarks" / "quality.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def grid(quality, ml100k_loo, tmp_path, monkeypatch):
    """run_block on real prepared ML-100K with training recorded, not run.

    Returns ``run(kw, **dataset_keys) -> (report, calls)``; each call is (variant, seed,
    epochs, pooling) of one training run asked for, in order.
    """
    calls: list[tuple[str, int, int, str]] = []
    n_test = len(quality.SequenceData.load(ml100k_loo).test.user_ids)

    def fake_train(cfg, cache, label, log=None):
        calls.append((label.split("-sasrec-", 1)[1], cfg.seed, cfg.epochs, str(cfg.distill.pooling)))
        return {"test": {"test_ndcg@10": 0.1}, "per_user_ndcg@10": [0.1] * n_test}

    monkeypatch.setattr(quality, "train_cached", fake_train)
    monkeypatch.setattr(quality, "prepare_named", lambda *a, **k: ml100k_loo)
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "profile_embeddings.parquet").write_bytes(b"")  # only its existence is checked
    cfg = str(ROOT / "configs/train/ml-100k-sasrec-distill.yaml")

    def run(kw: dict, **ds_keys):
        ds = {
            "name": "ml-100k",
            "seeds": [1, 2],
            "profiles": {"llm": str(profiles)},
            "primary_profiles": "llm",
            **ds_keys,
        }
        calls.clear()
        report = quality.run_block(ds, "loo", "sasrec", cfg, {}, tmp_path / "out", log=lambda *_: None, **kw)
        return report, list(calls)

    return run


def test_ablations_run_one_after_another_not_seed_by_seed(grid):
    report, calls = grid({"seeds": [1, 2]}, ablations=["pooling=last", "alpha=0.8"], same_budget_epochs=0)
    assert report is None  # a partial run reports nothing
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


def test_variants_filter_and_same_budget(grid):
    _, calls = grid(
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
    _, calls = grid({"only": ["baseline, same budget"]}, same_budget_epochs=0)
    assert calls == []


def test_a_missing_llm_profile_folder_stops_the_block_before_training(grid, tmp_path):
    # Skipping it would write a report without that source's rows that looks complete.
    gone = tmp_path / "gone"
    with pytest.raises(FileNotFoundError, match=rf"datasets\[ml-100k\]\.profiles\.qwen: {gone} holds no"):
        grid({}, profiles={"qwen": str(gone)}, primary_profiles="qwen")
    _, calls = grid({"seeds": [1]}, same_budget_epochs=0)
    assert calls == [("baseline", 1, 200, "mean"), ("distilled[llm]", 1, 200, "mean")]
    # Variants that do not distill from it still train: baselines need no profiles.
    _, calls = grid({"only": ["baseline"]}, profiles={"qwen": str(gone)}, primary_profiles="qwen")
    assert calls == [("baseline", 1, 200, "mean"), ("baseline", 2, 200, "mean")]
    with pytest.raises(FileNotFoundError, match=r"profiles\.qwen"):
        grid(
            {"only": ["pooling=last [qwen]"]},
            profiles={"qwen": str(gone)},
            primary_profiles="qwen",
            ablations=["pooling=last"],
        )


def test_a_list_of_primary_profiles_runs_every_ablation_on_each_source(quality, grid, tmp_path):
    # So one block can ask an ablation of two sources (Qwen at 2% and 5% coverage) and keep
    # the records of the first.
    ds = {
        "profiles": {"a": "x", "b": "y", "c": "z"},
        "primary_profiles": ["a", "b"],
        "ablations": ["pooling=last"],
    }
    plan = quality.planned_runs(ds | {"seeds": [1]}, {"a": "/pa", "b": "/pb", "c": "/pc"}, [1])
    ablations = {
        (v, next(x for x in o if x.startswith("profiles=")))
        for v, o, _ in plan
        if not v.startswith(("baseline", "distilled"))
    }
    assert ablations == {("pooling=last [a]", "profiles=/pa"), ("pooling=last [b]", "profiles=/pb")}
    assert "pooling=last [c]" not in quality.variant_names(ds)
    assert quality.needed_sources(ds, ["pooling=last [b]"]) == {"b"}
    # A single name still means that one source only.
    assert quality.planned_runs(ds | {"seeds": [1], "primary_profiles": "c"}, {"c": "/pc"}, [1])[-1][0] == (
        "pooling=last [c]"
    )

    # End to end: the second source's ablation trains without the first source's folder.
    other = tmp_path / "other"
    other.mkdir()
    (other / "profile_embeddings.parquet").write_bytes(b"")
    _, calls = grid(
        {"only": ["pooling=last [other]"]},
        profiles={"gone": str(tmp_path / "gone"), "other": str(other)},
        primary_profiles=["gone", "other"],
        ablations=["pooling=last"],
    )
    assert calls == [("pooling=last [other]", 1, 200, "last"), ("pooling=last [other]", 2, 200, "last")]


@pytest.mark.parametrize("path", sorted((ROOT / "benchmarks").glob("quality*.yaml")), ids=lambda p: p.name)
def test_committed_benchmark_configs_pass_the_check(quality, path, monkeypatch):
    monkeypatch.chdir(ROOT)  # student config paths are relative to the repository
    quality.check_bench(quality.yaml.safe_load(path.read_text()), path.name)


def _block(**kw):
    ds = {
        "name": "ml-100k",
        "protocols": ["loo"],
        "seeds": [1, 2],
        "students": {"sasrec": str(ROOT / "configs/train/ml-100k-sasrec-distill.yaml")},
        "profiles": {"llm": "x"},
        "primary_profiles": "llm",
    }
    ds.update(kw)
    return {"datasets": [ds]}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"ablations": ["pooling=last", "pooling=max"]}, r"\.ablations: unknown \['pooling=max'\]"),
        ({"ablation_seed": [1]}, r": unknown keys \['ablation_seed'\]"),
        ({"protocols": ["loo", "time"]}, r"\.protocols: unknown \['time'\]"),
        ({"ablation_seeds": [1, 3]}, r"\.ablation_seeds: \[3\] are not in seeds"),
        ({"seeds": []}, r"\.seeds: a non-empty list"),
        (
            {"students": {"sasrec": "configs/train/nope.yaml"}},
            r"\.students\.sasrec: configs/train/nope.yaml not found",
        ),
        ({"primary_profiles": "qwen"}, r"\.primary_profiles: 'qwen' is not one of profiles \['llm'\]"),
        ({"primary_profiles": ["llm", "qwen"]}, r"\.primary_profiles: 'qwen' is not one of profiles"),
        ({"primary_profiles": 3}, r"\.primary_profiles: a source name or a list of them, got 3"),
    ],
)
def test_bad_benchmark_config_is_named_before_anything_trains(quality, change, message):
    with pytest.raises(ValueError, match=r"^bench\.yaml: datasets\[0\] \(ml-100k\)" + message):
        quality.check_bench(_block(**change), "bench.yaml")


def test_variant_names_cover_every_run_the_grid_trains(quality, grid):
    keys = {"ablations": ["pooling=last", "alpha=0.8"], "same_budget_epochs": 98}
    _, calls = grid({"seeds": [1, 2]}, **keys)
    names = quality.variant_names({"profiles": {"llm": "x"}, "primary_profiles": "llm", **keys})
    assert {v for v, *_ in calls} == set(names)
    assert "baseline, same budget" not in quality.variant_names({"same_budget_epochs": 0})


def test_unknown_variant_dataset_or_seed_on_the_command_line_is_an_error(quality):
    bench = _block(ablations=["pooling=last"])
    chosen = quality.select_datasets(bench, "b.yaml", ["ml-100k"], ["pooling=last [llm]", "baseline"])
    assert [ds["name"] for ds in chosen] == ["ml-100k"]
    with pytest.raises(ValueError, match=r"--variants: unknown \['distilled\[qwen\]'\]"):
        quality.select_datasets(bench, "b.yaml", None, ["distilled[qwen]"])
    with pytest.raises(ValueError, match=r"--only: b.yaml has no dataset \['beauty'\]"):
        quality.select_datasets(bench, "b.yaml", ["beauty"], None)
    with pytest.raises(ValueError, match=r"--seeds: \[7\] not in b.yaml's seeds \[1, 2\]"):
        quality.select_datasets(bench, "b.yaml", None, None, [2, 7])


def test_profile_sources_report_what_the_checks_flagged(quality, tmp_path):
    import datetime

    import pyarrow as pa
    import pyarrow.parquet as pq

    from ucd import schema

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
    emb = pa.table(
        {"user_id": pa.array([1, 2, 3], pa.int32()), "embedding": [[1.0, 0.0]] * 3, "model": ["e"] * 3},
        schema=schema.profile_embeddings_schema(2),
    )
    pq.write_table(emb, llm / "profile_embeddings.parquet")
    (tmp_path / "tpl").mkdir()
    pq.write_table(emb.slice(0, 2), tmp_path / "tpl" / "profile_embeddings.parquet")

    info = quality.profile_source_info(str(llm))
    assert info == {"model": "Tiny-LM", "users": 4, "ok": 1, "failed": 1, "truncated": 2, "embedded": 3}
    tpl = quality.profile_source_info(str(tmp_path / "tpl" / "profile_embeddings.parquet"))
    assert tpl == {"model": "template (non-LLM)", "users": 2, "embedded": 2}
    table = quality.profiles_table({"profile_sources": {"qwen": info, "template": tpl}})
    assert "| qwen | Tiny-LM | 4 | 1 (25.0%) | 1 (25.0%) | 2 (50.0%) | 3 |" in table
    assert "| template | template (non-LLM) | 2 | - | - | - | 2 |" in table


def test_coverage_split_compares_profiled_and_unprofiled_users_apart(quality, tmp_path):
    from types import SimpleNamespace

    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from ucd import schema

    emb = pa.table(
        {"user_id": pa.array([1, 2, 3], pa.int32()), "embedding": [[1.0, 0.0]] * 3, "model": ["e"] * 3},
        schema=schema.profile_embeddings_schema(2),
    )
    schema.write_table(
        emb,
        tmp_path / "profile_embeddings.parquet",
        "profile_embeddings",
        {"data_fingerprint": "f"},
        schema=emb.schema,
    )
    users = np.arange(1, 7)
    data = SimpleNamespace(test=SimpleNamespace(user_ids=users), n_users=6, fingerprint="f")

    def res(name, *per_user):
        return [quality.EvalResult(name, {}, {"ndcg@10": np.array(p)}, users, False) for p in per_user]

    variants = {
        "baseline": res("baseline", [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]),
        # Two seeds whose mean is the baseline + 0.1 for the profiled users only.
        "distilled[llm]": res("d", [0.1, 0.2, 0.3, 0.3, 0.5, 0.7], [0.3, 0.4, 0.5, 0.5, 0.5, 0.5]),
        "profile-only[llm]": res("p", [0.5, 0.5, 0.5, 0.0, 0.0, 0.0]),
    }
    split = quality.coverage_split(variants, {"llm": str(tmp_path)}, data)["llm"]
    with_p, without = split["with a profile"], split["without a profile"]
    assert with_p["n"] == 3 and without["n"] == 3
    assert with_p["baseline"] == pytest.approx(0.2) and with_p["distilled[llm]"] == pytest.approx(0.3)
    assert with_p["rel_change"] == pytest.approx(0.5) and with_p["profile-only[llm]"] == pytest.approx(0.5)
    assert without["rel_change"] == pytest.approx(0.0) and without["p_value"] == 1.0
    assert without["profile-only[llm]"] == 0.0
    table = quality.coverage_table({"by_coverage": {"llm": split}})
    assert "| llm | with a profile | 3 | 0.2000 | 0.3000 | +50.0% |" in table

    # A second source that profiled users 2 and 3 only: both meet on those two users.
    small = emb.filter(pc.is_in(emb.column("user_id"), pa.array([2, 3], pa.int32())))
    schema.write_table(
        small, tmp_path / "b" / "profile_embeddings.parquet", "profile_embeddings", {}, schema=emb.schema
    )
    variants["distilled[b]"] = res("d", [0.1, 0.4, 0.1, 0.4, 0.5, 0.6])
    variants["profile-only[b]"] = res("p", [0.0, 0.2, 0.2, 0.0, 0.0, 0.0])
    both = quality.coverage_split(variants, {"llm": str(tmp_path), "b": str(tmp_path / "b")}, data)
    same = both["llm"]["profiled by every source"]
    assert same["n"] == 2 and same["baseline"] == pytest.approx(0.25)
    assert same["distilled[llm]"] == pytest.approx(0.35) and same["profile-only[llm]"] == pytest.approx(0.5)
    assert "profiled by every source" not in both["b"]  # its own profiled users are those already
    assert both["b"]["with a profile"]["distilled[b]"] == pytest.approx(0.25)
    assert both["llm"]["with a profile"] == with_p  # the other groups are unchanged

    # An ablation on a source is split by that source's users, in a row of its own.
    variants["alpha=0.2 [llm]"] = res("a", [0.2, 0.3, 0.4, 0.4, 0.5, 0.6])
    split = quality.coverage_split(variants, {"llm": str(tmp_path)}, data, {"alpha=0.2 [llm]": "llm"})
    ablated = split["alpha=0.2 [llm]"]
    assert ablated["with a profile"]["alpha=0.2 [llm]"] == pytest.approx(0.3)
    assert ablated["without a profile"]["rel_change"] == pytest.approx(0.0)
    assert split["llm"]["with a profile"] == with_p
    table = quality.coverage_table({"by_coverage": split})
    assert "| alpha=0.2 [llm] | with a profile | 3 | 0.2000 | 0.3000 | +50.0% |" in table

    # Users without a profile that both variants all miss (4 on ML-100K): no change to print.
    variants = {k: res(k, [0.1, 0.2, 0.3, 0.0, 0.0, 0.0]) for k in ("baseline", "distilled[llm]")}
    variants["profile-only[llm]"] = res("p", [0.5, 0.5, 0.5, 0.0, 0.0, 0.0])
    zero = quality.coverage_split(variants, {"llm": str(tmp_path)}, data)
    assert "| llm | without a profile | 3 | 0.0000 | 0.0000 | – |" in quality.coverage_table(
        {"by_coverage": zero}
    )


def test_ablations_are_compared_with_their_distilled_variant_on_the_seeds_both_ran(quality):
    import numpy as np

    users = np.arange(1, 5)

    def res(*per_user):
        return [quality.EvalResult("r", {}, {"ndcg@10": np.array(p)}, users, False) for p in per_user]

    # The default ran seeds 1-3, the ablation 3 and 1 (in that order): seed 2 must not enter.
    variants = {
        "distilled[llm]": res([0.2, 0.2, 0.2, 0.2], [9.0, 9.0, 9.0, 9.0], [0.4, 0.4, 0.4, 0.4]),
        "alpha=0.2 [llm]": res([0.3, 0.5, 0.6, 0.6], [0.3, 0.3, 0.3, 0.3]),
        "pooling=last [llm]": res([0.1, 0.1, 0.1, 0.1]),
    }
    seeds = {"distilled[llm]": [1, 2, 3], "alpha=0.2 [llm]": [3, 1], "pooling=last [llm]": [7]}
    parents = {n: "distilled[llm]" for n in ("alpha=0.2 [llm]", "pooling=last [llm]", "layer=1 [llm]")}
    out = quality.paired_comparison(variants, seeds, parents)
    # No shared seed (7) or no runs at all (layer=1): no row rather than a wrong one.
    assert list(out) == ["alpha=0.2 [llm]"]
    c = out["alpha=0.2 [llm]"]
    assert c["seeds"] == [3, 1] and c["against"] == "distilled[llm]"
    assert c["distilled[llm]"] == pytest.approx(0.3) and c["alpha=0.2 [llm]"] == pytest.approx(0.4)
    assert c["rel_change"] == pytest.approx(1 / 3)
    # Seed 3: 0.5 vs 0.4; seed 1: 0.3 vs 0.2.
    assert c["per_seed_rel_change"] == {3: pytest.approx(0.25), 1: pytest.approx(0.5)}
    want = quality.paired_test([0.3] * 4, [0.3, 0.4, 0.45, 0.45])
    assert c["p_value"] == pytest.approx(want["p_value"]) and c["wilcoxon_p"] == pytest.approx(
        want["wilcoxon_p"]
    )
    table = quality.ablation_table({"vs_distilled": out})
    assert "| alpha=0.2 [llm] | distilled[llm] | 3 1 | 0.3000 | 0.4000 | +33.3% |" in table
    assert table.rstrip().endswith("those means).") and "| +25.0% / +50.0% |" in table

    # Seed by seed against the baseline: above it on one seed of two.
    variants["baseline"] = res([0.2, 0.2, 0.2, 0.2], [0.5, 0.5, 0.5, 0.5])
    seeds["baseline"] = [1, 3]
    by_seed = quality.paired_comparison(variants, seeds, {"alpha=0.2 [llm]": "baseline"})
    assert by_seed["alpha=0.2 [llm]"]["per_seed_rel_change"] == {3: pytest.approx(0.0), 1: pytest.approx(0.5)}
    table = quality.per_seed_table({"vs_baseline_by_seed": by_seed})
    assert "| alpha=0.2 [llm] | 3 1 | +0.0% / +50.0% | 1 of 2 |" in table
    # Over seeds: per-seed means 0.5 vs 0.5 and 0.3 vs 0.2, the seed as the unit.
    seeds_p = quality.paired_test([0.5, 0.2], [0.5, 0.3])["p_value"]
    assert by_seed["alpha=0.2 [llm]"]["seeds_t_p"] == pytest.approx(seeds_p) and seeds_p < 1.0
    assert table.splitlines()[2].endswith(f"| {seeds_p:.3g} |")
    # One seed: no test over seeds (not the p = 1 that paired_test returns for it).
    one = {"x": {"seeds": [1], "per_seed_rel_change": {1: 0.1}, "seeds_t_p": 1.0}}
    assert (
        quality.per_seed_table({"vs_baseline_by_seed": one}).splitlines()[2]
        == "| x | 1 | +10.0% | 1 of 1 | - |"
    )


def test_cached_distilled_run_is_trained_again_when_its_profiles_change(quality, tmp_path, monkeypatch):
    """The run cache is keyed by the config, which names the profiles' folder only: a resumed
    profile job that embeds more users must not leave the old record passing for the new set."""
    from types import SimpleNamespace

    import numpy as np
    import pyarrow as pa

    from ucd import schema

    def write_profiles(users, run="llm-run-1"):
        emb = pa.table(
            {
                "user_id": pa.array(users, pa.int32()),
                "embedding": [[1.0, 0.0]] * len(users),
                "model": ["e"] * len(users),
            },
            schema=schema.profile_embeddings_schema(2),
        )
        meta = {"fingerprint": run, "embed_model": "e"}
        schema.write_table(
            emb, tmp_path / "profile_embeddings.parquet", "profile_embeddings", meta, emb.schema
        )

    trained = []

    def fake_run_training(cfg):
        trained.append(cfg.run_name)
        hist = [{"train_seconds": 1.0, "train_rec_loss": 1.0, "train_distill_loss": 0.0, "val_ndcg@10": 0.1}]
        return SimpleNamespace(
            history=hist, best_epoch=1, test={"test_ndcg@10": 0.1}, per_user={"ndcg@10": np.zeros(2)}
        )

    import ucd.pipelines.train_job as train_mod

    monkeypatch.setattr(train_mod, "run_training", fake_run_training)
    cfg = quality.build_config(
        quality.TrainConfig,
        str(ROOT / "configs/train/ml-100k-sasrec-distill.yaml"),
        ["distill.enabled=true", f"profiles={tmp_path}", "seed=1"],
    )
    cache = tmp_path / "runs"
    write_profiles([1, 2])
    first = quality.train_cached(cfg, cache, "x", log=lambda *_: None)
    assert quality.train_cached(cfg, cache, "x", log=lambda *_: None) == first
    assert len(trained) == 1  # same profiles: the record is reused

    write_profiles([1, 2, 3])  # the profile job resumed and embedded one more user
    logged = []
    quality.train_cached(cfg, cache, "x", log=logged.append)
    assert len(trained) == 2
    assert "training again" in logged[0]

    # A record written before the field existed is adopted once, then guarded like the others.
    (record,) = cache.glob("*.json")
    legacy = quality.json.loads(record.read_text())
    del legacy["profiles_used"]
    record.write_text(quality.json.dumps(legacy))
    quality.train_cached(cfg, cache, "x", log=lambda *_: None)
    assert len(trained) == 2 and "profiles_used" in quality.json.loads(record.read_text())
    write_profiles([1, 2])
    quality.train_cached(cfg, cache, "x", log=lambda *_: None)
    assert len(trained) == 3

    # Another profile job (another LLM, same users) wrote the folder over: trained again.
    write_profiles([1, 2], run="llm-run-2")
    quality.train_cached(cfg, cache, "x", log=lambda *_: None)
    assert len(trained) == 4


def test_a_run_record_is_replaced_whole_or_left_as_it_was(tmp_path, monkeypatch):
    """Records are hours of training: a write cut short must leave the old one readable."""
    from ucd import schema

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


def test_an_unreadable_run_record_is_named_not_trained_over(quality, tmp_path, monkeypatch):
    import ucd.pipelines.train_job as train_mod

    monkeypatch.setattr(train_mod, "run_training", lambda cfg: pytest.fail("trained over a record"))
    cfg = quality.build_config(
        quality.TrainConfig, str(ROOT / "configs/train/ml-100k-sasrec-distill.yaml"), ["seed=1"]
    )
    cache = tmp_path / "runs"
    cache.mkdir()
    path = quality.record_path(cfg, cache)
    path.write_text('{"label": "x", "seed": 1, "test": {"test_ndcg')  # cut short by hand
    with pytest.raises(quality.DataError, match=re.escape(str(path)) + ".*delete it to train"):
        quality.train_cached(cfg, cache, "x", log=lambda *_: None)
    with pytest.raises(quality.DataError, match=re.escape(path.name)):
        quality.records_by_run(cache)
    assert path.read_text().endswith("test_ndcg")  # left for the user to look at


def _in_repo_llm_profiles(ds: dict) -> dict[str, str]:
    """The LLM profile sources a dataset block keeps beside the committed reports: the ones a
    clean clone must hold (others live under ~ or the git-ignored out/, made on demand; template
    profiles are written by the benchmark itself)."""
    return {k: v for k, v in ds["profiles"].items() if v.startswith("benchmarks/results/")}


def _bench(config: str) -> dict:
    return yaml.safe_load((ROOT / "benchmarks" / config).read_text())


_CONFIGS_ON_COMMITTED_PROFILES = [
    p.name
    for p in sorted((ROOT / "benchmarks").glob("quality*.yaml"))
    if any(_in_repo_llm_profiles(ds) for ds in _bench(p.name).get("datasets", []))
]


def test_configs_on_committed_profiles_are_the_expected_ones():
    # Guards the parametrisations below against silently testing less.
    assert set(_CONFIGS_ON_COMMITTED_PROFILES) >= {
        "quality-beauty.yaml",
        "quality-beauty-bert4rec.yaml",
        "quality-ml100k-temporal.yaml",
        "quality-ml100k-temporal-bert4rec.yaml",
        "quality-ml100k-temporal-bert4rec-select60.yaml",
        "quality-ml100k-qwen-bert4rec.yaml",
        "quality-ml100k-qwen.yaml",
        "quality-ml100k-qwen-5seed-ablations.yaml",
        "quality-ml100k-qwen-alpha02-confirm.yaml",
    }


@pytest.mark.parametrize("config", _CONFIGS_ON_COMMITTED_PROFILES)
def test_profiles_a_config_names_in_the_repo_are_committed(config):
    """A report is rerun from a clean clone with the profiles an earlier run made (asking the
    LLM again takes hours here): a profile folder in the repo that git ignores would exist only
    on the machine that made it."""
    for ds in _bench(config)["datasets"]:
        for src, folder in _in_repo_llm_profiles(ds).items():
            for name in ("profile_embeddings.parquet", "profiles.parquet"):
                path = ROOT / folder / name
                assert path.exists(), f"{config}: profiles.{src}: {path} missing"
                ignored = subprocess.run(["git", "check-ignore", "-q", str(path)], cwd=ROOT).returncode == 0
                assert not ignored, f"{config}: profiles.{src}: {path} is git-ignored"


@pytest.mark.parametrize("config", _CONFIGS_ON_COMMITTED_PROFILES)
def test_committed_run_records_keep_their_keys(quality, config):
    """The README's results are regenerated from the committed run records, found by a hash of
    the run's config: a setting added with a default must not re-key them (every run would
    silently train again, hours each here), and every baseline and LLM-distilled run of the
    config's seeds must be there (ablations on them too)."""
    bench = _bench(config)
    missing, planned = [], 0
    for ds in bench["datasets"]:
        for protocol in ds["protocols"]:
            common = quality.shared_overrides(
                bench, quality.prepared_dir(Path(bench["out"]), ds["name"], protocol)
            )
            # The plan run_block trains, on the committed LLM profiles only: template profiles
            # are written by the benchmark itself, into a git-ignored folder.
            plan = quality.planned_runs(ds, _in_repo_llm_profiles(ds), ds["seeds"])
            for student_cfg in ds["students"].values():
                for name, overrides, seed in plan:
                    cfg = quality.build_config(
                        quality.TrainConfig, str(ROOT / student_cfg), [*common, f"seed={seed}", *overrides]
                    )
                    path = quality.record_path(cfg, ROOT / bench["out"] / "runs")
                    planned += 1
                    if not path.exists():
                        missing.append((ds["name"], protocol, name, seed, path.name))
    assert not missing
    assert planned >= 2 * len(bench["datasets"][0]["seeds"])


# The first grid's report (2026-11-26) was rendered before the profiles table and today's
# training-table caption existed, and its JSON does not record the command: it cannot match.
_RENDERED_BY_AN_OLDER_VERSION = {"quality"}


@pytest.mark.parametrize(
    "report",
    sorted(
        p
        for p in (ROOT / "benchmarks/results/quality").glob("*.json")
        if p.stem not in _RENDERED_BY_AN_OLDER_VERSION
    ),
    ids=lambda p: p.stem,
)
def test_committed_markdown_reports_are_rendered_from_their_json(quality, report):
    """The README's Results come from these .md files: each must be exactly what its .json
    renders to, so no number in them was typed or edited by hand."""
    import json

    doc = json.loads(report.read_text())
    # Without blocks: one comparison table written by `ucd evaluate --compare ... --out --md`.
    want = quality.report_markdown(doc) if "blocks" in doc else quality.format_comparison(doc) + "\n"
    assert report.with_suffix(".md").read_text() == want


def test_readme_results_blocks_are_the_committed_reports():
    """README's generated blocks (benchmarks/render_readme.py) hold their report's .md as is."""

    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(
        r"<!-- results:(?:([\w-]+):)?start -->\n(.*?)\n<!-- results:(?:[\w-]+:)?end -->", readme, re.S
    )
    # Unnamed: the first grid's report; "qwen": the `ucd evaluate --compare` table of ml100k-qwen;
    # "summary": benchmarks/quality_summary.py's table over all the reports.
    results = ROOT / "benchmarks/results"
    files = {"": "quality/quality", "qwen": "quality/ml100k-qwen", "summary": "quality_summary"}
    assert len(blocks) >= 10
    assert "summary" in [name for name, _ in blocks]
    for name, body in blocks:
        md = results / f"{files.get(name, 'quality/' + name)}.md"
        assert body == md.read_text().strip(), name


def test_ablation_parents_come_from_the_names(quality):
    names = [
        "baseline",
        "distilled[qwen]",
        "distilled[template]",
        "pooling=last [qwen]",
        "weight=coverage [smollm2]",  # its distilled variant is not in the block
        "baseline, same budget",
    ]
    assert quality.ablation_parents(names) == {"pooling=last [qwen]": "distilled[qwen]"}
    # run_block's own naming round-trips
    name = quality.ablation_name("coverage=25%", "qwen")
    assert quality.ablation_parents([quality.distilled_name("qwen"), name]) == {name: "distilled[qwen]"}


_REPORTS_WITH_SEED_TABLES = sorted(
    p for p in (ROOT / "benchmarks/results/quality").glob("*.json") if "vs_baseline_by_seed" in p.read_text()
)


@pytest.mark.parametrize("report", _REPORTS_WITH_SEED_TABLES, ids=lambda p: p.stem)
def test_seed_tables_are_what_the_run_records_give(quality, report):
    """Reports written by run_block hold tables computed when they ran; reports that predate
    the tables had them added by --add-seed-tables from the committed run records. Either way,
    recomputing them from the records the report names gives the committed tables exactly: the
    record look-up finds the report's own runs, and the two paths compute the same thing."""
    import json

    doc = json.loads(report.read_text())
    again = json.loads(json.dumps(quality.add_seed_tables(report, report.parent / "runs")))
    for old, new in zip(doc["blocks"], again["blocks"], strict=True):
        assert new["vs_baseline_by_seed"] == old["vs_baseline_by_seed"]
        assert new["vs_distilled"] == old.get("vs_distilled", {})


def test_add_seed_tables_names_the_run_it_cannot_find(quality, tmp_path):
    import json
    import shutil

    src = ROOT / "benchmarks/results/quality"
    doc = json.loads((src / "ml100k-temporal-bert4rec.json").read_text())
    (tmp_path / "runs").mkdir()
    report = tmp_path / "r.json"
    report.write_text(json.dumps(doc))
    wanted = {
        (f"ml-100k-temporal-bert4rec-{n}", r["seed"], r["seconds"])
        for n, rs in doc["blocks"][0]["runs"].items()
        for r in rs
    }
    copied = []
    for f in sorted((src / "runs").glob("*.json")):
        r = json.loads(f.read_text())
        if (r["label"], r["seed"], r["seconds"]) in wanted:
            shutil.copy(f, tmp_path / "runs" / f.name)
            copied.append((f.name, r))
    assert len(copied) == len(wanted) >= 6
    assert quality.add_seed_tables(report, tmp_path / "runs")["blocks"][0]["vs_baseline_by_seed"]

    name, rec = copied[0]
    (tmp_path / "runs" / name).unlink()
    with pytest.raises(ValueError, match=rf"0 run records of '{re.escape(rec['label'])}' seed {rec['seed']}"):
        quality.add_seed_tables(report, tmp_path / "runs")
    # Two records claiming the same run: ambiguous, never picked at random.
    (tmp_path / "runs" / name).write_text(json.dumps(rec))
    (tmp_path / "runs" / "copy.json").write_text(json.dumps(rec))
    with pytest.raises(ValueError, match=rf"2 run records of '{re.escape(rec['label'])}'"):
        quality.add_seed_tables(report, tmp_path / "runs")
    # The report on disk is untouched by a failed attempt.
    assert json.loads(report.read_text()) == doc
    # A comparison table from `ucd evaluate --compare` has no blocks to add tables to.
    with pytest.raises(ValueError, match="not a quality.py report"):
        quality.add_seed_tables(ROOT / "benchmarks/results/quality/ml100k-qwen.json", tmp_path / "runs")
