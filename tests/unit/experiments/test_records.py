"""The committed run records and reports of the quality experiments.

Every record under experiments/results/runs is found by today's run key from the grid files
(none missing, none orphaned), carries what its key was computed from, and each committed report
is what its records (and, for one report end to end, its grid) give.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from experiments import grid as grids
from experiments import inputs, records, report, run
from experiments.compare import as_eval, seed_comparisons
from ucd.data.prepare import prepare_named
from ucd.data.tensors import profiles_identity
from ucd.evaluate.offline import compare, format_comparison
from ucd.train.run_key import RUN_KEY_VERSION, record_key

ROOT = Path(__file__).resolve().parents[3]
RESULTS = ROOT / "experiments/results"
GRID_FILES = sorted((ROOT / "experiments/grids").glob("*.yaml"))
REPORTS = sorted((RESULTS / "reports").glob("*.json"))


@pytest.fixture(scope="module")
def loaded(data_dir, tmp_path_factory) -> list[dict]:
    """Each grid, with its work folder in a temporary one and its data prepared there."""
    out = []
    for path in GRID_FILES:
        g = grids.load_grid(path)
        g["results"] = str(ROOT / g["results"])
        for spec in g["profiles"].values():
            if "path" in spec:
                spec["path"] = str(ROOT / spec["path"])
        g["work"] = str(tmp_path_factory.mktemp("work"))
        g["prepared"] = prepare_named(
            g["dataset"],
            inputs.prepared_dir(g),
            protocol=g["protocol"],
            data_dir=data_dir,
            log=lambda *_: None,
        )
        out.append(g)
    return out


def _sources(g: dict, names: list[str]) -> tuple[dict[str, str], dict[str, str]]:
    """Source -> folder, and folder -> profiles identity; template profiles by their identity
    alone (test_quality_grid checks it is the written ones'), so no user is embedded here."""
    llm = [n for n in names if not g["profiles"][n].get(grids.TEMPLATE)]
    folders = inputs.profile_sources(g, llm, g["prepared"])
    ids = {p: profiles_identity(p) for p in folders.values()}
    for n in names:
        if n not in folders:
            folders[n] = str(inputs.work_profiles(g, n))
            ids[folders[n]] = inputs.template_identity(g["prepared"])
    return {n: folders[n] for n in names}, ids


def planned(g: dict) -> list[tuple]:
    """(record file stem, report, student, variant, seed, label) of every run the grid's
    experiments plan (a run two experiments share, once for each)."""
    fp = inputs.data_fingerprint(g["prepared"])
    out = []
    for exp in g["experiments"]:
        sources, ids = _sources(g, exp.get("profiles", []))
        plan = grids.planned_runs(exp, sources, exp["seeds"])
        # Computed from finished runs when absent; every committed experiment fixes it.
        assert exp.get("same_budget_epochs") is not None, exp["report"]
        plan += (
            grids.same_budget_runs(exp["same_budget_epochs"], exp["seeds"])
            if exp["same_budget_epochs"]
            else []
        )
        for student in exp["students"]:
            configs = run.run_configs(g, exp, student, g["prepared"], plan)
            for (name, label, cfg), (_, _, seed) in zip(configs, plan, strict=True):
                pid = ids[cfg.profiles] if cfg.distill.enabled else None
                out.append((record_key(cfg, fp, pid), exp["report"], student, name, seed, label))
    return out


def test_every_committed_record_is_planned_by_a_grid_and_none_is_missing(loaded):
    plans = [{p[0]: p for p in planned(g)} for g in loaded]
    wanted = {k: v for p in plans for k, v in p.items()}
    assert sum(len(p) for p in plans) == len(wanted)  # no key planned by two grids
    committed = {f.stem for f in (RESULTS / "runs").glob("*.json")}
    assert not sorted(set(wanted) - committed), "planned runs without a record"
    assert not sorted(committed - set(wanted)), "records no grid plans (orphans)"
    for key, (*_, seed, label) in wanted.items():
        rec = json.loads((RESULTS / "runs" / f"{key}.json").read_text())
        assert (rec["label"], rec["seed"]) == (label, seed), key
    assert len(committed) >= 186


def test_records_carry_the_identity_their_key_recomputes_from():
    for f in sorted((RESULTS / "runs").glob("*.json")):
        rec = json.loads(f.read_text())
        assert rec["run_key_version"] == RUN_KEY_VERSION, f.name
        assert records.recomputed_key(rec) == f.stem, f.name
        # Every committed distilled arm but the weight=coverage ablation used the plain mean.
        if rec["config"]["distill"]["enabled"]:
            assert rec["config"]["distill"]["weight_by_coverage"] == ("weight=coverage" in rec["label"]), (
                f.name
            )


def _block_records(block: dict) -> dict[str, list[dict]]:
    return {
        name: [json.loads((RESULTS / "runs" / f"{r['record']}.json").read_text()) for r in rs]
        for name, rs in block["runs"].items()
    }


@pytest.mark.parametrize("path", REPORTS, ids=lambda p: p.stem)
def test_a_report_is_what_its_run_records_give(path):
    """Recomputing a report's trained rows, paired tests and per-seed and ablation tables from the
    records it names gives the committed numbers exactly, and it names each run's own record."""
    doc = json.loads(path.read_text())
    for block in doc["blocks"]:
        runs = _block_records(block)
        for name, rs in runs.items():
            for summary, rec in zip(block["runs"][name], rs, strict=True):
                assert {k: rec.get(k) for k in run.RUN_FIELDS} == {k: summary[k] for k in run.RUN_FIELDS}
                assert rec["label"] == run.run_label(block, block["student"], name)
        users = range(len(next(iter(runs.values()))[0]["per_user_ndcg@10"]))
        variants = {n: [as_eval(n, r, list(users)) for r in rs] for n, rs in runs.items()}
        again = json.loads(json.dumps({**compare(variants), **seed_comparisons(variants, runs)}))
        trained_rows = [r for r in block["rows"] if r["run"] in runs]
        assert again["rows"] == trained_rows
        assert again["paired_tests"] == {k: v for k, v in block["paired_tests"].items() if k in runs}
        assert again["vs_baseline_by_seed"] == block["vs_baseline_by_seed"]
        assert again["vs_distilled"] == block["vs_distilled"]


def test_each_report_holds_the_runs_its_grid_experiment_plans(loaded):
    by_report: dict[str, set] = {}
    for g in loaded:
        for key, name, *_ in planned(g):
            by_report.setdefault(name, set()).add(key)
    for path in REPORTS:
        doc = json.loads(path.read_text())
        named = {r["record"] for b in doc["blocks"] for rs in b["runs"].values() for r in rs}
        assert named == by_report[doc["report"]], doc["report"]
        assert doc["grid"] in {p.relative_to(ROOT).as_posix() for p in GRID_FILES}
        assert doc["command"].startswith(f"python -m experiments.run {doc['grid']} --report {doc['report']}")
    assert {json.loads(p.read_text())["report"] for p in REPORTS} == set(by_report)


@pytest.mark.parametrize("path", REPORTS, ids=lambda p: p.stem)
def test_committed_markdown_reports_are_rendered_from_their_json(path):
    assert path.with_suffix(".md").read_text() == report.report_markdown(json.loads(path.read_text()))


def test_an_earlier_comparison_table_is_rendered_from_its_json():
    doc = json.loads((RESULTS / "earlier/ml100k-qwen.json").read_text())
    assert (RESULTS / "earlier/ml100k-qwen.md").read_text() == format_comparison(doc) + "\n"


@pytest.mark.slow  # embeds ML-100K's item texts for the profile-only reference
def test_a_report_regenerated_from_its_grid_is_the_committed_one(data_dir, tmp_path, monkeypatch):
    """End to end through the command line, training off: the grid's experiment, its records, the
    references and the coverage split give the committed report's numbers and tables exactly."""
    monkeypatch.chdir(ROOT)  # the grid's profile folders are relative to the repository
    g = yaml.safe_load((ROOT / "experiments/grids/ml-100k-loo.yaml").read_text())
    g |= {"results": str(tmp_path / "results"), "work": str(tmp_path / "work")}
    (tmp_path / "results").mkdir()
    (tmp_path / "results/runs").symlink_to(RESULTS / "runs")
    grid_file = tmp_path / "g.yaml"
    grid_file.write_text(yaml.safe_dump(g))
    name = "ml100k-qwen-alpha02-confirm"
    run.main([str(grid_file), "--report", name, "--no-train"])
    written = tmp_path / "results/reports" / f"{name}.json"
    committed = RESULTS / "reports" / f"{name}.json"
    assert json.loads(written.read_text())["blocks"] == json.loads(committed.read_text())["blocks"]
    md, want = (p.with_suffix(".md").read_text().split("\n", 1) for p in (written, committed))
    assert md[1] == want[1] and md[0].startswith(
        f"_Generated by `python -m experiments.run {grid_file} --report"
    )


def test_nested_shares_materialise_with_the_identity_their_runs_were_trained_on(loaded, tmp_path):
    g = next(g for g in loaded if g["dataset"] == "beauty")
    shares = {n: s for n, s in g["profiles"].items() if "share_of" in s}
    assert set(shares) == {"qwen", "qwen-5pct", "qwen-10pct"}
    used: dict[str, set] = {}
    for f in (RESULTS / "runs").glob("*.json"):
        rec = json.loads(f.read_text())
        variant = re.match(r"beauty-loo-(?:sasrec|bert4rec)-(.*)$", rec["label"])
        if variant:
            used.setdefault(variant.group(1), set()).add(rec["profiles_used"])
    prepared = g["prepared"]
    for name, spec in shares.items():
        parent = Path(g["profiles"][spec["share_of"]]["path"])
        folder = inputs.share_profiles(parent, prepared, spec["user_share"], 0, tmp_path / name)
        assert {profiles_identity(folder)} == used[f"distilled[{name}]"]
        assert used.get(f"weight=coverage [{name}]", used[f"distilled[{name}]"]) == used[f"distilled[{name}]"]
    # A share the folder does not hold (another seed picks other users) is refused.
    with pytest.raises(inputs.DataError, match="not its prefix"):
        inputs.share_profiles(parent, prepared, 0.02, 1, tmp_path / "other")


def _committed_files() -> list[Path]:
    """What a commit of the working tree holds: tracked and untracked files git does not ignore."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return [ROOT / p for p in sorted(set(out.split("\0"))) if p and (ROOT / p).is_file()]


def test_no_committed_file_of_4kb_or_more_is_stored_twice():
    seen: dict[str, Path] = {}
    twice = []
    for f in _committed_files():
        if f.stat().st_size < 4096:
            continue
        digest = hashlib.sha256(f.read_bytes()).hexdigest()
        if digest in seen:
            twice.append((seen[digest].relative_to(ROOT), f.relative_to(ROOT)))
        seen.setdefault(digest, f)
    assert not twice
    assert any("experiments/results/profiles" in str(f) for f in seen.values())  # the scan saw them
