"""What an experiment trains from: the prepared dataset and its profile sources.

Both are made from committed or public inputs into the grid's git-ignored ``work`` folder: the
prepared data from the raw files under ``UCD_DATA_DIR``, template profiles by the default
embedder, and a nested share of an LLM profile folder as the seeded prefix of the larger folder
(the profile job picks a share's users as a seeded permutation's first ``ceil(share * n)``, so a
resumed copy at a larger share holds every smaller share's answers and vectors unchanged:
committing the largest folder once is enough).
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from experiments.grid import TEMPLATE
from ucd import schema
from ucd.config import default_data_dir
from ucd.data.prepare import load_manifest, prepare_named
from ucd.errors import DataError

TEMPLATE_EMBEDDER = "all-minilm-l6-v2"


def prepared_dir(grid: dict) -> Path:
    return Path(grid["work"]) / "data" / f"{grid['dataset']}-{grid['protocol']}"


def prepare(grid: dict, log=print) -> Path:
    """The grid's prepared dataset (made once from the raw files, then reused)."""
    return prepare_named(
        grid["dataset"], prepared_dir(grid), protocol=grid["protocol"], data_dir=default_data_dir(), log=log
    )


def data_fingerprint(prepared: Path) -> str:
    return load_manifest(prepared)["fingerprint"]


def work_profiles(grid: dict, source: str) -> Path:
    """Where a source made on demand (template profiles, a nested share) is written."""
    return Path(grid["work"]) / "profiles" / f"{grid['dataset']}-{grid['protocol']}-{source}"


def profile_sources(grid: dict, names: list[str], prepared: Path) -> dict[str, str]:
    """Each named profile source -> its profile folder, made on demand where it can be. A named
    LLM folder that holds no profiles is an error: a report without that source's rows would look
    complete. Sources not named are not looked at, so baselines train before any profile exists."""
    out = {}
    for name in names:
        spec = grid["profiles"][name]
        if spec.get(TEMPLATE):
            out[name] = str(template_embeddings(prepared, work_profiles(grid, name)))
        elif "share_of" in spec:
            parent = llm_folder(grid, spec["share_of"], prepared)
            folder = work_profiles(grid, name)
            share_profiles(parent, prepared, spec["user_share"], spec.get("user_seed", 0), folder)
            out[name] = str(folder)
        else:
            out[name] = str(llm_folder(grid, name, prepared))
    return out


def llm_folder(grid: dict, name: str, prepared: Path) -> Path:
    folder = Path(grid["profiles"][name]["path"]).expanduser()
    if not schema.profile_embeddings_file(folder).exists():
        raise FileNotFoundError(
            f"profiles.{name}: {folder} holds no profile_embeddings.parquet; make it with "
            f"`ucd profile --data {prepared} --out {folder}` (the grid's profiles.{name}.command "
            "has the exact one) or drop the source from the experiment"
        )
    return folder


def template_embeddings(prepared: Path, folder: Path) -> Path:
    """Template profiles, embedded with the default embedder, as a profile_embeddings table."""
    path = folder / "profile_embeddings.parquet"
    if path.exists():
        return path
    from ucd.evaluate.references import write_template_embeddings

    return write_template_embeddings(prepared, path, TEMPLATE_EMBEDDER)


def template_identity(prepared: Path) -> str:
    """The ``profiles_identity`` that ``template_embeddings`` of ``prepared`` has, without
    embedding: whose profiles and which embedder (template profiles carry no run fingerprint)."""
    from ucd.evaluate.references import template_profiles

    users = sorted(template_profiles(prepared))
    return schema.fingerprint(users, [f"template+{TEMPLATE_EMBEDDER}"], None)


def share_users(prepared: Path, share: float, seed: int) -> pa.Array:
    """The training users a profile job with ``user_share=share`` (and ``user_seed``) asks."""
    from ucd.pipelines.profile_job import share_rows
    from ucd.profiles.history import load_prepared

    users = load_prepared(prepared).train.column("user_id")
    return users.take(pa.array(share_rows(len(users), share, seed), pa.int64()))


def share_profiles(parent: Path, prepared: Path, share: float, seed: int, folder: Path) -> Path:
    """A smaller share of ``parent``'s profile folder: its profiles and embeddings tables limited
    to the share's users, metadata kept, so the share has the identity it had when a profile job
    wrote it. Every user of the share must be in ``parent`` (same seed, larger share)."""
    users = share_users(prepared, share, seed)
    asked = pq.read_table(parent / "profiles.parquet", columns=["user_id"]).column("user_id")
    absent = pc.sum(pc.invert(pc.is_in(users, value_set=asked))).as_py() or 0
    if absent:
        raise DataError(
            f"{parent}: lacks {absent} users of a {share:.0%} share (seed {seed}); not its prefix"
        )
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("profiles.parquet", "profile_embeddings.parquet"):
        table = pq.read_table(parent / name)
        kept = table.filter(pc.is_in(table.column("user_id"), value_set=users))
        # Through a temporary sibling: a half-written share would read as a smaller one.
        tmp = folder / f".{name}.tmp"
        pq.write_table(kept, tmp)
        tmp.replace(folder / name)
    return folder


def profile_source_info(path: str) -> dict:
    """What a distilled run learned from: the model, and how many users' profiles the profile
    job's checks passed, flagged (truncated / failed) and embedded (only those are distilled)."""
    emb_file = schema.profile_embeddings_file(path)
    folder = emb_file.parent
    emb = pq.read_metadata(emb_file).num_rows
    if not (folder / "profiles.parquet").exists():  # template profiles: written, never checked
        return {"model": "template (non-LLM)", "users": emb, "embedded": emb}
    prof = schema.read_table(folder / "profiles.parquet", "profiles", columns=["status", "model"])
    status = prof.column("status").to_pylist()
    return {
        "model": prof.column("model")[0].as_py() if prof.num_rows else "",
        "users": prof.num_rows,
        **{s: status.count(s) for s in schema.PROFILE_STATUSES},
        "embedded": emb,
    }
