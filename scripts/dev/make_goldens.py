#!/usr/bin/env python3
"""Writes kvfold's golden-numerics fixtures with Hugging Face transformers (dev only).

CI never runs this script and installs no torch: its outputs are committed. It
  1. creates tiny random Llama-family checkpoints (fixed seeds) in Hugging Face layout under
     tests/fixtures/models/<name>/ (config.json, generation_config.json, safetensors weights);
  2. runs each of them, and the pretrained models/stories260K, in float32 with transformers' eager
     attention and writes tests/fixtures/golden/<name>.safetensors: the logits at every position
     of a few token sequences (each run on its own from position 0) and a 20-token greedy decode.

Format version 1 (see tests/fixtures/golden/README.md). Every tensor is F32, token ids included
(kvfold's safetensors reader knows F32/F16/BF16 only; ids < 2^24 are exact in F32):
  seq{i}.input_ids    [len]          token ids of sequence i
  seq{i}.logits       [len, vocab]   logits at every position of sequence i
  greedy.prompt_ids   [p]            prompt of the greedy decode
  greedy.output_ids   [20]           argmax tokens appended one by one (EOS does not stop it)
  greedy.margins      [20]           top-1 minus top-2 logit at each greedy step

  3. for attention plans: stories260K with layer DROP_LAYER's attention removed (its self_attn
     output replaced by zeros, `drop`), and replaced by a calibrated bias beta (`drop` with
     "bias"): stories260K-drop{L}.safetensors and stories260K-drop{L}-bias.safetensors, same
     format; beta (the mean attention output of that layer over the story, ATTENTION.md's
     definition) goes to tests/fixtures/plans/stories260K-beta.safetensors as "beta.{L}".

Usage (from the repository root):
  pip install torch transformers safetensors tokenizers
  python3 scripts/dev/make_goldens.py [--check-greedy200 PATH] [--only-plans]
"""

import argparse
import copy
import datetime
import json
import os
import platform
import shutil
import sys

import numpy as np
import safetensors
import torch
import transformers
from safetensors.numpy import save_file
from transformers import (LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM)

FORMAT_VERSION = "1"
GREEDY_STEPS = 20
REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FIXTURES = os.path.join(REPO, "tests", "fixtures")

# A short story for stories260K's longest sequence: real text keeps its activations realistic.
STORY = ("Once upon a time, there was a little boy named Tom. He liked to play with his red ball "
         "in the garden. One day, the ball rolled under a big tree. Tom was sad, but his friend "
         "the cat helped him find it. They played together all day and were very happy. "
         "When the sun went down, Tom's mom called him inside for dinner. She made soup and "
         "bread. Tom told her about the ball and the cat. His mom smiled and said, \"You are a "
         "good friend.\" Tom went to bed and dreamed about the garden.")


def tiny_qwen2():
    config = Qwen2Config(
        vocab_size=272, hidden_size=64, intermediate_size=172, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        rope_theta=1e6, rms_norm_eps=1e-6, tie_word_embeddings=False, initializer_range=0.1,
        bos_token_id=1, eos_token_id=2, use_sliding_window=False)
    return dict(name="tiny-qwen2", cls=Qwen2ForCausalLM, config=config, dtype=torch.bfloat16,
                seed=1001, bias_std=0.3, max_shard_size=None, hub_layout=True,
                lengths=[1, 7, 33, 80])


def tiny_llama3():
    config = LlamaConfig(
        vocab_size=300, hidden_size=48, intermediate_size=128, num_hidden_layers=3,
        num_attention_heads=8, num_key_value_heads=2, head_dim=16, max_position_embeddings=256,
        rope_theta=10000.0, rms_norm_eps=1e-5, tie_word_embeddings=True, initializer_range=0.15,
        # head_dim 16 and theta 1e4 give wavelengths 2*pi*1e4^(i/8) = 6.3, 19.9, 62.8, 199, ...
        # With original_max 64: below 64/4=16 kept (i=0), 16..64 smoothed (i=1,2), above 64
        # divided by 8 (i>=3): every llama3 band is exercised.
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
        bos_token_id=1, eos_token_id=2)
    return dict(name="tiny-llama3", cls=LlamaForCausalLM, config=config, dtype=torch.float16,
                seed=2002, bias_std=None, max_shard_size="100KB", hub_layout=True,
                lengths=[1, 7, 33, 100])


