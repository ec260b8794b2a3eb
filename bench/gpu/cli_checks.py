#!/usr/bin/env python3
"""The `kvfold` binary on the GPU (bench/gpu/run.sh run): greedy `generate --device cuda` against
`--device cpu` (one prompt, and a prompts file through the engine with its GPU memory plan), and
a `serve --device cuda` smoke test (one completion over HTTP, its text checked against the CPU's
greedy continuation); with two GPUs or more, greedy `generate --device cuda --tensor-parallel-size 2`
(NCCL) against one GPU (skipped with fewer). Prints one line per check and writes cli_checks.json.
Usage: cli_checks.py KVFOLD_BINARY MODEL_DIR OUT_DIR. Exit 0 when every check passed."""
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

PROMPT = "Once upon a time"


def run(args, timeout=300):
    p = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def last_lines(text, n=3):
    return " | ".join(text.strip().splitlines()[-n:])


def check_generate(kvfold, model):
    args = ["generate", "--model", model, "--prompt", PROMPT, "--max-tokens", "64",
            "--kv-cache-dtype", "f32"]
    rc_cpu, cpu, err_cpu = run([kvfold] + args + ["--device", "cpu"])
    rc_gpu, gpu, err_gpu = run([kvfold] + args + ["--device", "cuda"])
    if rc_cpu != 0 or rc_gpu != 0:
        return False, f"exit cpu {rc_cpu} gpu {rc_gpu}: {last_lines(err_cpu + err_gpu)}", cpu
    speed = " ".join(l for l in err_gpu.splitlines() if l.startswith(("prefill", "decode")))
    return gpu == cpu, ("same text" if gpu == cpu else f"cpu {cpu!r} gpu {gpu!r}") + \
        f"; gpu {speed}", cpu


def check_engine(kvfold, model):
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        for prompt, n in [(PROMPT, 48), ("The dog", 32), ("Lily", 24), ("One day", 40)]:
            f.write(json.dumps({"prompt": prompt, "max_tokens": n}) + "\n")
        path = f.name
    args = ["generate", "--model", model, "--prompts-file", path, "--kv-cache-dtype", "f32"]
    rc_cpu, cpu, err_cpu = run([kvfold] + args + ["--device", "cpu"])
    rc_gpu, gpu, err_gpu = run([kvfold] + args + ["--device", "cuda"])
    os.unlink(path)
    if rc_cpu != 0 or rc_gpu != 0:
        return False, f"exit cpu {rc_cpu} gpu {rc_gpu}: {last_lines(err_cpu + err_gpu)}"
    ids = lambda out: [json.loads(l).get("token_ids") for l in out.splitlines() if l.strip()]
    memory = [l for l in err_gpu.splitlines() if l.startswith("gpu memory:")]
    same = ids(cpu) == ids(gpu) and len(ids(cpu)) == 4
    return same and bool(memory), ("same token ids" if same else "token ids differ") + \
        f"; {memory[0] if memory else 'no gpu memory line'}"


def gpu_count():
    try:
        p = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
                           capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return len([l for l in p.stdout.splitlines() if l.strip()]) if p.returncode == 0 else 0


def check_tensor_parallel(kvfold, model):
    """Two ranks over NCCL on GPUs 0 and 1: the same greedy text as one GPU."""
    args = ["generate", "--model", model, "--prompt", PROMPT, "--max-tokens", "64",
            "--kv-cache-dtype", "f32", "--device", "cuda"]
    rc_one, one, err_one = run([kvfold] + args)
    rc_two, two, err_two = run([kvfold] + args + ["--tensor-parallel-size", "2"])
    if rc_one != 0 or rc_two != 0:
        return False, f"exit tp1 {rc_one} tp2 {rc_two}: {last_lines(err_one + err_two)}"
    stats = " ".join(l for l in err_two.splitlines() if l.startswith(("decode", "tp:")))
    return two == one, ("same text" if two == one else f"tp1 {one!r} tp2 {two!r}") + f"; {stats}"


def check_serve(kvfold, model, cpu_text):
    proc = subprocess.Popen([kvfold, "serve", "--model", model, "--device", "cuda", "--port", "0",
                             "--grpc-port", "-1", "--kv-cache-dtype", "f32"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        port = None
        deadline = time.time() + 180
        while time.time() < deadline and port is None:
            line = proc.stdout.readline()
            if not line:
                break
            m = re.search(r"serving .* on http://[\d.]+:(\d+)", line)
            if m:
                port = int(m.group(1))
        if port is None:
            proc.kill()
            _, err = proc.communicate(timeout=30)
            return False, f"no 'serving' line (exit {proc.returncode}): {last_lines(err)}"
        body = json.dumps({"model": "stories260K", "prompt": PROMPT, "max_tokens": 16,
                           "temperature": 0}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            status, reply = r.status, json.loads(r.read())
        text = reply["choices"][0]["text"]
        ok = status == 200 and text and (PROMPT + text) == cpu_text[:len(PROMPT + text)]
        return ok, f"HTTP {status}, text {text!r}" + ("" if ok else " (not the CPU's greedy prefix)")
    except Exception as e:  # a failed request is a failed check, reported with the server's log
        return False, f"{type(e).__name__}: {e}"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()


def main():
    kvfold, model, out = sys.argv[1], sys.argv[2], pathlib.Path(sys.argv[3])
    # Without a GPU the suite still exits 0 (its tests skip): so do these checks.
    rc, _, err = run([kvfold, "generate", "--model", model, "--device", "cuda", "--max-tokens", "1"])
    if rc != 0 and "no CUDA device" in err:
        print(f"CLI checks: SKIP: {last_lines(err, 1)}", flush=True)
        (out / "cli_checks.json").write_text(json.dumps(
            [{"check": "kvfold --device cuda", "passed": True, "skipped": True, "detail": "no GPU"}]))
        return 0
    results = []
    ok, detail, cpu_text = check_generate(kvfold, model)
    results.append(("generate --device cuda == cpu", ok, detail))
    ok, detail = check_engine(kvfold, model)
    results.append(("prompts file --device cuda == cpu", ok, detail))
    ok, detail = check_serve(kvfold, model, cpu_text)
    results.append(("serve --device cuda completion", ok, detail))
    if gpu_count() >= 2:
        ok, detail = check_tensor_parallel(kvfold, model)
        results.append(("generate --device cuda --tensor-parallel-size 2 == 1", ok, detail))
    else:
        print("CLI generate --device cuda --tensor-parallel-size 2: SKIP: fewer than 2 GPUs",
              flush=True)
    for name, ok, detail in results:
        print(f"CLI {name}: {'PASS' if ok else 'FAIL'}: {detail}", flush=True)
    (out / "cli_checks.json").write_text(json.dumps(
        [{"check": n, "passed": ok, "detail": d} for n, ok, d in results], indent=1))
    return 0 if all(ok for _, ok, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
