"""Resumable result shards: ``<out>/shards/<run fingerprint>/part-*.parquet``.

Every result (one LLM answer, with its check verdict and, for final profiles, its vector) is
appended to a shard as soon as the pipeline hands it back. A shard appears in one atomic
rename, so a SIGKILL loses at most the unflushed rows, never corrupts a file; on the rerun
the latest row per (user, key) says what is settled, and nothing is done twice; the output
takes the best attempt of each.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

SHARD_SCHEMA = pa.schema(
    [
        ("user_id", pa.int32()),
        ("key", pa.string()),
        ("attempt", pa.int32()),
        ("seed", pa.int64()),
        ("status", pa.string()),
        ("reason", pa.string()),
        ("text", pa.string()),
        ("n_history", pa.int32()),
        ("prompt_tokens", pa.int32()),
        ("output_tokens", pa.int32()),
        ("finish", pa.string()),
        ("created_at", pa.timestamp("us", tz="UTC")),
        ("embedding", pa.list_(pa.float32())),
        ("embed_model", pa.string()),
    ]
)


class ShardStore:
    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def files(self) -> list[Path]:
        return sorted(self.folder.glob("part-*.parquet")) if self.folder.exists() else []

    def read(self) -> pa.Table:
        files = self.files()
        if not files:
            return SHARD_SCHEMA.empty_table()
        return pa.concat_tables([pq.read_table(f).cast(SHARD_SCHEMA) for f in files])

    def latest(self) -> pa.Table:
        """One row per (user, key): the highest attempt (what is settled, what to retry)."""
        return _first_per_key(self.read(), [("attempt", "descending")])

    def best(self) -> pa.Table:
        """One row per (user, key): the best verdict over its attempts (ok, then truncated, then
        failed), the latest among equals. A retry that loops must not replace a usable answer:
        with SmolLM2, 28% of retried truncated answers came back degenerate."""
        t = self.read()
        rank = pc.if_else(
            pc.equal(t.column("status"), "ok"), 0, pc.if_else(pc.equal(t.column("status"), "truncated"), 1, 2)
        )
        t = t.append_column("_rank", rank)
        return _first_per_key(t, [("_rank", "ascending"), ("attempt", "descending")]).drop_columns(["_rank"])

    def write(self, table: pa.Table) -> Path | None:
        if table.num_rows == 0:
            return None
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
        tmp = self.folder / f".{name}.tmp"
        pq.write_table(table.select(SHARD_SCHEMA.names).cast(SHARD_SCHEMA), tmp)
        os.replace(tmp, self.folder / name)
        return self.folder / name


def _first_per_key(t: pa.Table, order: list[tuple[str, str]]) -> pa.Table:
    """The first row of each (user_id, key) group after sorting the group by ``order``."""
    if t.num_rows == 0:
        return t
    t = t.sort_by([("user_id", "ascending"), ("key", "ascending"), *order])
    uk = pc.binary_join_element_wise(pc.cast(t.column("user_id"), pa.string()), t.column("key"), "\x00")
    first = pc.not_equal(uk.slice(1), uk.slice(0, len(uk) - 1))
    keep = pa.concat_arrays([pa.array([True]), first.combine_chunks()]) if len(uk) > 1 else pa.array([True])
    return t.filter(keep)


class ShardWriter:
    """Buffers result batches; flushes every ``rows`` rows or ``seconds`` seconds."""

    def __init__(self, store: ShardStore, rows: int, seconds: float):
        self.store, self.rows, self.seconds = store, rows, seconds
        self.buf: list[pa.Table] = []
        self.n = 0
        self.last = time.monotonic()
        self.written = 0

    def add(self, batch: pa.Table) -> None:
        self.buf.append(batch.select(SHARD_SCHEMA.names).cast(SHARD_SCHEMA))
        self.n += batch.num_rows
        if self.n >= self.rows or time.monotonic() - self.last >= self.seconds:
            self.flush()

    def flush(self) -> None:
        if self.buf:
            self.store.write(pa.concat_tables(self.buf))
            self.written += self.n
        self.buf, self.n, self.last = [], 0, time.monotonic()
