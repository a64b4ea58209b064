"""Reference recommenders of the quality benchmark: template profiles and profile-only ranking."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from ucd.data.tensors import SplitRows
from ucd.evaluate.references import evaluate_profile_only, template_profiles, write_template_embeddings


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


def _with_meta(src, dst, drop=(), **extra):
    """A copy of a profile_embeddings table whose metadata lacks ``drop`` and adds ``extra``."""
    from ucd import schema

    meta = {k: v for k, v in schema.read_meta(src).items() if k not in (*drop, "table", "schema_version")}
    table = schema.read_table(src, "profile_embeddings")
    dim = table.schema.field("embedding").type.list_size
    schema.write_table(
        table, dst, "profile_embeddings", {**meta, **extra}, schema=schema.profile_embeddings_schema(dim)
    )
    return dst


def test_evaluate_cli_profile_only_reference_on_real_data(ml100k_loo, tmp_path, capsys):
    import json

    from ucd.cli import main

    good = write_template_embeddings(ml100k_loo, tmp_path / "t.parquet")
    out = tmp_path / "eval.json"
    rc = main(
        [
            "evaluate",
            "--data",
            str(ml100k_loo),
            "--most-popular",
            "--profile-only",
            f"template={good}",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    res = json.loads(out.read_text())
    ref = res["profile-only[template]"]
    assert ref["n_users"] == 943
    # Random ranking of 1,349 items gives NDCG@10 ~ 0.0034: genre profiles carry some signal.
    assert ref["ndcg@10"] > 0.007, ref
    assert ref["ndcg@10"] != res["most-popular"]["ndcg@10"]

    no_embedder = _with_meta(good, tmp_path / "n.parquet", drop=("embed_model",))
    capsys.readouterr()
    assert main(["evaluate", "--data", str(ml100k_loo), "--profile-only", str(no_embedder)]) == 2
    assert "n.parquet: the metadata does not say which embedder" in capsys.readouterr().err
    reduced = _with_meta(good, tmp_path / "r.parquet", reduction={"method": "pca", "dim": 64})
    assert main(["evaluate", "--data", str(ml100k_loo), "--profile-only", str(reduced)]) == 2
    assert "r.parquet: vectors were reduced" in capsys.readouterr().err


def test_profile_only_references_of_one_report_embed_the_items_once(ml100k_loo, tmp_path, monkeypatch):
    """A report scores one profile-only reference per profile source on the same items: the
    item texts are embedded once (the real embedder), and the second score equals the first."""
    import ucd.evaluate.references as reference
    from ucd.data.tensors import SequenceData
    from ucd.evaluate import offline as ev

    calls = []
    real = reference.item_text_embeddings

    def counted(prepared, embedder):
        calls.append(prepared)
        return real(prepared, embedder)

    monkeypatch.setattr(reference, "item_text_embeddings", counted)
    ev._item_vectors.cache_clear()
    data = SequenceData.load(ml100k_loo)
    profiles = write_template_embeddings(ml100k_loo, tmp_path / "t.parquet")
    first = ev.evaluate_profile_only_reference(ml100k_loo, data, profiles, name="a")
    second = ev.evaluate_profile_only_reference(ml100k_loo, data, profiles, name="b")
    assert len(calls) == 1
    assert first.metrics == second.metrics and first.metrics["ndcg@10"] > 0.007
    # Another preparation (another fingerprint) at the same path is embedded again.
    ev._item_vectors(str(Path(ml100k_loo).resolve()), "another-fingerprint", "all-minilm-l6-v2")
    assert len(calls) == 2
    ev._item_vectors.cache_clear()
