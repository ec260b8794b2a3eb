#!/usr/bin/env python3
"""Writes the GGUF fixtures (dev only; CI never runs this; make_tokenizer_expectations.py calls it).

tests/fixtures/gguf/stories260K_spm.gguf and stories260K_spm_no_prefix.gguf: stories260K's 512
pieces plus a user-defined "<mark>", as a GGUF "llama" (SentencePiece) vocabulary written by the
`gguf` package. The scores are -(id // 2) for normal pieces, so that many pieces tie and
llama.cpp's tie-break (leftmost pair) matters. The first file also carries a metadata key of
every GGUF type (nested arrays included) and two small tensors for the metadata reader's test.

expected_gguf_<name>.json: ids from a line-by-line port of llama.cpp's SPM tokenizer
(llm_tokenizer_spm_session, src/llama-vocab.cpp: special-token partition, space prefix after
specials, score-ordered merges, byte fallback), which is the reference for this vocabulary type;
decodes from a Hugging Face tokenizer with the same vocabulary and Llama 2's decoder.
"""

import heapq
import json
import os

import numpy as np
from gguf import GGUFWriter, GGUFValueType
from tokenizers import AddedToken, Tokenizer, decoders, models

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
GGUF_DIR = os.path.join(ROOT, "tests", "fixtures", "gguf")
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "tokenizer")
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, BYTE = 1, 2, 3, 4, 6

VARIANTS = {
    "stories260K_spm": {"add_space_prefix": True, "add_bos": True, "add_eos": False,
                        "extra": True},
    "stories260K_spm_no_prefix": {"add_space_prefix": False, "add_bos": False, "add_eos": True,
                                  "extra": False},
}


