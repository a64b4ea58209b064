"""Quality benchmark: baselines vs distilled students, references and ablations, on real data.

Driven by a YAML config (default benchmarks/quality.yaml). For each dataset x protocol x
student it trains, with the same seeds: the baseline; the baseline with the distilled runs'
epoch budget (no early stopping), so a gain from training longer is not taken for a
distillation gain; a distilled student per profile source (LLM profiles made by `ucd profile`,
and non-LLM template profiles); the ablations (distance, pooling, alpha, layer, coverage, the
paper's literal loss), each distilled from the block's ``primary_profiles`` source, or from each
source of a list given there. References use the same metric code: most-popular and, per profile
source, profile-only (cosine between profile and item-text embeddings); the report also says
how many of each source's profiles the profile job's checks flagged, and splits each distilled
student's change by whether the test user has a profile (partial coverage), gives each
variant's change against the baseline seed by seed, and compares each ablation with the distilled
variant whose one setting it changes (same seeds, paired over users). Every finished run is cached in
``<out>/runs/<key>.json`` (committed with the results: a later session or a clean clone adds
seeds or variants without retraining the finished ones), so a rerun only trains what is missing;
a distilled run whose profile folder now embeds other users (a resumed profile job) is trained again.

Writes ``<out>/quality.json``, ``<out>/quality.md`` and ``<out>/gains.png``;
``benchmarks/render_readme.py`` puts the Markdown into README.md.

    .venv/bin/python benchmarks/quality.py --config benchmarks/quality.yaml [--only ml-100k] [--set K=V]

A report written before the per-seed and ablation tables existed gets them from the run records
it names, without its profiles: ``--add-seed-tables <out>/<report>.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, get_args

import numpy as np
import pyarrow.parquet as pq
import yaml

from ucd import schema
from ucd.config import build_config, default_data_dir
from ucd.data.prepare import prepare_named
from ucd.data.splits import SplitConfig
from ucd.data.tensors import ProfileTable, SequenceData
from ucd.errors import DataError
from ucd.evaluate.metrics import paired_test
from ucd.evaluate.offline import (
    EvalResult,
    compare,
    evaluate_most_popular,
    evaluate_profile_only_reference,
    format_comparison,
    per_user_mean,
)
from ucd.train.config import TrainConfig

ABLATIONS: dict[str, list[str]] = {
    "distance=mse": ["distill.distance=mse"],
    "distance=infonce": ["distill.distance=infonce"],
    "pooling=last": ["distill.pooling=last"],
    "alpha=0.2": ["distill.alpha=0.2"],
    "alpha=0.8": ["distill.alpha=0.8"],
    "layer=1": ["distill.layer=1"],
    "coverage=25%": ["profile_coverage=0.25"],
    "coverage=50%": ["profile_coverage=0.5"],
    # The distill term times the batch's profiled share (ucd/distill.py, "Partial coverage").
    "weight=coverage": ["distill.weight_by_coverage=true"],
    # The paper's loss taken literally: unbounded beta, raw target, MSE (DESIGN.md §1 pitfall).
    "paper-literal": [
        "distill.distance=mse",
        "distill.beta_max=null",
        "distill.target_norm=none",
        "distill.variance_weight=0",
    ],
}


PROTOCOLS = get_args(SplitConfig.model_fields["protocol"].annotation)
_DATASET_KEYS = {
    "name",
    "protocols",
    "seeds",
    "ablation_seeds",
    "same_budget_epochs",
    "students",
    "profiles",
    "primary_profiles",
    "ablations",
}


def check_bench(bench: dict, source: str) -> None:
    """Reject a config that would fail (or silently do less) hours into a grid, naming the
    file and the field: typos in keys, unknown ablations or protocols, missing student configs."""

    def bad(where: str, msg: str) -> ValueError:
        return ValueError(f"{source}: {where}: {msg}")

    datasets = bench.get("datasets")
    if not isinstance(datasets, list) or not datasets:
        raise bad("datasets", "a non-empty list of dataset blocks is required")
    for i, ds in enumerate(datasets):
        where = f"datasets[{i}]" + (f" ({ds['name']})" if isinstance(ds, dict) and "name" in ds else "")
        if not isinstance(ds, dict):
            raise bad(where, "must be a mapping")
        missing = [k for k in ("name", "protocols", "seeds", "students") if k not in ds]
        if missing:
            raise bad(where, f"missing {missing}")
        extra = sorted(set(ds) - _DATASET_KEYS)
        if extra:
            raise bad(where, f"unknown keys {extra}; known: {sorted(_DATASET_KEYS)}")
        wrong = [p for p in ds["protocols"] if p not in PROTOCOLS]
        if wrong:
            raise bad(f"{where}.protocols", f"unknown {wrong}; known: {list(PROTOCOLS)}")
        seeds = ds["seeds"]
        if not seeds or not all(isinstance(x, int) for x in seeds):
            raise bad(f"{where}.seeds", f"a non-empty list of integers is required, got {seeds!r}")
        extra_seeds = [x for x in ds.get("ablation_seeds", []) if x not in seeds]
        if extra_seeds:
            raise bad(f"{where}.ablation_seeds", f"{extra_seeds} are not in seeds {seeds}")
        for student, cfg_path in ds["students"].items():
            if not Path(cfg_path).is_file():
                raise bad(f"{where}.students.{student}", f"{cfg_path} not found")
        unknown = [a for a in ds.get("ablations", []) if a not in ABLATIONS]
        if unknown:
            raise bad(f"{where}.ablations", f"unknown {unknown}; known: {list(ABLATIONS)}")
        profiles = ds.get("profiles", {})
        primary = ds.get("primary_profiles")
        if primary is not None and not isinstance(primary, (str, list)):
            raise bad(f"{where}.primary_profiles", f"a source name or a list of them, got {primary!r}")
        for name in primary_sources(ds):
            if name not in profiles:
                raise bad(f"{where}.primary_profiles", f"{name!r} is not one of profiles {list(profiles)}")


# Variant names, as in the report and ``--variants``: run_block trains under them and
# variant_names lists them, from these alone.
BASELINE, SAME_BUDGET = "baseline", "baseline, same budget"


def distilled_name(source: str) -> str:
    return f"distilled[{source}]"


def ablation_name(ablation: str, primary: str) -> str:
    return f"{ablation} [{primary}]"


def primary_sources(ds: dict) -> list[str]:
    """The profile sources a block's ablations distill from: ``primary_profiles`` (one name, or a
    list to run every ablation on each), else the first source the block names."""
    primary = ds.get("primary_profiles")
    if primary is None:
        return list(ds.get("profiles", {}))[:1]
    return [primary] if isinstance(primary, str) else list(primary)


def ablation_variants(ds: dict) -> dict[str, tuple[str, str]]:
    """Each ablation variant of a block -> (its ablation, the profile source it distills from)."""
    return {ablation_name(a, src): (a, src) for src in primary_sources(ds) for a in ds.get("ablations", [])}


def variant_names(ds: dict) -> list[str]:
    """Every variant a dataset block can train."""
    profiles = list(ds.get("profiles", {}))
    names = [BASELINE, *(distilled_name(p) for p in profiles), *ablation_variants(ds)]
    if ds.get("same_budget_epochs") != 0:
        names.append(SAME_BUDGET)
    return names


def select_datasets(
    bench: dict,
    source: str,
    only: list[str] | None,
    variants: list[str] | None,
    seeds: list[int] | None = None,
) -> list[dict]:
    """The dataset blocks ``--only`` picks; a name in ``--only`` or ``--variants``, or a seed in
    ``--seeds``, that the config does not have is an error (it would otherwise train nothing
    and say so only at the end)."""
    chosen = [ds for ds in bench["datasets"] if not only or ds["name"] in only]
    missing = [n for n in only or [] if n not in {ds["name"] for ds in bench["datasets"]}]
    if missing:
        raise ValueError(f"--only: {source} has no dataset {missing}")
    known = {v for ds in chosen for v in variant_names(ds)}
    unknown = [v for v in variants or [] if v not in known]
    if unknown:
        raise ValueError(f"--variants: unknown {unknown}; {source} has {sorted(known)}")
    known_seeds = {x for ds in chosen for x in ds["seeds"]}
    stray = [x for x in seeds or [] if x not in known_seeds]
    if stray:
        raise ValueError(f"--seeds: {stray} not in {source}'s seeds {sorted(known_seeds)}")
    return chosen


def _key(*parts: Any) -> str:
    return schema.fingerprint(*parts)


def template_embeddings(prepared: Path, out: Path) -> Path:
    """Template profiles, embedded with the default embedder, as a profile_embeddings table."""
    path = out / "profile_embeddings.parquet"
    if path.exists():
        return path
    from ucd.evaluate.references import write_template_embeddings

    return write_template_embeddings(prepared, path)


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


def prepared_dir(out: Path, dataset: str, protocol: str) -> Path:
    return out / "data" / f"{dataset}-{protocol}"


def shared_overrides(bench: dict, prepared: Path) -> list[str]:
    """The overrides every training run of a block starts from (seed and variant follow)."""
    return [f"data={prepared}", "registry.enabled=false", *bench.get("train_overrides", [])]


def record_path(cfg: TrainConfig, cache: Path) -> Path:
    """Where the run record of ``cfg`` is cached."""
    from ucd.pipelines.train_job import train_key

    # min_epochs joins the key only when set, so records made before it existed keep theirs.
    key = _key(train_key(cfg), cfg.epochs, cfg.patience, *([cfg.min_epochs] if cfg.min_epochs else []))
    return cache / f"{key}.json"


def train_cached(cfg: TrainConfig, cache: Path, label: str, log=print) -> dict:
    from ucd.pipelines.train_job import profiles_id, run_training

    path = record_path(cfg, cache)
    # The key names the profiles' folder only; which profiles it holds now is checked apart,
    # so a resumed profile job that grew the folder trains the run again.
    used = profiles_id(cfg)
    if path.exists():
        rec = read_record(path)
        if "profiles_used" not in rec and used is not None:
            # A record from before this field: adopted as trained on the profiles there now
            # (the trust every record had before), so later changes to them are caught.
            rec["profiles_used"] = used
            schema.atomic_write_text(path, json.dumps(rec))
        if rec.get("profiles_used") == used:
            return rec
        log(f"[quality] {path}: trained on other profiles than {cfg.profiles} holds now; training again")
    t = time.perf_counter()
    # run_training puts the profiles' identity in the Ray run name: no stale checkpoint resumes.
    res = run_training(cfg.model_copy(update={"run_name": f"quality-{label}-s{cfg.seed}"}))
    rec = {
        "label": label,
        "seed": cfg.seed,
        "seconds": time.perf_counter() - t,
        # Wall time above is short for a run restored from its Ray checkpoint; this one is not.
        "train_seconds": sum(h["train_seconds"] for h in res.history),
        "best_epoch": res.best_epoch,
        "epochs_run": len(res.history),
        "profiles_used": used,
        "test": res.test,
        "per_user_ndcg@10": res.per_user["ndcg@10"].tolist(),
        "curves": {
            k: [h[k] for h in res.history] for k in ("train_rec_loss", "train_distill_loss", "val_ndcg@10")
        },
    }
    cache.mkdir(parents=True, exist_ok=True)
    # A run is tens of minutes of training: a kill while writing must not leave a record
    # that breaks every later report.
    schema.atomic_write_text(path, json.dumps(rec))
    return rec


def read_record(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(
            f"{path}: unreadable run record ({e.msg}, line {e.lineno}); delete it to train that run again"
        ) from e


def write_report(path: Path, report: dict, render=None) -> None:
    """The report's JSON at ``path`` and its Markdown (``render``, default ``report_markdown``)
    beside it."""
    text = json.dumps(report, indent=2)
    schema.atomic_write_text(path, text)
    # Rendered from the JSON as written (string keys, as a reader of it sees them).
    schema.atomic_write_text(path.with_suffix(".md"), (render or report_markdown)(json.loads(text)))


def _as_eval(name: str, rec: dict, users: np.ndarray) -> EvalResult:
    metrics = {k.removeprefix("test_"): v for k, v in rec["test"].items()}
    return EvalResult(name, metrics, {"ndcg@10": np.asarray(rec["per_user_ndcg@10"])}, users, False)


def needed_sources(ds: dict, only: list[str] | None) -> set[str] | None:
    """The profile sources the variants in ``only`` train from (None: every source, as a
    report compares them all)."""
    if only is None:
        return None
    ablation_sources = {src for name, (_, src) in ablation_variants(ds).items() if name in only}
    return {s for s in ds.get("profiles", {}) if distilled_name(s) in only or s in ablation_sources}


def profile_sources(
    ds: dict, protocol: str, prepared: Path, out: Path, needed: set[str] | None = None
) -> dict[str, str]:
    """Each profile source of a dataset block (of ``needed``, when given) -> its profile folder
    for ``protocol``; template profiles are written here. A named LLM folder that holds no
    profiles is an error: a report without that source's rows would look complete. Sources
    left out of ``needed`` are not looked at, so baselines train before any profile exists."""
    sources = {}
    for src, path in ds.get("profiles", {}).items():
        if needed is not None and src not in needed:
            continue
        if path == "template":
            folder = out / "profiles" / f"{ds['name']}-{protocol}-template"
            sources[src] = str(template_embeddings(prepared, folder))
            continue
        p = Path(str(path).format(protocol=protocol)).expanduser()
        if not schema.profile_embeddings_file(p).exists():
            raise FileNotFoundError(
                f"datasets[{ds['name']}].profiles.{src}: {p} holds no profile_embeddings.parquet; "
                f"make it with `ucd profile --data {prepared} --out {p}` (the config's header "
                "has the exact command) or drop the source from the config"
            )
        sources[src] = str(p)
    return sources


def planned_runs(ds: dict, sources: dict[str, str], seeds: list[int]) -> list[tuple[str, list[str], int]]:
    """(variant, overrides, seed) of every run of one block but the same-budget baseline (its
    budget comes from the finished runs), in training order. The one place that says which
    overrides make a variant: a run record's key is a hash of the config they build."""
    distill_on = ["distill.enabled=true"]
    plan = []
    for seed in seeds:
        plan.append((BASELINE, ["distill.enabled=false"], seed))
        plan += [
            (distilled_name(src), [*distill_on, f"profiles={path}"], seed) for src, path in sources.items()
        ]
    # Ablations may use fewer seeds than the main comparison (each is a full grid column).
    ablation_seeds = ds.get("ablation_seeds", ds["seeds"])
    # Ablation by ablation, so a grid stopped midway leaves whole ablations, not one seed of each.
    for variant, (name, src) in ablation_variants(ds).items():
        if src not in sources:
            continue
        overrides = [*distill_on, f"profiles={sources[src]}", *ABLATIONS[name]]
        plan += [(variant, overrides, s) for s in seeds if s in ablation_seeds]
    return plan


