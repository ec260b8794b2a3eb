#!/usr/bin/env bash
# Offline engine throughput: the same prompts file through `kvfold generate --prompts-file` at
# several --max-num-seqs, reporting output tokens/s and the KV pool's capacity.
#
#   bench/throughput.sh [--model DIR|FILE.gguf] [BUILD_DIR]
#     (env: REQUESTS=128 MAX_TOKENS=128 THREADS=1 SEQS="1 8 32 64" KV_MEMORY=512MiB MODEL=...)
set -euo pipefail
model=${MODEL:-}
if [[ "${1:-}" == --model ]]; then
  model=$(realpath "$2")
  shift 2
elif [[ "${1:-}" == --model=* ]]; then
  model=$(realpath "${1#--model=}")
  shift
fi
cd "$(dirname "$0")/.."
build=${1:-build}
requests=${REQUESTS:-128}
max_tokens=${MAX_TOKENS:-128}
threads=${THREADS:-1}
seqs=${SEQS:-"1 8 32 64"}
kv_memory=${KV_MEMORY:-512MiB}
# stories260K unless MODEL names another (the CLI's default is SmolLM2 when it is installed).
model_args=(--model "${model:-models/stories260K}")

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Story openings of different lengths; seeded sampling so sequences diverge (and end at EOS at
# different points, as real traffic does).
starts=("Once upon a time" "The little dog" "Lily and Tom went to the park" "One day, a girl"
        "Tim had a big red ball. He" "The sun was shining and" "Sam wanted to" "A cat sat")
for ((i = 0; i < requests; ++i)); do
  printf '{"prompt": "%s", "max_tokens": %d, "temperature": 0.8, "seed": %d}\n' \
    "${starts[i % ${#starts[@]}]}" "$max_tokens" "$i"
done >"$tmp/prompts.jsonl"

echo "model=${model_args[1]} requests=$requests max_tokens=$max_tokens threads=$threads kv_memory=$kv_memory"
printf '%-13s %-14s %-16s %-12s %s\n' max_num_seqs "output tok/s" "requests/s" "mean TTFT" steps
for s in $seqs; do
  "$build/kvfold" generate "${model_args[@]}" --prompts-file "$tmp/prompts.jsonl" \
    --max-num-seqs "$s" --threads "$threads" --kv-cache-memory "$kv_memory" \
    >"$tmp/out.jsonl" 2>"$tmp/err.txt"
  summary=$(grep '^generate:' "$tmp/err.txt")
  pool=$(grep '^kv pool:' "$tmp/err.txt")
  tps=$(sed -E 's/.* ([0-9.]+) output tokens\/s.*/\1/' <<<"$summary")
  rps=$(sed -E 's/.* ([0-9.]+) requests\/s.*/\1/' <<<"$summary")
  ttft=$(sed -E 's/.*first token ([0-9.]+ ms).*/\1/' <<<"$summary")
  steps=$(sed -E 's/.*; ([0-9]+) steps.*/\1/' <<<"$pool")
  printf '%-13s %-14s %-16s %-12s %s\n' "$s" "$tps" "$rps" "$ttft" "$steps"
done
echo "$pool"
