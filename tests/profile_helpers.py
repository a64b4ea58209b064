"""Shared helpers for the profile-job tests (imported by tests/test_profiles_*.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa

from ucd import schema

# The conversion takes ~40 s; conftest isolates $UCD_HOME per session, so the tests keep the
# converted model in the user-level cache that `ucd models prepare` fills by default.
MODEL_CACHE = Path(os.environ.get("UCD_TEST_MODEL_CACHE", Path.home() / ".cache" / "ucd"))


def smollm2() -> str:
    """The packaged SmolLM2 as an HF folder (converted once, then reused)."""
    from ucd.llm.prepare import prepare_smollm2

    return str(prepare_smollm2(MODEL_CACHE))


def tiny_prepared(folder: Path, domain: str = "movies") -> Path:
    """A hand-written prepared dataset: 4 users, 12 items, loo rows."""
    items = pa.table(
        {
            "item_id": pa.array(range(1, 13), pa.int32()),
            "source_id": [str(i) for i in range(1, 13)],
            "title": [f"Film {i}" for i in range(1, 13)],
            "text": [
                f"Title: Film {i} (199{i % 10}) | Year: 199{i % 10} | Genres: {'Drama' if i % 2 else 'Comedy'}"
                for i in range(1, 13)
            ],
        }
    )
    hist = {1: [1, 2, 3, 4, 5], 2: [6, 7, 8], 3: [2, 4, 6, 8, 10, 12], 4: [1, 3, 5]}
    target = {1: (6, 7), 2: (9, 10), 3: (1, 3), 4: (11, 12)}
    rows = []
    for u, h in hist.items():
        rows.append(
            {"user_id": u, "split": "train", "history": h, "target": None, "history_rating": [4.0] * len(h)}
        )
        rows.append(
            {
                "user_id": u,
                "split": "valid",
                "history": h,
                "target": target[u][0],
                "history_rating": [4.0] * len(h),
            }
        )
        rows.append(
            {
                "user_id": u,
                "split": "test",
                "history": h + [target[u][0]],
                "target": target[u][1],
                "history_rating": [4.0] * (len(h) + 1),
            }
        )
    seqs = pa.Table.from_pylist(
        rows,
        schema=pa.schema(
            [
                ("user_id", pa.int32()),
                ("split", pa.string()),
                ("history", pa.list_(pa.int32())),
                ("target", pa.int32()),
                ("history_rating", pa.list_(pa.float32())),
            ]
        ),
    )
    meta = {"dataset": "tiny", "fingerprint": "tiny0001", "domain": domain}
    schema.write_table(items, folder / "items.parquet", "items", meta)
    schema.write_table(seqs, folder / "sequences.parquet", "sequences", meta)
    manifest = {"dataset": "tiny", "domain": domain, "protocol": "loo", "fingerprint": "tiny0001"}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder
