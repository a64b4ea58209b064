"""The identity of a training run: what resume and the experiment cache look a run up by.

Two keys, one rule. Both hash the settings that change what a run computes, plus the identity of
its inputs (the prepared dataset's fingerprint and the profiles' identity, never their paths),
under :data:`RUN_KEY_VERSION`:

- :func:`resume_key` leaves out the run's length (``epochs``, ``patience``, ``min_epochs``), so a
  rerun with a longer budget continues an early-stopped run from its checkpoint;
- :func:`record_key` includes it: a finished run's record answers for exactly that budget.

When the rule changes (a setting added, a default changed), bump :data:`RUN_KEY_VERSION`: every
older key stops matching at once, and the records that should survive are migrated by recomputing
their key from the config they were trained with. Nothing is special-cased to keep old keys valid.
"""

from __future__ import annotations

from dataclasses import dataclass

from ucd import schema
from ucd.data.prepare import load_manifest
from ucd.data.tensors import profiles_identity
from ucd.train.config import TrainConfig

RUN_KEY_VERSION = 2

# Where the run reads from or writes to, and how it is spread over workers: none of it changes
# the numbers a run produces (inputs enter the key by content, below).
_PLUMBING = ("data", "profiles", "ray", "tracking", "registry", "output", "run_name", "eval_batch_size")
_LENGTH = ("epochs", "patience", "min_epochs")


def _settings(cfg: TrainConfig) -> dict:
    d = cfg.model_dump(mode="json")
    for k in _PLUMBING:
        d.pop(k)
    # The catalogue size is read from the data when the run starts: the data fingerprint holds it,
    # so a config keys the same before and after that.
    d["model"].pop("n_items")
    if not cfg.distill.enabled:
        # Without distillation these settings are never read: a baseline is one run, whatever
        # distillation settings its config file happens to carry.
        d.pop("distill")
        d.pop("profile_coverage")
    return d


def _key(cfg: TrainConfig, settings: dict, data_fingerprint: str, profiles_id: str | None) -> str:
    inputs = {"data": data_fingerprint, "profiles": profiles_id if cfg.distill.enabled else None}
    return schema.fingerprint({"version": RUN_KEY_VERSION, "settings": settings, "inputs": inputs})[:16]


def resume_key(cfg: TrainConfig, data_fingerprint: str, profiles_id: str | None) -> str:
    """The run's identity without its length: the name its Ray Train checkpoints live under."""
    settings = _settings(cfg)
    for k in _LENGTH:
        settings.pop(k)
    return _key(cfg, settings, data_fingerprint, profiles_id)


def record_key(cfg: TrainConfig, data_fingerprint: str, profiles_id: str | None) -> str:
    """The run's identity with its length: the name of its finished-run record."""
    return _key(cfg, _settings(cfg), data_fingerprint, profiles_id)


def profiles_id(cfg: TrainConfig) -> str | None:
    """Identity of the profiles a distilled run learns from (None for a baseline): what the
    folder holds now, which a resumed or another profile job changes under the same path."""
    return profiles_identity(cfg.profiles) if cfg.distill.enabled and cfg.profiles else None


@dataclass(frozen=True)
class RunKeys:
    """Both keys of a config, with the input identities they were computed from."""

    resume: str
    record: str
    data_fingerprint: str
    profiles_id: str | None
    version: int = RUN_KEY_VERSION


def run_keys(cfg: TrainConfig) -> RunKeys:
    """Both keys of ``cfg``, its inputs identified from ``cfg.data``'s manifest and ``cfg.profiles``."""
    data_fp = load_manifest(cfg.data)["fingerprint"]
    pid = profiles_id(cfg)
    return RunKeys(resume_key(cfg, data_fp, pid), record_key(cfg, data_fp, pid), data_fp, pid)
