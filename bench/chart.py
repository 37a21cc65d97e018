#!/usr/bin/env python3
"""chart.py: a Figure-10-style chart from benchmark JSON lines (patbench --out, peers.py --out).

For every workload (tree x heads) each method's speed is normalised to the fastest method of
that workload (1.0 = fastest); the bandwidth/FLOP floor is drawn as a marker at floor/fastest.
Usage: bench/chart.py OUT.png FILE.jsonl [FILE.jsonl ...] [--heads 32/8]
"""
import argparse
import collections
import json
import sys


def load(paths):
    """Reads JSON lines; keeps rows that ran correctly (ok true) with a median time."""
    rows = []
    for p in paths:
        with open(p) as f:
            for line in f:
                line = line.strip()
                if not line.startswith("{"):
                    continue
                r = json.loads(line)
                if r.get("ok") and r.get("median_us"):
                    rows.append(r)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("inputs", nargs="+")
    ap.add_argument("--heads", default=None, help="only this head config, e.g. 32/8")
    a = ap.parse_args()
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = load(a.inputs)
    if a.heads:
        q, kv = (int(x) for x in a.heads.split("/"))
        rows = [r for r in rows if r["q_heads"] == q and r["kv_heads"] == kv]
    if not rows:
        sys.exit("chart.py: no correct rows to plot")
    cases = collections.OrderedDict()
    for r in rows:
        key = (r["tree"], r["q_heads"], r["kv_heads"])
        cases.setdefault(key, {})[r["method"]] = r
    methods = sorted({r["method"] for r in rows}, key=lambda m: (not m.startswith("pat_"), m))
    fig, ax = plt.subplots(figsize=(max(10, 0.55 * len(cases)), 5))
    width = 0.8 / len(methods)
    for mi, m in enumerate(methods):
        xs, ys = [], []
        for ci, (key, by) in enumerate(cases.items()):
            best = min(v["median_us"] for v in by.values())
            if m in by:
                xs.append(ci + mi * width)
                ys.append(best / by[m]["median_us"])
        ax.bar(xs, ys, width, label=m)
    for ci, (key, by) in enumerate(cases.items()):
        best = min(v["median_us"] for v in by.values())
        floor = next(iter(by.values())).get("floor_us")
        if floor:
            ax.plot([ci - 0.1, ci + 0.8], [best / floor] * 2, color="black", lw=1)
    ax.set_xticks([i + 0.4 for i in range(len(cases))])
    ax.set_xticklabels([f"{t}\n{q}/{kv}" for (t, q, kv) in cases], rotation=90, fontsize=6)
    ax.set_ylabel("speed relative to the fastest (1 = fastest)")
    gpu = rows[0].get("gpu", "")
    ax.set_title(f"decode attention on {gpu}; black line: the floor (higher means the fastest is far from it)")
    ax.set_yscale("log")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # beside the bars, not on them
    fig.tight_layout()
    fig.savefig(a.out, dpi=130)
    print(f"chart.py: {len(cases)} workloads, {len(methods)} methods -> {a.out}")


if __name__ == "__main__":
    main()
