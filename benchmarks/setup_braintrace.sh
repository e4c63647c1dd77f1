#!/usr/bin/env bash
# Creates the side-by-side environment for the braintrace rows of the benchmarks:
# a Python >= 3.12 venv (braintrace 0.2.8 needs it) with braintrace==0.2.8 and what
# benchmarks/_braintrace_worker.py imports (brainstate, jax: pulled in by braintrace).
#
# Usage (from anywhere):
#   bash benchmarks/setup_braintrace.sh [--venv DIR] [--with-disttrace] [--jax-extra cuda12]
#
#   --venv DIR          where to make it (default: benchmarks/.venv-braintrace, git-ignored);
#                       online_vs_bptt.py and gpu.sh find the default one by themselves.
#   --with-disttrace    also install this checkout (editable) into the venv, so that the
#                       benchmark can run both libraries on the SAME jax: run the benchmark
#                       with the venv's python instead of the project's.
#   --jax-extra EXTRA   install jax[EXTRA] into the venv (e.g. cuda12 on a GPU host).
#
# The interpreter used to make the venv: $PYTHON if set, else the first of python3.13,
# python3.12 on PATH (pyenv shims included, via `pyenv which`) whose version is >= 3.12.
# The last line printed is the interpreter path to pass as --braintrace-python.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
VENV="$HERE/.venv-braintrace"
WITH_DT=0
JAX_EXTRA=""

while [ $# -gt 0 ]; do
  case "$1" in
    --venv) VENV="$2"; shift 2 ;;
    --with-disttrace) WITH_DT=1; shift ;;
    --jax-extra) JAX_EXTRA="$2"; shift 2 ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "setup_braintrace.sh: unknown argument '$1' (allowed: --venv DIR, --with-disttrace, --jax-extra EXTRA)" >&2
       exit 2 ;;
  esac
done

is_312() {  # true if "$1" runs and is Python >= 3.12
  "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1
}

find_python() {
  if [ -n "${PYTHON:-}" ]; then
    if is_312 "$PYTHON"; then echo "$PYTHON"; return 0; fi
    echo "setup_braintrace.sh: PYTHON='$PYTHON' is not a Python >= 3.12 interpreter" >&2
    return 1
  fi
  local name cand ver
  for name in python3.12 python3.13; do
    if is_312 "$name"; then command -v "$name"; return 0; fi
  done
  # pyenv installs a shim that refuses versions that are not active: ask pyenv for the real path
  if command -v pyenv >/dev/null 2>&1; then
    for ver in $(pyenv versions --bare 2>/dev/null | grep -E '^3\.(1[2-9])(\.|$)' || true); do
      cand="$(pyenv root)/versions/$ver/bin/python3"
      if is_312 "$cand"; then echo "$cand"; return 0; fi
    done
  fi
  echo "setup_braintrace.sh: no Python >= 3.12 found (tried python3.12, python3.13, pyenv versions);" \
       "install one or set PYTHON=/path/to/python3.12" >&2
  return 1
}

PY="$(find_python)"
echo "making $VENV with $PY ($("$PY" --version 2>&1))" >&2
"$PY" -m venv "$VENV"
VPY="$VENV/bin/python"
"$VPY" -m pip install -q --upgrade pip >&2
"$VPY" -m pip install -q "braintrace==0.2.8" >&2
if [ -n "$JAX_EXTRA" ]; then
  "$VPY" -m pip install -q "jax[$JAX_EXTRA]" >&2
fi
if [ "$WITH_DT" = 1 ]; then
  "$VPY" -m pip install -q -e "$ROOT" >&2
fi
# the worker's imports must work, or the benchmark would only record errors
"$VPY" -c 'import braintrace, brainstate, jax; print("braintrace", braintrace.__version__, "brainstate",
brainstate.__version__, "jax", jax.__version__, "devices", jax.devices())' >&2
echo "pass to the benchmarks: --braintrace-python $VPY" >&2
echo "$VPY"
