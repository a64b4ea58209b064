"""Packaged-model plumbing that runs without the packages: joining split GGUF parts, aliases."""

from __future__ import annotations

import pytest

from ucd.errors import ConfigError
from ucd.llm.prepare import ALIASES, PACKAGED, join_parts, model_name, resolve_model


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
        resolve_model("./no/such/model")
