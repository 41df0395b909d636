#!/usr/bin/env python3
"""Tables (Markdown) and a plot from the GPU benchmarks' Google Benchmark JSON.

    python3 bench/cuda/summarize.py gemm.json quantize.json [--plot gemm.png]

Every ratio is formed inside one file, i.e. one run on one GPU (issue 6):
  W4A4      speed-up over cuBLAS BF16 (t_bf16 / t_w4a4, target >= 1.8) and
            over cuBLASLt INT8 (t_int8 / t_w4a4, target >= 0.9)
  W4A16     speed-up over cuBLAS BF16 at the same M (target >= 3 at M = 1) and
            weight bytes per second over the copy bandwidth (target >= 0.70)
  quantize  bytes read + written per second over the copy bandwidth (>= 0.85)
Times are the median aggregate when the run had repetitions, else the mean.
Benchmarks that were skipped (e.g. a first launch over OQ_BENCH_MAX_LAUNCH_S)
are listed with their message.
"""
import argparse
import json
import sys


def read_json(path):
    """The file's JSON; a run cut off mid-way (Google Benchmark closes the
    array only at the end) is read up to its last complete benchmark entry."""
    with open(path) as f:
        text = f.read()
    try:
        return json.loads(text), False
    except json.JSONDecodeError:
        cut = text.rfind("\n    }")
        if cut < 0:
            raise
        return json.loads(text[:cut + len("\n    }")] + "\n  ]\n}"), True


def load(path):
    data, truncated = read_json(path)
    if truncated:
        print(f"note: {path} was cut off; read up to its last complete entry", file=sys.stderr)
    runs, errors = {}, {}
    for b in data["benchmarks"]:
        name = b.get("run_name", b["name"]).replace("/manual_time", "")
        if b.get("error_occurred"):
            errors[name] = b.get("error_message", "")
            continue
        kind = b.get("run_type", "iteration")
        if kind == "aggregate" and b.get("aggregate_name") != "median":
            continue
        # A median beats the per-repetition entries under the same name.
        if kind == "aggregate" or name not in runs:
            runs[name] = b
    return data.get("context", {}), runs, errors


def parse(name):
    """'w4a4/m:2048/n:4096/k:4096' -> ('w4a4', {'m': 2048, 'n': 4096, 'k': 4096})."""
    parts = name.split("/")
    args = {}
    for p in parts[1:]:
        if ":" in p:
            key, value = p.split(":", 1)
            args[key] = int(value)
    return parts[0], args


def seconds(run):
    unit = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}[run.get("time_unit", "ns")]
    return run["real_time"] * unit


def index(runs):
    table = {}
    for name, run in runs.items():
        kernel, args = parse(name)
        table[(kernel, tuple(sorted(args.items())))] = run
    return table


def get(table, kernel, **args):
    return table.get((kernel, tuple(sorted(args.items()))))


def fmt(x, digits=2):
    return "—" if x is None else f"{x:.{digits}f}"


def copy_bandwidth(table):
    for (kernel, _), run in table.items():
        if kernel == "copy":
            return run["bytes"] / seconds(run)
    return None


