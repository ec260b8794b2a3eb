#!/usr/bin/env python3
"""Encode MB/s, single-threaded, of kvfold's tokenizer beside Hugging Face `tokenizers` on the same
~10 MB of mixed text, for every tokenizer family found; prints a Markdown table.

The text is built deterministically (seed 1) from tests/fixtures/tokenizer/corpus.json: prose-like
runs of its words with numbers and punctuation, interleaved with whole corpus strings (code, CJK,
Arabic, emoji, ...), cut into ~4 KB documents that both sides encode one by one without special
tokens. HF runs with RAYON_NUM_THREADS=1 and TOKENIZERS_PARALLELISM=false through encode_batch
(no per-call Python overhead); kvfold runs build/bench/kvfold_tokenizer_bench. Each side reports
its best of --repeat runs, and the token totals must agree.

Usage, from the repository root after building (cmake --build build --target
kvfold_tokenizer_bench): python3 bench/tokenizer_compare.py [--megabytes 10] [--repeat 3]
"""

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
SHARED = os.path.normpath(os.path.join(ROOT, "..", "shared", "tokenizers"))
GGUF = os.path.expanduser("~/.cache/kvfold/SmolLM2-135M-Instruct.Q4_1.gguf")


def families():
    out = [(name, os.path.join(SHARED, name)) for name in ["llama2", "mistral", "llama3", "qwen3"]]
    out = [(n, p) for n, p in out if os.path.exists(p)]
    if os.path.exists(GGUF):
        out.append(("smollm2 (GGUF)", GGUF))
    out.append(("stories260K", os.path.join(ROOT, "models", "stories260K")))
    return out


def make_documents(megabytes, seed=1):
    with open(os.path.join(ROOT, "tests", "fixtures", "tokenizer", "corpus.json"),
              encoding="utf-8") as f:
        corpus = json.load(f)
    words = [w for s in corpus for w in s.split() if len(w) < 30]
    rng = random.Random(seed)
    target = megabytes * 1_000_000
    documents, size = [], 0
    while size < target:
        parts = []
        while sum(len(p) for p in parts) < 4000:
            r = rng.random()
            if r < 0.75:
                sentence = " ".join(rng.choice(words) for _ in range(rng.randint(5, 25)))
                if rng.random() < 0.3:
                    sentence += f" {rng.randint(0, 10 ** rng.randint(1, 7))}"
                parts.append(sentence + rng.choice([". ", ".\n", "? ", "!\n\n", ", "]))
            else:
                parts.append(rng.choice(corpus) + rng.choice(["\n", " ", "\n\n"]))
        doc = "".join(parts)
        documents.append(doc)
        size += len(doc.encode("utf-8"))
    return documents


def hf_tokenizer(path):
    from tokenizers import Tokenizer, pre_tokenizers
    if path.endswith(".gguf"):
        sys.path.insert(0, os.path.join(ROOT, "scripts", "dev"))
        import make_tokenizer_expectations
        return make_tokenizer_expectations.smollm2_reference()
    return Tokenizer.from_file(os.path.join(path, "tokenizer.json"))


def run_hf(path, documents, repeat):
    tok = hf_tokenizer(path)
    best, tokens = float("inf"), 0
    for _ in range(repeat):
        start = time.perf_counter()
        encodings = tok.encode_batch(documents, add_special_tokens=False)
        best = min(best, time.perf_counter() - start)
        tokens = sum(len(e.ids) for e in encodings)
    return best, tokens


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--megabytes", type=float, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--bench", default=os.path.join(ROOT, "build", "bench",
                                                         "kvfold_tokenizer_bench"))
    args = parser.parse_args()
    os.environ["RAYON_NUM_THREADS"] = "1"
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    import tokenizers
    documents = make_documents(args.megabytes)
    size = sum(len(d.encode("utf-8")) for d in documents)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False, encoding="utf-8") as f:
        json.dump(documents, f, ensure_ascii=False)
        docs_path = f.name
    print(f"{len(documents)} documents, {size / 1e6:.2f} MB; HF tokenizers {tokenizers.__version__}"
          f", best of {args.repeat}, single thread\n")
    print("| tokenizer | kvfold MB/s | HF tokenizers MB/s | speedup | tokens (both) |")
    print("| --- | --- | --- | --- | --- |")
    try:
        for name, path in families():
            result = subprocess.run([args.bench, path, docs_path, str(args.repeat)], check=True,
                                    capture_output=True, text=True)
            ours = json.loads(result.stdout)
            hf_seconds, hf_tokens = run_hf(path, documents, args.repeat)
            agree = "same" if hf_tokens == ours["tokens"] else f"DIFFER {hf_tokens}"
            print(f"| {name} | {ours['mb_per_s']:.1f} | {size / hf_seconds / 1e6:.1f} | "
                  f"{hf_seconds / ours['seconds']:.2f}x | {ours['tokens']:,} {agree} |",
                  flush=True)
    finally:
        os.unlink(docs_path)


if __name__ == "__main__":
    main()
