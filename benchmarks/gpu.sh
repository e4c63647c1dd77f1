#!/usr/bin/env bash
# The accelerator benchmark in one short run (~7 min planned on one H100/H200): the GPU targets
# (recurrent LIF H=2048, T=1000, batch 64) and the paper grid (3 layers, n=512, batch 128,
# T 50..1000), disttrace and, when its venv is there, braintrace 0.2.8 side by side.
# JSON + table into benchmarks/results/gpu/ (or --out-dir DIR). See benchmarks/gpu.py.
#
#   bash benchmarks/gpu.sh                         # GPU host
#   bash benchmarks/gpu.sh --small                 # same code paths, tiny, CPU (CI; --out-dir OUT)
#
# braintrace side on a GPU host, once: bash benchmarks/setup_braintrace.sh --jax-extra cuda12
# The interpreter is $PYTHON, else python3, else python.
set -euo pipefail
PY="${PYTHON:-$(command -v python3 || command -v python)}"
# no cd: a relative --out-dir is relative to where the command was typed
exec "$PY" "$(dirname "${BASH_SOURCE[0]}")/gpu.py" "$@"
