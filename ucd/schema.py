"""The Parquet contracts, in one place (docs/data.md lists them).

Every table written by ucd goes through :func:`write_table`, which casts to the contract's
schema and stamps the Parquet metadata with the dataset name and a fingerprint of the
inputs, so a later job can tell a stale output from a current one (:func:`read_meta`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ucd.errors import DataError

SCHEMA_VERSION = 1
META_KEY = b"ucd"

SPLITS = ("train", "valid", "test")
PROFILE_STATUSES = ("ok", "failed", "truncated")

ITEMS = pa.schema(
    [
        pa.field("item_id", pa.int32(), nullable=False),  # 1..N, 0 is padding
        pa.field("source_id", pa.string(), nullable=False),
        pa.field("title", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
    ]
)
# Optional item fields a reader may add after the required ones.
ITEM_OPTIONAL = {
    "year": pa.int32(),
    "genres": pa.list_(pa.string()),
    "brand": pa.string(),
    "categories": pa.list_(pa.string()),
    "price": pa.float32(),
    "description": pa.string(),
}

USERS = pa.schema(
    [
        pa.field("user_id", pa.int32(), nullable=False),
        pa.field("source_id", pa.string(), nullable=False),
    ]
)

INTERACTIONS = pa.schema(
    [
        pa.field("user_id", pa.int32(), nullable=False),
        pa.field("item_id", pa.int32(), nullable=False),
        pa.field("timestamp", pa.int64(), nullable=False),
        pa.field("rating", pa.float32(), nullable=True),
    ]
)

SEQUENCES = pa.schema(
    [
        pa.field("user_id", pa.int32(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("history", pa.list_(pa.int32()), nullable=False),
        pa.field("target", pa.int32(), nullable=True),  # null on train rows
    ]
)

PROFILES = pa.schema(
    [
        pa.field("user_id", pa.int32(), nullable=False),
        pa.field("profile", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("n_history", pa.int32(), nullable=False),
        pa.field("prompt_tokens", pa.int32(), nullable=False),
        pa.field("output_tokens", pa.int32(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("prompt_version", pa.string(), nullable=False),
        pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)


def profile_embeddings_file(path: str | Path) -> Path:
    """``profile_embeddings.parquet`` given itself or the profile job's output folder."""
    path = Path(path)
    return path / "profile_embeddings.parquet" if path.is_dir() else path


def profile_embeddings_schema(dim: int) -> pa.Schema:
    return pa.schema(
        [
            pa.field("user_id", pa.int32(), nullable=False),
            pa.field("embedding", pa.list_(pa.float32(), dim), nullable=False),
            pa.field("model", pa.string(), nullable=False),
        ]
    )


TABLES: dict[str, pa.Schema] = {
    "items": ITEMS,
    "users": USERS,
    "interactions": INTERACTIONS,
    "sequences": SEQUENCES,
    "profiles": PROFILES,
}


def fingerprint(*parts: Any) -> str:
    """Stable short hash of JSON-serialisable parts (settings, file digests...)."""
    h = hashlib.sha256()
    for p in parts:
        h.update(json.dumps(p, sort_keys=True, default=str).encode())
        h.update(b"\x00")
    return h.hexdigest()[:16]


def file_digest(path: str | Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def conform(table: pa.Table, name: str, schema: pa.Schema | None = None) -> pa.Table:
    """Cast ``table`` to the contract: required columns in order, optional extras kept."""
    schema = schema if schema is not None else TABLES[name]
    missing = [f.name for f in schema if f.name not in table.column_names]
    if missing:
        raise DataError(f"table '{name}' lacks required column(s) {missing}")
    cols, fields = [], []
    for f in schema:
        col = table.column(f.name)
        if not f.nullable and col.null_count:
            raise DataError(f"table '{name}': column '{f.name}' has {col.null_count} null(s)")
        cols.append(col.cast(f.type))
        fields.append(f)
    for extra in table.column_names:
        if extra in schema.names:
            continue
        col = table.column(extra)
        typ = ITEM_OPTIONAL.get(extra) if name == "items" else None
        if typ is not None:
            col = col.cast(typ)
        cols.append(col)
        fields.append(pa.field(extra, col.type))
    return pa.Table.from_arrays(cols, schema=pa.schema(fields))


def write_table(
    table: pa.Table,
    path: str | Path,
    name: str,
    meta: dict[str, Any],
    schema: pa.Schema | None = None,
) -> Path:
    """Write one contract table with its metadata (``dataset``, ``fingerprint``...)."""
    table = conform(table, name, schema)
    full = {"table": name, "schema_version": SCHEMA_VERSION, **meta}
    table = table.replace_schema_metadata({META_KEY: json.dumps(full, sort_keys=True).encode()})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, compression="zstd")
    return path


def read_meta(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    md = pq.read_schema(path).metadata or {}
    if META_KEY not in md:
        raise DataError(f"{path}: not written by ucd (no '{META_KEY.decode()}' metadata)")
    return json.loads(md[META_KEY])


def read_table(path: str | Path, name: str, columns: list[str] | None = None) -> pa.Table:
    """Read a contract table; fail with the file name if it does not match the contract."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file (expected the '{name}' table)")
    table = pq.read_table(path, columns=columns)
    expected = TABLES.get(name)
    if expected is not None:
        for f in expected:
            if columns is not None and f.name not in columns:
                continue
            if f.name not in table.column_names:
                raise DataError(f"{path}: column '{f.name}' missing from the '{name}' table")
            if not table.schema.field(f.name).type.equals(f.type):
                raise DataError(
                    f"{path}: column '{f.name}' is {table.schema.field(f.name).type}, expected {f.type}"
                )
    return table


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``path`` through a temporary sibling and one rename, so a reader (or a rerun after
    a kill) sees the old file or the new one, never half of it. The sibling's name is unique, so
    processes writing the same folder at once do not share it."""
    path = Path(path)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_dir(final: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces ``final`` in one rename.

    A crash or an exception leaves ``final`` as it was (never half written) and removes the
    temporary folder.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        old = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
