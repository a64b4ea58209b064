"""A grid file: one dataset x protocol, the profile sources on it, and its experiments.

Each experiment is one report: its students (shipped train configs by name), seeds, the profile
sources it distils from, its ablations and its controls. The variants an experiment trains, and
the overrides that make each one, are decided here and nowhere else: a run record's key is a
hash of the config they build.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args

import yaml

from ucd.config import find_config
from ucd.data.splits import SplitConfig
from ucd.errors import ConfigError

ABLATIONS: dict[str, list[str]] = {
    "distance=mse": ["distill.distance=mse"],
    "distance=infonce": ["distill.distance=infonce"],
    "pooling=last": ["distill.pooling=last"],
    "alpha=0.2": ["distill.alpha=0.2"],
    "alpha=0.8": ["distill.alpha=0.8"],
    "layer=1": ["distill.layer=1"],
    "coverage=25%": ["profile_coverage=0.25"],
    "coverage=50%": ["profile_coverage=0.5"],
    # The distill term times the batch's profiled share (ucd/models/distill.py, "Partial coverage").
    "weight=coverage": ["distill.weight_by_coverage=true"],
    # The paper's loss taken literally: unbounded beta, raw target, MSE.
    "paper-literal": [
        "distill.distance=mse",
        "distill.beta_max=null",
        "distill.target_norm=none",
        "distill.variance_weight=0",
    ],
}

PROTOCOLS = get_args(SplitConfig.model_fields["protocol"].annotation)
GRID_KEYS = {"dataset", "protocol", "results", "work", "train_overrides", "profiles", "experiments"}
EXPERIMENT_KEYS = {
    "report",
    "about",
    "students",
    "seeds",
    "ablation_seeds",
    "same_budget_epochs",
    "profiles",
    "primary_profiles",
    "ablations",
    "train_overrides",
}
SOURCE_KEYS = {"path", "share_of", "user_share", "user_seed", "command"}
TEMPLATE = "template"

# Variant names, as in the reports and ``--variants``.
BASELINE, SAME_BUDGET = "baseline", "baseline, same budget"


def distilled_name(source: str) -> str:
    return f"distilled[{source}]"


def ablation_name(ablation: str, primary: str) -> str:
    return f"{ablation} [{primary}]"


def load_grid(path: str | Path) -> dict:
    """The grid file at ``path``, checked (``check_grid``), its profile sources in one form."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: grid file not found")
    grid = yaml.safe_load(path.read_text())
    check_grid(grid, str(path))
    grid["profiles"] = {name: source_spec(v) for name, v in grid.get("profiles", {}).items()}
    return grid


def source_spec(value: str | dict) -> dict:
    """A profile source as a mapping: ``template``, a folder path, or a share of another source."""
    if value == TEMPLATE:
        return {TEMPLATE: True}
    if isinstance(value, str):
        return {"path": value}
    return dict(value)


def check_grid(grid: Any, source: str) -> None:
    """Reject a grid that would fail (or silently do less) hours into a run, naming the file and
    the field: typos in keys, unknown ablations or protocols, students with no config."""

    def bad(where: str, msg: str) -> ConfigError:
        return ConfigError(f"{source}: {where}: {msg}")

    if not isinstance(grid, dict):
        raise bad("top level", "a mapping is required")
    missing = [k for k in ("dataset", "protocol", "results", "work", "experiments") if k not in grid]
    if missing:
        raise bad("top level", f"missing {missing}")
    extra = sorted(set(grid) - GRID_KEYS)
    if extra:
        raise bad("top level", f"unknown keys {extra}; known: {sorted(GRID_KEYS)}")
    if grid["protocol"] not in PROTOCOLS:
        raise bad("protocol", f"unknown {grid['protocol']!r}; known: {list(PROTOCOLS)}")
    _check_sources(grid.get("profiles", {}), bad)
    exps = grid["experiments"]
    if not isinstance(exps, list) or not exps:
        raise bad("experiments", "a non-empty list of experiments is required")
    reports = [e.get("report") for e in exps if isinstance(e, dict)]
    twice = sorted({r for r in reports if reports.count(r) > 1})
    if twice:
        raise bad("experiments", f"report names used twice: {twice}")
    for i, exp in enumerate(exps):
        where = f"experiments[{i}]" + (
            f" ({exp['report']})" if isinstance(exp, dict) and "report" in exp else ""
        )
        _check_experiment(exp, grid.get("profiles", {}), lambda w, m, where=where: bad(where + w, m))