def tiny_llama_linear():
    config = LlamaConfig(
        vocab_size=256, hidden_size=32, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
        rope_theta=10000.0, rms_norm_eps=1e-5, tie_word_embeddings=False, initializer_range=0.15,
        rope_scaling={"rope_type": "linear", "factor": 2.0}, bos_token_id=1, eos_token_id=2)
    # Saved in transformers 5's own config layout (rope_parameters), so loaders meet both.
    return dict(name="tiny-llama-linear", cls=LlamaForCausalLM, config=config,
                dtype=torch.float32, seed=3003, bias_std=None, max_shard_size=None,
                hub_layout=False, lengths=[1, 7, 33, 70])


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def to_hub_layout(config_path, dtype):
    """Rewrites a transformers-5 config.json the way Hub checkpoints spell it (rope_theta and
    rope_scaling at the top level, torch_dtype), which is what kvfold meets in the wild."""
    with open(config_path) as f:
        cfg = json.load(f)
    rope = dict(cfg.pop("rope_parameters"))
    cfg["rope_theta"] = rope.pop("rope_theta")
    cfg["rope_scaling"] = None if rope.get("rope_type", "default") == "default" else rope
    cfg.pop("dtype", None)
    cfg["torch_dtype"] = str(dtype).replace("torch.", "")
    with open(config_path, "w") as f:
        json.dump(dict(sorted(cfg.items())), f, indent=2)
        f.write("\n")


def randomize(model, spec):
    """Random init leaves norms at 1 and biases at 0; make them random so a missing norm weight
    or bias changes the logits."""
    gen = torch.Generator().manual_seed(spec["seed"] + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            elif name.endswith(".bias"):
                p.copy_(spec["bias_std"] * torch.randn(p.shape, generator=gen))


def load_fp32(cls, folder):
    model = cls.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager")
    return model.eval()


def make_tiny_model(spec):
    folder = os.path.join(FIXTURES, "models", spec["name"])
    torch.manual_seed(spec["seed"])
    spec["config"]._attn_implementation = "eager"
    model = spec["cls"](spec["config"]).eval()
    randomize(model, spec)
    if spec["bias_std"] is not None:
        assert any(n.endswith("q_proj.bias") for n, _ in model.named_parameters())
    # Round the parameters (not the float32 RoPE buffers: model.to(dtype) would round those too)
    # to the storage dtype, then compute in F32 like the reloaded checkpoint does.
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(spec["dtype"]).to(torch.float32))

    shutil.rmtree(folder, ignore_errors=True)
    kwargs = {"max_shard_size": spec["max_shard_size"]} if spec["max_shard_size"] else {}
    copy.deepcopy(model).to(spec["dtype"]).save_pretrained(folder, **kwargs)
    if spec["hub_layout"]:
        to_hub_layout(os.path.join(folder, "config.json"), spec["dtype"])
    for f in os.listdir(folder):
        os.chmod(os.path.join(folder, f), 0o644)

    # The checkpoint must load back to the same model: same weights, identical logits.
    files = os.listdir(folder)
    if spec["max_shard_size"]:
        shards = [f for f in files if f.startswith("model-") and f.endswith(".safetensors")]
        assert "model.safetensors.index.json" in files and len(shards) >= 2, files
        with open(os.path.join(folder, "model.safetensors.index.json")) as f:
            assert set(json.load(f)["weight_map"].values()) == set(shards)
    reloaded = load_fp32(spec["cls"], folder)
    ids = torch.randint(0, spec["config"].vocab_size, (1, 40),
                        generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        a = model(ids).logits
        b = reloaded(ids).logits
    assert torch.equal(a, b), f"{spec['name']}: reload differs by {(a - b).abs().max()}"
    rope_a = model.model.rotary_emb.inv_freq
    rope_b = reloaded.model.rotary_emb.inv_freq
    assert torch.equal(rope_a, rope_b), f"{spec['name']}: rope frequencies differ after reload"
    log(f"{spec['name']}: reload identical; files {sorted(files)}")
    return folder, reloaded


def greedy(model, prompt, steps):
    """Manual greedy loop over full prefixes (no KV cache), cross-checked with generate()."""
    ids = list(prompt)
    margins = []
    with torch.no_grad():
        for _ in range(steps):
            logits = model(torch.tensor([ids])).logits[0, -1]
            top = torch.topk(logits, 2).values
            margins.append(float(top[0] - top[1]))
            ids.append(int(torch.argmax(logits)))
        out = model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt),
                             dtype=torch.long), do_sample=False, max_new_tokens=steps,
                             min_new_tokens=steps, eos_token_id=None, pad_token_id=0)
    assert out[0].tolist() == ids, "generate() and the manual greedy loop disagree"
    return ids[len(prompt):], margins


