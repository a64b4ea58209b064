"""Reference points for the quality benchmark, computed with the same metric code.

- *template profiles*: a non-LLM profile that only counts the user's top genres/categories (or,
  for title-only catalogues, the most frequent title words) in the training history. Distilling
  from them answers whether the LLM adds anything beyond counting.
- *profile-only recommender*: items ranked by cosine between the user's profile embedding and
  each item's text embedding (same embedder), i.e. what the profile carries on its own.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from ucd import schema
from ucd.data.tensors import SequenceData, SplitRows, seen_items
from ucd.evaluate.metrics import RankingEvaluator

_WORD = re.compile(r"[A-Za-z][A-Za-z'\-]{2,}")
_STOP = {"the", "and", "for", "with", "oz", "fl", "pack", "of", "ounce", "ounces", "count", "set", "new"}


def _item_labels(items: pa.Table) -> dict[int, list[str]]:
    """Labels per item: genres or categories when the catalogue has them, else title words."""
    ids = items.column("item_id").to_pylist()
    for col in ("genres", "categories"):
        if col in items.column_names:
            return {
                i: [g for g in (v or []) if g]
                for i, v in zip(ids, items.column(col).to_pylist(), strict=True)
            }
    titles = items.column("title").to_pylist()
    return {
        i: [w.lower() for w in _WORD.findall(t or "") if w.lower() not in _STOP]
        for i, t in zip(ids, titles, strict=True)
    }


def template_profiles(prepared: str | Path, top: int = 5) -> dict[int, str]:
    """User id -> "Top genres: Drama (31%), Comedy (22%), ..." from the training rows only."""
    prepared = Path(prepared)
    items = schema.read_table(prepared / "items.parquet", "items")
    labels = _item_labels(items)
    seqs = schema.read_table(prepared / "sequences.parquet", "sequences")
    train = seqs.filter(pa.compute.equal(seqs.column("split"), "train"))
    kind = (
        "genres"
        if "genres" in items.column_names
        else "categories"
        if "categories" in items.column_names
        else "title words"
    )
    out = {}
    for user, hist in zip(
        train.column("user_id").to_pylist(), train.column("history").to_pylist(), strict=True
    ):
        counts = Counter(label for i in hist for label in labels.get(i, []))
        total = sum(counts.values()) or 1
        parts = [f"{name} ({100 * c / total:.0f}%)" for name, c in counts.most_common(top)]
        out[user] = f"Top {kind}: " + (", ".join(parts) if parts else "none") + f". Items: {len(hist)}."
    return out


def write_template_embeddings(
    prepared: str | Path, path: str | Path, embedder: str = "all-minilm-l6-v2"
) -> Path:
    """Template profiles of every training user, embedded, as a ``profile_embeddings`` table
    (a non-LLM profile source for ``ucd train --profiles`` and ``ucd evaluate --profile-only``)."""
    from ucd.embed.embedder import Embedder

    texts = template_profiles(prepared)
    users = sorted(texts)
    vecs = Embedder(embedder).embed([texts[u] for u in users])
    data = SequenceData.load(prepared)
    table = pa.table(
        {
            "user_id": pa.array(users, pa.int32()),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vecs.reshape(-1)), vecs.shape[1]),
            "model": pa.array([f"template+{embedder}"] * len(users)),
        }
    )
    meta = {
        "dataset": data.dataset,
        "data_fingerprint": data.fingerprint,
        "profile_source": "template",
        "embed_model": embedder,
    }
    return schema.write_table(
        table, path, "profile_embeddings", meta, schema=schema.profile_embeddings_schema(vecs.shape[1])
    )


def item_text_embeddings(prepared: str | Path, embedder) -> np.ndarray:
    """``[n_items + 1, D]`` L2-normalised item-text vectors (row 0 zeros), by ``embedder.embed``."""
    items = schema.read_table(Path(prepared) / "items.parquet", "items", columns=["item_id", "text"])
    vecs = embedder.embed([t or "" for t in items.column("text").to_pylist()])
    out = np.zeros((int(max(items.column("item_id").to_pylist())) + 1, vecs.shape[1]), dtype=np.float32)
    out[np.asarray(items.column("item_id").to_pylist())] = vecs
    return out


def evaluate_profile_only(
    rows: SplitRows,
    profile_vectors: torch.Tensor,
    has_profile: torch.Tensor,
    item_vectors: np.ndarray,
    exclude_seen: bool = False,
) -> RankingEvaluator:
    """Rank by cosine(profile, item text). Users without a profile score every item equally,
    which the tie rule turns into a miss (so missing profiles count against this reference)."""
    if profile_vectors.shape[1] != item_vectors.shape[1]:
        raise ValueError(
            f"profile vectors are {profile_vectors.shape[1]}-d, item vectors {item_vectors.shape[1]}-d: "
            "the profile-only reference needs unreduced embeddings from the same embedder"
        )
    items = torch.from_numpy(item_vectors)
    ev = RankingEvaluator(items.shape[0] - 1)
    for start in range(0, len(rows), 512):
        users = torch.from_numpy(rows.user_ids[start : start + 512])
        scores = profile_vectors[users] @ items.T
        scores[~has_profile[users]] = 0.0
        scores[:, 0] = float("-inf")
        hist = rows.histories[start : start + 512]
        seen = seen_items(hist, exclude_seen)
        ev.update(scores, torch.from_numpy(rows.targets[start : start + 512]), seen)
    return ev
