"""Full-ranking metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from ucd.evaluate.metrics import (
    RankingEvaluator,
    compare_runs,
    exclude_seen,
    metrics_from_ranks,
    paired_test,
    rank_of_target,
)

INF = float("inf")


def test_ties_count_against_the_target():
    scores = torch.tensor([[0.0, 1.0, 2.0, 2.0, 0.5]])
    assert rank_of_target(scores, torch.tensor([2])).item() == 1
    assert rank_of_target(scores, torch.tensor([3])).item() == 1
    assert rank_of_target(scores, torch.tensor([1])).item() == 2
    assert rank_of_target(scores, torch.tensor([4])).item() == 3


def test_constant_scores_earn_nothing():
    scores = torch.zeros(3, 51)
    ranks = rank_of_target(scores, torch.tensor([1, 25, 50]))
    assert ranks.tolist() == [49, 49, 49]
    m = metrics_from_ranks(ranks)
    assert all(v.sum() == 0 for v in m.values())


def test_padding_column_is_never_ranked():
    scores = torch.tensor([[100.0, 1.0, 3.0, 2.0], [INF, 0.0, 0.0, -1.0]])
    assert rank_of_target(scores, torch.tensor([2, 1])).tolist() == [0, 1]
    with pytest.raises(ValueError):
        rank_of_target(scores, torch.tensor([0, 1]))


def test_metrics_from_ranks_by_hand():
    m = metrics_from_ranks(torch.tensor([0, 2, 7, 30]), ks=(5, 10))
    torch.testing.assert_close(m["ndcg@5"], torch.tensor([1.0, 0.5, 0.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(
        m["ndcg@10"], torch.tensor([1.0, 0.5, 1 / math.log2(9), 0.0], dtype=torch.float64)
    )
    assert m["recall@5"].tolist() == [1, 1, 0, 0]
    assert m["recall@10"].tolist() == [1, 1, 1, 0]
    torch.testing.assert_close(m["mrr@10"], torch.tensor([1.0, 1 / 3, 1 / 8, 0.0], dtype=torch.float64))
    assert set(m) == {f"{n}@{k}" for n in ("ndcg", "recall", "mrr") for k in (5, 10)}
    # 0-based rank K is place K+1: just outside the top K.
    edge = metrics_from_ranks(torch.tensor([4, 5]), ks=(5,))
    assert edge["recall@5"].tolist() == [1, 0]
    assert edge["ndcg@5"][1] == 0 and edge["mrr@5"][1] == 0


def test_k_larger_than_catalogue():
    scores = torch.tensor([[0.0, 0.1, 0.4, 0.3]])
    ev = RankingEvaluator(3, ks=(5, 20))
    ev.update(scores, torch.tensor([1]))
    out = ev.compute()
    assert out["recall@20"] == 1.0
    assert out["ndcg@5"] == pytest.approx(1 / math.log2(4))
    assert out["mrr@20"] == pytest.approx(1 / 3)
    assert out["coverage@10"] == 1.0


def test_seen_exclusion_keeps_the_target():
    scores = torch.tensor([[0.0, 5.0, 4.0, 3.0, 2.0, 1.0]])
    target = torch.tensor([3])
    assert rank_of_target(scores, target).item() == 2
    for seen in ([[1, 3]], [torch.tensor([3, 1])], torch.tensor([[1, 3, 0, 0]])):
        out = exclude_seen(scores, target, seen)
        assert out[0, 1] == -INF and out[0, 3] == 3.0
        assert rank_of_target(out, target).item() == 1
    assert scores[0, 1] == 5.0


def test_evaluator_by_hand_with_seen_items_and_coverage():
    n = 12
    s1 = torch.zeros(2, n + 1)
    s1[0, 1:] = torch.arange(n, 0, -1).float()  # item 1 best ... item 12 worst
    s1[1, 1:] = torch.arange(1, n + 1).float()  # item 12 best ... item 1 worst
    s1[:, 0] = 1e9
    ev = RankingEvaluator(n, ks=(1, 5, 10))
    # Row 0: target 4 behind items 1..3; item 2 is seen -> rank 2.
    # Row 1: target 12 is seen AND best; excluding history must not drop it -> rank 0.
    ev.update(s1, torch.tensor([4, 12]), seen=[[2], [12, 11]])
    s2 = torch.zeros(1, n + 1)
    s2[0, 1:] = torch.arange(n, 0, -1).float()
    ev.update(s2, torch.tensor([12]))  # last of 12 -> rank 11
    per_user = ev.per_user()
    assert per_user["rank"].tolist() == [2, 0, 11]
    out = ev.compute()
    assert out["n_users"] == 3
    assert out["recall@1"] == pytest.approx(1 / 3)
    assert out["recall@5"] == pytest.approx(2 / 3)
    assert out["ndcg@5"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    assert out["mrr@10"] == pytest.approx((1 / 3 + 1.0) / 3)
    # Top-10 lists: row0 {1,3..11}, row1 {12,10..2}, row2 {1..10}: everything is covered.
    assert out["coverage@10"] == 1.0
    ev2 = RankingEvaluator(n)
    ev2.update(s2, torch.tensor([1]))
    assert ev2.compute()["coverage@10"] == pytest.approx(10 / 12)


def test_evaluator_rejects_nan_and_wrong_width():
    ev = RankingEvaluator(3)
    with pytest.raises(ValueError):
        ev.update(torch.tensor([[0.0, float("nan"), 1.0, 2.0]]), torch.tensor([1]))
    with pytest.raises(ValueError):
        ev.update(torch.zeros(1, 5), torch.tensor([1]))


def test_paired_test_matches_scipy_and_handles_identical_runs():
    rng = np.random.default_rng(0)
    a = rng.random(50)
    b = a + rng.normal(0.05, 0.1, 50)
    res = paired_test(torch.tensor(a), torch.tensor(b))
    assert res["p_value"] == pytest.approx(stats.ttest_rel(b, a).pvalue)
    assert res["t"] == pytest.approx(stats.ttest_rel(b, a).statistic)
    assert res["wilcoxon_p"] == pytest.approx(stats.wilcoxon(b - a).pvalue)
    assert res["mean_diff"] == pytest.approx(float((b - a).mean()))
    same = paired_test(a, a)
    assert same["t"] == 0.0 and same["p_value"] == 1.0 and same["wilcoxon_p"] == 1.0
    with pytest.raises(ValueError):
        paired_test(a, a[:3])


def test_compare_runs_by_hand():
    runs = {
        "base": [{"ndcg@10": 0.10, "n_users": 5}, {"ndcg@10": 0.12, "n_users": 5}],
        "ucd": [{"ndcg@10": 0.12}, {"ndcg@10": 0.14}, {"ndcg@10": 0.13}],
    }
    rows = {(r["run"], r["metric"]): r for r in compare_runs(runs)}
    assert set(rows) == {("base", "ndcg@10"), ("ucd", "ndcg@10")}
    base, ucd = rows["base", "ndcg@10"], rows["ucd", "ndcg@10"]
    assert base["mean"] == pytest.approx(0.11) and base["std"] == pytest.approx(0.01414, rel=1e-3)
    assert base["rel_change"] == 0.0
    assert ucd["mean"] == pytest.approx(0.13) and ucd["std"] == pytest.approx(0.01)
    assert ucd["n"] == 3
    assert ucd["rel_change"] == pytest.approx(0.13 / 0.11 - 1)
    assert ucd["text"] == "0.1300 ± 0.0100 (+18.2%)"