def _check_sources(profiles: Any, bad) -> None:
    if not isinstance(profiles, dict):
        raise bad("profiles", "a mapping of source name -> folder, 'template' or a share is required")
    for name, value in profiles.items():
        spec = source_spec(value) if isinstance(value, (str, dict)) else None
        if spec is None:
            raise bad(f"profiles.{name}", f"a folder, 'template' or a mapping, got {value!r}")
        extra = sorted(set(spec) - SOURCE_KEYS - {TEMPLATE})
        if extra:
            raise bad(f"profiles.{name}", f"unknown keys {extra}; known: {sorted(SOURCE_KEYS)}")
        if not spec.get(TEMPLATE) and ("path" in spec) == ("share_of" in spec):
            raise bad(f"profiles.{name}", "exactly one of 'path' and 'share_of' is required")
        if "share_of" in spec:
            parent = profiles.get(spec["share_of"])
            if not isinstance(parent, (str, dict)) or "share_of" in source_spec(parent):
                raise bad(
                    f"profiles.{name}.share_of", f"{spec['share_of']!r} is not a profile folder of this grid"
                )
            if not 0 < spec.get("user_share", 0) <= 1:
                raise bad(f"profiles.{name}.user_share", "a share in (0, 1] is required")


def _check_experiment(exp: Any, profiles: dict, bad) -> None:
    if not isinstance(exp, dict):
        raise bad("", "must be a mapping")
    missing = [k for k in ("report", "students", "seeds") if k not in exp]
    if missing:
        raise bad("", f"missing {missing}")
    extra = sorted(set(exp) - EXPERIMENT_KEYS)
    if extra:
        raise bad("", f"unknown keys {extra}; known: {sorted(EXPERIMENT_KEYS)}")
    seeds = exp["seeds"]
    if not seeds or not all(isinstance(x, int) for x in seeds):
        raise bad(".seeds", f"a non-empty list of integers is required, got {seeds!r}")
    extra_seeds = [x for x in exp.get("ablation_seeds", []) if x not in seeds]
    if extra_seeds:
        raise bad(".ablation_seeds", f"{extra_seeds} are not in seeds {seeds}")
    for student, ref in exp["students"].items():
        try:
            find_config("train", ref)
        except ConfigError as e:
            raise bad(f".students.{student}", str(e)) from None
    unknown = [a for a in exp.get("ablations", []) if a not in ABLATIONS]
    if unknown:
        raise bad(".ablations", f"unknown {unknown}; known: {list(ABLATIONS)}")
    stray = [s for s in exp.get("profiles", []) if s not in profiles]
    if stray:
        raise bad(".profiles", f"{stray} are not among the grid's profiles {list(profiles)}")
    primary = exp.get("primary_profiles")
    if primary is not None and not isinstance(primary, (str, list)):
        raise bad(".primary_profiles", f"a source name or a list of them, got {primary!r}")
    for name in primary_sources(exp):
        if name not in exp.get("profiles", []):
            raise bad(".primary_profiles", f"{name!r} is not one of profiles {exp.get('profiles', [])}")


def primary_sources(exp: dict) -> list[str]:
    """The profile sources an experiment's ablations distil from: ``primary_profiles`` (one name,
    or a list to run every ablation on each), else the first source it names."""
    primary = exp.get("primary_profiles")
    if primary is None:
        return list(exp.get("profiles", []))[:1]
    return [primary] if isinstance(primary, str) else list(primary)