def run_block(
    ds: dict,
    protocol: str,
    student: str,
    cfg_path: str,
    bench: dict,
    out: Path,
    log=print,
    seeds: list[int] | None = None,
    only: list[str] | None = None,
) -> dict | None:
    """Train (or find in the cache) every run of one block and compare them.

    With ``seeds`` or ``only`` (variant names), only those runs are trained and nothing is
    compared (None): a grid split over parallel processes, reported afterwards by a run
    without either.
    """
    partial = seeds is not None or only is not None
    prepared = prepare_named(
        ds["name"],
        prepared_dir(out, ds["name"], protocol),
        protocol=protocol,
        data_dir=default_data_dir(),
        log=log,
    )
    data = SequenceData.load(prepared)
    users = data.test.user_ids
    cache = out / "runs"
    common = shared_overrides(bench, prepared)
    variants: dict[str, list[EvalResult]] = {}
    runs: dict[str, list[dict]] = {}

    def add(name: str, overrides: list[str], seed: int) -> None:
        if only is not None and name not in only:
            return
        cfg = build_config(TrainConfig, cfg_path, [*common, f"seed={seed}", *overrides])
        rec = train_cached(cfg, cache, f"{ds['name']}-{protocol}-{student}-{name}", log)
        variants.setdefault(name, []).append(_as_eval(name, rec, users))
        runs.setdefault(name, []).append(rec)

    sources = profile_sources(ds, protocol, prepared, out, needed_sources(ds, only))
    chosen = [s for s in ds["seeds"] if seeds is None or s in seeds]
    for name, overrides, seed in planned_runs(ds, sources, chosen):
        add(name, overrides, seed)
    # The budget of the longest distilled run; fixed in the config when seeds are split over
    # processes, as each would otherwise see only its own runs.
    longest = ds.get("same_budget_epochs")
    if longest is None and not partial and len(runs) > 1:
        longest = max(r["epochs_run"] for n, rs in runs.items() if n != BASELINE for r in rs)
    if longest:
        for seed in chosen:
            add(
                SAME_BUDGET,
                ["distill.enabled=false", f"epochs={longest}", f"patience={longest}"],
                seed,
            )

    if partial:
        return None
    variants["most-popular"] = [evaluate_most_popular(data)]
    # Every source, so an LLM's profiles and the template's can be compared on their own too.
    for src, path in sources.items():
        name = f"profile-only[{src}]"
        variants[name] = [evaluate_profile_only_reference(prepared, data, path, name=name)]
    report = compare(variants)
    # A coverage ablation distills from a subset of its source's users: its split would be wrong.
    split_ablations = {
        variant: src
        for variant, (a, src) in ablation_variants(ds).items()
        if not any(o.startswith("profile_coverage=") for o in ABLATIONS[a])
    }
    report["by_coverage"] = coverage_split(variants, sources, data, split_ablations)
    report.update(seed_comparisons(variants, runs))
    distill_epochs = build_config(TrainConfig, cfg_path, common).distill.epochs
    report.update(
        dataset=ds["name"],
        protocol=protocol,
        student=student,
        config=cfg_path,
        distill_epochs=distill_epochs,
        profile_sources={src: profile_source_info(path) for src, path in sources.items()},
        runs={
            n: [
                {
                    k: r.get(k)
                    for k in ("seed", "seconds", "train_seconds", "best_epoch", "epochs_run", "curves")
                }
                for r in rs
            ]
            for n, rs in runs.items()
        },
    )
    return report


