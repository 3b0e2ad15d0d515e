#!/usr/bin/env bash
# The course's GPU checks, in one command (make gpu). On a machine with a CUDA GPU:
#   1. the CUDA-only tests (pytest -m cuda: the compiled Triton kernels, the objectives on them,
#      DGMLIB_DEVICE=cuda in the Trainer and the samplers);
#   2. the GPU half of benchmarks/kernels.py: every Triton kernel against its torch path and
#      torch.compile, against the measured roofline, with its largest error against float64;
#   3. one training epoch of the Lecture 05 VAE and IWAE (K = 5) on Fashion-MNIST through
#      dgmlib.train.Trainer with DGMLIB_DEVICE=cuda, with the Triton kernels and without;
# and writes benchmarks/results/gpu.json (see benchmarks/gpu.py). Where there is no CUDA GPU it
# says so, measures nothing, writes nothing and exits 0.
#
# Usage: bash benchmarks/gpu.sh [--quick]      (PYTHON=... picks the interpreter; default .venv)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3

set +e
reason=$("$PY" benchmarks/gpu.py --probe)
status=$?
set -e
case $status in
  0) echo "CUDA GPU: $reason" ;;
  3)
    echo "no CUDA GPU found: $reason; nothing measured"
    echo "(with one: the CUDA-only tests, the Triton kernels against torch and torch.compile and"
    echo " the roofline, one Lecture 05 training epoch; written to benchmarks/results/gpu.json)"
    exit 0
    ;;
  *) echo "gpu.sh: cannot use the GPU: $reason" >&2; exit "$status" ;;
esac

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "== 1/3 CUDA-only tests"
set +e
"$PY" -m pytest -q -p no:cacheprovider -m cuda tests/test_gpu.py tests/test_kernels_triton.py \
  --junitxml="$tmp/cuda-tests.xml"
tests_status=$?
set -e
if [ "$tests_status" -ne 0 ] && [ ! -s "$tmp/cuda-tests.xml" ]; then
  echo "gpu.sh: pytest failed before running the tests (exit status $tests_status)" >&2
  exit "$tests_status"
fi
echo "== 2/3 and 3/3: kernels against torch and torch.compile; one epoch on the GPU"
DGMLIB_DEVICE=cuda "$PY" benchmarks/gpu.py --tests "$tmp/cuda-tests.xml" \
  --out benchmarks/results/gpu.json "$@"
"$PY" benchmarks/kernels.py --table | sed -n '/^GPU:/,$p'
if [ "$tests_status" -ne 0 ]; then
  echo "gpu.sh: some CUDA-only tests failed (see above); the measurements were written" >&2
fi
exit "$tests_status"
