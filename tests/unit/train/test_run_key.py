"""The versioned run key (ucd/train/run_key.py): what joins a run's identity and what does not.

Pure unit tests: no Ray, no training. The inputs' identities come from real files (a prepared
folder's manifest, a profile_embeddings table) where the test is about reading them.
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from train_helpers import fake_prepared, write_profiles

from ucd.train import run_key
from ucd.train.config import TrainConfig
from ucd.train.run_key import profiles_id, record_key, resume_key, run_keys

DATA_FP, PROFILES = "data-fingerprint-a", "profiles-id-a"


def _cfg(**over) -> TrainConfig:
    base = {"data": "prepared/ml-100k", "epochs": 50, "distill": {"enabled": True}, "profiles": "p/"}
    for k, v in over.items():
        base[k] = {**base[k], **v} if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return TrainConfig.model_validate(base)


def _keys(cfg: TrainConfig, data_fp: str = DATA_FP, pid: str | None = PROFILES) -> tuple[str, str]:
    return resume_key(cfg, data_fp, pid), record_key(cfg, data_fp, pid)


def _update(cfg: TrainConfig, section: str | None, **values) -> TrainConfig:
    if section is None:
        return cfg.model_copy(update=values)
    sub = getattr(cfg, section).model_copy(update=values)
    return cfg.model_copy(update={section: sub})


@pytest.mark.parametrize(
    ("section", "values"),
    [
        (None, {"seed": 7}),
        (None, {"loss": "sampled_softmax"}),
        (None, {"select_from_epoch": 5}),
        (None, {"exclude_seen": True}),
        (None, {"profile_coverage": 0.5}),
        ("optim", {"lr": 5e-4}),
        ("model", {"hidden": 128}),
        ("distill", {"alpha": 0.2}),
        ("distill", {"epochs": 5}),
    ],
)
def test_a_setting_that_changes_results_changes_both_keys(section, values):
    cfg = _cfg()
    resume, record = _keys(cfg)
    other = _keys(_update(cfg, section, **values))
    assert other[0] != resume and other[1] != record


@pytest.mark.parametrize("values", [{"epochs": 80}, {"patience": 3}, {"min_epochs": 20}])
def test_the_run_length_changes_the_record_key_only(values):
    cfg = _cfg()
    resume, record = _keys(cfg)
    longer = _keys(cfg.model_copy(update=values))
    assert longer[0] == resume  # a longer budget resumes the same checkpoints...
    assert longer[1] != record  # ...but is another finished run


@pytest.mark.parametrize(
    ("section", "values"),
    [
        ("ray", {"num_workers": 4, "use_gpu": True, "storage_path": "s3://bucket/ray"}),
        ("tracking", {"uri": "http://mlflow:5000", "experiment": "other"}),
        ("registry", {"enabled": False, "model_name": "x"}),
        (None, {"output": "/tmp/elsewhere"}),
        (None, {"data": "/another/copy/of/ml-100k"}),
        (None, {"profiles": "/another/copy/of/profiles"}),
        (None, {"run_name": "my-run"}),
        (None, {"eval_batch_size": 64}),
    ],
)
def test_plumbing_changes_neither_key(section, values):
    cfg = _cfg()
    assert _keys(_update(cfg, section, **values)) == _keys(cfg)


def test_the_catalogue_size_filled_in_from_the_data_changes_neither_key():
    cfg = _cfg()
    assert _keys(_update(cfg, "model", n_items=1682)) == _keys(cfg)


def test_a_baseline_key_ignores_its_distill_section_and_its_profiles():
    base = _cfg(distill={"enabled": False})
    keys = _keys(base)
    assert _keys(_update(base, "distill", alpha=0.1, distance="mse", weight_by_coverage=False)) == keys
    assert _keys(base.model_copy(update={"profile_coverage": 0.3})) == keys
    assert _keys(base, pid="other-profiles") == keys and _keys(base, pid=None) == keys
    # Switching distillation on is another run.
    assert _keys(_update(base, "distill", enabled=True)) != keys


def test_another_data_fingerprint_or_profiles_id_changes_both_keys():
    cfg = _cfg()
    resume, record = _keys(cfg)
    for other in (_keys(cfg, data_fp="data-fingerprint-b"), _keys(cfg, pid="profiles-id-b")):
        assert other[0] != resume and other[1] != record


def test_weight_by_coverage_on_and_off_differ_when_distilling():
    on = _cfg(distill={"weight_by_coverage": True})
    off = _update(on, "distill", weight_by_coverage=False)
    assert _keys(on)[0] != _keys(off)[0] and _keys(on)[1] != _keys(off)[1]


def test_the_version_is_part_of_the_key(monkeypatch):
    cfg = _cfg()
    before = _keys(cfg)
    monkeypatch.setattr(run_key, "RUN_KEY_VERSION", run_key.RUN_KEY_VERSION + 1)
    after = _keys(cfg)
    assert after[0] != before[0] and after[1] != before[1]


def test_the_rule_changes_only_with_a_version_bump():
    """A default or a setting added to TrainConfig changes every key: that is a new rule, and
    RUN_KEY_VERSION must say so. Bump it, and update the expected keys here, together."""
    expected = {2: ("c0fc3697ea6bc58d", "971e0f953fcc5290")}
    got = _keys(TrainConfig(data="d", distill={"enabled": True}))
    assert got == expected.get(run_key.RUN_KEY_VERSION), (
        f"run keys of the default config changed to {got} under RUN_KEY_VERSION={run_key.RUN_KEY_VERSION}"
    )


def test_select_from_epoch_is_checked_against_epochs():
    with pytest.raises(ValidationError, match="select_from_epoch"):
        TrainConfig(data="d", epochs=10, select_from_epoch=10)


# --- the inputs' identities, read from files ------------------------------------------


def test_run_keys_identify_the_inputs_by_content_not_path(tmp_path):
    a = fake_prepared(tmp_path / "a", "fp-1")
    b = fake_prepared(tmp_path / "b", "fp-1")  # another copy of the same preparation
    c = fake_prepared(tmp_path / "c", "fp-2")
    p1 = write_profiles(tmp_path / "p1" / "profile_embeddings.parquet", [1, 2, 3], "llm-run")
    p2 = write_profiles(tmp_path / "p2" / "profile_embeddings.parquet", [1, 2, 3], "llm-run")
    cfg = _cfg(data=str(a), profiles=str(p1.parent))
    keys = run_keys(cfg)
    assert keys.data_fingerprint == "fp-1" and keys.profiles_id == profiles_id(cfg)
    assert keys.version == run_key.RUN_KEY_VERSION
    assert run_keys(cfg.model_copy(update={"data": str(b), "profiles": str(p2)})) == keys
    other_data = run_keys(cfg.model_copy(update={"data": str(c)}))
    assert other_data.resume != keys.resume and other_data.record != keys.record

    # A resumed profile job grew the folder: same path, other profiles, other run.
    write_profiles(p1, [1, 2, 3, 4], "llm-run")
    grown = run_keys(cfg)
    assert grown.profiles_id != keys.profiles_id and grown.resume != keys.resume


def test_a_baseline_has_no_profiles_id(tmp_path):
    p = write_profiles(tmp_path / "profile_embeddings.parquet", [1], "r")
    assert profiles_id(_cfg(profiles=str(p), distill={"enabled": False})) is None
    assert profiles_id(_cfg(profiles=str(p))) is not None