def coverage_split(
    variants: dict[str, list[EvalResult]],
    sources: dict[str, str],
    data,
    ablations: dict[str, str] | None = None,
) -> dict:
    """Per profile source: its distilled student vs the baseline, and its profile-only
    reference, over the test users who have a profile and over those who do not.

    Where only some users have one (a share of Beauty, temporal test users with no history
    before the cut), the whole-population change mixes both groups and dilutes what the
    profiled users get. Sources that cover different users are also compared on the users
    every source profiled, so two LLMs (or an LLM and the template) meet on the same users.
    ``ablations`` (variant name -> its source) adds those variants, split by their source's
    users, under their own names.
    """
    out: dict[str, dict] = {}
    users = data.test.user_ids
    base = per_user_mean(variants[BASELINE]) if BASELINE in variants else None
    if base is None:
        return out
    covered = {
        src: ProfileTable.load(path, data.n_users, expected_fingerprint=data.fingerprint).has.numpy()[users]
        for src, path in sources.items()
        if distilled_name(src) in variants
    }
    common = np.logical_and.reduce(list(covered.values())) if len(covered) > 1 else None
    rows = [(src, src, distilled_name(src)) for src in covered]
    rows += [
        (name, src, name) for name, src in (ablations or {}).items() if src in covered and name in variants
    ]
    for key, src, name in rows:
        has = covered[src]
        dist = per_user_mean(variants[name])
        ref = per_user_mean(variants[f"profile-only[{src}]"])
        groups = {}
        split = [("with a profile", has), ("without a profile", ~has)]
        if common is not None and common.any() and common.sum() < has.sum():
            split.append(("profiled by every source", common))
        for group, mask in split:
            if not mask.any():
                continue
            test = paired_test(base[mask], dist[mask])
            b, d = float(base[mask].mean()), float(dist[mask].mean())
            groups[group] = {
                "variant": name,
                "source": src,
                "n": int(mask.sum()),
                BASELINE: b,
                name: d,
                "rel_change": (d - b) / b if b else float("nan"),
                "p_value": test["p_value"],
                "wilcoxon_p": test["wilcoxon_p"],
                f"profile-only[{src}]": float(ref[mask].mean()),
            }
        out[key] = groups
    return out