def ablation_variants(exp: dict) -> dict[str, tuple[str, str]]:
    """Each ablation variant of an experiment -> (its ablation, the source it distils from)."""
    return {ablation_name(a, src): (a, src) for src in primary_sources(exp) for a in exp.get("ablations", [])}


def variant_names(exp: dict) -> list[str]:
    """Every variant an experiment can train."""
    names = [BASELINE, *(distilled_name(p) for p in exp.get("profiles", [])), *ablation_variants(exp)]
    if exp.get("same_budget_epochs") != 0:
        names.append(SAME_BUDGET)
    return names


def select(
    grid: dict, source: str, reports: list[str] | None, variants: list[str] | None, seeds: list[int] | None
) -> list[dict]:
    """The experiments ``--report`` picks; a report, variant or seed the grid does not have is
    an error (it would otherwise train nothing and say so only at the end)."""
    known_reports = [e["report"] for e in grid["experiments"]]
    missing = [r for r in reports or [] if r not in known_reports]
    if missing:
        raise ConfigError(f"--report: {source} has no experiment {missing}; it has {known_reports}")
    chosen = [e for e in grid["experiments"] if not reports or e["report"] in reports]
    known = {v for e in chosen for v in variant_names(e)}
    unknown = [v for v in variants or [] if v not in known]
    if unknown:
        raise ConfigError(f"--variants: unknown {unknown}; {source} has {sorted(known)}")
    known_seeds = {x for e in chosen for x in e["seeds"]}
    stray = [x for x in seeds or [] if x not in known_seeds]
    if stray:
        raise ConfigError(f"--seeds: {stray} not in {source}'s seeds {sorted(known_seeds)}")
    return chosen


def needed_sources(exp: dict, only: list[str] | None) -> list[str]:
    """The profile sources the variants in ``only`` train from (every source of the experiment
    when None, as a report compares them all)."""
    sources = list(exp.get("profiles", []))
    if only is None:
        return sources
    ablation_sources = {src for name, (_, src) in ablation_variants(exp).items() if name in only}
    return [s for s in sources if distilled_name(s) in only or s in ablation_sources]


def shared_overrides(grid: dict, exp: dict, prepared: Path, extra: list[str] | None = None) -> list[str]:
    """The overrides every run of an experiment starts from (seed and variant follow)."""
    return [
        f"data={prepared}",
        "registry.enabled=false",
        *grid.get("train_overrides", []),
        *exp.get("train_overrides", []),
        *(extra or []),
    ]


def planned_runs(exp: dict, sources: dict[str, str], seeds: list[int]) -> list[tuple[str, list[str], int]]:
    """(variant, overrides, seed) of every run of an experiment but the same-budget baseline (its
    budget may come from the finished runs), in training order."""
    distill_on = ["distill.enabled=true"]
    plan = []
    for seed in seeds:
        plan.append((BASELINE, ["distill.enabled=false"], seed))
        plan += [
            (distilled_name(src), [*distill_on, f"profiles={path}"], seed) for src, path in sources.items()
        ]
    # Ablations may use fewer seeds than the main comparison (each is a full grid column).
    ablation_seeds = exp.get("ablation_seeds", exp["seeds"])
    # Ablation by ablation, so a grid stopped midway leaves whole ablations, not one seed of each.
    for variant, (name, src) in ablation_variants(exp).items():
        if src not in sources:
            continue
        overrides = [*distill_on, f"profiles={sources[src]}", *ABLATIONS[name]]
        plan += [(variant, overrides, s) for s in seeds if s in ablation_seeds]
    return plan


def same_budget_runs(epochs: int, seeds: list[int]) -> list[tuple[str, list[str], int]]:
    """The baseline trained for ``epochs`` without early stopping, so a gain from training longer
    is not taken for a distillation gain."""
    overrides = ["distill.enabled=false", f"epochs={epochs}", f"patience={epochs}"]
    return [(SAME_BUDGET, overrides, s) for s in seeds]
