#!/usr/bin/env bash
# Create .venv-prune-peers: the peer pruning tools (llm-compressor, torchao) for bench_prune_peers.py.
#
#     bash bench/setup_prune_peers.sh
#
# Kept apart from the app's .venv so the peers' own pins never change the app's environment.
# torch is installed first, pinned to the CPU build (an unpinned torch pulls a multi-GB CUDA
# build), and every later install is constrained to that same torch.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv-prune-peers
TORCH=torch==2.13.0
PINS=$(mktemp)
trap 'rm -f "$PINS"' EXIT
echo "$TORCH" >"$PINS"

[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --upgrade pip
"$VENV/bin/pip" install "$TORCH"
"$VENV/bin/pip" install -c "$PINS" llmcompressor torchao
"$VENV/bin/python" - <<'PY'
import importlib.metadata as md
for name in ("torch", "transformers", "llmcompressor", "compressed-tensors", "torchao"):
    try:
        print(f"{name} {md.version(name)}")
    except md.PackageNotFoundError:
        print(f"{name} MISSING")
PY
