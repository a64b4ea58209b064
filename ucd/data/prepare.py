"""``ucd data prepare``: read -> preprocess -> split -> Parquet, atomically, with a summary."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from ucd import schema
from ucd.config import Strict, build_config
from ucd.data.preprocess import PreprocessConfig, preprocess
from ucd.data.registry import NAMED, DatasetConfig, read_raw, resolve_dataset
from ucd.data.splits import SplitConfig, make_splits
from ucd.errors import DataError

MANIFEST = "manifest.json"
SUMMARY = "summary.json"


class PrepareConfig(Strict):
    dataset: DatasetConfig
    preprocess: PreprocessConfig = PreprocessConfig()
    split: SplitConfig = SplitConfig()


def load_prepare_config(
    dataset: str, config: str | Path | None = None, overrides: list[str] | None = None
) -> PrepareConfig:
    """``dataset`` is a name (``ml-100k``, ``beauty``...) or a YAML file with a ``dataset:`` section."""
    base: dict[str, Any] = {}
    if dataset.endswith((".yaml", ".yml")):
        return build_config(PrepareConfig, dataset, overrides)
    base["dataset"] = resolve_dataset(dataset).model_dump(exclude_none=True)
    return build_config(PrepareConfig, config, overrides, base=base)


def input_fingerprint(cfg: PrepareConfig, inputs: list[Path]) -> str:
    files = [{"name": p.name, "sha256": schema.file_digest(p)} for p in inputs]
    settings = cfg.model_dump(mode="json")
    settings["dataset"].pop("path", None)  # where the files are does not change the result
    settings["dataset"].pop("source_url", None)
    return schema.fingerprint(files, settings, schema.SCHEMA_VERSION)


def _summary(inter: pl.DataFrame, seqs: pl.DataFrame, n_users: int, n_items: int) -> dict:
    lengths = inter.group_by("user_id").len()["len"].to_numpy()
    pct = {f"p{q}": float(np.percentile(lengths, q)) for q in (5, 25, 50, 75, 95, 99)}
    return {
        "users": n_users,
        "items": n_items,
        "interactions": inter.height,
        "density": inter.height / (n_users * n_items),
        "sequence_length": {
            "mean": float(lengths.mean()),
            "min": int(lengths.min()),
            **pct,
            "max": int(lengths.max()),
        },
    }


def is_current(out: Path, fp: str) -> bool:
    m = out / MANIFEST
    if not m.exists():
        return False
    try:
        return json.loads(m.read_text()).get("fingerprint") == fp
    except json.JSONDecodeError:
        return False


def prepare(
    cfg: PrepareConfig,
    out: str | Path,
    data_dir: Path | None = None,
    force: bool = False,
    log=print,
) -> Path:
    out = Path(out)
    t0 = time.perf_counter()
    raw = read_raw(cfg.dataset, data_dir)
    fp = input_fingerprint(cfg, raw.inputs)
    if not force and is_current(out, fp):
        log(f"[data] {out} is up to date (fingerprint {fp}); skipping")
        return out
    log(
        f"[data] read {cfg.dataset.name}: {raw.interactions.height:,} interactions in {time.perf_counter() - t0:.1f}s"
    )
    canon = preprocess(raw, cfg.preprocess)
    seqs, split_info = make_splits(canon.interactions, cfg.split, raw.has_timestamps)
    summary = {
        "dataset": cfg.dataset.name,
        "fingerprint": fp,
        **_summary(canon.interactions, seqs, canon.users.height, canon.items.height),
        "filtering": canon.report,
        "split": split_info,
        "has_timestamps": raw.has_timestamps,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    meta = {
        "dataset": cfg.dataset.name,
        "fingerprint": fp,
        "domain": cfg.dataset.domain,
        "protocol": cfg.split.protocol,
    }
    with schema.atomic_dir(out) as tmp:
        schema.write_table(canon.items.to_arrow(), tmp / "items.parquet", "items", meta)
        schema.write_table(canon.users.to_arrow(), tmp / "users.parquet", "users", meta)
        schema.write_table(canon.interactions.to_arrow(), tmp / "interactions.parquet", "interactions", meta)
        schema.write_table(seqs.to_arrow(), tmp / "sequences.parquet", "sequences", meta)
        (tmp / SUMMARY).write_text(json.dumps(summary, indent=2))
        manifest = {**meta, "config": cfg.model_dump(mode="json"), "has_timestamps": raw.has_timestamps}
        # Written last: its presence marks the folder complete.
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
    log(format_summary(summary))
    log(f"[data] wrote {out} in {time.perf_counter() - t0:.1f}s")
    return out


def prepare_named(
    name: str,
    out: str | Path,
    protocol: str = "loo",
    data_dir: Path | None = None,
    overrides: list[str] | None = None,
    force: bool = False,
    log=print,
) -> Path:
    cfg = load_prepare_config(name, None, [f"split.protocol={protocol}", *(overrides or [])])
    return prepare(cfg, out, data_dir=data_dir, force=force, log=log)


def load_manifest(folder: str | Path) -> dict:
    folder = Path(folder)
    m = folder / MANIFEST
    if not m.exists():
        raise DataError(f"{folder}: not a prepared dataset (no {MANIFEST}); run `ucd data prepare` first")
    return json.loads(m.read_text())


def format_summary(s: dict) -> str:
    sl = s["sequence_length"]
    rows = s["split"]["rows"]
    return "\n".join(
        [
            f"dataset      {s['dataset']}  (fingerprint {s['fingerprint']})",
            f"users        {s['users']:,}",
            f"items        {s['items']:,}",
            f"interactions {s['interactions']:,}",
            f"density      {s['density']:.5f}",
            "seq length   mean {mean:.1f} | p5 {p5:.0f} p25 {p25:.0f} p50 {p50:.0f} p75 {p75:.0f} "
            "p95 {p95:.0f} p99 {p99:.0f} max {max}".format(**sl),
            f"split        {s['split']['protocol']}: train {rows['train']:,} / valid {rows['valid']:,} / test {rows['test']:,} rows",
        ]
    )


__all__ = ["NAMED", "PrepareConfig", "load_manifest", "load_prepare_config", "prepare", "prepare_named"]