def paired_comparison(
    variants: dict[str, list[EvalResult]],
    run_seeds: dict[str, list[int]],
    against: dict[str, str],
    metric: str = "ndcg@10",
) -> dict:
    """Each variant of ``against`` (name -> reference variant) against its reference on the
    seeds both ran, paired over users, with the change seed by seed.

    The main table pools each variant's seeds; this says whether a change holds seed by seed
    (a gain carried by one seed shows), and compares an ablation with the distilled variant
    whose one setting it changes, which is what "is this setting better than the default"
    asks, on the same seeds (ablations may run fewer than the main comparison).
    """
    out: dict[str, dict] = {}
    for name, ref in against.items():
        if name not in variants or ref not in variants:
            continue
        by_seed = {
            n: dict(zip(run_seeds[n], (r.per_user[metric] for r in variants[n]), strict=True))
            for n in (name, ref)
        }
        seeds = [s for s in run_seeds[name] if s in by_seed[ref]]
        if not seeds:
            continue
        a = np.mean([by_seed[ref][s] for s in seeds], axis=0)
        b = np.mean([by_seed[name][s] for s in seeds], axis=0)
        test = paired_test(a, b)
        ref_means, means = ([float(by_seed[n][s].mean()) for s in seeds] for n in (ref, name))
        per_seed = {s: _rel(m, r) for s, m, r in zip(seeds, means, ref_means, strict=True)}
        # Users are the unit of the test above; the seed is the unit here: with a few seeds that
        # disagree, a change can be significant over users and not over seeds.
        over_seeds = paired_test(ref_means, means)
        out[name] = {
            "against": ref,
            "metric": metric,
            "seeds": seeds,
            ref: float(a.mean()),
            name: float(b.mean()),
            "rel_change": _rel(float(b.mean()), float(a.mean())),
            "per_seed_rel_change": per_seed,
            "p_value": test["p_value"],
            "wilcoxon_p": test["wilcoxon_p"],
            "seeds_t_p": over_seeds["p_value"],
        }
    return out


