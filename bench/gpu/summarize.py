#!/usr/bin/env python3
"""The GPU suite's closing table (bench/gpu/run.sh run): per test binary the passed, failed and
skipped counts from its --gtest_output JSON, then the decode benchmark's rows and the transformers
comparison's, if they ran. Usage: summarize.py RESULTS_DIR."""
import json
import pathlib
import re
import sys


def test_counts(path):
    data = json.loads(path.read_text())
    passed = failed = skipped = 0
    for suite in data.get("testsuites", []):
        for test in suite.get("testsuite", []):
            if test.get("failures"):
                failed += 1
            elif test.get("result") == "SKIPPED":
                skipped += 1
            else:
                passed += 1
    return passed, failed, skipped


def main():
    results = pathlib.Path(sys.argv[1])
    exits = {}
    codes = results / "exit_codes.txt"
    if codes.exists():
        for line in codes.read_text().splitlines():
            name, _, rc = line.rpartition(" exit ")
            exits[name] = rc
    print("== GPU suite summary")
    print(f"{'test binary':<34} {'passed':>6} {'failed':>6} {'skipped':>7} {'exit':>4}")
    totals = [0, 0, 0]
    for name in sorted(n for n in exits if n.startswith("gpu_")):
        path = results / f"{name}.json"
        if path.exists():
            counts = test_counts(path)
            totals = [a + b for a, b in zip(totals, counts)]
            p, f, s = counts
            print(f"{name:<34} {p:>6} {f:>6} {s:>7} {exits[name]:>4}")
        else:
            print(f"{name:<34} {'no JSON (crashed?)':>21} {exits[name]:>4}")
    print(f"{'total':<34} {totals[0]:>6} {totals[1]:>6} {totals[2]:>7}")

    bench = results / "decode_bench.json"
    print()
    if bench.exists():
        data = json.loads(bench.read_text())
        print(f"decode bench (d2d copy {data['d2d_copy_bytes_per_s'] / 1e9:.0f} GB/s, read+write)")
        print(f"{'model':<28} {'plan':<9} {'batch':>5} {'tok/s all':>10} {'tok/s one':>10} "
              f"{'roofline':>10} {'% roof':>6}")
        for r in data["rows"]:
            pct = 100.0 * r["tok_s_one_logits"] / r["roofline_tok_s"]
            print(f"{r['model']:<28} {r['plan']:<9} {r['batch']:>5} {r['tok_s_all_logits']:>10.0f} "
                  f"{r['tok_s_one_logits']:>10.0f} {r['roofline_tok_s']:>10.0f} {pct:>6.1f}")
    else:
        text = results / "decode_bench.txt"
        line = text.read_text().strip().splitlines()[-1:] if text.exists() else ["no output"]
        print(f"decode bench: no rows ({line[0] if line else 'no output'}; exit "
              f"{exits.get('kvfold_gpu_decode_bench', '?')})")

    cli = results / "cli_checks.json"
    print()
    if cli.exists():
        print("kvfold CLI on the GPU:")
        for c in json.loads(cli.read_text()):
            verdict = "SKIP" if c.get("skipped") else "PASS" if c["passed"] else "FAIL"
            print(f"  {verdict} {c['check']}: {c['detail']}")
    else:
        print(f"kvfold CLI: no checks (exit {exits.get('kvfold_cli_checks', 'not run')})")

    hf = results / "hf_generate.txt"
    if hf.exists():
        rows = [l for l in hf.read_text().splitlines() if l.startswith("HF ")]
        print()
        print("transformers generate (bf16, greedy, eager cache):")
        for row in rows:
            fields = dict(re.findall(r"(\w+)=(\S+)", row))
            print(f"  {fields.get('model', '?'):<28} batch {fields.get('batch', '?'):>5} "
                  f"{float(fields.get('tok_s', 'nan')):>10.0f} tok/s")
    else:
        print()
        print("transformers generate: not run")


if __name__ == "__main__":
    main()
