#!/bin/sh
# Every technique on CUDA (bfloat16 where it applies) next to the CPU, on the bundled model; see
# bench/device_check.py.  Without CUDA it says so and exits 0.  Usage: bench/device_check.sh [--only a,b]
set -e
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON=python3
exec "$PYTHON" bench/device_check.py "$@"
