#!/usr/bin/env python3
"""Serving benchmark client for OpenAI-compatible servers, after `vllm bench serve`.

Sends synthetic prompts to /v1/completions or /v1/chat/completions, streaming, at a fixed
number of in-flight requests (--concurrency) or with Poisson arrivals (--request-rate, optional
--max-concurrency), and measures from the SSE stream:
    TTFT  time to the first chunk that carries text,
    ITL   gaps between successive chunks that carry text (all requests pooled),
    TPOT  (e2e - TTFT) / (output tokens - 1) per request with more than one output token,
    E2E   request latency;
output token counts come from the final usage chunk (stream_options.include_usage), else from
the number of text chunks. Prints a table; --result-json writes the summary and per-request
data; --plot draws a PNG of this run beside any --plot-include JSONs (bench/plot_serve.py).

    bench/serve_bench.py --base-url http://127.0.0.1:8000 --model NAME --endpoint completions \
            --concurrency 16 --num-prompts 64 --input-len 128 --output-len 64 --result-json r.json

Prompts are random common English words (distinct per request, so prefix caches do not hit),
with lengths uniform in [len*(1-r), len*(1+r)] (--range-ratio r) as vLLM's random dataset.
--input-len is the prompt length the server reports (usage.prompt_tokens, BOS and any chat
template included). Its words-per-token rate is calibrated before the run from two one-token
requests (two points give the template/BOS overhead and the rate per word); --tokenizer-file
TOKENIZER_JSON (PyPI `tokenizers`) sizes the text exactly in that tokenizer instead (text tokens
only, no template). Requests send max_tokens = output len and ignore_eos: true (vLLM,
llama-server and kvfold take both; llama-server reads max_tokens as n_predict), temperature 0.

Needs PyPI aiohttp (`pip install aiohttp`); --plot needs matplotlib, --tokenizer-file tokenizers.
Only talk to servers on this machine (loopback).
"""

import argparse
import asyncio
import json
import math
import os
import platform
import random
import sys
import time
from dataclasses import asdict, dataclass, field

# Common short English words; in GPT-2-style BPE vocabularies (SmolLM2, Llama 3, Qwen) each is
# one token with its leading space, so a prompt of N words is close to N tokens before calibration.
WORDS = """
the of and to in is that for it as was with be by on not he this are or his from at which but
have an they you were her she there been one all we their has would when if so no what up out
who them some could him into its then two more these time very your may other about than only
now over such our like man most me made after also did many off before must well back through
years much where way down should because each just those how too good people state work world
still own see men long here get both between life being under never day same another know while
last might great old year come since against go came right used take three place house use
during without again home around small however found thought went say part once general high
upon school every great number water country always power might left next end light ask city
play fact show line land hand need open page group study story point name table book word
game river money night music paper family water road morning food tree color market window
""".split()


@dataclass
class RequestResult:
    """What one request measured; times in seconds."""

    prompt_words: int = 0
    target_input_len: int = 0
    target_output_len: int = 0
    success: bool = False
    error: str = ""
    start: float = 0.0  # since the benchmark start
    ttft: float = 0.0
    e2e: float = 0.0
    itl: list = field(default_factory=list)
    prompt_tokens: int = 0  # from usage; 0 when the server sent none
    output_tokens: int = 0  # from usage, else the number of text chunks
    text_chunks: int = 0
    usage_seen: bool = False


# ------------------------------------------------------------------------------------------
# Prompts


def sample_lengths(rng, mean, ratio, n):
    """Uniform integers in [mean*(1-ratio), mean*(1+ratio)], at least 1 (vLLM's random dataset)."""
    low = max(1, int(math.floor(mean * (1 - ratio))))
    high = max(low, int(math.ceil(mean * (1 + ratio))))
    return [rng.randint(low, high) for _ in range(n)]


def random_words(rng, n):
    return " ".join(rng.choice(WORDS) for _ in range(n))


