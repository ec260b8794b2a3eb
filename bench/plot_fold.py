#!/usr/bin/env python3
"""Held-out perplexity vs KV bytes/token from `kvfold calibrate` step tables.

    python3 bench/plot_fold.py OUT.png bench/plans/stories260K.steps.txt bench/plans/smollm2.steps.txt

One panel per table (the models' scales differ by ~40x): the search path through its accepted
steps (dots, joined in order), rejected candidates as crosses, and the +2 % perplexity line.
Needs matplotlib (dev only: pip install matplotlib).
"""
import os
import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROW = re.compile(
    r"^(\d+)\s+(.*?)\s+(start|kept|rejected)\s+(\d+)\s+(\S+)%\s+(\d+)\s+(\S+)\s+(\S+)\s+(\S+)%$")


def read_steps(path):
    """(change, result, kv bytes/token, held-out ppl) per table row."""
    rows = []
    with open(path) as f:
        for line in f:
            m = ROW.match(line.strip())
            if m:
                rows.append((m.group(2), m.group(3), int(m.group(4)), float(m.group(8))))
    if not rows:
        sys.exit(f"{path}: no step table found")
    return rows


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    out, tables = sys.argv[1], sys.argv[2:]
    fig, axes = plt.subplots(1, len(tables), figsize=(5.2 * len(tables), 4.2), squeeze=False)
    for ax, path in zip(axes[0], tables):
        rows = read_steps(path)
        name = os.path.basename(path).removesuffix(".steps.txt")
        unfolded_bytes, base_ppl = rows[0][2], rows[0][3]
        path_rows = [r for r in rows if r[1] in ("start", "kept")]
        rejected = [r for r in rows if r[1] == "rejected"]
        ax.plot([r[2] for r in path_rows], [r[3] for r in path_rows], "o-", color="tab:blue",
                markersize=4, label="accepted steps (search order)")
        if rejected:
            ax.plot([r[2] for r in rejected], [r[3] for r in rejected], "x", color="tab:red",
                    markersize=6, label="rejected candidates")
        ax.axhline(base_ppl * 1.02, color="gray", linestyle="--", linewidth=1,
                   label="+2 % perplexity")
        ax.invert_xaxis()  # folding moves right: fewer bytes per token
        ax.set_xlabel(f"KV bytes/token (BF16; unfolded {unfolded_bytes})")
        ax.set_ylabel("held-out perplexity")
        ax.set_title(name)
        top = ax.secondary_xaxis(
            "top", functions=(lambda b, u=unfolded_bytes: 100 * (1 - b / u),
                              lambda s, u=unfolded_bytes: u * (1 - s / 100)))
        top.set_xlabel("KV saved (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
