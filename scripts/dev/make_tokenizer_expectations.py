#!/usr/bin/env python3
"""Writes the tokenizer exactness fixtures from Hugging Face `tokenizers` (dev only; CI never runs
this).

For each tokenizer, and for each string of tests/fixtures/tokenizer/corpus.json plus seeded random
strings built from RANDOM_TEXT_FRAGMENTS, it records the ids with and without special tokens and
the decode of both id lists with and without skip_special_tokens; then seeded random id sequences
(byte pieces, specials, invalid UTF-8) with their decodes. It also writes the stories260K variants
the tests load (Metaspace forms, added-token flags). The tokenizers version goes into each file.

Usage, from the repository root: python3 scripts/dev/make_tokenizer_expectations.py
(the ../shared/tokenizers families are skipped with a message when it is absent.)
"""

import json
import os
import random
import sys

import tokenizers
from tokenizers import Tokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "tokenizer")
SHARED = os.path.normpath(os.path.join(ROOT, "..", "shared"))
STORIES = "models/stories260K/tokenizer.json"
NUM_RANDOM_DECODES = 60
NUM_RANDOM_TEXTS = 60

# Fragments that random texts are built from: they stress merges across scripts, spaces and
# special tokens in odd places.
RANDOM_TEXT_FRAGMENTS = [
    "a", "e", "th", "the", "ing", "Once", " ", "  ", "\t", "\n", ".", ",", "!", "'", "0", "42",
    "\u2581", "<s>", "</s>", "<unk>", "<mark>", "<|sp|>", "zebra", "lion", "<", ">", "s",
    "\u4e2d", "\u6587", "\u00e9", "\u1ec7", "\u0645", "\U0001F600", "\U0001F468\u200d\U0001F469",
    "\U0001F1FA\U0001F1F8", "\ufffd", "\u00a0", "\u3000", "\x00",
    "\r\n", "'s", "'LL", "123", "e\u0301", "<|im_start|>", "<|im_end|>", "<|endoftext|>",
    "<|begin_of_text|>", "<|eot_id|>", "<think>",
]

# Metaspace variants of stories260K: the same vocabulary behind the pre-tokenizer/decoder form that
# newer Llama/Mistral conversions use, so the Metaspace code paths are checked against HF too.
METASPACE_VARIANTS = {
    "stories260K_metaspace_first": {
        "normalizer": None,
        "pre_tokenizer": {"type": "Metaspace", "replacement": "\u2581",
                          "prepend_scheme": "first", "split": False},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first",
             "split": False},
            {"type": "ByteFallback"}, {"type": "Fuse"}]},
    },
    "stories260K_metaspace_always_split": {
        "normalizer": None,
        "pre_tokenizer": {"type": "Metaspace", "replacement": "\u2581",
                          "prepend_scheme": "always", "split": True},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "ByteFallback"},
            {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always",
             "split": True},
            {"type": "Fuse"}]},
    },
    # The pre-0.14 form: add_prefix_space instead of prepend_scheme, split absent (true).
    "stories260K_metaspace_legacy": {
        "normalizer": None,
        "pre_tokenizer": {"type": "Metaspace", "replacement": "\u2581",
                          "add_prefix_space": True},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "ByteFallback"},
            {"type": "Metaspace", "replacement": "\u2581", "add_prefix_space": True},
            {"type": "Fuse"}]},
    },
}


# Split variants whose regexes the tokenizer does not know, so they run on its PCRE2 fallback, with
# the other delimiter behaviours, invert, and Digits.
SPLIT_VARIANTS = {
    "stories260K_split_pcre2": {"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": "\\p{N}{1,2}|\u2581?\\p{L}+|[^\\s\\p{L}\\p{N}]+"},
         "behavior": "MergedWithNext", "invert": False},
        {"type": "Digits", "individual_digits": False}]}},
    "stories260K_split_invert": {"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": "(?i:[aeiou]+)|x*"}, "behavior": "Contiguous",
         "invert": True},
        {"type": "Split", "pattern": {"String": "\u2581"}, "behavior": "MergedWithPrevious",
         "invert": False},
        {"type": "Split", "pattern": {"Regex": "(?=\\p{Lu})"}, "behavior": "Removed",
         "invert": False}]}},
}
METASPACE_VARIANTS.update(SPLIT_VARIANTS)


