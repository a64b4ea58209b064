"""Shared helpers for the training tests (test_train_ray, test_run_key, test_quickstart_stages)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa

from ucd import schema


def write_profiles(path: Path, users: list[int], run: str = "test-profile-run", dim: int = 8) -> Path:
    """A profile_embeddings table of seeded random vectors for ``users``, stamped as written by
    the profile run ``run`` (what the profiles' identity reads besides the users)."""
    vecs = np.random.default_rng(0).normal(size=(len(users), dim)).astype(np.float32)
    table = pa.table(
        {
            "user_id": pa.array(users, pa.int32()),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vecs.reshape(-1)), dim),
            "model": ["test-embedder"] * len(users),
        }
    )
    meta = {"fingerprint": run, "embed_model": "test-embedder"}
    return schema.write_table(table, path, "profile_embeddings", meta, schema.profile_embeddings_schema(dim))


def fake_prepared(folder: Path, fingerprint: str = "prepared-fp") -> Path:
    """A folder with only the manifest of a prepared dataset: all the run key reads of it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.json").write_text(json.dumps({"dataset": "ml-100k", "fingerprint": fingerprint}))
    return folder
