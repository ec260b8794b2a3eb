#!/usr/bin/env bash
# kvfold beside llama.cpp on the same GGUF and thread counts, in one run, plus the roofline.
#
#   bench/llama_cpp_compare.sh [BUILD_DIR]
#     env: THREADS="1 2"  PROMPT=256  GEN=128  REPS=3
#          GGUF=~/.cache/kvfold/SmolLM2-135M-Instruct.Q4_1.gguf  STORIES=models/stories260K
#          CACHE=~/.cache/kvfold-bench (llama.cpp's source and build live there, never in the repo)
#          STEPS=build-only (default: build if needed, then run)
#          LLAMA2C=/tmp/llama2c (run.c built as `runfast`, stories260K.bin, tok512.bin: see
#          bench/llama2c_compare.md; its batch-1 tokens/s joins the stories260K rows when present)
#
# llama.cpp is built by bench/llama_cpp_build.sh from the copy that PyPI's llama-cpp-python source
# distribution vendors (vendor/llama.cpp): CPU only, -DGGML_NATIVE=ON, Release, only llama-bench
# (and llama-cli when LLAMA_TARGETS asks), 2 jobs.
# stories260K (a Hugging Face folder) is converted with the vendored convert_hf_to_gguf.py (F32)
# into a temporary folder (needs pip's gguf and sentencepiece); kvfold runs its own HF folder.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "$repo" && realpath "${1:-build}")
threads=${THREADS:-"1 2"}
prompt=${PROMPT:-256}
gen=${GEN:-128}
reps=${REPS:-3}
gguf=${GGUF:-$HOME/.cache/kvfold/SmolLM2-135M-Instruct.Q4_1.gguf}
stories=$(cd "$repo" && realpath "${STORIES:-models/stories260K}")
steps=${STEPS:-all}

# --- (a) llama.cpp from llama-cpp-python's sdist (bench/llama_cpp_build.sh) ---------------
source "$repo/bench/llama_cpp_build.sh"
# llama-cli (LLAMA_TARGETS="llama-bench llama-cli") also builds llama.cpp's server library.
# shellcheck disable=SC2086
llama_cpp_build ${LLAMA_TARGETS:-llama-bench}
src_root="$llama_src_root"
[[ "$steps" == build-only ]] && { echo "built $llama_build/bin/llama-bench"; exit 0; }
llama_bench="$llama_build/bin/llama-bench"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# stories260K as an F32 GGUF for llama.cpp, by the vendored converter with pip's `gguf` package
# (its Llama vocabulary path imports `sentencepiece` even for a tokenizer.json-only folder:
# `pip install sentencepiece`).
stories_gguf=""
if python3 "$llama_src/convert_hf_to_gguf.py" "$stories" \
     --outtype f32 --outfile "$tmp/stories260K.f32.gguf" >"$tmp/convert.log" 2>&1; then
  stories_gguf="$tmp/stories260K.f32.gguf"
else
  echo "note: convert_hf_to_gguf.py could not convert $stories (tail of its log below);" \
       "llama.cpp is left out for stories260K" >&2
  tail -5 "$tmp/convert.log" >&2
fi

echo "# $(date -u +%F' '%H:%M' UTC')  $(uname -n)  nproc=$(nproc)  load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# llama.cpp: $(basename "$src_root") vendor/llama.cpp; kvfold: $(git -C "$repo" rev-parse --short HEAD)"
echo "# prompt=$prompt gen=$gen reps=$reps (medians of reps)"

