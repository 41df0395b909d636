#!/usr/bin/env python3
"""Draw the outlier statistics that 03_small_transformer logs during training.

One PNG per statistic (max |x|, mean row kurtosis, channel outliers): a grid
with one row per tensor (residual stream and the four linear inputs) and one
column per layer, one line per variant against the training step, so that the
emergence of outliers (baseline) and their suppression (kurtosis
regularization, QAT) can be compared; plus loss.png with the cross-entropy.

    python3 examples/03_small_transformer/plot_training.py small_transformer_out

Needs matplotlib (Debian: apt-get install python3-matplotlib). Writes
outliers_<statistic>.png and loss.png into the same directory.
"""
import csv
import os
import sys
from collections import OrderedDict

try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:  # pragma: no cover - depends on the machine
    sys.exit("plot_training.py needs matplotlib: sudo apt-get install python3-matplotlib")

STATISTICS = [
    ("max_abs", "max |x|", True),
    ("mean_kurtosis", "mean row kurtosis", True),
    ("outlier_channels", "channel outliers (mean |x| > 6x)", False),
]
TENSORS = ["residual", "qkv input", "o_proj input", "gate/up input", "down_proj input"]


def read_outliers(path):
    """{(tensor, layer): {variant: ([steps], {statistic: [values]})}}"""
    data = OrderedDict()
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            key = (row["tensor"], int(row["layer"]))
            steps, values = data.setdefault(key, OrderedDict()).setdefault(row["variant"], ([], {}))
            steps.append(int(row["step"]))
            for name, _, _ in STATISTICS:
                values.setdefault(name, []).append(float(row[name]))
    return data


def plot_outliers(data, directory):
    layers = sorted({layer for _, layer in data})
    for name, label, log_scale in STATISTICS:
        fig, axes = plt.subplots(len(TENSORS), len(layers), figsize=(3.2 * len(layers), 2.4 * len(TENSORS)),
                                 sharex=True, squeeze=False)
        for i, tensor in enumerate(TENSORS):
            for j, layer in enumerate(layers):
                ax = axes[i][j]
                for variant, (steps, values) in data.get((tensor, layer), {}).items():
                    ax.plot(steps, values[name], label=variant, linewidth=1.2)
                if log_scale:
                    ax.set_yscale("log")
                ax.set_title(f"layer {layer}: {tensor}", fontsize=9)
                ax.tick_params(labelsize=7)
                if i == len(TENSORS) - 1:
                    ax.set_xlabel("step", fontsize=8)
        axes[0][0].legend(fontsize=7)
        fig.suptitle(label)
        fig.tight_layout()
        out = os.path.join(directory, f"outliers_{name}.png")
        fig.savefig(out, dpi=110)
        plt.close(fig)
        print("wrote", out)


def plot_loss(path, directory):
    curves = OrderedDict()
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            steps, losses = curves.setdefault(row["variant"], ([], []))
            steps.append(int(row["step"]))
            losses.append(float(row["cross_entropy"]))
    fig, ax = plt.subplots(figsize=(6, 4))
    for variant, (steps, losses) in curves.items():
        ax.plot(steps, losses, label=variant, linewidth=1.0)
    ax.set_xlabel("step")
    ax.set_ylabel("training cross-entropy (nats/byte)")
    ax.legend()
    fig.tight_layout()
    out = os.path.join(directory, "loss.png")
    fig.savefig(out, dpi=110)
    plt.close(fig)
    print("wrote", out)


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: plot_training.py OUT_DIR (the --out directory of 03_small_transformer)")
    directory = sys.argv[1]
    plot_outliers(read_outliers(os.path.join(directory, "outliers.csv")), directory)
    plot_loss(os.path.join(directory, "loss.csv"), directory)


if __name__ == "__main__":
    main()
