"""The README's "at a glance" table of every committed distillation result (benchmarks/quality_summary.py)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REPORTS = ROOT / "benchmarks/results/quality"
COMMITTED = ROOT / "benchmarks/results/quality_summary.json"


@pytest.fixture(scope="module")
def qs():
    spec = importlib.util.spec_from_file_location(
        "ucd_bench_quality_summary", ROOT / "benchmarks/quality_summary.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize(
    ("rel", "p", "per_seed", "want"),
    [
        (0.05, 0.01, [0.04, 0.06, 0.05], "gain"),
        (-0.05, 0.01, [-0.04, -0.06, -0.05], "harm"),
        (0.05, 0.01, [0.10, -0.01, 0.06], "p < 0.05, seeds disagree"),
        (-0.05, 0.01, [-0.10, 0.0, -0.06], "p < 0.05, seeds disagree"),  # a tie is not below
        (0.05, 0.05, [0.04, 0.06, 0.05], "no significant change"),  # the bar is strict
        (0.05, 0.30, [0.04, 0.06, 0.05], "no significant change"),
        (0.05, math.nan, [0.04, 0.06, 0.05], "no significant change"),
    ],
)
def test_verdict_is_the_issues_bar(qs, rel, p, per_seed, want):
    assert qs.verdict(rel, p, per_seed) == want


def _block(ndcg: float, p: float, per_seed: dict) -> dict:
    name = "alpha=0.2 [llm]"
    return {
        "dataset": "ml-100k",
        "protocol": "loo",
        "student": "sasrec",
        "profile_sources": {"llm": {"model": "Some-LLM", "users": 943, "embedded": 900}},
        "paired_tests": {name: {"n": 943}, "baseline, same budget": {"n": 943}, "most-popular": {"n": 943}},
        "rows": [
            {"run": "most-popular", "metric": "ndcg@10", "mean": 0.02},
            {"run": "most-popular", "metric": "recall@10", "mean": 0.04},
        ],
        "by_coverage": {
            "llm": {
                "with a profile": {"n": 900, "profile-only[llm]": 0.007, "baseline": 0.05},
                "without a profile": {"n": 43, "profile-only[llm]": 0.0, "baseline": 0.05},
            }
        },
        "vs_baseline_by_seed": {
            name: {
                "seeds": [int(s) for s in per_seed],
                "baseline": 0.05,
                name: ndcg,
                "rel_change": ndcg / 0.05 - 1,
                "per_seed_rel_change": per_seed,
                "p_value": p,
                "wilcoxon_p": p,
                "seeds_t_p": 0.5,
            },
            "baseline, same budget": {
                "seeds": [1],
                "baseline": 0.05,
                "baseline, same budget": 0.05,
                "rel_change": 0.0,
                "per_seed_rel_change": {"1": 0.0},
                "p_value": 1.0,
                "wilcoxon_p": 1.0,
                "seeds_t_p": 1.0,
            },
        },
    }


def test_summary_rows_name_source_and_reports_and_merge_twins(qs, tmp_path):
    seeds = {"1": 0.1, "2": 0.1}
    (tmp_path / "a.json").write_text(json.dumps({"blocks": [_block(0.055, 0.01, seeds)]}))
    (tmp_path / "b.json").write_text(json.dumps({"blocks": [_block(0.055, 0.01, seeds)]}))  # same runs
    (tmp_path / "c.json").write_text(json.dumps({"blocks": [_block(0.045, 0.2, {"1": -0.1, "2": -0.1})]}))
    (tmp_path / "old.json").write_text(json.dumps({"rows": [], "paired_tests": {}}))  # no seed tables
    s = qs.summarize(tmp_path)

    gain = [r for r in s["rows"] if r["verdict"] == "gain"]
    assert len(gain) == 1 and (gain[0]["report"], gain[0]["also_in"]) == ("a", ["b"])
    assert gain[0]["profile_model"] == "Some-LLM" and gain[0]["profiles_embedded"] == 900
    assert gain[0]["seeds_above"] == 2 and gain[0]["test_users"] == 943
    control = [r for r in s["rows"] if r["variant"] == "baseline, same budget"]
    assert control[0]["profile_model"] is None and control[0]["p_seeds_t"] is None  # one seed: no t-test
    assert s["counts"] == {"gain": 1, "harm": 0, "p < 0.05, seeds disagree": 0, "no significant change": 2}
    assert s["without_seed_tables"] == ["old"]

    # The profile-only reference does not depend on the student or the variant: one row.
    assert [(r["source"], r["profiled_test_users"], r["report"], r["also_in"]) for r in s["references"]] == [
        ("llm", 900, "a", ["b", "c"])
    ]
    assert s["references"][0]["profile_only_ndcg@10"] == 0.007
    assert s["references"][0]["most_popular_ndcg@10"] == 0.02

    md = qs.summary_markdown(s)
    assert "| ml-100k / loo | llm | Some-LLM | 900 of 943 | 0.0070 | 0.0200 | a, b, c |" in md
    assert md.startswith("3 comparisons with the baseline of the same seeds: **1 gain**, **0 harm**")
    assert "| ml-100k / loo / sasrec | alpha=0.2 [llm] | Some-LLM, 900 | 2 | 0.0500 → 0.0550 | +10.0% |" in md
    assert "| **gain** | a, b |" in md and "`old`" in md


def test_summary_refuses_a_folder_without_reports(qs, tmp_path, monkeypatch):
    monkeypatch.setattr(
        "sys.argv", ["quality_summary.py", "--reports", str(tmp_path), "--out", str(tmp_path / "s.json")]
    )
    with pytest.raises(SystemExit, match="no report with per-seed tables"):
        qs.main()
    assert not (tmp_path / "s.json").exists()


def test_committed_summary_is_what_the_committed_reports_give(qs):
    """Regenerating the summary from the committed reports gives the committed files exactly, so
    the README's table can neither go stale when a report is rerun nor be edited by hand."""
    again = qs.summarize(REPORTS)
    assert json.loads(json.dumps(again)) == json.loads(COMMITTED.read_text())
    assert qs.summary_markdown(again) == COMMITTED.with_suffix(".md").read_text()
    # Each row's figure is the one its report's own table shows for that variant.
    for r in again["rows"]:
        doc = json.loads((REPORTS / f"{r['report']}.json").read_text())
        means = [
            row["mean"]
            for b in doc["blocks"]
            if (b["dataset"], b["protocol"], b["student"]) == (r["dataset"], r["protocol"], r["student"])
            for row in b["rows"]
            if row["run"] == r["variant"] and row["metric"] == "ndcg@10"
        ]
        assert means == [pytest.approx(r["ndcg@10"])], (r["report"], r["variant"])
    assert len(again["rows"]) >= 38
