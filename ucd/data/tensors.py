"""A prepared dataset as tensors for the students (pure PyTorch/numpy, no Ray).

Histories are LEFT-padded with 0 (the newest item sits in the last column), as the models
expect. Training uses one row per user: the user's training history, truncated to its newest
``max_len + 1`` items (inputs and next-item labels, the SASRec+ recipe).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from ucd import schema
from ucd.errors import DataError


def left_pad(seqs: list[np.ndarray] | list[list[int]], length: int) -> np.ndarray:
    """Newest ``length`` items of each sequence, left-padded with 0, as int64 ``[N, length]``."""
    out = np.zeros((len(seqs), length), dtype=np.int64)
    for i, s in enumerate(seqs):
        s = np.asarray(s[-length:], dtype=np.int64)
        if len(s):
            out[i, length - len(s) :] = s
    return out


def seen_items(histories: list[np.ndarray], exclude: bool) -> list[torch.Tensor] | None:
    """Histories as tensors for ``RankingEvaluator.update(seen=...)``, or None to keep them ranked."""
    return [torch.from_numpy(np.asarray(h, dtype=np.int64)) for h in histories] if exclude else None


def _list_column(table: pa.Table, name: str) -> list[np.ndarray]:
    col = table.column(name).combine_chunks()
    offsets = col.offsets.to_numpy()
    values = col.values.to_numpy(zero_copy_only=False)
    return [values[offsets[i] : offsets[i + 1]] for i in range(len(col))]


@dataclass
class SplitRows:
    """Evaluation rows of one split: who, what they saw (newest first kept), what came next."""

    user_ids: np.ndarray  # [N]
    histories: list[np.ndarray]
    targets: np.ndarray  # [N]

    def __len__(self) -> int:
        return len(self.user_ids)

    def subset(self, idx: np.ndarray) -> SplitRows:
        return SplitRows(self.user_ids[idx], [self.histories[i] for i in idx], self.targets[idx])


@dataclass
class SequenceData:
    n_items: int
    n_users: int
    dataset: str
    fingerprint: str
    train_users: np.ndarray
    train_histories: list[np.ndarray]
    valid: SplitRows
    test: SplitRows

    @classmethod
    def load(cls, folder: str | Path) -> SequenceData:
        folder = Path(folder)
        seqs = schema.read_table(folder / "sequences.parquet", "sequences")
        meta = schema.read_meta(folder / "sequences.parquet")
        items = schema.read_table(folder / "items.parquet", "items", columns=["item_id"])
        users = schema.read_table(folder / "users.parquet", "users", columns=["user_id"])
        n_items = int(pc.max(items.column("item_id")).as_py())
        rows = {}
        for split in schema.SPLITS:
            t = seqs.filter(pc.equal(seqs.column("split"), split))
            if t.num_rows == 0:
                raise DataError(f"{folder}/sequences.parquet: no '{split}' rows")
            rows[split] = t
        train = rows["train"]

        def split_rows(t: pa.Table) -> SplitRows:
            return SplitRows(
                t.column("user_id").to_numpy().astype(np.int64),
                _list_column(t, "history"),
                t.column("target").to_numpy().astype(np.int64),
            )

        return cls(
            n_items=n_items,
            n_users=int(pc.max(users.column("user_id")).as_py()),
            dataset=meta.get("dataset", "?"),
            fingerprint=meta.get("fingerprint", "?"),
            train_users=train.column("user_id").to_numpy().astype(np.int64),
            train_histories=_list_column(train, "history"),
            valid=split_rows(rows["valid"]),
            test=split_rows(rows["test"]),
        )

    def train_tensor(self, max_len: int) -> torch.Tensor:
        """``[N, max_len + 1]``: inputs are ``[:, :-1]``, next-item labels ``[:, 1:]``."""
        return torch.from_numpy(left_pad(self.train_histories, max_len + 1))

    def popularity(self) -> np.ndarray:
        """Training-interaction counts per item id (index 0 unused)."""
        flat = np.concatenate(self.train_histories) if self.train_histories else np.zeros(0, np.int64)
        return np.bincount(flat.astype(np.int64), minlength=self.n_items + 1)


def profiles_identity(path: str | Path) -> str:
    """What a ``profile_embeddings`` table gives a distilled run: whose profiles, which embedder,
    and which profile run wrote them (the job's fingerprint: LLM, prompt, decoding, data).

    A resumed profile job grows its folder in place and a job with another LLM overwrites it,
    so the folder's path says nothing; the bytes say too much (template embeddings written
    again on another machine differ in the last float bits, not in what they hold).
    """
    path = schema.profile_embeddings_file(path)
    table = schema.read_table(path, "profile_embeddings", columns=["user_id", "model"])
    return schema.fingerprint(
        sorted(table.column("user_id").to_pylist()),
        sorted(set(table.column("model").to_pylist())),
        schema.read_meta(path).get("fingerprint"),
    )


@dataclass
class ProfileTable:
    """Profile embeddings aligned to user ids: row ``u`` is user ``u``'s vector."""

    vectors: torch.Tensor  # [n_users + 1, D] float32, zeros where missing
    has: torch.Tensor  # [n_users + 1] bool
    model: str

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @classmethod
    def load(
        cls,
        path: str | Path,
        n_users: int,
        coverage: float = 1.0,
        seed: int = 0,
        expected_fingerprint: str | None = None,
    ) -> ProfileTable:
        """Read ``profile_embeddings.parquet`` (or a folder holding it).

        ``coverage`` < 1 keeps a seeded random share of the users' profiles (the coverage
        ablation); the rest count as users without a profile.
        """
        path = schema.profile_embeddings_file(path)
        meta = schema.read_meta(path)
        if (
            expected_fingerprint
            and meta.get("data_fingerprint", expected_fingerprint) != expected_fingerprint
        ):
            raise DataError(
                f"{path}: profiles were built from dataset fingerprint {meta.get('data_fingerprint')}, "
                f"but training data has {expected_fingerprint}; regenerate them with `ucd profile`"
            )
        table = schema.read_table(path, "profile_embeddings")
        if table.num_rows == 0:
            raise DataError(f"{path}: no profile embeddings")
        emb_type = table.schema.field("embedding").type
        if not pa.types.is_fixed_size_list(emb_type):
            raise DataError(f"{path}: column 'embedding' must be fixed_size_list<float32>, got {emb_type}")
        dim = emb_type.list_size
        users = table.column("user_id").to_numpy().astype(np.int64)
        if users.max() > n_users or users.min() < 1:
            raise DataError(f"{path}: user_id outside 1..{n_users}; were they built from another dataset?")
        flat = table.column("embedding").combine_chunks().flatten().to_numpy(zero_copy_only=False)
        vecs = np.array(flat, dtype=np.float32).reshape(-1, dim)  # a writable copy for torch
        if coverage < 1.0:
            rng = np.random.default_rng(seed)
            keep = rng.permutation(len(users))[: int(round(coverage * len(users)))]
            users, vecs = users[keep], vecs[keep]
        out = torch.zeros(n_users + 1, dim)
        has = torch.zeros(n_users + 1, dtype=torch.bool)
        out[torch.from_numpy(users)] = torch.from_numpy(vecs)
        has[torch.from_numpy(users)] = True
        return cls(out, has, str(meta.get("model", table.column("model")[0].as_py())))