def sequences(name, vocab, lengths, tokenizer_path=None):
    gen = np.random.default_rng(sum(map(ord, name)))  # fixed per model, no hash salt
    seqs = [gen.integers(0, vocab, size=n).tolist() for n in lengths]
    if tokenizer_path:
        # stories260K: the longest sequence is BOS + real text.
        from tokenizers import Tokenizer
        text = Tokenizer.from_file(tokenizer_path).encode(STORY, add_special_tokens=False).ids
        seqs[-1] = ([1] + text)[:lengths[-1]]
        assert len(seqs[-1]) == lengths[-1], f"story has only {len(text) + 1} tokens"
    return seqs


def write_golden(name, model_folder, model, lengths, dtype_note, tokenizer_path=None,
                 extra_metadata=None):
    vocab = model.config.vocab_size
    seqs = sequences(name, vocab, lengths, tokenizer_path)
    tensors = {}
    max_abs = 0.0
    with torch.no_grad():
        for i, ids in enumerate(seqs):
            logits = model(torch.tensor([ids])).logits[0].float().numpy()
            assert logits.shape == (len(ids), vocab)
            tensors[f"seq{i}.input_ids"] = np.asarray(ids, dtype=np.float32)
            tensors[f"seq{i}.logits"] = np.ascontiguousarray(logits, dtype=np.float32)
            max_abs = max(max_abs, float(np.abs(logits).max()))
    # stories260K: a real-text prompt (BOS + the story's first 6 tokens).
    prompt = seqs[-1][:7] if tokenizer_path else seqs[1]
    out, margins = greedy(model, prompt, GREEDY_STEPS)
    tensors["greedy.prompt_ids"] = np.asarray(prompt, dtype=np.float32)
    tensors["greedy.output_ids"] = np.asarray(out, dtype=np.float32)
    tensors["greedy.margins"] = np.asarray(margins, dtype=np.float32)
    metadata = {
        "format_version": FORMAT_VERSION,
        "model": name,
        "model_folder": os.path.relpath(model_folder, REPO),
        "num_seqs": str(len(seqs)),
        "seq_lengths": ",".join(str(len(s)) for s in seqs),
        "vocab_size": str(vocab),
        "greedy_steps": str(GREEDY_STEPS),
        "greedy_note": "argmax each step, EOS does not stop it, prefix recomputed without cache",
        "dtype_note": dtype_note,
        "ids_note": "token ids stored as F32 (exact below 2^24)",
        "max_abs_logit": f"{max_abs:.6g}",
        "min_greedy_margin": f"{min(margins):.6g}",
        "generator": "scripts/dev/make_goldens.py",
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "safetensors_version": safetensors.__version__,
        "numpy_version": np.__version__,
        "python_version": platform.python_version(),
        "date": datetime.date.today().isoformat(),
    }
    metadata.update(extra_metadata or {})
    path = os.path.join(FIXTURES, "golden", f"{name}.safetensors")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    save_file(tensors, path, metadata=metadata)
    log(f"{name}: lengths {metadata['seq_lengths']}, max |logit| {max_abs:.4g}, "
        f"min greedy margin {min(margins):.4g}, greedy {out}, {os.path.getsize(path)} bytes")