# Added tokens with lstrip/rstrip/normalized set, on top of stories260K. HF assigns the ids itself
# ("the" gets 515, not 100) and decodes normalized tokens through their normalized form ("lion"
# is "\u2581lion", which is then no longer a special token to skip).
ADDED_FLAGS_TOKENS = [
    {"id": 512, "content": "<mark>", "single_word": False, "lstrip": True, "rstrip": True,
     "normalized": False, "special": False},
    {"id": 513, "content": "zebra", "single_word": False, "lstrip": False, "rstrip": False,
     "normalized": True, "special": False},
    {"id": 514, "content": "<|sp|>", "single_word": False, "lstrip": False, "rstrip": True,
     "normalized": False, "special": True},
    {"id": 100, "content": "the", "single_word": False, "lstrip": False, "rstrip": False,
     "normalized": True, "special": False},
    {"id": 265, "content": "\u2581the", "single_word": False, "lstrip": False, "rstrip": False,
     "normalized": True, "special": False},
    {"id": 516, "content": "lion", "single_word": False, "lstrip": False, "rstrip": False,
     "normalized": True, "special": True},
]


def write_json(path, value):
    """Top-level members one per line and list items one per line: readable diffs at a fraction
    of the size of an indented dump."""
    lines = []
    for key, item in value.items():
        if isinstance(item, list):
            inner = ",\n".join("  " + json.dumps(x, ensure_ascii=False) for x in item)
            lines.append(f" {json.dumps(key)}: [\n{inner}\n ]")
        else:
            lines.append(f" {json.dumps(key)}: {json.dumps(item, ensure_ascii=False)}")
    with open(path, "w", encoding="utf-8") as f:
        f.write("{\n" + ",\n".join(lines) + "\n}\n")


def make_variants():
    """Writes the variant tokenizer.json files; returns name -> repository-relative path."""
    with open(os.path.join(ROOT, STORIES), encoding="utf-8") as f:
        base = json.load(f)
    paths = {}
    for name, changes in METASPACE_VARIANTS.items():
        variant = dict(base)
        variant.update(changes)
        rel = f"tests/fixtures/tokenizer/{name}.json"
        with open(os.path.join(ROOT, rel), "w", encoding="utf-8") as f:
            json.dump(variant, f, ensure_ascii=False)
            f.write("\n")
        paths[name] = rel
    flags = dict(base)
    flags["added_tokens"] = base["added_tokens"] + ADDED_FLAGS_TOKENS
    rel = "tests/fixtures/tokenizer/stories260K_added_flags.json"
    with open(os.path.join(ROOT, rel), "w", encoding="utf-8") as f:
        json.dump(flags, f, ensure_ascii=False)
        f.write("\n")
    paths["stories260K_added_flags"] = rel
    return paths


def byte_token_ids(tok):
    """Byte value -> id of the token that spells that single byte: <0xNN> pieces, or the
    characters of the byte-level alphabet."""
    vocab = tok.get_vocab()
    pieces = {b: vocab.get(f"<0x{b:02X}>") for b in range(256)}
    if all(i is not None for i in pieces.values()):
        return pieces
    return {b: vocab[c] for b, c in bytes_to_unicode().items() if c in vocab}


def bytes_to_unicode():
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD))
                 + list(range(0xAE, 0x100)))
    table, n = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + n)
            n += 1
    return table


def random_id_sequences(tok, rng):
    """Id lists biased towards single-byte tokens and specials, to exercise the decoders'
    invalid-UTF-8 handling and skip_special_tokens."""
    byte_tokens = byte_token_ids(tok)
    byte_ids = sorted(byte_tokens.values())
    specials = sorted(tok.get_added_tokens_decoder().keys())[:8] or [0, 1, 2]
    size = tok.get_vocab_size()
    sequences = []
    for _ in range(NUM_RANDOM_DECODES):
        ids = []
        for _ in range(rng.randint(1, 24)):
            r = rng.random()
            if r < 0.45:
                ids.append(rng.choice(byte_ids))
            elif r < 0.55:
                ids.append(rng.choice(specials))
            else:
                ids.append(rng.randrange(size))
        sequences.append(ids)
    # Valid multi-byte characters split across byte tokens, then broken ones.
    for text in ["\u00e9", "\u4f60", "\U0001F600"]:
        raw = [byte_tokens[b] for b in text.encode("utf-8") if b in byte_tokens]
        sequences.append(raw)
        sequences.append(raw[:-1])
        sequences.append(raw + raw[:1])
        sequences.append(raw[:1] + [specials[-1]] + raw[1:])
    return sequences


