#!/usr/bin/env bash
# Create .venv from requirements.txt (idempotent: reinstalls only when requirements change).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
STAMP=.venv/.requirements.sha256
WANT=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -r requirements.txt
  echo "$WANT" > "$STAMP"
fi
# Fast training's native LSTM kernels, compiled for this CPU (~15 s, once per source and
# requirements change; without a C/C++ compiler fast mode uses its XLA loops and this says
# why). A worker builds them itself if they are missing.
NSTAMP=build/native/.setup.sha256
NWANT=$(cat core/native/*.c core/native/*.cc core/native/*.py requirements.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$NSTAMP" 2>/dev/null)" != "$NWANT" ]; then
  .venv/bin/python -m core native
  mkdir -p build/native && echo "$NWANT" > "$NSTAMP"
fi