def vocabulary():
    with open(os.path.join(ROOT, "models", "stories260K", "tokenizer.json"), encoding="utf-8") as f:
        vocab = json.load(f)["model"]["vocab"]
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])] + ["<mark>"]
    types, scores = [], []
    for i, t in enumerate(tokens):
        if t == "<unk>":
            types.append(UNKNOWN)
        elif t in ("<s>", "</s>"):
            types.append(CONTROL)
        elif t == "<mark>":
            types.append(USER_DEFINED)
        elif len(t) == 6 and t.startswith("<0x"):
            types.append(BYTE)
        else:
            types.append(NORMAL)
        scores.append(float(-(i // 2)) if types[-1] == NORMAL else 0.0)
    return tokens, scores, types


def write_gguf(path, tokens, scores, types, options):
    w = GGUFWriter(path, arch="llama")
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(options["add_bos"])
    w.add_add_eos_token(options["add_eos"])
    w.add_add_space_prefix(options["add_space_prefix"])
    if options["extra"]:
        w.add_uint8("kvfold.test.u8", 200)
        w.add_int8("kvfold.test.i8", -100)
        w.add_uint16("kvfold.test.u16", 60000)
        w.add_int16("kvfold.test.i16", -30000)
        w.add_uint32("kvfold.test.u32", 4000000000)
        w.add_int32("kvfold.test.i32", -2000000000)
        w.add_uint64("kvfold.test.u64", 2**63 + 5)
        w.add_int64("kvfold.test.i64", -(2**62))
        w.add_float32("kvfold.test.f32", 1.5)
        w.add_float64("kvfold.test.f64", -2.25)
        w.add_bool("kvfold.test.bool", True)
        w.add_string("kvfold.test.string", "h\u00e9llo")
        w.add_array("kvfold.test.ints", [1, -2, 3])
        w.add_array("kvfold.test.nested", [[1, 2], [3]])
        w.add_tensor("tiny.weight", np.arange(8, dtype=np.float32).reshape(2, 4))
        w.add_tensor("tiny.bias", np.ones(3, dtype=np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def spm_tokenize(text, token_to_id, scores):
    """llm_tokenizer_spm_session::tokenize."""
    symbols = []  # [start, length, prev, next]
    offs = 0
    data = text.encode("utf-8")
    while offs < len(data):
        lead = data[offs]
        n = 1 if lead < 0x80 else 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4
        n = min(n, len(data) - offs)
        symbols.append([offs, n, len(symbols) - 1, -1 if offs + n == len(data) else len(symbols) + 1])
        offs += n
    queue = []

    def try_add(left, right):
        if left == -1 or right == -1:
            return
        piece = data[symbols[left][0]:symbols[left][0] + symbols[left][1] + symbols[right][1]]
        tid = token_to_id.get(piece)
        if tid is None:
            return
        heapq.heappush(queue, (-scores[tid], left, right, len(piece)))

    for i in range(1, len(symbols)):
        try_add(i - 1, i)
    while queue:
        _, left, right, size = heapq.heappop(queue)
        ls, rs = symbols[left], symbols[right]
        if ls[1] == 0 or rs[1] == 0 or ls[1] + rs[1] != size:
            continue
        ls[1] += rs[1]
        rs[1] = 0
        ls[3] = rs[3]
        if rs[3] >= 0:
            symbols[rs[3]][2] = left
        try_add(ls[2], left)
        try_add(left, ls[3])
    out = []
    i = 0 if symbols else -1
    while i != -1:
        piece = data[symbols[i][0]:symbols[i][0] + symbols[i][1]]
        tid = token_to_id.get(piece)
        if tid is not None:
            out.append(tid)
        else:
            out.extend(token_to_id[f"<0x{b:02X}>".encode()] for b in piece)
        i = symbols[i][3]
    return out


def llama_cpp_encode(text, add_special, tokens, scores, types, options):
    """llama_vocab::impl::tokenize for LLAMA_VOCAB_TYPE_SPM with parse_special."""
    token_to_id = {t.encode("utf-8"): i for i, t in enumerate(tokens)}
    specials = sorted((i for i, t in enumerate(types) if t in (CONTROL, UNKNOWN, USER_DEFINED)),
                      key=lambda i: -len(tokens[i]))
    fragments = [text]
    for sid in specials:
        pattern, out = tokens[sid], []
        for frag in fragments:
            if isinstance(frag, int):
                out.append(frag)
                continue
            parts = frag.split(pattern)
            for k, part in enumerate(parts):
                if part:
                    out.append(part)
                if k + 1 < len(parts):
                    out.append(sid)
        fragments = out
    ids = []
    if add_special and options["add_bos"]:
        ids.append(1)
    prev_special = True
    for frag in fragments:
        if isinstance(frag, int):
            ids.append(frag)
            prev_special = True
            continue
        piece = (" " if options["add_space_prefix"] and prev_special else "") + frag
        ids.extend(spm_tokenize(piece.replace(" ", "\u2581"), token_to_id, scores))
        prev_special = False
    if add_special and options["add_eos"]:
        ids.append(2)
    return ids


def hf_decoder_twin(tokens, types, options):
    """A HF tokenizer with the same ids, specials and Llama 2's decoder, for the decodes."""
    tok = Tokenizer(models.BPE({t: i for i, t in enumerate(tokens)}, [], byte_fallback=True))
    tok.add_special_tokens([AddedToken(tokens[i], normalized=False, special=True)
                            for i, t in enumerate(types) if t in (CONTROL, UNKNOWN)])
    tok.add_tokens([AddedToken(tokens[i], normalized=False, special=False)
                    for i, t in enumerate(types) if t == USER_DEFINED])
    steps = [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()]
    if options["add_space_prefix"]:
        steps.append(decoders.Strip(" ", 1, 0))
    tok.decoder = decoders.Sequence(steps)
    return tok


def main(corpus, expectations, write_json):
    os.makedirs(GGUF_DIR, exist_ok=True)
    tokens, scores, types = vocabulary()
    for name, options in VARIANTS.items():
        path = os.path.join(GGUF_DIR, f"{name}.gguf")
        write_gguf(path, tokens, scores, types, options)
        rel = os.path.relpath(path, ROOT)
        encode = lambda text, special: llama_cpp_encode(text, special, tokens, scores, types,
                                                        options)
        result = expectations(f"gguf_{name}", rel, None, corpus,
                              tok=hf_decoder_twin(tokens, types, options), encode=encode)
        result["reference"] = "llama.cpp's SPM tokenizer, ported in scripts/dev/make_gguf_fixtures.py"
        out = os.path.join(FIXTURES, f"expected_gguf_{name}.json")
        write_json(out, result)
        print(f"wrote {rel} and {os.path.relpath(out, ROOT)}")
