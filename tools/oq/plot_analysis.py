#!/usr/bin/env python3
"""Draw the figures of `oq analyze DIR`, in the papers' style.

    python3 tools/oq/plot_analysis.py DIR

Reads DIR/layers.csv and DIR/channels.csv (written by `oq analyze`) and
writes two PNGs into DIR:

  massive.png   per layer, the largest three |x| of the hidden state a layer
                outputs and the median |x| (log scale), as in Sun et al. 2024,
                "Massive Activations in Large Language Models", Fig. 1;
  channels.png  for the layer whose linear inputs reach the largest |x|, the
                max |x| of every channel of each of its four linear inputs, as
                in the DuQuant paper's activation figures (Lin et al. 2024,
                Fig. 1).

Needs matplotlib (Debian: apt-get install python3-matplotlib).
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
    sys.exit("plot_analysis.py needs matplotlib: sudo apt-get install python3-matplotlib")


def main(directory):
    layers = OrderedDict()  # layer -> (top1, top2, top3, median)
    input_max = {}  # (layer, input) -> max |x|
    with open(os.path.join(directory, "layers.csv"), newline="") as f:
        for row in csv.DictReader(f):
            layer = int(row["layer"])
            layers[layer] = tuple(
                float(row[k])
                for k in ("hidden_max_abs", "hidden_top2_abs", "hidden_top3_abs", "hidden_median_abs")
            )
            input_max[(layer, row["input"])] = float(row["max_abs"])

    xs = list(layers)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for i, (label, marker) in enumerate((("top 1", "o"), ("top 2", "s"), ("top 3", "^"), ("median", "x"))):
        ax.plot(xs, [layers[l][i] for l in xs], marker=marker, label=label)
    ax.set_yscale("log")
    ax.set_xlabel("layer")
    ax.set_ylabel("|x| of the hidden state")
    ax.set_title("Largest activation magnitudes per layer")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(directory, "massive.png"), dpi=150)
    plt.close(fig)

    worst = max(input_max, key=input_max.get)[0]
    channels = OrderedDict()  # input -> [max |x| per channel]
    with open(os.path.join(directory, "channels.csv"), newline="") as f:
        for row in csv.DictReader(f):
            if int(row["layer"]) == worst:
                channels.setdefault(row["input"], []).append(float(row["max_abs"]))
    fig, axes = plt.subplots(len(channels), 1, figsize=(7, 2.0 * len(channels)), squeeze=False)
    for ax, (name, values) in zip(axes[:, 0], channels.items()):
        ax.bar(range(len(values)), values, width=1.0, color="tab:blue")
        ax.set_ylabel("max |x|")
        ax.set_title(f"layer {worst}, {name.replace('_', ' ')}", fontsize=9)
    axes[-1, 0].set_xlabel("channel")
    fig.tight_layout()
    fig.savefig(os.path.join(directory, "channels.png"), dpi=150)
    plt.close(fig)
    print(f"wrote {os.path.join(directory, 'massive.png')} and {os.path.join(directory, 'channels.png')}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