def ablation_parents(names: list[str]) -> dict[str, str]:
    """Each ablation among ``names`` -> the distilled variant whose one setting it changes
    (``ablation_name`` puts that variant's profile source in the ablation's name)."""
    return {
        n: distilled_name(src)
        for n in names
        if n.endswith("]") and " [" in n
        for src in [n[n.rindex(" [") + 2 : -1]]
        if distilled_name(src) in names
    }


def seed_comparisons(variants: dict[str, list[EvalResult]], runs: dict[str, list[dict]]) -> dict:
    """A block's per-seed table (every trained variant vs the baseline) and ablation table
    (each ablation vs its distilled variant), from its trained runs' records."""
    run_seeds = {n: [r["seed"] for r in rs] for n, rs in runs.items()}
    trained = [n for n in run_seeds if n != BASELINE]
    return {
        "vs_baseline_by_seed": paired_comparison(variants, run_seeds, dict.fromkeys(trained, BASELINE)),
        "vs_distilled": paired_comparison(variants, run_seeds, ablation_parents(list(run_seeds))),
    }


def records_by_run(cache: Path) -> dict[tuple, list[dict]]:
    """Every cached run record, by (label, seed, wall time): the block of a report lists each
    run's seconds, which only the record that run wrote carries, so a later rerun of the same
    config is never mistaken for it."""
    found: dict[tuple, list[dict]] = {}
    for f in sorted(cache.glob("*.json")):
        r = read_record(f)
        found.setdefault((r["label"], r["seed"], r["seconds"]), []).append(r)
    return found


