#!/usr/bin/env bash
# Folded-attention results for one model (issue 6): calibrate a plan over the whole
# perplexity-vs-KV curve, keep the step table, cut the plan at the 2 % point, and measure decode
# throughput at saturation in one KV budget, unfolded vs folded.
#
#   bench/fold_results.sh NAME MODEL DATA [BUILD_DIR]
#
# DATA "sample:N" means N stories the model samples itself (seeded, temperature 0.8, up to 400
# tokens each, stories separated by a blank line): stories260K's own-distribution text.
#
# Writes bench/plans/NAME.steps.txt (calibrate's step table), NAME.final.json (the plan at the
# end of the search), NAME.2pct.json (the accepted prefix of the search with the largest saving
# within +2 % held-out perplexity) and NAME.throughput.txt. Env (defaults in brackets):
#   STAGES ["calibrate throughput"]  THREADS [2]
#   calibrate: WINDOW [128] CAL_WINDOWS [3] HELDOUT [512] CANDIDATES [1] MAX_PPL [50%]
#              TARGET [50%] PPL_POINT [2] (the cut, in percent)
#   throughput: SEQS [16] SEQ_TOKENS [256] REQUESTS [64]: the budget is the KV memory of SEQS
#               unfolded sequences of SEQ_TOKENS tokens; each request is a short prompt plus
#               output up to SEQ_TOKENS tokens (ignore_eos), so REQUESTS / SEQS fills.
#               REPS [1] rounds of (unfolded, 2 % plan, final plan).
set -euo pipefail
cd "$(dirname "$0")/.."
name=$1 model=$2 data=$3 build=${4:-build}
threads=${THREADS:-2}
stages=${STAGES:-"calibrate throughput"}
out=bench/plans
mkdir -p "$out"
steps="$out/$name.steps.txt"

