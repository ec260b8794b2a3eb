#!/usr/bin/env python3
"""GGUF fixtures and the default model's golden (dev only; CI never runs this).

1. tests/fixtures/gguf/tiny-llama-linear.{f32,q8_0}.gguf: tests/fixtures/models/tiny-llama-linear
   written as llama.cpp's converter would (architecture "llama", Q/K rows permuted for interleaved
   RoPE, linear RoPE scaling in metadata) with the `gguf` package. f32: every tensor F32, so
   kvfold must reproduce tests/fixtures/golden/tiny-llama-linear.safetensors to float32 rounding.
   q8_0: the 2-D projections Q8_0, the embedding F16, norms F32 (checked against the same golden
   with a looser, stated tolerance).
   tests/fixtures/gguf/tiny-llama3.f32.gguf: tests/fixtures/models/tiny-llama3 (GQA, tied
   embeddings, llama3 RoPE scaling) the same way, its scaling written as llama.cpp's converter
   writes it: no scaling metadata, a rope_freqs.weight tensor of head_dim/2 F32 factors
   (conversion/llama.py generate_extra_tensors, ported below). Checked against
   tests/fixtures/golden/tiny-llama3.safetensors (transformers' llama3 RoPE).
2. tests/fixtures/golden/smollm2-q4_1.safetensors: Hugging Face transformers' logits for the
   default model, ~/.cache/kvfold/SmolLM2-135M-Instruct.Q4_1.gguf, which transformers dequantizes
   to float32 (`from_pretrained(dir, gguf_file=..., dtype=float32)`, eager attention): the full
   last-position logits of a few prompts and 20 greedy tokens.

Needs: pip install gguf torch transformers safetensors numpy.
"""

import datetime
import json
import os
import sys

import numpy as np
import gguf
from safetensors.numpy import load_file, save_file

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
CACHE = os.environ.get("KVFOLD_CACHE_DIR") or os.path.expanduser("~/.cache/kvfold")
SMOLLM2 = "SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPTS = [
    "The capital of France is",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "Once upon a time, a little robot",
]

NAMES = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
    "input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
    "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
}


def gguf_name(hf):
    if hf in NAMES:
        return NAMES[hf]
    parts = hf.split(".")  # model.layers.N.<module>.<sub>.weight
    return f"blk.{parts[2]}.{NAMES['.'.join(parts[3:-1])]}.{parts[-1]}"


