#!/usr/bin/env bash
# Re-measure every README table, one benchmark after another (the machine's two cores for each), then write
# the tables from the results.  Hours on 2 CPU cores; each benchmark writes bench/results/<name>.json as it
# finishes, so an interrupted run keeps what it finished.  Peers need bench/setup_peers.sh and
# bench/setup_prune_peers.sh first.
#   bash bench/run_readme.sh [NAME ...]     # NAME: quant prune structured decode lowrank prune_peers quant_peers distill
# (the default list), or one of the longer ones named only on request: qat qat_tasks qat_long gguf gguf_lowrank
# tasks tasks_full (tasks_full: every question of five tasks for three models, a day on 2 cores; resumable).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
QUANT_ROWS="unquantized,RTN 8-bit g64,dynamic int8,dynamic int8 no smoothing,bnb int8,RTN 4-bit g64 asym,\
GPTQ 4-bit g64 asym act,GPTQ+MSE 4-bit g64 asym act,bnb nf4,Mixed GPTQ+MSE 3..8 g64 asym act avg 4.56,\
Mixed GPTQ+MSE 4/8 g64 asym act avg 5.0,RTN 3-bit g64 asym,GPTQ+MSE 3-bit g64 asym act"
run() { echo "== $1 $(date -u +%H:%M)"; shift; "$@"; }
for name in "${@:-quant prune structured decode lowrank prune_peers quant_peers distill}"; do
  for one in $name; do
    case "$one" in
      quant) run quant $PY bench/bench_quant.py --no-speed --methods "$QUANT_ROWS" ;;
      prune) run prune $PY bench/bench_prune.py ;;
      structured) run structured $PY bench/bench_structured.py ;;
      decode) run decode $PY bench/bench_decode.py ;;
      lowrank) run lowrank $PY bench/bench_lowrank.py ;;
      prune_peers) run prune_peers $PY bench/bench_prune_peers.py ;;
      quant_peers) run quant_peers .venv-peers/bin/python bench/bench_quant_peers.py ;;
      distill) run distill $PY bench/bench_distill.py ;;
      qat) run qat $PY bench/bench_qat.py --steps 40 --batch-size 4 --train-length 128 --bits 3,4 --name qat ;;
      qat_tasks) run qat_tasks $PY bench/bench_qat.py --steps 40 --bits 3 --starts gptq --task-limit 250 --name qat_tasks ;;
      qat_long) run qat_long $PY bench/bench_qat.py --steps 100 --bits 3 --starts gptq --train-windows 64 --name qat_long ;;
      gguf) run gguf $PY bench/bench_gguf.py ;;
      gguf_lowrank) run gguf_lowrank $PY bench/bench_gguf.py --lowrank 0.1 --name gguf_lowrank ;;
      tasks) run tasks $PY bench/bench_tasks.py ;;
      tasks_full) run tasks_full $PY bench/bench_tasks.py --resume --name tasks_full --models original,wanda,gptq --speed-limit 0 ;;
      *) echo "unknown benchmark $one" >&2; exit 2 ;;
    esac
  done
done
$PY bench/readme_tables.py
