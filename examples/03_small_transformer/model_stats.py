#!/usr/bin/env python3
"""Outlier statistics of the models a `--study --models DIR` run kept.

For every DIR/seed<k>/<variant>/ (config.json, model.safetensors):
  - the weights' kurtosis: per linear weight [out, in], the mean over output
    rows of the row kurtosis m4 / m2^2 (biased moments; 3 for a Gaussian),
    as the default run's outliers.csv logs it; reported as the mean and the
    largest over the model's linears (Nrusimha et al. warn that removing
    activation outliers can move the difficulty into the weights);
  - with `oq analyze` output in DIR/seed<k>/<variant>/analyze/layers.csv
    (run it first, see docs/accuracy.md), the activations': channel outliers
    (channels above 6x the input's mean |x|), summed over the linear inputs
    and at the input with most, and the largest mean row kurtosis of an input.

Prints one line per model and, per variant, the mean and range over seeds.

    python3 examples/03_small_transformer/model_stats.py build/models

Plain Python 3 (struct, json): no NumPy needed.
"""
import array
import csv
import json
import os
import re
import struct
import sys

LINEAR = re.compile(r"model\.layers\.(\d+)\.(self_attn|mlp)\.(\w+)_proj\.weight$")


def read_safetensors(path):
    """Yields (name, rows, cols, values) for every 2-D F32 tensor."""
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_len))
        base = 8 + header_len
        for name, info in header.items():
            if name == "__metadata__" or info["dtype"] != "F32" or len(info["shape"]) != 2:
                continue
            begin, end = info["data_offsets"]
            f.seek(base + begin)
            values = array.array("f")
            values.frombytes(f.read(end - begin))
            if sys.byteorder != "little":
                values.byteswap()
            yield name, info["shape"][0], info["shape"][1], values


def mean_row_kurtosis(rows, cols, values):
    total = 0.0
    for r in range(rows):
        row = values[r * cols:(r + 1) * cols]
        mean = sum(row) / cols
        m2 = m4 = 0.0
        for v in row:
            d = v - mean
            d2 = d * d
            m2 += d2
            m4 += d2 * d2
        m2 /= cols
        m4 /= cols
        total += m4 / (m2 * m2) if m2 > 0 else 0.0
    return total / rows


def model_stats(directory):
    kurtosis = [mean_row_kurtosis(r, c, v) for name, r, c, v in read_safetensors(
        os.path.join(directory, "model.safetensors")) if LINEAR.search(name)]
    if not kurtosis:
        raise SystemExit(f"{directory}: no linear weights (model.layers.N.*_proj.weight) found")
    stats = {"weight_kurtosis_mean": sum(kurtosis) / len(kurtosis), "weight_kurtosis_max": max(kurtosis)}
    layers = os.path.join(directory, "analyze", "layers.csv")
    if os.path.exists(layers):
        with open(layers, newline="") as f:
            rows = list(csv.DictReader(f))
        outliers = [int(r["channel_outliers"]) for r in rows]
        stats["channel_outliers"] = sum(outliers)
        stats["channel_outliers_max"] = max(outliers)
        stats["input_kurtosis_max"] = max(float(r["mean_kurtosis"]) for r in rows)
    return stats


def main(argv):
    if len(argv) != 2:
        raise SystemExit(__doc__)
    root = argv[1]
    per_variant = {}
    for seed_dir in sorted(os.listdir(root)):
        if not re.fullmatch(r"seed\d+", seed_dir):
            continue
        for variant in sorted(os.listdir(os.path.join(root, seed_dir))):
            if variant.startswith("."):
                continue  # a staging directory (a run still keeping it, or killed)
            directory = os.path.join(root, seed_dir, variant)
            if not os.path.exists(os.path.join(directory, "training.json")):
                continue  # not (yet) kept
            s = model_stats(directory)
            per_variant.setdefault(variant, []).append(s)
            print(f"{seed_dir:7} {variant:14} " + "  ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                                          for k, v in s.items()))
    print()
    for variant, stats in per_variant.items():
        parts = []
        for key in stats[0]:
            values = [s[key] for s in stats if key in s]
            parts.append(f"{key} {sum(values) / len(values):.3f} ({min(values):.3f}-{max(values):.3f})")
        print(f"{variant:14} {len(stats)} seeds: " + "  ".join(parts))


if __name__ == "__main__":
    main(sys.argv)