def permute(w, n_head):
    """llama.cpp's convert_hf_to_gguf.py LlamaModel.permute (HF rotate-half -> interleaved)."""
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def llama3_rope_factors(rope, theta, dim):
    """llama.cpp's convert_hf_to_gguf (conversion/llama.py, LlamaModel.generate_extra_tensors):
    the per-frequency divisors that llama.cpp applies for Llama 3 RoPE scaling."""
    import math
    import torch

    freqs = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    factor = rope.get("factor", 8.0)
    low_freq_factor = rope.get("low_freq_factor", 1.0)
    high_freq_factor = rope.get("high_freq_factor", 4.0)
    old_context_len = rope.get("original_max_position_embeddings", 8192)
    low_freq_wavelen = old_context_len / low_freq_factor
    high_freq_wavelen = old_context_len / high_freq_factor
    factors = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < high_freq_wavelen:
            factors.append(1)
        elif wavelen > low_freq_wavelen:
            factors.append(factor)
        else:
            smooth = (old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return torch.tensor(factors, dtype=torch.float32).numpy()


def write_tiny(name="tiny-llama-linear", quantized=False):
    folder = os.path.join(ROOT, "tests", "fixtures", "models", name)
    config = json.load(open(os.path.join(folder, "config.json")))
    tensors = {}
    for f in sorted(os.listdir(folder)):
        if f.endswith(".safetensors"):
            tensors.update(load_file(os.path.join(folder, f)))
    suffix = "q8_0" if quantized else "f32"
    path = os.path.join(ROOT, "tests", "fixtures", "gguf", f"{name}.{suffix}.gguf")
    w = gguf.GGUFWriter(path, arch="llama")
    w.add_name(name)
    w.add_block_count(config["num_hidden_layers"])
    w.add_context_length(config["max_position_embeddings"])
    w.add_embedding_length(config["hidden_size"])
    w.add_feed_forward_length(config["intermediate_size"])
    w.add_head_count(config["num_attention_heads"])
    w.add_head_count_kv(config["num_key_value_heads"])
    w.add_key_length(config["head_dim"])
    w.add_value_length(config["head_dim"])
    w.add_layer_norm_rms_eps(config["rms_norm_eps"])
    rope = config.get("rope_parameters") or config["rope_scaling"]
    theta = config.get("rope_theta", rope.get("rope_theta"))
    w.add_rope_freq_base(theta)
    if rope["rope_type"] == "linear":
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(rope["factor"])
    elif rope["rope_type"] == "llama3":
        w.add_tensor("rope_freqs.weight", llama3_rope_factors(rope, theta, config["head_dim"]))
    w.add_bos_token_id(config["bos_token_id"])
    w.add_eos_token_id(config["eos_token_id"])
    w.add_chat_template("{{ messages }}")
    for hf, t in sorted(tensors.items()):
        t = t.astype(np.float32)
        if "q_proj" in hf:
            t = permute(t, config["num_attention_heads"])
        elif "k_proj" in hf:
            t = permute(t, config["num_key_value_heads"])
        name = gguf_name(hf)
        if quantized and t.ndim == 2 and "embed" not in hf:
            q = gguf.quants.quantize(t, gguf.GGMLQuantizationType.Q8_0)
            w.add_tensor(name, q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        elif quantized and "embed" in hf:
            w.add_tensor(name, t.astype(np.float16))
        else:
            w.add_tensor(name, t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")


def write_fuzz_corpus():
    """tests/fuzz/corpus/gguf: a tiny valid llama GGUF (Q8_0, Q4_0, Q4_1, F16, BF16 tensors) and
    corruptions of it: truncated, bad magic, bad version, tensor offset out of range, unknown type."""
    folder = os.path.join(ROOT, "tests", "fuzz", "corpus", "gguf")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "valid_mixed_types")
    rng = np.random.default_rng(4)
    w = gguf.GGUFWriter(path, arch="llama")
    w.add_block_count(1)
    w.add_context_length(64)
    w.add_embedding_length(32)
    w.add_feed_forward_length(32)
    w.add_head_count(2)
    w.add_head_count_kv(1)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_eos_token_id(2)
    Q = gguf.GGMLQuantizationType
    kinds = {"attn_q": Q.Q8_0, "attn_k": Q.Q4_0, "attn_v": Q.Q4_1, "attn_output": Q.F16,
             "ffn_gate": Q.BF16, "ffn_up": Q.Q8_0, "ffn_down": Q.F32}
    rows = {"attn_k": 16, "attn_v": 16}
    w.add_tensor("token_embd.weight", rng.standard_normal((8, 32)).astype(np.float16))
    w.add_tensor("output_norm.weight", np.ones(32, dtype=np.float32))
    w.add_tensor("blk.0.attn_norm.weight", np.ones(32, dtype=np.float32))
    w.add_tensor("blk.0.ffn_norm.weight", np.ones(32, dtype=np.float32))
    for name, kind in kinds.items():
        t = rng.standard_normal((rows.get(name, 32), 32)).astype(np.float32)
        if kind in (Q.F16, Q.F32):
            w.add_tensor(f"blk.0.{name}.weight", t.astype(np.float16 if kind == Q.F16 else np.float32))
        else:
            w.add_tensor(f"blk.0.{name}.weight", gguf.quants.quantize(t, kind), raw_dtype=kind)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    data = open(path, "rb").read()
    variants = {
        "bad_truncated": data[: len(data) - 100],
        "bad_truncated_header": data[:200],
        "bad_magic": b"GGUX" + data[4:],
        "bad_version": data[:4] + (7).to_bytes(4, "little") + data[8:],
    }
    name = b"blk.0.ffn_down.weight"
    at = data.index(name) + len(name) + 4 + 16  # n_dims, two dims: then type, offset
    variants["bad_type_q4_k"] = data[:at] + (12).to_bytes(4, "little") + data[at + 4:]
    variants["bad_offset_oob"] = data[:at + 4] + (1 << 40).to_bytes(8, "little") + data[at + 12:]
    for vname, vdata in variants.items():
        open(os.path.join(folder, vname), "wb").write(vdata)
    print(f"wrote {folder}: {len(variants) + 1} files")


def write_smollm2_golden():
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not os.path.exists(os.path.join(CACHE, SMOLLM2)):
        sys.exit(f"{CACHE}/{SMOLLM2} is absent: run scripts/setup.sh")
    torch.set_num_threads(1)
    tok = AutoTokenizer.from_pretrained(CACHE, gguf_file=SMOLLM2)
    model = AutoModelForCausalLM.from_pretrained(CACHE, gguf_file=SMOLLM2, dtype=torch.float32,
                                                 attn_implementation="eager").eval()
    out, max_abs = {}, 0.0
    with torch.no_grad():
        for i, prompt in enumerate(PROMPTS):
            ids = tok(prompt, add_special_tokens=False)["input_ids"]
            logits = model(torch.tensor([ids])).logits[0, -1].numpy()
            out[f"seq{i}.input_ids"] = np.array(ids, dtype=np.float32)
            out[f"seq{i}.last_logits"] = logits.astype(np.float32)
            max_abs = max(max_abs, float(np.abs(logits).max()))
        ids = tok(PROMPTS[0], add_special_tokens=False)["input_ids"]
        prompt, margins = list(ids), []
        for _ in range(20):
            logits = model(torch.tensor([ids])).logits[0, -1]
            top = torch.topk(logits, 2).values
            margins.append(float(top[0] - top[1]))
            ids.append(int(torch.argmax(logits)))
    out["greedy.prompt_ids"] = np.array(prompt, dtype=np.float32)
    out["greedy.output_ids"] = np.array(ids[len(prompt):], dtype=np.float32)
    out["greedy.margins"] = np.array(margins, dtype=np.float32)
    meta = {
        "format_version": "1", "model": SMOLLM2, "num_seqs": str(len(PROMPTS)),
        "vocab_size": str(model.config.vocab_size), "max_abs_logit": f"{max_abs:.4f}",
        "min_greedy_margin": f"{min(margins):.4f}",
        "greedy_text": tok.decode(ids[len(prompt):]),
        "generator": "scripts/dev/make_gguf_goldens.py",
        "torch_version": torch.__version__, "transformers_version": transformers.__version__,
        "gguf_version": getattr(gguf, "__version__", "?"),
        "date": datetime.date.today().isoformat(),
    }
    path = os.path.join(ROOT, "tests", "fixtures", "golden", "smollm2-q4_1.safetensors")
    save_file(out, path, metadata=meta)
    print(f"wrote {path} ({os.path.getsize(path)} bytes); greedy: {meta['greedy_text']!r}, "
          f"min margin {meta['min_greedy_margin']}, max |logit| {meta['max_abs_logit']}")


if __name__ == "__main__":
    write_tiny(quantized=False)
    write_tiny(quantized=True)
    write_tiny("tiny-llama3")
    write_fuzz_corpus()
    if "--no-smollm2" in sys.argv:
        sys.exit(0)
    write_smollm2_golden()
