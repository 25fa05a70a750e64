#!/usr/bin/env bash
# Set everything up, then run the main job on the embedded default model: generate text with
# lossless speculative decoding, then certify every verifier with the exact oracle.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/verispec generate "${1:-Summarize in one sentence: speculative decoding lets a small draft model propose tokens that a large target model verifies in one forward pass, so the output follows the target exactly while running faster.}" --max-tokens 128
.venv/bin/verispec certify --all --quiet
