"""Typed configs: pydantic models loaded from YAML, with ``a.b.c=value`` CLI overrides.

Every job config is a pydantic model with ``extra="forbid"``, so a misspelt key fails with the
key's full path instead of being silently ignored.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from ucd.errors import ConfigError

T = TypeVar("T", bound=BaseModel)


class Strict(BaseModel):
    """Base for all configs: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def default_data_dir() -> Path | None:
    """Where raw public datasets live: ``$UCD_DATA_DIR``, else ``../shared/data`` if present."""
    env = os.environ.get("UCD_DATA_DIR")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parent.parent
    for cand in (here.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"):
        if cand.is_dir():
            return cand
    return None


def default_home() -> Path:
    """Where ucd keeps caches (converted models) and local state: ``$UCD_HOME`` or ~/.cache/ucd."""
    return Path(os.environ.get("UCD_HOME", Path.home() / ".cache" / "ucd"))


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Apply ``key.sub=value`` strings; values are parsed as YAML (``1e-3``, ``[1,2]``, ``null``)."""
    for ov in overrides or []:
        if "=" not in ov:
            raise ConfigError(f"override '{ov}' must look like key.sub=value")
        key, raw = ov.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        node = data
        parts = key.strip().split(".")
        for p in parts[:-1]:
            nxt = node.get(p)
            if nxt is None:
                nxt = node[p] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"override '{ov}': '{p}' is not a section")
            node = nxt
        node[parts[-1]] = value
    return data


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


DEFAULTS = Path(__file__).resolve().parent / "defaults"


def shipped_configs(kind: str) -> list[str]:
    """Names of the configs that ship with the package for ``kind`` (``train``, ``profile``)."""
    return sorted(p.stem for p in (DEFAULTS / kind).glob("*.yaml"))


def find_config(kind: str, ref: str | Path) -> Path:
    """A config by path, or by the name of one that ships with the package (``ml-100k-sasrec``).

    A path that exists wins, so a user's own ``beauty-sasrec.yaml`` is never shadowed.
    """
    path = Path(ref)
    if path.is_file():
        return path
    shipped = DEFAULTS / kind / f"{path.name.removesuffix('.yaml')}.yaml"
    if path.parent == Path(".") and shipped.is_file():
        return shipped
    names = ", ".join(shipped_configs(kind))
    raise ConfigError(f"{ref}: no such file, and no shipped {kind} config of that name (shipped: {names})")


def build_config(
    cls: type[T],
    path: str | Path | list[str | Path] | None = None,
    overrides: list[str] | None = None,
    base: dict[str, Any] | None = None,
) -> T:
    """``base`` (defaults from code) <- YAML file(s), later ones over earlier ones <- CLI
    overrides, validated as ``cls``."""
    paths = [] if path is None else path if isinstance(path, list) else [path]
    data: dict[str, Any] = dict(base or {})
    for p in paths:
        data = deep_merge(data, load_yaml(p))
    data = apply_overrides(data, overrides)
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        where = f" in {', '.join(map(str, paths))}" if paths else ""
        lines = []
        for err in e.errors():
            loc = ".".join(str(x) for x in err["loc"]) or "<root>"
            lines.append(f"  {loc}: {err['msg']}")
        raise ConfigError(f"invalid {cls.__name__} config{where}:\n" + "\n".join(lines)) from e


def dump_config(cfg: BaseModel) -> dict[str, Any]:
    return cfg.model_dump(mode="json")
