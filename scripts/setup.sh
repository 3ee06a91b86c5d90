#!/usr/bin/env bash
# Create .venv and install genloop with its test tools. Safe to run again (it only adds what is missing).
#
# torch: on a machine without an NVIDIA GPU this pins the CPU build (torch==2.13.0) so pip never
# pulls a multi-GB CUDA build; set GENLOOP_TORCH_INDEX to a CPU wheel index to use one elsewhere.
# On a GPU machine pip picks the platform's normal build. An already installed torch is kept.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip install --disable-pip-version-check -q)
# this machine's pip configuration names local index folders that may be missing: not our news
quiet() { "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }

if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "setup: installing torch (GPU machine: the platform's default build)"
    quiet "${PIP[@]}" "torch>=2.4"
  else
    echo "setup: installing torch 2.13.0 (CPU build)"
    quiet "${PIP[@]}" "torch==2.13.0" ${GENLOOP_TORCH_INDEX:+--index-url "$GENLOOP_TORCH_INDEX"}
  fi
fi
echo "setup: installing genloop, its Hugging Face, ONNX and captioning extras and its test tools"
quiet "${PIP[@]}" -e ".[dev,hf,onnx,captions]"
.venv/bin/python -c "import torch, genloop; print(f'setup: ok (torch {torch.__version__}, genloop {genloop.__version__})')"
