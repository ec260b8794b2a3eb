#!/usr/bin/env python3
"""Writes the perplexity golden for `kvfold eval` with Hugging Face transformers (dev only).

CI never runs this script and installs no torch: its output is committed as
tests/fixtures/golden/stories260K_perplexity.json. It scores tests/data/stories260K_sample.txt with
the pretrained models/stories260K, independently of kvfold: the text is tokenized with Hugging
Face `tokenizers` (tokenizer.json, no special tokens), cut into windows of BOS + (context - 1)
text tokens that do not overlap (the last one shorter, or cut where max_tokens scored tokens are
reached), each window run on its own from position 0 by LlamaForCausalLM in float32 with eager
attention, and every token after BOS scored as float64 cross-entropy of the row before it.

Each case records, per window, its token count and NLL sum, and in all the scored tokens, the NLL
sum (natural log), the mean NLL and the perplexity (exp of the mean).

Usage (from the repository root):
  pip install torch transformers tokenizers
  python3 scripts/dev/make_perplexity_golden.py
"""

import datetime
import json
import math
import os
import platform

import tokenizers
import torch
import transformers
from transformers import LlamaForCausalLM

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MODEL = "models/stories260K"
TEXT = "tests/data/stories260K_sample.txt"
OUT = "tests/fixtures/golden/stories260K_perplexity.json"
BOS = 1
# (context, max_tokens scored; 0 = all): the default window of 512 over the whole text, and short
# windows with a cap that cuts the last window.
CASES = [(512, 0), (100, 300)]


def windows(ids, context, max_tokens):
    out, scored = [], 0
    for begin in range(0, len(ids), context - 1):
        take = ids[begin:begin + context - 1]
        if max_tokens:
            take = take[:max_tokens - scored]
        if not take:
            break
        out.append([BOS] + take)
        scored += len(take)
        if max_tokens and scored >= max_tokens:
            break
    return out


def main():
    torch.set_num_threads(1)
    model = LlamaForCausalLM.from_pretrained(os.path.join(REPO, MODEL), dtype=torch.float32,
                                             attn_implementation="eager").eval()
    tokenizer = tokenizers.Tokenizer.from_file(os.path.join(REPO, MODEL, "tokenizer.json"))
    with open(os.path.join(REPO, TEXT), encoding="utf-8") as f:
        ids = tokenizer.encode(f.read(), add_special_tokens=False).ids
    cases = []
    for context, max_tokens in CASES:
        per_window = []
        for window in windows(ids, context, max_tokens):
            with torch.no_grad():
                logits = model(torch.tensor([window])).logits[0].double()
            nll = torch.nn.functional.cross_entropy(logits[:-1], torch.tensor(window[1:]),
                                                    reduction="sum").item()
            per_window.append({"tokens": len(window), "nll_sum": nll})
        scored = sum(w["tokens"] - 1 for w in per_window)
        nll_sum = sum(w["nll_sum"] for w in per_window)
        cases.append({"context": context, "max_tokens": max_tokens, "windows": per_window,
                      "tokens_scored": scored, "nll_sum": nll_sum, "mean_nll": nll_sum / scored,
                      "perplexity": math.exp(nll_sum / scored)})
        print(f"context {context}, max_tokens {max_tokens}: {len(per_window)} windows, "
              f"{scored} tokens, perplexity {math.exp(nll_sum / scored):.6f}")
    golden = {
        "format_version": 1, "model": MODEL, "text": TEXT, "bos": BOS,
        "text_tokens": len(ids), "cases": cases,
        "generator": "scripts/dev/make_perplexity_golden.py",
        "torch_version": torch.__version__, "transformers_version": transformers.__version__,
        "tokenizers_version": tokenizers.__version__,
        "python_version": platform.python_version(),
        "date": datetime.date.today().isoformat(),
    }
    with open(os.path.join(REPO, OUT), "w") as f:
        json.dump(golden, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
