#!/usr/bin/env python3
"""Draw the per-channel magnitudes that 02_llama_layer writes, paper style.

For each linear input (q/k/v, o_proj, gate/up, down_proj) one PNG with one
panel per stage (full precision, then each method's transformed input): the
max |x| of every channel over the evaluation tokens, as in the DuQuant paper's
activation figures (Lin et al. 2024, Fig. 1/4), on a shared y axis so that the
flattening is visible.

    python3 examples/02_llama_layer/plot_channels.py llama_layer_out/channel_magnitudes.csv

Needs matplotlib (Debian: apt-get install python3-matplotlib). Writes
<input>.png next to the CSV.
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
    sys.exit("plot_channels.py needs matplotlib: sudo apt-get install python3-matplotlib")


def read(path):
    """{input: {stage: [(channel, absmax, absmean), ...]}} in file order."""
    data = OrderedDict()
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            stages = data.setdefault(row["input"], OrderedDict())
            stages.setdefault(row["stage"], []).append(
                (int(row["channel"]), float(row["absmax"]), float(row["absmean"]))
            )
    return data


def slug(name):
    return "".join(c if c.isalnum() else "_" for c in name).strip("_")


def main(argv):
    if len(argv) != 2:
        sys.exit(__doc__)
    path = argv[1]
    out_dir = os.path.dirname(os.path.abspath(path))
    for input_name, stages in read(path).items():
        fig, axes = plt.subplots(len(stages), 1, figsize=(10, 1.9 * len(stages)), sharex=True)
        if len(stages) == 1:
            axes = [axes]
        top = max(v for rows in stages.values() for _, v, _ in rows)
        for ax, (stage, rows) in zip(axes, stages.items()):
            channels = [c for c, _, _ in rows]
            # Lines, not bars: a single-channel spike among 11008 channels
            # is narrower than a pixel as a bar and vanishes from the figure.
            ax.plot(channels, [m for _, m, _ in rows], color="tab:blue", linewidth=0.5, label="max |x|")
            ax.plot(channels, [a for _, _, a in rows], color="tab:orange", linewidth=0.6, label="mean |x|")
            ax.set_yscale("log")
            ax.set_ylim(max(1e-3, min(a for _, _, a in rows) / 2), top * 2)
            peak = max(m for _, m, _ in rows)
            ax.set_title(f"{stage}: max |x| = {peak:.4g}", fontsize=9, loc="left")
            ax.set_ylabel("|x|")
        axes[0].legend(loc="upper right", fontsize=8)
        axes[-1].set_xlabel("channel")
        fig.suptitle(f"{input_name}: per-channel magnitude before and after each transform")
        fig.tight_layout()
        target = os.path.join(out_dir, slug(input_name) + ".png")
        fig.savefig(target, dpi=110)
        plt.close(fig)
        print(target)


if __name__ == "__main__":
    main(sys.argv)
