#!/usr/bin/env python3
"""Summarise the training runs of the outlier-budget search and the λ sweep.

Each argument is an output directory of 03_small_transformer's default run
(outliers.csv, results.csv). For every directory and variant it prints:

- budget: the first logged step at which Sun et al.'s massive-activation test
  (|x| > 100 and >= 1000 x the tensor's median |x|) fires on the residual
  stream of any layer, and the largest ratio max|x| / median|x| the residual
  stream reached (the test needs 1000);
- channel outliers: the most channel outliers (mean |x| > 6x the input's) at
  any linear input at the last logged step, and the largest mean row kurtosis
  of a linear input there;
- weights: the mean over linears of the weights' mean row kurtosis at the last
  step, and its largest value (Nrusimha et al. 2024 warn that a kurtosis
  regularizer on the activations can move the difficulty into the weights);
- perplexity: full precision and each W4A4 method of results.csv.

    python3 examples/03_small_transformer/outlier_budget.py build/outlier_budget/*
    python3 examples/03_small_transformer/outlier_budget.py --markdown build/lambda_sweep/*

Only the Python standard library is needed.
"""
import csv
import os
import sys
from collections import OrderedDict

INPUTS = ["qkv input", "o_proj input", "gate/up input", "down_proj input"]


def read_outliers(path):
    """{variant: [row, ...]} with numeric fields converted."""
    out = OrderedDict()
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if None in row.values():
                continue  # a run still writing: its last line may be cut short
            if "massive_tokens" not in row:
                sys.exit(f"{path}: no massive_tokens column (written by an older 03_small_transformer)")
            row["step"] = int(row["step"])
            for k in ("max_abs", "mean_kurtosis", "median_abs"):
                row[k] = float(row[k])
            row["outlier_channels"] = int(row["outlier_channels"])
            row["massive_tokens"] = int(row["massive_tokens"])
            out.setdefault(row["variant"], []).append(row)
    return out


def read_results(path):
    """{variant: OrderedDict(column: value)}; empty if the run has no results.csv yet."""
    if not os.path.exists(path):
        return {}
    with open(path, newline="") as f:
        return {row["variant"]: row for row in csv.DictReader(f)}


def summarise(rows):
    residual = [r for r in rows if r["tensor"] == "residual"]
    fired = [r["step"] for r in residual if r["massive_tokens"] > 0]
    ratio = max((r["max_abs"] / r["median_abs"] for r in residual if r["median_abs"] > 0), default=float("nan"))
    last = max(r["step"] for r in rows)
    at_last = [r for r in rows if r["step"] == last]
    inputs = [r for r in at_last if r["tensor"] in INPUTS]
    weights = [r for r in at_last if r["tensor"].endswith(" weight")]
    return {
        "last step": last,
        "Sun et al. fires at step": min(fired) if fired else "never",
        "max residual max/median": ratio,
        "max residual |x|": max((r["max_abs"] for r in residual), default=float("nan")),
        "channel outliers (last, most at one input)": max((r["outlier_channels"] for r in inputs), default=0),
        "input kurtosis (last, max)": max((r["mean_kurtosis"] for r in inputs), default=float("nan")),
        "weight kurtosis (last, mean)": sum(r["mean_kurtosis"] for r in weights) / len(weights) if weights else float("nan"),
        "weight kurtosis (last, max)": max((r["mean_kurtosis"] for r in weights), default=float("nan")),
    }


def cell(v):
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def main(argv):
    markdown = "--markdown" in argv
    dirs = [a for a in argv if a != "--markdown"]
    if not dirs:
        sys.exit(__doc__)
    table = []
    for d in dirs:
        outliers = read_outliers(os.path.join(d, "outliers.csv"))
        results = read_results(os.path.join(d, "results.csv"))
        for variant, rows in outliers.items():
            entry = OrderedDict([("run", os.path.basename(os.path.normpath(d))), ("variant", variant)])
            entry.update(summarise(rows))
            for k, v in results.get(variant, {}).items():
                if k in ("variant", "train_seconds") or k.endswith(" integer") or v == "":
                    continue
                entry["ppl " + k] = float(v)
            table.append(entry)
    columns = list(OrderedDict((k, None) for e in table for k in e))
    if markdown:
        print("| " + " | ".join(columns) + " |")
        print("|" + "---|" * len(columns))
        for e in table:
            print("| " + " | ".join(cell(e.get(c, "")) for c in columns) + " |")
    else:
        for e in table:
            print(", ".join(f"{k}: {cell(v)}" for k, v in e.items()))


if __name__ == "__main__":
    main(sys.argv[1:])