# --- (b) measurements ----------------------------------------------------------------------
# llama-bench: pp = prompt tokens/s, tg = decode tokens/s at batch 1; the median of its samples
# (its avg_ts is dragged down by single slow runs on a shared machine).
llama_row() {  # model threads -> "pp tg"
  "$llama_bench" -m "$1" -t "$2" -p "$prompt" -n "$gen" -r "$reps" -o json 2>"$tmp/lb.err" |
    python3 -c '
import json, sys
rows = json.load(sys.stdin)
median = lambda r: sorted(r["samples_ts"])[(len(r["samples_ts"]) - 1) // 2]
pp = next((median(r) for r in rows if r["n_prompt"] > 0 and r["n_gen"] == 0), float("nan"))
tg = next((median(r) for r in rows if r["n_gen"] > 0 and r["n_prompt"] == 0), float("nan"))
print(f"{pp:.1f} {tg:.1f}")' || echo "nan nan"
}
# kvfold_model_bench: BM_Prefill, BM_Decode (batch 1), BM_DecodeBatch (batch 16) at `threads`.
kvfold_row() {  # model threads -> "pp tg1 tg16 bytes_per_step"
  "$build/bench/kvfold_model_bench" --model_dir="$1" --prompt_tokens="$prompt" \
    --decode_steps="$gen" --benchmark_filter="threads:$2/" \
    --benchmark_repetitions="$reps" --benchmark_report_aggregates_only=true \
    --benchmark_format=json 2>"$tmp/kb.err" | python3 -c '
import json, sys
rows = json.load(sys.stdin)["benchmarks"]
rows = [b for b in rows if b.get("aggregate_name") == "median"] or rows  # REPS=1: no aggregates
def get(prefix, key="tokens/s"):
  for b in rows:
    if b["run_name"].startswith(prefix): return b.get(key, float("nan"))
  return float("nan")
print("%.1f %.1f %.1f %.0f" % (get("BM_Prefill"), get("BM_Decode/"), get("BM_DecodeBatch"),
                              get("BM_Decode/", "bytes_per_step")))' || echo "nan nan nan nan"
}
bandwidth() {  # threads -> read GB/s (sustained, 256 MiB buffer)
  "$build/bench/kvfold_membw_bench" --benchmark_filter="BM_Read/.*threads:$1\$" \
    --benchmark_repetitions="$reps" --benchmark_report_aggregates_only=true \
    --benchmark_format=json 2>/dev/null | python3 -c '
import json, sys
rows = json.load(sys.stdin)["benchmarks"]
rows = [b for b in rows if b.get("aggregate_name") == "median"] or rows  # REPS=1: no aggregates
print("%.1f" % (rows[0]["bytes_per_second"] / 1e9) if rows else "nan")' || echo nan
}

# llama2.c's runfast on stories260K: median `achieved tok/s` of REPS runs of `-n (GEN + 1)` steps
# from BOS (GEN timed tokens, as kvfold's decode); single-threaded, so the same in every row.
llama2c() {
  local dir=${LLAMA2C:-/tmp/llama2c}
  [[ -x "$dir/runfast" && -f "$dir/stories260K.bin" && -f "$dir/tok512.bin" ]] || { echo n/a; return; }
  for ((r = 0; r < reps; ++r)); do
    "$dir/runfast" "$dir/stories260K.bin" -z "$dir/tok512.bin" -t 0 -n $((gen + 1)) 2>&1 >/dev/null |
      sed -nE 's/achieved tok\/s: ([0-9.]+)/\1/p'
  done | sort -g | awk '{v[NR] = $1} END {if (NR) printf "%.0f\n", v[int((NR + 1) / 2)]; else print "n/a"}'
}

# --- (c) one table -------------------------------------------------------------------------
printf '| model | threads | read GB/s | MB/step (mean ctx %s) | roofline tok/s | kvfold tg b1 | llama.cpp tg b1 | kvfold tg b16 | kvfold pp%s | llama.cpp pp%s | llama2.c tg b1 |\n' \
  "$(((gen + 1) / 2))" "$prompt" "$prompt"
echo '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |'
for model in "$gguf" "$stories"; do
  name=$(basename "$model")
  llama_model="$model"
  [[ "$model" == "$stories" ]] && llama_model="$stories_gguf"
  for t in $threads; do
    bw=$(bandwidth "$t")
    read -r kpp ktg ktg16 bytes <<<"$(kvfold_row "$model" "$t")"
    if [[ -n "$llama_model" ]]; then
      read -r lpp ltg <<<"$(llama_row "$llama_model" "$t")"
    else
      lpp=n/a ltg=n/a
    fi
    l2c=-
    [[ "$model" == "$stories" ]] && l2c=$(llama2c)
    read -r mb roof <<<"$(python3 -c "b=float('$bytes'); g=float('$bw'); print(f'{b/1e6:.2f} {g*1e9/b:.0f}')")"
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' \
      "$name" "$t" "$bw" "$mb" "$roof" "$ktg" "$ltg" "$ktg16" "$kpp" "$lpp" "$l2c"
  done
done
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"