if [[ $data == sample:* ]]; then
  n=${data#sample:}
  data=$(mktemp)
  starts=("Once upon a time" "One day, a little boy named Tim" "The sun was shining and"
          "Lily and her mom went to the park" "There was a big red ball" "Sam had a small dog"
          "It was a cold winter day" "Anna wanted to bake a cake")
  for ((i = 0; i < n; ++i)); do
    printf '{"prompt": "%s", "max_tokens": 400, "temperature": 0.8, "seed": %d}\n' \
      "${starts[i % ${#starts[@]}]}" "$((1000 + i))"
  done >"$data.jsonl"
  "$build/kvfold" generate --model "$model" --prompts-file "$data.jsonl" --threads "$threads" \
    2>/dev/null | python3 -c '
import json, sys
starts = sys.argv[1:]
lines = [json.loads(l) for l in sys.stdin]
print("\n\n".join(starts[(l["line"] - 1) % len(starts)] + l["text"] for l in lines))
' "${starts[@]}" >"$data"
  echo "sampled $n stories: $(wc -c <"$data") bytes in $data"
fi

if [[ " $stages " == *" calibrate "* ]]; then
  cmd=("$build/kvfold" calibrate --model "$model" --data "$data" --out "$out/$name.final.json"
       --window "${WINDOW:-128}" --calibration-windows "${CAL_WINDOWS:-3}"
       --heldout-tokens "${HELDOUT:-512}" --candidates-per-kind "${CANDIDATES:-1}"
       --max-ppl-increase "${MAX_PPL:-50%}" --target-kv-saving "${TARGET:-50%}"
       --threads "$threads")
  echo "# ${cmd[*]}" >"$steps"
  echo "# $(date -u +%FT%TZ), load average: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$steps"
  start=$(date +%s)
  "${cmd[@]}" 2>"$out/$name.calibrate.log" | tee -a "$steps"
  echo "# wall $(($(date +%s) - start)) s, load average after: $(cut -d' ' -f1-3 /proc/loadavg)" \
    >>"$steps"
  rm -f "$out/$name.calibrate.log"
fi

# The search is greedy and records every measured step, so the plan at any accepted step is the
# final plan with the layers changed by later accepted steps put back to full.
python3 - "$steps" "$out/$name.final.json" "$out/$name.2pct.json" "${PPL_POINT:-2}" <<'EOF'
import json, re, sys
steps_path, final_path, cut_path, point = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
rows = []
for line in open(steps_path):
    m = re.match(r"^(\d+)\s+(.*?)\s+(start|kept|rejected)\s+(\d+)\s+\S+\s+(\d+)\s+(\S+)\s+(\S+)\s+(\S+)%$",
                 line.strip())
    if m:
        rows.append((m.group(2), m.group(3), int(m.group(4)), float(m.group(8))))
kept = [r for r in rows if r[1] == "kept"]
best = 0  # accepted steps in the prefix
for i, r in enumerate(kept):
    if r[3] <= point:
        best = i + 1
    else:
        break
plan = json.load(open(final_path))
for change, _, _, _ in kept[best:]:
    layer = int(re.match(r"layer (\d+):", change).group(1))
    plan["layers"][layer] = {"mode": "full"}
with open(cut_path, "w") as f:
    # kvfold's own layout: one layer a line.
    layers = ",\n".join("    " + json.dumps(l, separators=(",", ":")) for l in plan["layers"])
    head = {k: v for k, v in plan.items() if k != "layers"}
    f.write("{\n" + "".join(f"  {json.dumps(k)}: {json.dumps(v)},\n" for k, v in head.items())
            + '  "layers": [\n' + layers + "\n  ]\n}\n")
bytes_ = kept[best - 1][2] if best else rows[0][2]
print(f"{cut_path}: first {best} accepted steps, {bytes_} KV bytes/token "
      f"(unfolded {rows[0][2]}), held-out ppl +{kept[best - 1][3] if best else 0.0}%")
EOF

if [[ " $stages " == *" throughput "* ]]; then
  seqs=${SEQS:-16} seq_tokens=${SEQ_TOKENS:-256} requests=${REQUESTS:-64}
  unfolded=$(awk '$2 == "unfolded" {print $4}' "$steps")
  budget=$((seqs * seq_tokens * unfolded))
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  starts=("Once upon a time" "The little dog" "It was a bright morning and" "One day, a girl"
          "He had never seen" "The sun was shining and" "She wanted to" "A cat sat")
  for ((i = 0; i < requests; ++i)); do
    printf '{"prompt": "%s", "max_tokens": %d, "temperature": 0.8, "seed": %d, "ignore_eos": true}\n' \
      "${starts[i % ${#starts[@]}]}" "$((seq_tokens - 16))" "$i"
  done >"$tmp/prompts.jsonl"
  report="$out/$name.throughput.txt"
  {
    echo "# $name: budget $budget bytes = $seqs x $seq_tokens tokens x $unfolded bytes/token;" \
      "$requests requests of a short prompt + $((seq_tokens - 16)) output tokens; threads $threads"
    echo "# $(date -u +%FT%TZ), load average: $(cut -d' ' -f1-3 /proc/loadavg)"
  } >"$report"
  # REPS rounds, the plans interleaved within each, so load drift hits them alike.
  for ((rep = 1; rep <= ${REPS:-1}; ++rep)); do
  for plan in none "$out/$name.2pct.json" "$out/$name.final.json"; do
    plan_args=()
    [[ $plan != none ]] && plan_args=(--attention-plan "$plan")
    cmd=("$build/kvfold" generate --model "$model" "${plan_args[@]}" --prompts-file
         "$tmp/prompts.jsonl" --kv-cache-memory "$budget" --max-model-len "$seq_tokens"
         --threads "$threads")
    "${cmd[@]}" >"$tmp/out.jsonl" 2>"$tmp/err.txt"
    {
      echo "## round $rep, plan $plan: ${cmd[*]}"
      grep -E '^(kv:|generate:|kv pool:)' "$tmp/err.txt"
      echo "# load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
    } | tee -a "$report"
  done
  done
fi
