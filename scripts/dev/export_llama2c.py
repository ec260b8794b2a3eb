#!/usr/bin/env python3
"""Exports a Hugging Face Llama folder to llama2.c's legacy .bin files (dev only).

Used to measure llama2.c's own decode speed on the same model kvfold serves (see
bench/llama2c_compare.md). Needs only numpy and safetensors; no torch.

Writes two files:
  <out>.bin        llama2.c model checkpoint, "version 0" (legacy) format, as run.c's
                   checkpoint reader expects it:
                     int32 x 7   dim, hidden_dim, n_layers, n_heads, n_kv_heads,
                                 vocab_size (negative when the classifier is not shared), seq_len
                     float32     token_embedding_table [vocab, dim]
                                 rms_att_weight [L, dim]
                                 wq [L, dim, dim], wk [L, kv_dim, dim], wv [L, kv_dim, dim],
                                 wo [L, dim, dim]
                                 rms_ffn_weight [L, dim]
                                 w1 (gate) [L, hidden, dim], w2 (down) [L, dim, hidden],
                                 w3 (up) [L, hidden, dim]
                                 rms_final_weight [dim]
                                 freq_cis_real [seq_len, head_size/2],
                                 freq_cis_imag [seq_len, head_size/2]  (legacy; run.c skips them)
                                 wcls [vocab, dim]  (only when embeddings are not tied)
  <tokenizer>.bin  llama2.c tokenizer: uint32 max_token_length, then for every token id in
                   order: float32 score, int32 byte length, the UTF-8 bytes (no terminator).

Q/K rows: Hugging Face's convert_llama_weights_to_hf.py permutes q_proj/k_proj rows from Meta's
interleaved RoPE pairs (2i, 2i+1) into the rotate-half layout (i, i + head_dim/2):
    permute(w, n_heads, d1, d2) = w.view(n_heads, d1 // n_heads // 2, 2, d2).transpose(1, 2)
                                   .reshape(d1, d2)
llama2.c rotates interleaved pairs, so this script applies the inverse:
    w.view(n_heads, 2, d1 // n_heads // 2, d2).transpose(1, 2).reshape(d1, d2)
(n_kv_heads and d1 = n_kv_heads * head_dim for K).

Tokenizer: tokens in vocab-id order; "▁" becomes a space; byte-fallback tokens stay the literal
string "<0xNN>" (run.c prints them as raw bytes). Scores: llama2.c's BPE encoder repeatedly merges
the adjacent pair whose merged token has the highest score, so the token made by merge rank r
gets score -r (sentencepiece-style); every other token gets a low score (-1e6) so it never wins
a merge. Decoding only uses the strings.

Usage (from the repository root):
  python3 scripts/dev/export_llama2c.py models/stories260K \
      --out /tmp/llama2c/stories260K.bin --tokenizer-out /tmp/llama2c/tok512.bin
"""

import argparse
import json
import os
import struct
import sys

import numpy as np
from safetensors.numpy import load_file

BASE_SCORE = -1e6


