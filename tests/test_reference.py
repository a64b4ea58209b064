"""Reference recommenders of the quality benchmark: template profiles and profile-only ranking."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow.parquet as pq
import torch

from ucd.reference import evaluate_profile_only, template_profiles
from ucd.seqdata import SplitRows


def test_template_profiles_count_training_history_only(ml100k_loo):
    texts = template_profiles(ml100k_loo)
    seqs = pq.read_table(ml100k_loo / "sequences.parquet").to_pylist()
    items = {r["item_id"]: r["genres"] for r in pq.read_table(ml100k_loo / "items.parquet").to_pylist()}
    train = {r["user_id"]: r["history"] for r in seqs if r["split"] == "train"}
    assert set(texts) == set(train) and len(texts) == 943
    for user in (1, 500, 943):
        counts = Counter(g for i in train[user] for g in items[i])
        top, n = counts.most_common(1)[0]
        assert texts[user].startswith(f"Top genres: {top} ({100 * n / sum(counts.values()):.0f}%)")
        assert texts[user].endswith(f"Items: {len(train[user])}.")


def test_profile_only_ranks_by_cosine_and_misses_without_profile():
    items = np.zeros((4, 3), dtype=np.float32)
    items[1:] = np.eye(3, dtype=np.float32)
    profiles = torch.zeros(3, 3)
    profiles[1] = torch.tensor([0.1, 0.9, 0.3])  # closest to item 2, then 3, then 1
    has = torch.tensor([False, True, False])
    rows = SplitRows(np.array([1, 1, 2]), [np.array([3]), np.array([2]), np.array([1])], np.array([2, 1, 3]))
    ev = evaluate_profile_only(rows, profiles, has, items)
    assert ev.per_user()["rank"].tolist() == [0, 2, 2]  # user 2 has no profile: all tie -> last
    ev = evaluate_profile_only(rows, profiles, has, items, exclude_seen=True)
    assert ev.per_user()["rank"].tolist() == [0, 1, 1]  # the seen item above the target is gone
