#!/usr/bin/env bash
# Set up verispec in its own virtualenv (.venv) on a fresh machine. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
# torch first and pinned: a CPU wheel here; a plain `torch` would pull a multi-GB CUDA build.
python -m pip install -q "torch==2.13.0" 2>&1 | grep -v "^WARNING: Location" || true
python -m pip install -q -e ".[test]" 2>&1 | grep -v "^WARNING: Location" || true
python -c "import verispec, torch; print('verispec ready (torch', torch.__version__ + ')')"
