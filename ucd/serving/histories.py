"""Users' known histories from a prepared dataset, for requests by ``user_id``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ucd import schema
from ucd.errors import DataError
from ucd.serving.catalogue import Catalogue
from ucd.serving.schemas import RequestError


def _check_same_items(folder: Path, catalogue: Catalogue) -> None:
    """Refuse a dataset prepared differently from the model: its ids would mean other items."""
    items = schema.read_table(folder / "items.parquet", "items", columns=["item_id", "source_id"])
    ids = items.column("item_id").to_numpy().astype(np.int64)
    src = items.column("source_id").to_pylist()
    mismatched = (
        len(ids) != catalogue.n_items
        or ids.min(initial=1) < 1
        or ids.max(initial=0) > catalogue.n_items
        or any(catalogue.source_ids[i] != s for i, s in zip(ids.tolist(), src, strict=True))
    )
    if mismatched:
        raise DataError(
            f"{folder}: its items differ from the model's catalogue (another dataset or another "
            "preparation); user histories would map to the wrong items"
        )


def _whole_sequences(seqs: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each user's longest row with its target appended, flat: ``(user ids, offsets, values)``."""
    user_col = seqs.column("user_id").to_numpy().astype(np.int64)
    hist = seqs.column("history").combine_chunks()
    offsets = hist.offsets.to_numpy().astype(np.int64)
    values = hist.values.to_numpy(zero_copy_only=False).astype(np.int32)
    target = seqs.column("target")
    has_target = pc.is_valid(target).to_numpy(zero_copy_only=False)
    targets = pc.fill_null(target, 0).to_numpy().astype(np.int32)
    lengths = np.diff(offsets) + has_target
    # The longest row per user: sort by (user, length) and keep each user's last row.
    order = np.lexsort((lengths, user_col))
    last = np.r_[user_col[order][1:] != user_col[order][:-1], True]
    rows = order[last]
    out_offsets = np.r_[0, np.cumsum(lengths[rows])].astype(np.int64)
    out_values = np.empty(int(out_offsets[-1]), dtype=np.int32)
    for j, r in enumerate(rows):
        a, b = offsets[r], offsets[r + 1]
        start = out_offsets[j]
        out_values[start : start + (b - a)] = values[a:b]
        if has_target[r]:
            out_values[start + (b - a)] = targets[r]
    return user_col[rows], out_offsets, out_values


class KnownHistories:
    """Each user's complete known sequence from a prepared dataset (for requests by user id).

    The longest row of a user, with its target appended, is the whole sequence: under ``loo``
    that is the test row; under ``temporal`` a user's rows are prefixes of one another.
    Stored flat (values + offsets) so millions of interactions cost one array.
    """

    def __init__(self, folder: str | Path, catalogue: Catalogue) -> None:
        folder = Path(folder)
        _check_same_items(folder, catalogue)
        users = schema.read_table(folder / "users.parquet", "users")
        seqs = schema.read_table(
            folder / "sequences.parquet", "sequences", columns=["user_id", "history", "target"]
        )
        row_users, self.offsets, self.values = _whole_sequences(seqs)
        n_users = int(max(users.column("user_id").to_numpy().max(initial=0), row_users.max(initial=0)))
        self.row_of_user = np.full(n_users + 1, -1, dtype=np.int64)
        self.row_of_user[row_users] = np.arange(len(row_users))
        self.source_of = dict(
            zip(
                users.column("user_id").to_numpy().tolist(),
                users.column("source_id").to_pylist(),
                strict=True,
            )
        )
        self.by_source = {s: u for u, s in self.source_of.items()}
        self.n_users = len(row_users)

    def lookup(self, user: int | str) -> tuple[int, np.ndarray]:
        """``(internal user id, history)``; raises :class:`RequestError` (404) if unknown."""
        if isinstance(user, str):
            uid = self.by_source.get(user)
            if uid is None:
                raise RequestError(404, "user_id", f"unknown user source id {user!r}")
        else:
            uid = user
        if not 0 <= uid < len(self.row_of_user) or self.row_of_user[uid] < 0:
            raise RequestError(404, "user_id", f"unknown user id {user!r}")
        j = int(self.row_of_user[uid])
        return int(uid), self.values[self.offsets[j] : self.offsets[j + 1]].astype(np.int64)