def block_records(block: dict, found: dict[tuple, list[dict]], cache: Path) -> dict[str, list[dict]]:
    """The run records (``records_by_run`` of ``cache``) a report block was computed from,
    variant by variant; exactly one each."""
    out: dict[str, list[dict]] = {}
    for name, rs in block["runs"].items():
        label = f"{block['dataset']}-{block['protocol']}-{block['student']}-{name}"
        for r in rs:
            match = found.get((label, r["seed"], r["seconds"]), [])
            if len(match) != 1:
                raise ValueError(
                    f"{cache}: {len(match)} run records of {label!r} seed {r['seed']} "
                    f"({r['seconds']} s) where the report needs exactly one"
                )
            out.setdefault(name, []).append(match[0])
    return out


def add_seed_tables(report_path: Path, cache: Path) -> dict:
    """Add the per-seed and ablation tables to a report written before they existed, from the
    run records it was computed from (its profiles, which a full rerun needs, may be gone):
    the tables are the ones run_block would have computed from the same records."""
    report = json.loads(report_path.read_text())
    if "blocks" not in report:
        raise ValueError(f"{report_path}: not a quality.py report (no 'blocks')")
    found = records_by_run(cache)  # once: a report's blocks share the cache
    for block in report["blocks"]:
        runs = block_records(block, found, cache)
        variants = {}
        for name, rs in runs.items():
            users = np.arange(len(rs[0]["per_user_ndcg@10"]))
            variants[name] = [_as_eval(name, r, users) for r in rs]
        block.update(seed_comparisons(variants, runs))
    report["seed_tables_added"] = {
        "command": f"benchmarks/quality.py --add-seed-tables {report_path}",
        "date": time.strftime("%Y-%m-%d"),
    }
    return report


def _table(head: list[str], rows: list[list[str]], caption: str) -> str:
    """A Markdown table and its caption, one paragraph below."""
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(lines) + "\n\n" + caption


def _rel(x: float, ref: float) -> float:
    return (x - ref) / ref if ref else float("nan")


def _pct(rel: float) -> str:
    # _rel has no relative change from a reference of 0 (a handful of users, all missed).
    return f"{100 * rel:+.1f}%" if np.isfinite(rel) else "–"


def _per_seed(c: dict) -> str:
    return " / ".join(_pct(r) for r in c["per_seed_rel_change"].values())


def _seeds_p(c: dict) -> str:
    # A t-test over one seed is undefined; paired_test reports 1.0 there, which would read as a result.
    return f"{c['seeds_t_p']:.3g}" if len(c["seeds"]) > 1 else "-"


def per_seed_table(block: dict) -> str:
    head = [
        "variant",
        "seeds",
        "NDCG@10 change vs the baseline's same seed",
        "seeds above the baseline",
        "p over seeds (paired t)",
    ]
    rows = []
    for name, c in block.get("vs_baseline_by_seed", {}).items():
        above = sum(r > 0 for r in c["per_seed_rel_change"].values())
        n = len(c["seeds"])
        cells = [name, " ".join(map(str, c["seeds"])), _per_seed(c), f"{above} of {n}", _seeds_p(c)]
        rows.append(cells)
    return _table(
        head,
        rows,
        "Each seed's mean NDCG@10 against the baseline run with the same seed; p over seeds: "
        "paired t-test of those per-seed means (the seed as the unit, not the user).",
    )


