"""Shipped configs parse, and cluster.yaml passes Ray's own cluster-config schema."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from ucd.config import build_config, find_config, shipped_configs
from ucd.errors import ConfigError
from ucd.train.config import TrainConfig

ROOT = Path(__file__).resolve().parents[2]
MODEL_CONFIGS = [n for n in shipped_configs("train") if n != "gpu-cluster"]


@pytest.mark.parametrize("name", MODEL_CONFIGS)
def test_shipped_model_configs_validate_with_distillation_off_until_switched_on(name):
    cfg = build_config(TrainConfig, find_config("train", name))
    assert not cfg.distill.enabled
    on = build_config(TrainConfig, find_config("train", name), ["distill.enabled=true"])
    on.distill.block_index(on.model.n_blocks)  # k within the student's blocks


def test_the_cluster_overlay_composes_over_a_model_config():
    cfg = build_config(
        TrainConfig, [find_config("train", "beauty-sasrec-paper"), find_config("train", "gpu-cluster")]
    )
    assert cfg.model.hidden == 128 and cfg.ray.use_gpu and cfg.ray.num_workers == 4


def test_a_config_path_wins_over_a_shipped_name_and_a_wrong_name_lists_the_shipped_ones(
    tmp_path, monkeypatch
):
    own = tmp_path / "ml-100k-sasrec.yaml"
    own.write_text("epochs: 3\n")
    monkeypatch.chdir(tmp_path)
    assert find_config("train", "ml-100k-sasrec.yaml") == own.relative_to(tmp_path)
    assert find_config("train", "ml-100k-sasrec").parent.name == "train"  # no such file here: the shipped one
    with pytest.raises(ConfigError, match=r"nope: no such file.*ml-100k-sasrec"):
        find_config("train", "nope")


def test_unknown_key_names_its_path(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {hiden: 64}\n")
    with pytest.raises(ConfigError, match=r"model\.hiden"):
        build_config(TrainConfig, bad)
    with pytest.raises(ConfigError, match="must look like key.sub=value"):
        build_config(TrainConfig, None, ["epochs"])


def test_llm_env_overrides_are_text():
    from ucd.profiles.config import load_profile_config

    cfg = load_profile_config(None, ["llm.env.VLLM_CPU_KVCACHE_SPACE=4", "llm.env.SOME_FLAG=true"])
    assert cfg.llm.env["VLLM_CPU_KVCACHE_SPACE"] == "4"
    assert cfg.llm.env["SOME_FLAG"] == "true"
    assert cfg.llm.env["VLLM_LOGGING_LEVEL"] == "ERROR"  # cpu.yaml's other entries stay


def test_cluster_yaml_against_ray_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    validate_config(prepare_config(copy.deepcopy(cfg)))
    nodes = cfg["available_node_types"]
    assert nodes[cfg["head_node_type"]]["resources"] == {"CPU": 0}  # the head takes no work
    gpu = [n for n in nodes.values() if n["resources"].get("GPU")]
    assert gpu and all(n["min_workers"] == 0 and 0 < n["max_workers"] <= 16 for n in gpu)
    assert any(not n["resources"].get("GPU") and n["resources"].get("CPU") for n in nodes.values())
    pinned = [d for d in _pyproject_deps() if d.startswith("ray[")][0].split("==")[1]
    assert cfg["docker"]["image"].startswith(f"rayproject/ray:{pinned}-")
    assert any("[gpu]" in c for c in cfg["setup_commands"])
    # A broken config is rejected by the same check (so the test above can fail).
    broken = copy.deepcopy(cfg)
    broken["available_node_types"]["gpu_worker"]["max_workers"] = "many"
    with pytest.raises(Exception, match="many"):
        validate_config(prepare_config(broken))


def _pyproject_deps() -> list[str]:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