def random_texts(rng):
    return ["".join(rng.choice(RANDOM_TEXT_FRAGMENTS) for _ in range(rng.randint(1, 40)))
            for _ in range(NUM_RANDOM_TEXTS)]


def expectations(name, rel_path, abs_path, corpus, tok=None, encode=None):
    """`tok` (default: loaded from abs_path) decodes; `encode(text, add_special_tokens)` (default:
    tok's) gives the ids."""
    tok = tok or Tokenizer.from_file(abs_path)
    encode = encode or (lambda text, special: tok.encode(text, add_special_tokens=special).ids)
    cases = []
    for text in corpus:
        ids = encode(text, False)
        ids_special = encode(text, True)
        cases.append({
            "text": text,
            "ids": ids,
            "ids_with_special": ids_special,
            "decode": tok.decode(ids, skip_special_tokens=False),
            "decode_skip_special": tok.decode(ids, skip_special_tokens=True),
            "decode_with_special": tok.decode(ids_special, skip_special_tokens=False),
            "decode_with_special_skip_special": tok.decode(ids_special, skip_special_tokens=True),
        })
    rng = random.Random(1234)
    decodes = [{
        "ids": ids,
        "decode": tok.decode(ids, skip_special_tokens=False),
        "decode_skip_special": tok.decode(ids, skip_special_tokens=True),
    } for ids in random_id_sequences(tok, rng)]
    return {
        "generator": "scripts/dev/make_tokenizer_expectations.py",
        "tokenizers_version": tokenizers.__version__,
        "tokenizer": rel_path,
        "name": name,
        "vocab_size": tok.get_vocab_size(),
        "cases": cases,
        "decodes": decodes,
    }


def main():
    with open(os.path.join(FIXTURES, "corpus.json"), encoding="utf-8") as f:
        corpus = json.load(f)
    corpus += random_texts(random.Random(5678))
    targets = {"stories260K": (STORIES, os.path.join(ROOT, STORIES))}
    for name, rel in make_variants().items():
        targets[name] = (rel, os.path.join(ROOT, rel))
    for name in ["llama2", "mistral", "llama3", "qwen3"]:
        rel = f"tokenizers/{name}/tokenizer.json"
        path = os.path.join(SHARED, rel)
        if os.path.exists(path):
            targets[name] = ("../shared/" + rel, path)
        else:
            print(f"skipping {name}: {path} is absent", file=sys.stderr)
    for name, (rel, path) in targets.items():
        out = os.path.join(FIXTURES, f"expected_{name}.json")
        write_json(out, expectations(name, rel, path, corpus))
        print(f"wrote {os.path.relpath(out, ROOT)}")
    smollm2 = smollm2_reference()
    if smollm2 is not None:
        out = os.path.join(FIXTURES, "expected_smollm2.json")
        write_json(out, expectations("smollm2", "~/.cache/kvfold/" + SMOLLM2_GGUF, None, corpus,
                                     tok=smollm2))
        print(f"wrote {os.path.relpath(out, ROOT)}")
    import make_gguf_fixtures  # the GGUF "llama" vocabularies, with llama.cpp's algorithm
    make_gguf_fixtures.main(corpus, expectations, write_json)


SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_reference():
    """The default model's tokenizer, from its GGUF (scripts/setup.sh fetches it) through
    transformers' GGUF reader. transformers does not know tokenizer.ggml.pre = "smollm" and would
    split with GPT-2's regex alone; SmolLM2's own tokenizer.json and llama.cpp also isolate every
    digit first (Digits(individual_digits=True) before ByteLevel), so that pre-tokenizer is set
    here. (The two differ on the corpus only where digits follow a space, e.g. Arabic-Indic.)"""
    cache = os.path.expanduser("~/.cache/kvfold")
    if not os.path.exists(os.path.join(cache, SMOLLM2_GGUF)):
        print(f"skipping smollm2: {cache}/{SMOLLM2_GGUF} is absent (run scripts/setup.sh)",
              file=sys.stderr)
        return None
    from tokenizers import pre_tokenizers
    from transformers import AutoTokenizer
    hf = AutoTokenizer.from_pretrained(cache, gguf_file=SMOLLM2_GGUF)
    tok = Tokenizer.from_str(hf.backend_tokenizer.to_str())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    return tok


if __name__ == "__main__":
    main()
