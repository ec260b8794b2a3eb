#!/usr/bin/env python3
"""Checks the golden files against an independent NumPy Llama/Qwen2 forward pass (dev only).

Reads each model exactly as kvfold must (config.json in either the Hub layout, rope_theta +
rope_scaling, or transformers 5's rope_parameters; single-file or sharded safetensors; F32, F16
or BF16), recomputes every golden sequence's logits in float64 and prints the largest difference
from the float32 transformers logits. That difference is the reference's own float32 error: a
tolerance for kvfold's float32 CPU path should sit well above it. Needs numpy only.

Usage (from the repository root): python3 scripts/dev/check_goldens.py
"""

import json
import os
import struct
import sys

import numpy as np

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MODELS = {
    "tiny-qwen2": "tests/fixtures/models/tiny-qwen2",
    "tiny-llama3": "tests/fixtures/models/tiny-llama3",
    "tiny-llama-linear": "tests/fixtures/models/tiny-llama-linear",
    "stories260K": "models/stories260K",
}


def read_safetensors(path):
    """Returns ({name: float64 array}, metadata) from one .safetensors file."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    body = data[8 + n:]
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        begin, end = t["data_offsets"]
        raw = body[begin:end]
        if t["dtype"] == "F32":
            a = np.frombuffer(raw, dtype="<f4")
        elif t["dtype"] == "F16":
            a = np.frombuffer(raw, dtype="<f2")
        elif t["dtype"] == "BF16":
            a = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            raise ValueError(f"{path}: {name} has dtype {t['dtype']}")
        out[name] = a.astype(np.float64).reshape(t["shape"])
    return out, header.get("__metadata__", {})


def read_weights(folder):
    index = os.path.join(folder, "model.safetensors.index.json")
    if not os.path.exists(index):
        return read_safetensors(os.path.join(folder, "model.safetensors"))[0]
    with open(index) as f:
        shards = sorted(set(json.load(f)["weight_map"].values()))
    weights = {}
    for shard in shards:
        weights.update(read_safetensors(os.path.join(folder, shard))[0])
    return weights


def rope_inv_freq(cfg, head_dim):
    if "rope_parameters" in cfg:  # transformers 5 layout
        rope = dict(cfg["rope_parameters"])
        theta = rope.pop("rope_theta")
    else:  # Hub layout
        theta = cfg.get("rope_theta", 10000.0)
        rope = dict(cfg.get("rope_scaling") or {})
    kind = rope.get("rope_type", rope.get("type", "default"))
    inv = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    if kind == "default":
        return inv
    if kind == "linear":
        return inv / rope["factor"]
    if kind == "llama3":
        old = rope["original_max_position_embeddings"]
        low_wl = old / rope["low_freq_factor"]
        high_wl = old / rope["high_freq_factor"]
        wl = 2 * np.pi / inv
        smooth = (old / wl - rope["low_freq_factor"]) / (
            rope["high_freq_factor"] - rope["low_freq_factor"])
        mid = (1 - smooth) * inv / rope["factor"] + smooth * inv
        return np.where(wl < high_wl, inv, np.where(wl > low_wl, inv / rope["factor"], mid))
    raise ValueError(f"rope type {kind}")


def rms_norm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def rope(x, cos, sin):  # x [heads, T, d]; HF rotate_half layout: pairs (i, i + d/2)
    half = x.shape[-1] // 2
    rotated = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos + rotated * sin


def forward(cfg, w, ids):
    hidden = cfg["hidden_size"]
    n_heads = cfg["num_attention_heads"]
    n_kv = cfg.get("num_key_value_heads", n_heads)
    head_dim = cfg.get("head_dim") or hidden // n_heads
    eps = cfg["rms_norm_eps"]
    T = len(ids)
    ang = np.arange(T)[:, None] * rope_inv_freq(cfg, head_dim)[None, :]
    cos = np.cos(np.concatenate([ang, ang], axis=-1))
    sin = np.sin(np.concatenate([ang, ang], axis=-1))
    mask = np.triu(np.full((T, T), -np.inf), k=1)

    def linear(x, name):
        y = x @ w[name + ".weight"].T
        return y + w[name + ".bias"] if name + ".bias" in w else y

    x = w["model.embed_tokens.weight"][ids]
    for layer in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        h = rms_norm(x, w[p + "input_layernorm.weight"], eps)
        q = linear(h, p + "self_attn.q_proj").reshape(T, n_heads, head_dim).transpose(1, 0, 2)
        k = linear(h, p + "self_attn.k_proj").reshape(T, n_kv, head_dim).transpose(1, 0, 2)
        v = linear(h, p + "self_attn.v_proj").reshape(T, n_kv, head_dim).transpose(1, 0, 2)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        k = np.repeat(k, n_heads // n_kv, axis=0)
        v = np.repeat(v, n_heads // n_kv, axis=0)
        s = q @ k.transpose(0, 2, 1) / np.sqrt(head_dim) + mask
        s = np.exp(s - s.max(axis=-1, keepdims=True))
        s /= s.sum(axis=-1, keepdims=True)
        o = (s @ v).transpose(1, 0, 2).reshape(T, n_heads * head_dim)
        x = x + linear(o, p + "self_attn.o_proj")
        h = rms_norm(x, w[p + "post_attention_layernorm.weight"], eps)
        g = linear(h, p + "mlp.gate_proj")
        x = x + linear(g / (1 + np.exp(-g)) * linear(h, p + "mlp.up_proj"), p + "mlp.down_proj")
    x = rms_norm(x, w["model.norm.weight"], eps)
    head = w.get("lm_head.weight")
    if head is None or cfg.get("tie_word_embeddings", False):
        head = w["model.embed_tokens.weight"]
    return x @ head.T


def main():
    ok = True
    for name, folder in MODELS.items():
        folder = os.path.join(REPO, folder)
        with open(os.path.join(folder, "config.json")) as f:
            cfg = json.load(f)
        weights = read_weights(folder)
        golden, meta = read_safetensors(os.path.join(REPO, "tests/fixtures/golden", name + ".safetensors"))
        worst = 0.0
        for i in range(int(meta["num_seqs"])):
            ids = golden[f"seq{i}.input_ids"].astype(np.int64)
            ref = golden[f"seq{i}.logits"]
            worst = max(worst, float(np.abs(forward(cfg, weights, ids) - ref).max()))
        prompt = golden["greedy.prompt_ids"].astype(np.int64).tolist()
        seq = list(prompt)
        for _ in range(len(golden["greedy.output_ids"])):
            seq.append(int(np.argmax(forward(cfg, weights, np.array(seq))[-1])))
        greedy_ok = seq[len(prompt):] == golden["greedy.output_ids"].astype(np.int64).tolist()
        good = worst < 1e-3 and greedy_ok
        ok &= good
        print(f"{name}: max |numpy f64 - golden| = {worst:.3g} (max |logit| "
              f"{meta['max_abs_logit']}), greedy {'same' if greedy_ok else 'DIFFERENT'}"
              f"{'' if good else '  FAIL'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