def unpermute_rope(w, n_heads, head_dim):
    """Inverse of HF's permute(): rotate-half row order -> interleaved-pair row order."""
    d1, d2 = w.shape
    assert d1 == n_heads * head_dim, (w.shape, n_heads, head_dim)
    return (w.reshape(n_heads, 2, head_dim // 2, d2)
             .transpose(0, 2, 1, 3)
             .reshape(d1, d2))


def export_model(model_dir, out_path):
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    dim = cfg["hidden_size"]
    hidden = cfg["intermediate_size"]
    n_layers = cfg["num_hidden_layers"]
    n_heads = cfg["num_attention_heads"]
    n_kv_heads = cfg.get("num_key_value_heads", n_heads)
    vocab = cfg["vocab_size"]
    seq_len = cfg["max_position_embeddings"]
    head_dim = cfg.get("head_dim", dim // n_heads)
    theta = float(cfg.get("rope_theta", 10000.0))
    if head_dim * n_heads != dim:
        sys.exit("llama2.c needs head_dim * n_heads == hidden_size")
    if cfg.get("rope_scaling"):
        sys.exit("llama2.c has no RoPE scaling")
    if theta != 10000.0:
        print("warning: llama2.c hard-codes rope_theta 10000, config has %g" % theta,
              file=sys.stderr)

    st = {}
    for name in sorted(os.listdir(model_dir)):
        if name.endswith(".safetensors"):
            st.update(load_file(os.path.join(model_dir, name)))
    st = {k: v.astype(np.float32) for k, v in st.items()}

    emb = st["model.embed_tokens.weight"]
    shared = "lm_head.weight" not in st or np.array_equal(st["lm_head.weight"], emb)
    if cfg.get("tie_word_embeddings", False) and not shared:
        sys.exit("config says tied embeddings but lm_head.weight differs")

    def layer(i, name):
        return st["model.layers.%d.%s" % (i, name)]

    L = range(n_layers)
    tensors = [emb]
    tensors += [layer(i, "input_layernorm.weight") for i in L]
    tensors += [unpermute_rope(layer(i, "self_attn.q_proj.weight"), n_heads, head_dim) for i in L]
    tensors += [unpermute_rope(layer(i, "self_attn.k_proj.weight"), n_kv_heads, head_dim)
                for i in L]
    tensors += [layer(i, "self_attn.v_proj.weight") for i in L]
    tensors += [layer(i, "self_attn.o_proj.weight") for i in L]
    tensors += [layer(i, "post_attention_layernorm.weight") for i in L]
    tensors += [layer(i, "mlp.gate_proj.weight") for i in L]
    tensors += [layer(i, "mlp.down_proj.weight") for i in L]
    tensors += [layer(i, "mlp.up_proj.weight") for i in L]
    tensors += [st["model.norm.weight"]]
    # legacy freq_cis block (run.c computes RoPE itself and skips these)
    freqs = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
    angles = np.outer(np.arange(seq_len, dtype=np.float64), freqs)
    tensors += [np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)]
    if not shared:
        tensors += [st["lm_head.weight"]]

    header = struct.pack("7i", dim, hidden, n_layers, n_heads, n_kv_heads,
                         vocab if shared else -vocab, seq_len)
    with open(out_path, "wb") as f:
        f.write(header)
        for t in tensors:
            f.write(np.ascontiguousarray(t, dtype="<f4").tobytes())
    print("wrote %s: dim=%d hidden=%d layers=%d heads=%d kv_heads=%d vocab=%d seq_len=%d "
          "shared_classifier=%s (%d bytes)" % (out_path, dim, hidden, n_layers, n_heads,
                                               n_kv_heads, vocab, seq_len, shared,
                                               os.path.getsize(out_path)))
    return vocab


def export_tokenizer(model_dir, out_path, vocab_size):
    with open(os.path.join(model_dir, "tokenizer.json"), encoding="utf-8") as f:
        tok = json.load(f)
    model = tok["model"]
    if model.get("type") != "BPE":
        sys.exit("only BPE tokenizer.json is supported")
    id_to_piece = {}
    for piece, i in model["vocab"].items():
        id_to_piece[i] = piece
    for added in tok.get("added_tokens", []):
        id_to_piece.setdefault(added["id"], added["content"])
    n = max(id_to_piece) + 1
    if n != vocab_size or len(id_to_piece) != n:
        sys.exit("tokenizer has %d ids (%d distinct), model vocab is %d"
                 % (n, len(id_to_piece), vocab_size))

    piece_to_id = {p: i for i, p in id_to_piece.items()}
    scores = [BASE_SCORE] * n
    for rank, merge in enumerate(model.get("merges", [])):
        a, b = merge.split(" ") if isinstance(merge, str) else merge
        merged = piece_to_id.get(a + b)
        if merged is None:
            sys.exit("merge %r makes no vocab token" % (merge,))
        # a token could in principle be made by several merges; keep its best (lowest) rank
        scores[merged] = max(scores[merged], float(-rank))

    pieces = []
    for i in range(n):
        s = id_to_piece[i].replace("\u2581", " ")
        pieces.append(s.encode("utf-8"))
    max_len = max(len(b) for b in pieces)
    with open(out_path, "wb") as f:
        f.write(struct.pack("I", max_len))
        for b, sc in zip(pieces, scores):
            f.write(struct.pack("fI", sc, len(b)))
            f.write(b)
    print("wrote %s: %d tokens, max_token_length=%d" % (out_path, n, max_len))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model_dir", help="Hugging Face Llama folder (config.json, *.safetensors, "
                                      "tokenizer.json)")
    ap.add_argument("--out", required=True, help="llama2.c model .bin to write")
    ap.add_argument("--tokenizer-out", required=True, help="llama2.c tokenizer .bin to write")
    args = ap.parse_args()
    vocab = export_model(args.model_dir, args.out)
    export_tokenizer(args.model_dir, args.tokenizer_out, vocab)


if __name__ == "__main__":
    main()
