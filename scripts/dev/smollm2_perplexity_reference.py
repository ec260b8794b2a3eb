#!/usr/bin/env python3
"""Perplexity of the default SmolLM2 GGUF over a text with Hugging Face transformers (dev only).

The reference for `kvfold eval` on the real model (bench/RESULTS.md): transformers dequantizes the
GGUF to float32 and runs it with eager attention; the text is tokenized without special tokens
(SmolLM2 adds no BOS) and cut into windows of `context` tokens that do not overlap, each run on
its own, scoring every token after the window's first as float64 cross-entropy, until
--max-tokens tokens are scored. Same windows as `kvfold eval --context N --max-tokens M`.

Usage: python3 scripts/dev/smollm2_perplexity_reference.py [--data FILE] [--context 512]
       [--max-tokens 1024]   (needs torch, transformers, gguf; ~1 minute on 2 cores)
"""
import argparse
import json
import math
import os

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def main():
    cache = os.environ.get("KVFOLD_CACHE_DIR") or os.path.expanduser("~/.cache/kvfold")
    parser = argparse.ArgumentParser()
    parser.add_argument("--gguf", default="SmolLM2-135M-Instruct.Q4_1.gguf")
    parser.add_argument("--data", default=os.path.join(cache, "data", "austen_heldout.txt"))
    parser.add_argument("--context", type=int, default=512)
    parser.add_argument("--max-tokens", type=int, default=1024)
    args = parser.parse_args()
    torch.set_num_threads(1)
    tokenizer = AutoTokenizer.from_pretrained(cache, gguf_file=args.gguf)
    model = AutoModelForCausalLM.from_pretrained(cache, gguf_file=args.gguf, dtype=torch.float32,
                                                 attn_implementation="eager").eval()
    with open(args.data, encoding="utf-8") as f:
        ids = tokenizer(f.read(), add_special_tokens=False).input_ids
    nll, scored, windows = 0.0, 0, 0
    for begin in range(0, len(ids), args.context):
        window = ids[begin:begin + args.context][:args.max_tokens - scored + 1]
        if len(window) < 2:
            break
        with torch.no_grad():
            logits = model(torch.tensor([window])).logits[0].double()
        nll += torch.nn.functional.cross_entropy(logits[:-1], torch.tensor(window[1:]),
                                                 reduction="sum").item()
        scored += len(window) - 1
        windows += 1
        if scored >= args.max_tokens:
            break
    print(json.dumps({"windows": windows, "tokens_scored": scored, "nll_sum": nll,
                      "mean_nll": nll / scored, "perplexity": math.exp(nll / scored)}))


if __name__ == "__main__":
    main()
