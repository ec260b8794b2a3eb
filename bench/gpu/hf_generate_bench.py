#!/usr/bin/env python3
"""Hugging Face transformers' generate on the same GPU, beside kvfold_gpu_decode_bench: the same
two shapes (SmolLM2-135M and Llama-3.2-1B, random BF16 weights from the config, no download), greedy
decoding of --steps new tokens from a one-token prompt per sequence at batch 1, 8, 64, 256.
Prints one line per row: HF model=... batch=... steps=... tok_s=...  (run by bench/gpu/run.sh run;
transformers and torch are in the device machine's image)."""
import argparse
import time

import torch
import transformers

SHAPES = {
    "smollm2-135m-shape-random": dict(hidden_size=576, intermediate_size=1536,
                                      num_hidden_layers=30, num_attention_heads=9,
                                      num_key_value_heads=3, vocab_size=49152,
                                      rope_theta=100000.0),
    "llama-3.2-1b-shape-random": dict(hidden_size=2048, intermediate_size=8192,
                                      num_hidden_layers=16, num_attention_heads=32,
                                      num_key_value_heads=8, vocab_size=128256,
                                      rope_theta=500000.0),
}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", default="1,8,64,256")
    parser.add_argument("--steps", type=int, default=128)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, "
          f"{torch.cuda.get_device_name(0)}")
    for name, shape in SHAPES.items():
        config = transformers.LlamaConfig(max_position_embeddings=8192, tie_word_embeddings=True,
                                          rms_norm_eps=1e-5, **shape)
        torch.manual_seed(0)
        with torch.device("cuda"):
            model = transformers.LlamaForCausalLM(config).to(torch.bfloat16).eval()
        for batch in [int(b) for b in args.batches.split(",")]:
            ids = torch.randint(3, config.vocab_size, (batch, 1), device="cuda")
            kwargs = dict(max_new_tokens=args.steps, min_new_tokens=args.steps, do_sample=False,
                          pad_token_id=0, attention_mask=torch.ones_like(ids))
            with torch.no_grad():
                model.generate(ids, **{**kwargs, "max_new_tokens": 8, "min_new_tokens": 8})
                torch.cuda.synchronize()
                start = time.perf_counter()
                model.generate(ids, **kwargs)
                torch.cuda.synchronize()
                seconds = time.perf_counter() - start
            print(f"HF model={name} batch={batch} steps={args.steps} "
                  f"tok_s={batch * args.steps / seconds:.1f}", flush=True)
        del model
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