def gemm_tables(table, out):
    copy_bw = copy_bandwidth(table)
    if copy_bw:
        out.append(f"Device-to-device copy: {copy_bw / 1e9:.0f} GB/s (bytes read + written).\n")
    shapes = sorted({(d["m"], d["n"], d["k"]) for (_, a) in table if "n" in (d := dict(a))})
    ours = ("w4a4", "w4a4_multistage", "w4a4_wgmma")
    prefill = [s for s in shapes if any(get(table, k, m=s[0], n=s[1], k=s[2]) for k in ours + ("cublaslt_int8",))]
    if prefill:
        out.append("| M | N | K | kernel | µs | TOPS | BF16 µs | BF16 TFLOPS | INT8 µs | INT8 TOPS "
                   "| × BF16 (≥ 1.8) | × INT8 (≥ 0.9) |")
        out.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for m, n, k in prefill:
            b = get(table, "cublas_bf16", m=m, n=n, k=k)
            i = get(table, "cublaslt_int8", m=m, n=n, k=k)
            tb, ti = (seconds(r) if r else None for r in (b, i))
            ops = 2.0 * m * n * k
            for kernel in ours:
                w = get(table, kernel, m=m, n=n, k=k)
                tw = seconds(w) if w else None
                out.append(
                    f"| {m} | {n} | {k} | {kernel} | {fmt(tw and tw * 1e6, 1)} | {fmt(tw and ops / tw / 1e12, 0)} | "
                    f"{fmt(tb and tb * 1e6, 1)} | {fmt(tb and ops / tb / 1e12, 0)} | {fmt(ti and ti * 1e6, 1)} | "
                    f"{fmt(ti and ops / ti / 1e12, 0)} | {fmt(tw and tb and tb / tw)} | {fmt(tw and ti and ti / tw)} |")
        out.append("")
    decode_kernels = ("w4a16", "w4a16_tensorop")
    decode = [s for s in shapes if any(get(table, k, m=s[0], n=s[1], k=s[2]) for k in decode_kernels)]
    if decode:
        out.append("| M | N | K | kernel | µs | weight GB/s | of copy BW (≥ 0.70) | BF16 µs "
                   "| × BF16 (≥ 3 at M = 1) |")
        out.append("|---|---|---|---|---|---|---|---|---|")
        for m, n, k in decode:
            b = get(table, "cublas_bf16", m=m, n=n, k=k)
            tb = seconds(b) if b else None
            for kernel in decode_kernels:
                w = get(table, kernel, m=m, n=n, k=k)
                if not w:
                    continue
                tw = seconds(w)
                bw = w["weight_bytes"] / tw
                out.append(
                    f"| {m} | {n} | {k} | {kernel} | {tw * 1e6:.1f} | {bw / 1e9:.0f} | "
                    f"{fmt(copy_bw and bw / copy_bw)} | {fmt(tb and tb * 1e6, 1)} | {fmt(tb and tb / tw)} |")
        out.append("")


def quantize_table(table, out):
    rows = sorted((dict(a)["m"], dict(a)["k"], kern) for (kern, a) in table if kern.startswith("quantize"))
    if not rows:
        return
    copy_bw = copy_bandwidth(table)
    out.append("| M | K | kernel | µs | GB/s | of copy BW (≥ 0.85) |")
    out.append("|---|---|---|---|---|---|")
    for m, k, kern in rows:
        r = get(table, kern, m=m, k=k)
        t = seconds(r)
        bw = r["bytes"] / t
        out.append(f"| {m} | {k} | {kern} | {t * 1e6:.1f} | {bw / 1e9:.0f} | {fmt(copy_bw and bw / copy_bw)} |")
    out.append("")


def plot(tables, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    merged = {}
    for t in tables:
        merged.update(t)
    shapes = sorted({(dict(a)["n"], dict(a)["k"]) for (kern, a) in merged if "n" in dict(a)})
    if not shapes:
        return
    fig, axes = plt.subplots(1, len(shapes), figsize=(4 * len(shapes), 3.6), squeeze=False)
    labels = {"w4a4": "oq W4A4", "w4a4_multistage": "oq W4A4 multistage", "w4a4_wgmma": "oq W4A4 wgmma",
              "w4a16": "oq W4A16", "w4a16_tensorop": "oq W4A16 tensor cores", "cublas_bf16": "cuBLAS BF16",
              "cublaslt_int8": "cuBLASLt INT8"}
    for ax, (n, k) in zip(axes[0], shapes):
        for kern, label in labels.items():
            pts = sorted((dict(a)["m"], 2.0 * dict(a)["m"] * n * k / seconds(r) / 1e12)
                         for (kk, a), r in merged.items()
                         if kk == kern and dict(a).get("n") == n and dict(a).get("k") == k)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(f"N = {n}, K = {k}")
        ax.set_xlabel("M (tokens)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("T(FL)OPS")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("json", nargs="+", help="Google Benchmark JSON files (--benchmark_out)")
    parser.add_argument("--plot", help="write throughput vs M as this PNG")
    args = parser.parse_args()
    out, tables = [], []
    for path in args.json:
        try:
            context, runs, errors = load(path)
        except (OSError, ValueError) as e:
            out.append(f"### {path}: unreadable ({e})\n")
            continue
        table = index(runs)
        tables.append(table)
        out.append(f"### {path}: {context.get('device', '?')}, {context.get('date', '?')}\n")
        gemm_tables(table, out)
        quantize_table(table, out)
        for name, message in sorted(errors.items()):
            out.append(f"- skipped {name}: {message}")
        out.append("")
    print("\n".join(out))
    if args.plot:
        plot(tables, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
