#!/usr/bin/env bash
# Decode tokens/s of `kvfold generate` at tensor-parallel sizes on CPU, --threads 1 per rank, with
# the leader's collective counters (the "tp:" line generate prints at size > 1).
# Usage: bench/tp_decode.sh [KVFOLD_BINARY] [REPEATS]
# Prints one line per run: model, size, decode line, tp line.
set -euo pipefail
BIN=${1:-build/kvfold}
REPEATS=${2:-3}
SMOL=${KVFOLD_CACHE_DIR:-$HOME/.cache/kvfold}/SmolLM2-135M-Instruct.Q4_1.gguf
STORIES=models/stories260K
run() {  # model, size, max tokens, prompt
  local err
  err=$(mktemp)
  "$BIN" generate --model "$1" --threads 1 --tensor-parallel-size "$2" --max-tokens "$3" \
    --prompt "$4" > /dev/null 2> "$err"
  echo "$(basename "$1") tp=$2 | $(grep '^decode:' "$err") | $(grep '^tp:' "$err" || true)"
  rm -f "$err"
}
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
for i in $(seq "$REPEATS"); do
  for tp in 1 2; do run "$STORIES" "$tp" 256 "Once upon a time"; done
  if [[ -f "$SMOL" ]]; then
    for tp in 1 3; do run "$SMOL" "$tp" 128 "Once upon a time, in a small village by the sea, there lived"; done
  fi
done
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