def check_greedy200(model, tokenizer_path, expected_path):
    """stories260K: 200 greedy tokens after BOS (stopping early at BOS), decoded, compared with a
    reference text."""
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(tokenizer_path)
    ids = [1]
    margins = []
    with torch.no_grad():
        while len(ids) < 201:
            logits = model(torch.tensor([ids])).logits[0, -1]
            top = torch.topk(logits, 2).values
            margins.append(float(top[0] - top[1]))
            nxt = int(torch.argmax(logits))
            if nxt == 1:
                break
            ids.append(nxt)
    text = tok.decode(ids[1:], skip_special_tokens=True)
    with open(expected_path) as f:
        expected = f.read()
    same = text == expected
    log(f"greedy200: BOS + {len(ids) - 1} tokens, min margin {min(margins):.4g}: "
        f"{'MATCHES' if same else 'DIFFERS from'} {expected_path}")
    if not same:
        n = next((i for i, (a, b) in enumerate(zip(text, expected)) if a != b),
                 min(len(text), len(expected)))
        log(f"  first difference at char {n}: ours {text[n:n + 60]!r} vs {expected[n:n + 60]!r}")
    return same


DROP_LAYER = 2


def replace_attention(model, layer, output):
    """Makes layer `layer`'s self-attention return `output(attn_output)` instead; the decoder layer
    still adds it to the residual stream. Returns the hook handle."""
    def hook(module, args, out):
        return (output(out[0]),) + tuple(out[1:])
    return model.model.layers[layer].self_attn.register_forward_hook(hook)


def mean_attention_output(model, layer, ids):
    """beta: the layer's attention output (o_proj applied) averaged over every position of ids."""
    seen = []
    handle = replace_attention(model, layer, lambda o: seen.append(o.detach().clone()) or o)
    with torch.no_grad():
        model(torch.tensor([ids]))
    handle.remove()
    return seen[0][0].mean(dim=0)


def write_plan_goldens(model, folder, tokenizer):
    """stories260K with layer DROP_LAYER's attention dropped, without and with a bias."""
    lengths = [7, 80]
    story = sequences("stories260K-drop", model.config.vocab_size, lengths, tokenizer)[-1]
    beta = mean_attention_output(model, DROP_LAYER, story)
    plans = os.path.join(FIXTURES, "plans")
    os.makedirs(plans, exist_ok=True)
    save_file({f"beta.{DROP_LAYER}": beta.float().numpy()},
              os.path.join(plans, "stories260K-beta.safetensors"),
              metadata={"note": f"mean self_attn output of layer {DROP_LAYER} over the golden "
                                "story (80 tokens); scripts/dev/make_goldens.py"})
    for suffix, output, note in (
            ("", lambda o: torch.zeros_like(o), "self_attn output replaced by zeros"),
            ("-bias", lambda o: torch.zeros_like(o) + beta,
             f"self_attn output replaced by beta.{DROP_LAYER} of plans/stories260K-beta")):
        handle = replace_attention(model, DROP_LAYER, output)
        write_golden(f"stories260K-drop{DROP_LAYER}{suffix}", folder, model, lengths,
                     "weights stored as float32; logits computed in float32, eager attention",
                     tokenizer_path=tokenizer,
                     extra_metadata={"dropped_layer": str(DROP_LAYER), "drop_note": note})
        handle.remove()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check-greedy200", metavar="PATH",
                        help="also check stories260K's greedy text from BOS against PATH")
    parser.add_argument("--only-plans", action="store_true",
                        help="write only the attention-plan goldens (stories260K-drop*)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)

    for make in () if args.only_plans else (tiny_qwen2, tiny_llama3, tiny_llama_linear):
        spec = make()
        folder, model = make_tiny_model(spec)
        size = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))
        assert size < 300_000, f"{spec['name']} is {size} bytes"
        note = (f"weights stored as {str(spec['dtype']).replace('torch.', '')}, "
                "upcast to float32 by transformers; logits computed in float32, eager attention")
        write_golden(spec["name"], folder, model, spec["lengths"], note)

    folder = os.path.join(REPO, "models", "stories260K")
    tokenizer = os.path.join(folder, "tokenizer.json")
    model = load_fp32(LlamaForCausalLM, folder)
    write_plan_goldens(model, folder, tokenizer)
    if args.only_plans:
        return
    write_golden("stories260K", folder, model, [1, 7, 33, 130],
                 "weights stored as float32; logits computed in float32, eager attention",
                 tokenizer_path=tokenizer)
    if args.check_greedy200:
        check_greedy200(model, tokenizer, args.check_greedy200)


if __name__ == "__main__":
    main()
