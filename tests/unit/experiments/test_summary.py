"""The summary of every committed comparison, the README's headline block and docs/results.md
(experiments.summary, experiments.publish): generated from the committed reports alone."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from experiments import publish
from experiments import summary as qs

ROOT = Path(__file__).resolve().parents[3]
RESULTS = ROOT / "experiments/results"
REPORTS = RESULTS / "reports"
COMMITTED = RESULTS / "summary.json"


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
def test_verdict_is_the_issues_bar(rel, p, per_seed, want):
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


def test_summary_rows_name_source_and_reports_and_merge_twins(tmp_path):
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


def test_summary_refuses_a_folder_without_reports(tmp_path):
    with pytest.raises(SystemExit, match="no report with per-seed tables"):
        qs.main(["--reports", str(tmp_path), "--out", str(tmp_path / "s.json")])
    assert not (tmp_path / "s.json").exists()


def test_committed_summary_is_what_the_committed_reports_give():
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


def test_the_summary_keeps_the_numbers_it_had_before_the_move():
    """The reports were regenerated from the new grids and the migrated records: the summary's
    counts and every row's figures are the ones committed before (40 comparisons, 5 harms)."""
    s = json.loads(COMMITTED.read_text())
    assert s["counts"] == {"gain": 0, "harm": 5, "p < 0.05, seeds disagree": 3, "no significant change": 32}
    row = next(r for r in s["rows"] if (r["report"], r["variant"]) == ("beauty-bert4rec", "distilled[qwen]"))
    assert (round(row["baseline_ndcg@10"], 4), round(row["ndcg@10"], 4), row["verdict"]) == (
        0.0209,
        0.0199,
        "harm",
    )


def _row(dataset, student, variant, rel, verdict="no significant change", protocol="loo"):
    return {
        "dataset": dataset,
        "protocol": protocol,
        "student": student,
        "variant": variant,
        "rel_change": rel,
        "baseline_ndcg@10": 0.05,
        "ndcg@10": 0.05 * (1 + rel),
        "seeds": [1, 2, 3],
        "seeds_above": 2,
        "verdict": verdict,
        "report": "r",
    }


def test_headline_is_one_row_per_dataset_split_and_student_with_its_best_distilled_arm():
    summary = {
        "alpha": 0.05,
        "rows": [
            _row("ml-100k", "sasrec", "distilled[qwen]", -0.02),
            _row("ml-100k", "sasrec", "baseline, same budget", 0.09),  # a control, not an arm
            _row("ml-100k", "sasrec", "alpha=0.2 [qwen]", 0.05, "gain"),
            _row("ml-100k", "sasrec", "distilled[smollm2]", -0.10, "harm", protocol="temporal"),
            _row("beauty", "bert4rec", "distilled[template]", 0.035),
        ],
    }
    best = publish.headline_rows(summary)
    assert [(r["dataset"], r["protocol"], r["student"], r["variant"]) for r in best] == [
        ("beauty", "loo", "bert4rec", "distilled[template]"),
        ("ml-100k", "loo", "sasrec", "alpha=0.2 [qwen]"),
        ("ml-100k", "temporal", "sasrec", "distilled[smollm2]"),
    ]
    md = publish.headline_markdown(summary)
    assert (
        "| ml-100k / loo | sasrec | 0.0500 | alpha=0.2 [qwen] (best of 2) | 0.0525 | +5.0% | 2 of 3 | **gain** |"
        in md
    )
    assert "| ml-100k / temporal | sasrec | 0.0500 | distilled[smollm2] (best of 1) | 0.0450 | -10.0% |" in md
    assert "[docs/results.md](docs/results.md)" in md


def test_committed_headline_and_results_page_are_generated_from_the_committed_reports(monkeypatch):
    """docs/results.md and the README's headline block come from the committed JSON and grids
    alone: regenerating them gives the committed files byte for byte."""
    monkeypatch.chdir(ROOT)  # the page names paths relative to the repository
    summary = json.loads(COMMITTED.read_text())
    assert (RESULTS / "headline.md").read_text() == publish.headline_markdown(summary)
    page = publish.results_page()
    assert (ROOT / "docs/results.md").read_text() == page
    # The summary first, then every experiment of every grid with its command, and what is committed.
    assert (
        page.index("## All comparisons") < page.index("## Experiments") < page.index("## What is committed")
    )
    for report in sorted(REPORTS.glob("*.json")):
        doc = json.loads(report.read_text())
        assert f"#### {doc['report']}\n" in page and doc["command"] in page
    assert "python -m experiments.run experiments/grids/beauty-loo.yaml --report beauty\n" in page


def test_readme_headline_block_is_filled_between_its_markers_only():
    readme = "# ucd\n\nintro\n\n<!-- results:headline -->\nstale\n<!-- /results:headline -->\n\nrest\n"
    out = publish.fill_readme(readme, "| a | b |\n")
    assert (
        out == "# ucd\n\nintro\n\n<!-- results:headline -->\n| a | b |\n<!-- /results:headline -->\n\nrest\n"
    )
    assert publish.fill_readme(out, "| a | b |\n") == out  # idempotent
    with pytest.raises(SystemExit, match="no <!-- results:headline -->"):
        publish.fill_readme("# ucd\n", "x")


def test_readme_headline_block_is_the_committed_one_when_the_readme_has_it():
    readme = (ROOT / "README.md").read_text()
    if publish.HEADLINE_START not in readme:
        pytest.skip("README.md has no headline block yet")
    body = readme.split(publish.HEADLINE_START, 1)[1].split(publish.HEADLINE_END, 1)[0]
    assert body.strip() == (RESULTS / "headline.md").read_text().strip()
