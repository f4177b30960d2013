#!/usr/bin/env python3
"""Turns criterion's results for benches/pure.rs into a Markdown table with
each benchmark's target (the targets and their reasons are the ones in
benches/pure.rs's header; keep the two in step).

Usage: report_pure.py CRITERION_DIR   (e.g. target/criterion)
Exits 1 if a benchmark is missing or misses its target, after printing.
"""
import json
import os
import sys

# title -> (target in ns, per-item count for the per-item column, why)
TARGETS = {
    "parse .env 5000 lines": (5e6, 5000, "parsing must never be the slow part of a pass: 1 µs/line"),
    "desired 5000 keys (mapping + limits)": (10e6, 5000, "≤ 2 µs/key, a small share of the 50 µs/secret engine budget"),
    "plan 5000 unchanged secrets": (10e6, 5000, "≤ 2 µs/secret, a small share of the 50 µs/secret engine budget"),
    "many-to-one compare 1000 keys": (2e6, 1000, "the no-op check of the largest JSON secret costs less than one API call (~20 ms)"),
}


def fmt(ns):
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f} µs"
    return f"{ns:.0f} ns"


def main():
    root = sys.argv[1]
    rows = ["| benchmark | target | result (median, thread CPU time) | per item | met | why this target |", "|---|--:|--:|--:|---|---|"]
    ok = True
    for title, (target, items, why) in TARGETS.items():
        path = os.path.join(root, title, "new", "estimates.json")
        try:
            with open(path) as f:
                median = json.load(f)["median"]["point_estimate"]
        except OSError:
            rows.append(f"| {title} | < {fmt(target)} | missing | | no | {why} |")
            ok = False
            continue
        met = median < target
        ok &= met
        rows.append(f"| {title} | < {fmt(target)} | {fmt(median)} | {fmt(median / items)} | "
                    f"{'yes' if met else '**no**'} | {why} |")
    print("\n".join(rows))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
