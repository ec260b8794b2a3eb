#!/usr/bin/env python3
"""Plots and tabulates result JSONs of bench/serve_bench.py side by side.

    python3 bench/plot_serve.py OUT.png kvfold.json llama-server.json   # PNG + markdown table
    python3 bench/plot_serve.py --table kvfold.json llama-server.json   # markdown table only

Panels: output tokens/s (request throughput over each bar), then TTFT, TPOT and ITL as p50 /
p90 / p99 bars per run. Needs matplotlib for the PNG (dev only: pip install matplotlib).
"""

import json
import sys

PERCENTILES = ("p50", "p90", "p99")


def load(path):
    with open(path) as f:
        return json.load(f)


def plot(runs, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [r["label"] for r in runs]
    colors = [f"C{i}" for i in range(len(runs))]
    fig, axes = plt.subplots(1, 4, figsize=(17, 4.4))

    ax = axes[0]
    tps = [r["summary"]["output_throughput"] for r in runs]
    bars = ax.bar(range(len(runs)), tps, color=colors)
    for bar, r in zip(bars, runs):
        ax.annotate(
            f"{bar.get_height():.0f} tok/s\n{r['summary']['request_throughput']:.2f} req/s",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    ax.set_xticks(range(len(runs)))
    ax.set_xticklabels(labels, rotation=15, ha="right", fontsize=8)
    ax.set_ylabel("output tokens/s")
    ax.set_title("Output throughput")
    ax.margins(y=0.2)

    width = 0.8 / len(runs)
    for ax, key, title in zip(
        axes[1:],
        ("ttft_ms", "tpot_ms", "itl_ms"),
        ("Time to first token", "Time per output token", "Inter-token latency"),
    ):
        for i, r in enumerate(runs):
            xs = [j + (i - (len(runs) - 1) / 2) * width for j in range(len(PERCENTILES))]
            ax.bar(
                xs,
                [r["summary"][key][p] for p in PERCENTILES],
                width,
                color=colors[i],
                label=labels[i],
            )
        ax.set_xticks(range(len(PERCENTILES)))
        ax.set_xticklabels(PERCENTILES)
        ax.set_ylabel("ms")
        ax.set_title(title)
    axes[1].legend(fontsize=8)

    first = runs[0]["config"]
    loads = sorted({r["load"] for r in runs})
    fig.suptitle(
        f"{'; '.join(loads)}, {first['num_prompts']} prompts, input {first['input_len']} / "
        f"output {first['output_len']} tokens (range ratio {first['range_ratio']:g}), "
        f"{first['endpoint']} endpoint",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def markdown_table(runs):
    """One column per run: throughputs, then mean / p50 / p90 / p99 of each latency."""
    rows = [
        ("completed / failed", lambda s: f"{s['completed']} / {s['failed']}"),
        ("duration (s)", lambda s: f"{s['duration_s']:.1f}"),
        (
            "mean input / output tokens",
            lambda s: f"{s['mean_input_tokens']:.1f} / {s['mean_output_tokens']:.1f}",
        ),
        ("request throughput (req/s)", lambda s: f"{s['request_throughput']:.2f}"),
        ("output tokens/s", lambda s: f"{s['output_throughput']:.1f}"),
        ("total tokens/s", lambda s: f"{s['total_token_throughput']:.1f}"),
    ]
    for key, name in (
        ("ttft_ms", "TTFT"),
        ("tpot_ms", "TPOT"),
        ("itl_ms", "ITL"),
        ("e2el_ms", "E2E"),
    ):
        for stat in ("mean", "p50", "p90", "p99"):
            rows.append((f"{name} {stat} (ms)", lambda s, k=key, t=stat: f"{s[k][t]:.1f}"))
    lines = [
        "| metric | " + " | ".join(r["label"] for r in runs) + " |",
        "| --- |" + " ---: |" * len(runs),
    ]
    for name, cell in rows:
        lines.append(f"| {name} | " + " | ".join(cell(r["summary"]) for r in runs) + " |")
    return "\n".join(lines)


def main():
    args = sys.argv[1:]
    if not args or args[0] in ("-h", "--help"):
        sys.exit(__doc__)
    if args[0] == "--table":
        print(markdown_table([load(p) for p in args[1:]]))
        return
    out, paths = args[0], args[1:]
    if not paths:
        sys.exit(__doc__)
    runs = [load(p) for p in paths]
    plot(runs, out)
    print(markdown_table(runs))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
