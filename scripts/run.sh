#!/usr/bin/env bash
# Set everything up, then run the main job: certify every verifier and show a short demonstration.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/verispec certify --all "$@"
.venv/bin/verispec demo