class TokenizerSizer:
    """Sizes prompts exactly with a Hugging Face tokenizer.json (text tokens, no special tokens)."""

    def __init__(self, path):
        from tokenizers import Tokenizer  # PyPI tokenizers

        self.tok = Tokenizer.from_file(path)

    def count(self, text):
        return len(self.tok.encode(text, add_special_tokens=False).ids)

    def make(self, rng, n_tokens):
        text = random_words(rng, n_tokens + 8)
        ids = self.tok.encode(text, add_special_tokens=False).ids[:n_tokens]
        text = self.tok.decode(ids)
        # Decoding and re-encoding can merge tokens differently at the cut: pad with words.
        while self.count(text) < n_tokens:
            text += " " + rng.choice(WORDS)
        return text


# ------------------------------------------------------------------------------------------
# HTTP


def request_body(args, prompt, max_tokens):
    body = {
        "model": args.model,
        "max_tokens": max_tokens,
        "temperature": args.temperature,
        "ignore_eos": not args.no_ignore_eos,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if args.endpoint == "chat":
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    body.update(args.extra_body)
    return body


def endpoint_url(args):
    path = "/v1/chat/completions" if args.endpoint == "chat" else "/v1/completions"
    return args.base_url.rstrip("/") + path


def chunk_text(args, choice):
    if args.endpoint == "chat":
        delta = choice.get("delta") or {}
        return (delta.get("content") or "") + (delta.get("reasoning_content") or "")
    return choice.get("text") or ""


async def send_request(session, args, prompt, max_tokens, result, t0):
    """Streams one request into `result` (times relative to t0 = the benchmark start)."""
    start = time.perf_counter()
    result.start = start - t0
    last = start
    try:
        async with session.post(
            endpoint_url(args), json=request_body(args, prompt, max_tokens), headers=args.headers
        ) as resp:
            if resp.status != 200:
                result.error = f"HTTP {resp.status}: {(await resp.text())[:300]}"
                return result
            buf = b""
            done = False
            async for piece in resp.content.iter_any():
                buf += piece
                # SSE events are separated by a blank line; each of ours is one `data:` line.
                while b"\n" in buf and not done:
                    line, buf = buf.split(b"\n", 1)
                    line = line.strip()
                    if not line.startswith(b"data:"):
                        continue  # blank separators, `: ping` comments, event names
                    data = line[5:].strip()
                    if data == b"[DONE]":
                        done = True
                        break
                    now = time.perf_counter()
                    chunk = json.loads(data)
                    if "error" in chunk:
                        result.error = f"stream error: {json.dumps(chunk['error'])[:300]}"
                        return result
                    if chunk.get("usage"):
                        result.usage_seen = True
                        result.prompt_tokens = chunk["usage"].get("prompt_tokens", 0) or 0
                        result.output_tokens = chunk["usage"].get("completion_tokens", 0) or 0
                    for choice in chunk.get("choices") or []:
                        if chunk_text(args, choice):
                            if result.text_chunks == 0:
                                result.ttft = now - start
                            else:
                                result.itl.append(now - last)
                            last = now
                            result.text_chunks += 1
                if done:
                    break
        result.e2e = time.perf_counter() - start
        if not result.usage_seen:
            result.output_tokens = result.text_chunks
        if result.text_chunks == 0:
            result.error = "no text in the stream"
            return result
        result.success = True
    except (
        Exception
    ) as e:  # pylint: disable=broad-except  # any failure counts as one failed request
        result.error = f"{type(e).__name__}: {e}"[:300]
    return result


# ------------------------------------------------------------------------------------------
# Load


async def run_load(session, args, prompts, output_lens, results):
    """Dispatches every request: all at once under a concurrency cap, or at Poisson arrivals."""
    rng = random.Random(args.seed + 1)
    cap = args.concurrency or args.max_concurrency
    sem = asyncio.Semaphore(cap) if cap else None
    t0 = time.perf_counter()

    async def one(i):
        if sem:
            async with sem:
                return await send_request(session, args, prompts[i], output_lens[i], results[i], t0)
        return await send_request(session, args, prompts[i], output_lens[i], results[i], t0)

    tasks = []
    for i in range(len(prompts)):
        tasks.append(asyncio.create_task(one(i)))
        if args.request_rate and i + 1 < len(prompts):
            await asyncio.sleep(rng.expovariate(args.request_rate))
    await asyncio.gather(*tasks)
    return time.perf_counter() - t0


async def calibrate(session, args, rng):
    """Fits prompt_tokens = a + b * words from two one-token requests; returns (a, b)."""
    points = []
    for words in (max(8, args.input_len // 2), max(16, args.input_len)):
        r = RequestResult()
        await send_request(session, args, random_words(rng, words), 1, r, time.perf_counter())
        if not r.success or not r.usage_seen or r.prompt_tokens <= 0:
            return None, (r.error or "the server reported no usage.prompt_tokens")
        points.append((words, r.prompt_tokens))
    (w1, p1), (w2, p2) = points
    b = (p2 - p1) / (w2 - w1) if w2 != w1 else p2 / w2
    if b <= 0:
        return None, f"no growth in prompt_tokens between {w1} and {w2} words"
    return (p1 - b * w1, b), ""


# ------------------------------------------------------------------------------------------
# Metrics


def percentile(values, p):
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return float("nan")
    v = sorted(values)
    k = (len(v) - 1) * p / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def stats_ms(values):
    ms = [x * 1000.0 for x in values]
    if not ms:
        return {k: float("nan") for k in ("mean", "p50", "p90", "p99")}
    return {
        "mean": sum(ms) / len(ms),
        "p50": percentile(ms, 50),
        "p90": percentile(ms, 90),
        "p99": percentile(ms, 99),
    }


def summarize(results, duration):
    ok = [r for r in results if r.success]
    out_tokens = sum(r.output_tokens for r in ok)
    in_tokens = sum(r.prompt_tokens or r.target_input_len for r in ok)
    tpots = [(r.e2e - r.ttft) / (r.output_tokens - 1) for r in ok if r.output_tokens > 1]
    itls = [x for r in ok for x in r.itl]
    return {
        "completed": len(ok),
        "failed": len(results) - len(ok),
        "duration_s": duration,
        "total_input_tokens": in_tokens,
        "total_output_tokens": out_tokens,
        "mean_input_tokens": in_tokens / len(ok) if ok else float("nan"),
        "mean_output_tokens": out_tokens / len(ok) if ok else float("nan"),
        "usage_reported": all(r.usage_seen for r in ok),
        "request_throughput": len(ok) / duration,
        "output_throughput": out_tokens / duration,
        "total_token_throughput": (in_tokens + out_tokens) / duration,
        "ttft_ms": stats_ms([r.ttft for r in ok]),
        "tpot_ms": stats_ms(tpots),
        "itl_ms": stats_ms(itls),
        "e2el_ms": stats_ms([r.e2e for r in ok]),
    }


STAT_NAMES = {"mean": "Mean", "p50": "Median", "p90": "P90", "p99": "P99"}


def format_table(result):
    s = result["summary"]
    rows = [
        ("Label", result["label"]),
        ("Endpoint", f"{result['config']['endpoint']}  {result['config']['base_url']}"),
        ("Load", result["load"]),
        ("Successful requests", s["completed"]),
        ("Failed requests", s["failed"]),
        ("Benchmark duration (s)", f"{s['duration_s']:.2f}"),
        ("Total input tokens", s["total_input_tokens"]),
        ("Total generated tokens", s["total_output_tokens"]),
        (
            "Mean input / output tokens",
            f"{s['mean_input_tokens']:.1f} / {s['mean_output_tokens']:.1f}",
        ),
        ("Request throughput (req/s)", f"{s['request_throughput']:.2f}"),
        ("Output token throughput (tok/s)", f"{s['output_throughput']:.2f}"),
        ("Total token throughput (tok/s)", f"{s['total_token_throughput']:.2f}"),
    ]
    lines = ["=" * 20 + " Serving Benchmark Result " + "=" * 20]
    lines += [f"{k + ':':<44}{v}" for k, v in rows]
    for key, title in (
        ("ttft_ms", "Time to First Token"),
        ("tpot_ms", "Time per Output Token (excl. 1st)"),
        ("itl_ms", "Inter-token Latency"),
        ("e2el_ms", "End-to-end Latency"),
    ):
        lines.append(f"{'-' * 20} {title} {'-' * max(1, 45 - len(title))}")
        for stat in ("mean", "p50", "p90", "p99"):
            name = f"{STAT_NAMES[stat]} {key.split('_')[0].upper()} (ms):"
            lines.append(f"{name:<44}{s[key][stat]:.2f}")
    lines.append("=" * 66)
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--base-url", default="http://127.0.0.1:8000")
    p.add_argument(
        "--model",
        default=None,
        help="model name sent in requests (default: the " "first of GET /v1/models)",
    )
    p.add_argument("--endpoint", choices=("completions", "chat"), default="completions")
    p.add_argument(
        "--label",
        default=None,
        help="name of this run in tables and plots " "(default: the model name and port)",
    )
    load = p.add_mutually_exclusive_group()
    load.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="keep N requests in flight (all dispatched at once, N at a time)",
    )
    load.add_argument(
        "--request-rate", type=float, default=None, help="Poisson arrivals at R requests/s"
    )
    p.add_argument(
        "--max-concurrency",
        type=int,
        default=None,
        help="cap on in-flight requests with --request-rate",
    )
    p.add_argument("--num-prompts", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--input-len", type=int, default=128)
    p.add_argument("--output-len", type=int, default=64)
    p.add_argument("--range-ratio", type=float, default=0.0)
    p.add_argument(
        "--tokenizer-file",
        default=None,
        help="a Hugging Face tokenizer.json to size prompts exactly (skips calibration)",
    )
    p.add_argument(
        "--no-calibrate",
        action="store_true",
        help="take one word as one token instead of calibrating against the server",
    )
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--no-ignore-eos", action="store_true", help="do not send ignore_eos: true")
    p.add_argument(
        "--extra-body",
        type=json.loads,
        default={},
        help="JSON object merged into every request body, e.g. '{\"n_predict\": 64}'",
    )
    p.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY"))
    p.add_argument(
        "--num-warmups",
        type=int,
        default=1,
        help="untimed full-size requests before the run (after calibration)",
    )
    p.add_argument("--request-timeout", type=float, default=600.0, help="seconds per request")
    p.add_argument("--result-json", default=None)
    p.add_argument("--plot", default=None, help="PNG of this run beside the --plot-include JSONs")
    p.add_argument("--plot-include", nargs="*", default=[], help="result JSONs to plot beside")
    args = p.parse_args(argv)
    if args.request_rate is None and args.concurrency is None:
        args.concurrency = 16
    if args.concurrency is not None and args.concurrency < 1:
        p.error("--concurrency must be at least 1")
    if args.request_rate is not None and args.request_rate <= 0:
        p.error("--request-rate must be positive")
    if not 0 <= args.range_ratio < 1:
        p.error("--range-ratio must be in [0, 1)")
    args.headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    return args


async def first_model(session, args):
    async with session.get(args.base_url.rstrip("/") + "/v1/models", headers=args.headers) as r:
        r.raise_for_status()
        data = (await r.json()).get("data") or []
        if not data:
            raise RuntimeError("GET /v1/models listed no model; pass --model")
        return data[0]["id"]


async def main_async(args):
    import aiohttp  # PyPI aiohttp

    rng = random.Random(args.seed)
    n = args.num_prompts
    input_lens = sample_lengths(rng, args.input_len, args.range_ratio, n)
    output_lens = sample_lengths(rng, args.output_len, args.range_ratio, n)

    timeout = aiohttp.ClientTimeout(total=args.request_timeout)
    # A fresh connection per request, as vLLM's original benchmark client (a session per
    # request): llama-server (cpp-httplib) may close a connection after a stream, and reusing it
    # fails the next request; a loopback connect costs well under a millisecond.
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        if args.model is None:
            args.model = await first_model(session, args)
        if args.label is None:
            args.label = f"{args.model} @ {args.base_url.rsplit(':', 1)[-1].strip('/')}"

        # Prompt text for each target length.
        sizing = "one word per token"
        fit = None
        if args.tokenizer_file:
            sizer = TokenizerSizer(args.tokenizer_file)
            prompts = [sizer.make(rng, k) for k in input_lens]
            sizing = f"tokenizer {args.tokenizer_file} (text tokens)"
        else:
            if not args.no_calibrate:
                fit, why = await calibrate(session, args, random.Random(args.seed + 2))
                if fit is None:
                    print(f"note: calibration failed ({why}); one word per token", file=sys.stderr)
                else:
                    sizing = f"calibrated: prompt_tokens = {fit[0]:.1f} + {fit[1]:.3f} * words"
            a, b = fit if fit else (0.0, 1.0)
            prompts = [random_words(rng, max(1, round((k - a) / b))) for k in input_lens]
        results = [
            RequestResult(prompt_words=len(p.split()), target_input_len=k, target_output_len=o)
            for p, k, o in zip(prompts, input_lens, output_lens)
        ]

        for w in range(args.num_warmups):
            r = RequestResult()
            await send_request(
                session,
                args,
                random_words(rng, len(prompts[w % n].split())),
                args.output_len,
                r,
                time.perf_counter(),
            )
            if not r.success:
                raise SystemExit(f"warm-up request failed: {r.error}")

        started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        load_before = os.getloadavg()
        duration = await run_load(session, args, prompts, output_lens, results)
        load_after = os.getloadavg()

    if args.request_rate:
        load = f"Poisson {args.request_rate:g} req/s" + (
            f", max concurrency {args.max_concurrency}" if args.max_concurrency else ""
        )
    else:
        load = f"concurrency {args.concurrency}"
    config = {k: v for k, v in vars(args).items() if k not in ("headers", "api_key")}
    result = {
        "label": args.label,
        "load": load,
        "date": started,  # when the timed run began
        "host": platform.node(),
        "nproc": os.cpu_count(),
        "loadavg_before": list(load_before),
        "loadavg_after": list(load_after),
        "prompt_sizing": sizing,
        "config": config,
        "summary": summarize(results, duration),
        "requests": [asdict(r) for r in results],
    }
    errors = sorted({r.error for r in results if r.error})
    result["errors"] = errors
    return result


def main(argv=None):
    args = parse_args(argv)
    import aiohttp  # PyPI aiohttp

    try:
        result = asyncio.run(main_async(args))
    except (aiohttp.ClientError, OSError) as e:  # no server, or /v1/models failed
        print(f"error: {args.base_url}: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    print(format_table(result))
    print(
        f"prompt sizing: {result['prompt_sizing']}; load average before/after: "
        f"{' '.join(f'{x:.2f}' for x in result['loadavg_before'])} / "
        f"{' '.join(f'{x:.2f}' for x in result['loadavg_after'])}"
    )
    for e in result["errors"][:5]:
        print(f"error: {e}", file=sys.stderr)
    if args.result_json:
        with open(args.result_json, "w") as f:
            json.dump(result, f, indent=1)
        print(f"wrote {args.result_json}")
    if args.plot:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import plot_serve

        runs = [plot_serve.load(p) for p in args.plot_include] + [result]
        plot_serve.plot(runs, args.plot)
        print(f"wrote {args.plot}")
    return 0 if result["summary"]["completed"] > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
