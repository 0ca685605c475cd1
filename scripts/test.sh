#!/usr/bin/env bash
# One command: set up (first time) and run the whole test suite (lint + pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -q "$@"