def ablation_table(block: dict) -> str:
    head = [
        "ablation",
        "against",
        "seeds",
        "NDCG@10 of the default",
        "NDCG@10",
        "change",
        "p (t / Wilcoxon)",
        "per seed",
        "p over seeds",
    ]
    rows = []
    for name, c in block.get("vs_distilled", {}).items():
        cells = [
            name,
            c["against"],
            " ".join(map(str, c["seeds"])),
            f"{c[c['against']]:.4f}",
            f"{c[name]:.4f}",
            _pct(c["rel_change"]),
            f"{c['p_value']:.3g} / {c['wilcoxon_p']:.3g}",
            _per_seed(c),
            _seeds_p(c),
        ]
        rows.append(cells)
    return _table(
        head,
        rows,
        "Each ablation against the distilled variant whose one setting it changes, on the seeds "
        "both ran (each user's NDCG@10 averaged over those seeds; p paired over users; per seed: "
        "the change of each seed's mean NDCG@10; p over seeds: paired t-test of those means).",
    )


def coverage_table(block: dict) -> str:
    head = [
        "profile source",
        "test users",
        "n",
        "baseline",
        "distilled",
        "change",
        "p (t / Wilcoxon)",
        "profile-only",
    ]
    rows = []
    for key, groups in block.get("by_coverage", {}).items():
        for group, g in groups.items():
            src = g["source"]
            cells = [
                key,
                group,
                str(g["n"]),
                f"{g[BASELINE]:.4f}",
                f"{g[g['variant']]:.4f}",
                _pct(g["rel_change"]),
                f"{g['p_value']:.3g} / {g['wilcoxon_p']:.3g}",
                f"{g[f'profile-only[{src}]']:.4f}",
            ]
            rows.append(cells)
    return _table(
        head,
        rows,
        "NDCG@10 of the test users split by whether the source holds an embedded profile for "
        "them (an ablation's rows: by its source's profiles), and on the users every source "
        "profiled (each user's NDCG averaged over seeds, then over users); p: distilled vs "
        "baseline on the same users.",
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="benchmarks/quality.yaml")
    ap.add_argument("--only", nargs="*", help="dataset names to run")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        dest="overrides",
        metavar="KEY=VALUE",
        help="training-config override for every run, e.g. tracking.uri=sqlite:///q.db",
    )
    ap.add_argument(
        "--seeds",
        nargs="+",
        type=int,
        help="train only these seeds' runs and write no report (split a grid over processes; "
        "a later run without --seeds reports from the cache)",
    )
    ap.add_argument(
        "--variants",
        nargs="+",
        help="train only these variants (names as in the report, e.g. baseline 'distilled[qwen]' "
        "'pooling=last [qwen]') and write no report, like --seeds",
    )
    ap.add_argument(
        "--add-seed-tables",
        nargs="+",
        type=Path,
        metavar="REPORT_JSON",
        help="add the per-seed and ablation tables to reports written before they existed, "
        "from the run records under the report's folder (runs/); rewrites the .json and .md",
    )
    args = ap.parse_args()
    if args.add_seed_tables:
        for path in args.add_seed_tables:
            write_report(path, add_seed_tables(path, path.parent / "runs"))
            print(f"wrote {path} and {path.with_suffix('.md')}")
        return
    bench = yaml.safe_load(Path(args.config).read_text())
    check_bench(bench, args.config)
    chosen = select_datasets(bench, args.config, args.only, args.variants, args.seeds)
    bench["train_overrides"] = [*bench.get("train_overrides", []), *args.overrides]
    out = Path(bench.get("out", "benchmarks/results/quality"))
    out.mkdir(parents=True, exist_ok=True)
    blocks = []
    for ds in chosen:
        for protocol in ds["protocols"]:
            for student, cfg_path in ds["students"].items():
                print(f"\n### {ds['name']} / {protocol} / {student}")
                report = run_block(
                    ds, protocol, student, cfg_path, bench, out, seeds=args.seeds, only=args.variants
                )
                if report is not None:
                    print(format_comparison(report))
                    blocks.append(report)
    if args.seeds is not None or args.variants is not None:
        print(
            f"trained seeds {args.seeds or 'all'}, variants {args.variants or 'all'}: records in {out}/runs"
        )
        return
    command = " ".join(
        ["benchmarks/quality.py", "--config", args.config, *(f"--set {o}" for o in args.overrides)]
    )
    name = bench.get("report", "quality")
    write_report(
        out / f"{name}.json",
        {"date": time.strftime("%Y-%m-%d"), "config": args.config, "command": command, "blocks": blocks},
    )
    plot = "gains.png" if name == "quality" else f"{name}-gains.png"
    _plot(blocks, out / plot)
    print(f"wrote {out}/{name}.json, {name}.md, {plot}")


