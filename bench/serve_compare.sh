#!/usr/bin/env bash
# The same streaming load, by bench/serve_bench.py, against llama.cpp's llama-server
# (continuous batching, 16 slots) and `kvfold serve` on the same GGUF and thread count.
#
#   bench/serve_compare.sh
#     env: GGUF=~/.cache/kvfold/SmolLM2-135M-Instruct.Q4_1.gguf  THREADS=2
#          CONCURRENCY=16  NUM_PROMPTS=64  INPUT_LEN=128  OUTPUT_LEN=64  RANGE_RATIO=0
#          ENDPOINT=completions  SEED=0  CTX=2048 (context per slot; llama-server gets -c 16*CTX)
#          KVFOLD_BIN=build/kvfold  SERVERS="llama kvfold"  LLAMA_PORT=18080  KVFOLD_PORT=18000
#          OUT=bench/results/serve-<UTC date-time>  CACHE=~/.cache/kvfold-bench
#          LLAMA_ARGS="" (more llama-server flags, e.g. "--poll 0": no spin-waiting, which helps on
#          a machine whose cores are shared)  KVFOLD_ARGS="" (more `kvfold serve` flags)
#
# llama-server is built by bench/llama_cpp_build.sh from the llama.cpp that PyPI's
# llama-cpp-python sdist vendors (never committed), CPU only, without its web UI. kvfold runs
# only when `$KVFOLD_BIN serve --help` lists a --port flag. Each server is started on 127.0.0.1,
# waited for (/health, then /v1/models answering 200), measured, and stopped before the next
# starts; both are killed when the script exits. Writes OUT/{llama-server,kvfold}.json, their
# logs, and OUT/serve_compare.png, and prints each run's table and a markdown table of both.
# Needs PyPI aiohttp and matplotlib (pip install aiohttp matplotlib) and curl.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
gguf=${GGUF:-$HOME/.cache/kvfold/SmolLM2-135M-Instruct.Q4_1.gguf}
threads=${THREADS:-2}
concurrency=${CONCURRENCY:-16}
ctx=${CTX:-2048}
kvfold_bin=${KVFOLD_BIN:-$repo/build/kvfold}
servers=${SERVERS:-"llama kvfold"}
llama_port=${LLAMA_PORT:-18080}
kvfold_port=${KVFOLD_PORT:-18000}
out=${OUT:-$repo/bench/results/serve-$(date -u +%F-%H%M)}
name=$(basename "$gguf" .gguf)
slots=16

[[ -s "$gguf" ]] || { echo "no GGUF at $gguf (scripts/setup.sh fetches the default)" >&2; exit 1; }
mkdir -p "$out"

bench_args=(--concurrency "$concurrency" --num-prompts "${NUM_PROMPTS:-64}"
  --input-len "${INPUT_LEN:-128}" --output-len "${OUTPUT_LEN:-64}"
  --range-ratio "${RANGE_RATIO:-0}" --endpoint "${ENDPOINT:-completions}" --seed "${SEED:-0}"
  --model "$name")

pids=()
stop_servers() {
  local pid
  for pid in "${pids[@]}"; do
    { kill "$pid" && wait "$pid"; } 2>/dev/null || true
  done
  pids=()
}
trap stop_servers EXIT INT TERM

wait_ready() {  # pid port log: /health, then /v1/models, answering 200 (up to 5 minutes)
  local pid=$1 port=$2 log=$3 url path
  for path in /health /v1/models; do
    url="http://127.0.0.1:$port$path"
    for ((i = 0; i < 600; ++i)); do
      if ! kill -0 "$pid" 2>/dev/null; then
        echo "server exited; its log:" >&2
        tail -20 "$log" >&2
        return 1
      fi
      curl -sf -o /dev/null "$url" && continue 2
      sleep 0.5
    done
    echo "no answer from $url after 5 minutes" >&2
    return 1
  done
}

run_one() {  # label port log command...: start, measure, stop
  local label=$1 port=$2 log=$3
  shift 3
  echo "# $label: $*" | tee "$log"
  "$@" >>"$log" 2>&1 &
  pids+=($!)
  wait_ready "${pids[-1]}" "$port" "$log"
  python3 "$repo/bench/serve_bench.py" --base-url "http://127.0.0.1:$port" --label "$label" \
    "${bench_args[@]}" --result-json "$out/$label.json"
  stop_servers
}

echo "# $(date -u +%F' '%H:%M' UTC')  $(uname -n)  nproc=$(nproc)" \
  " load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# $name, $threads threads, concurrency $concurrency; results in $out"
results=()

# shellcheck disable=SC2086  # LLAMA_ARGS and KVFOLD_ARGS split into flags
if [[ " $servers " == *" llama "* ]]; then
  source "$repo/bench/llama_cpp_build.sh"
  llama_cpp_build llama-server
  echo "# llama.cpp: $(basename "$llama_src_root") vendor/llama.cpp"
  run_one llama-server "$llama_port" "$out/llama-server.log" \
    "$llama_build/bin/llama-server" -m "$gguf" -t "$threads" -np "$slots" -c $((slots * ctx)) \
    --cont-batching --host 127.0.0.1 --port "$llama_port" --alias "$name" --no-webui \
    ${LLAMA_ARGS:-}
  results+=("$out/llama-server.json")
fi

if [[ " $servers " == *" kvfold "* ]]; then
  # gflags' --help exits 1 for every command; an unknown command exits 2 with no flag list.
  help=$("$kvfold_bin" serve --help 2>&1 || true)
  if [[ "$help" == *--port* ]]; then
    extra=()
    # Flags `kvfold serve` may or may not have yet: a free gRPC port and the per-slot context.
    [[ "$help" == *--grpc[-_]port* ]] && extra+=(--grpc-port $((kvfold_port + 1)))
    [[ "$help" == *--max[-_]model[-_]len* ]] && extra+=(--max-model-len "$ctx")
    run_one kvfold "$kvfold_port" "$out/kvfold.log" \
      "$kvfold_bin" serve --model "$gguf" --host 127.0.0.1 --port "$kvfold_port" \
      --threads "$threads" --served-model-name "$name" --max-num-seqs "$slots" "${extra[@]}" \
      ${KVFOLD_ARGS:-}
    results+=("$out/kvfold.json")
  else
    echo "# kvfold: '$kvfold_bin serve --help' lists no --port: no \`kvfold serve\` to measure" >&2
  fi
fi

((${#results[@]})) || { echo "nothing was measured" >&2; exit 1; }
python3 "$repo/bench/plot_serve.py" "$out/serve_compare.png" "${results[@]}"
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"