def report_markdown(report: dict) -> str:
    """The Markdown report, from the JSON one alone (so each committed .md can be checked
    against its .json)."""
    head = f"_Generated by `{report['command']}` on {report['date']}._"
    if added := report.get("seed_tables_added"):
        head += (
            f" _Per-seed and ablation tables added from its run records by "
            f"`{added['command']}` on {added['date']}._"
        )
    md = [head + "\n"]
    for b in report["blocks"]:
        md.append(f"**{b['dataset']} / {b['protocol']} / {b['student']}** (`{b['config']}`)\n")
        md.append(format_comparison(b) + "\n")
        if b.get("vs_baseline_by_seed"):
            md.append(per_seed_table(b) + "\n")
        if b.get("profile_sources"):  # a baseline-only block has none to list
            md.append(profiles_table(b) + "\n")
        if b.get("vs_distilled"):
            md.append(ablation_table(b) + "\n")
        if b.get("by_coverage"):
            md.append(coverage_table(b) + "\n")
        md.append(training_table(b) + "\n")
    return "\n".join(md)


def _at(curve: list[float], epoch: int) -> float:
    return curve[min(epoch, len(curve)) - 1]


def _ms(xs: list[float], fmt: str) -> str:
    return f"{np.mean(xs):{fmt}} ± {np.std(xs):{fmt}}" if len(xs) > 1 else f"{xs[0]:{fmt}}"


def profiles_table(block: dict) -> str:
    head = ["profile source", "model", "users", *schema.PROFILE_STATUSES, "embedded (distilled from)"]
    rows = []
    for src, info in block.get("profile_sources", {}).items():
        n = max(info["users"], 1)
        counts = [
            f"{info[s]} ({100 * info[s] / n:.1f}%)" if s in info else "-" for s in schema.PROFILE_STATUSES
        ]
        rows.append([src, info["model"], str(info["users"]), *counts, str(info["embedded"])])
    return _table(
        head,
        rows,
        "Statuses are the profile job's checks: `truncated` hit max_tokens, `failed` is empty or "
        "degenerate (repeated lines or phrases); the job's config says which statuses are embedded.",
    )


def training_table(block: dict) -> str:
    """Per variant: cost, best epoch, and the curves through the distillation epochs, so a
    student that collapses while distilling and recovers later is visible (DESIGN.md §1)."""
    e = block["distill_epochs"]
    marks = sorted({m for m in (5, 10, e) if m <= e})
    head = [
        "variant",
        "train minutes / run",
        "best epoch",
        "epochs run",
        *[f"val NDCG@10, epoch {m}" for m in marks],
        f"rec loss, epoch {e}",
    ]
    rows = []
    for name, runs in block["runs"].items():
        cells = [
            name,
            _ms([(r.get("train_seconds") or r["seconds"]) / 60 for r in runs], ".1f"),
            _ms([r["best_epoch"] for r in runs], ".0f"),
            _ms([r["epochs_run"] for r in runs], ".0f"),
        ]
        cells += [_ms([_at(r["curves"]["val_ndcg@10"], m) for r in runs], ".4f") for m in marks]
        cells.append(_ms([_at(r["curves"]["train_rec_loss"], e) for r in runs], ".3f"))
        rows.append(cells)
    return _table(
        head,
        rows,
        f"Distillation is on for the first {e} epochs of the distilled runs; the baseline's columns "
        "are the same epochs of its own run (mean ± std over seeds). Train minutes: the epochs' "
        "training time, validation excluded.",
    )


def _plot(blocks: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, gains = [], []
    for b in blocks:
        for r in b["rows"]:
            if r["metric"] == "ndcg@10" and r["run"] != b["baseline"] and np.isfinite(r["rel_change"]):
                labels.append(f"{b['dataset']}/{b['protocol']}/{b['student']}: {r['run']}")
                gains.append(100 * r["rel_change"])
    if not labels:
        return
    fig, ax = plt.subplots(figsize=(8, 0.3 * len(labels) + 1))
    ax.barh(labels, gains, color=["tab:green" if g > 0 else "tab:red" for g in gains])
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel("NDCG@10 change vs baseline (%)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
