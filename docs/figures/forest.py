#!/usr/bin/env python3
"""Draw a study.csv of example 03 or of `oq study` as an SVG forest plot.

Three panels, one row per method, one mark per variant: the perplexity
with its bootstrap interval, the paired difference from the baseline method
(Δ RTN) and the paired difference from the first variant (Δ baseline,
absent with one variant). A filled mark is a difference that Holm's
procedure resolved (better or worse); a hollow one is not resolved. The
intervals are the CSV's own: this script only draws them.

    python3 docs/figures/forest.py build/study/study.csv docs/figures/study.svg "title"

Plain Python 3, no plotting library: the SVG is written by hand.
"""
import csv
import math
import sys
from xml.sax.saxutils import escape

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"]
ROW_H = 22
LEFT = 190  # method names
PANEL_W = 250
GAP = 30
TOP = 62
BOTTOM = 46


def number(text):
    return float(text) if text not in ("", None) else None


def nice_ticks(lo, hi, count=5):
    """Round tick values spanning [lo, hi] (1, 2, 5 × 10^k steps)."""
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / count
    step = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if raw <= m * step:
            step *= m
            break
    first = math.ceil(lo / step) * step
    ticks, t = [], first
    while t <= hi + 1e-12:
        ticks.append(0.0 if abs(t) < step * 1e-9 else round(t, 10))  # never "-0"
        t += step
    return ticks


def main(argv):
    if len(argv) not in (3, 4):
        sys.exit(__doc__)
    source, target = argv[1], argv[2]
    title = argv[3] if len(argv) == 4 else source
    with open(source, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        sys.exit(f"{source}: no rows")
    for r in rows:  # `oq study` writes one model's rows, without a variant column
        r.setdefault("variant", "checkpoint")
    variants, methods = [], []
    for r in rows:
        if r["variant"] not in variants:
            variants.append(r["variant"])
        if r["method"] not in methods:
            methods.append(r["method"])
    cell = {(r["variant"], r["method"]): r for r in rows}
    baseline = rows[0]["baseline"]
    first = variants[0]

    # (name, lower, estimate, upper, verdict) per panel, variant, method
    panels = [("perplexity", "perplexity", "lower", "upper", None),
              (f"Δ {baseline} (paired)", "vs_baseline", "vs_baseline_lower", "vs_baseline_upper",
               "vs_baseline_verdict")]
    if len(variants) > 1:
        panels.append((f"Δ {first} (paired)", "vs_first_variant", "vs_first_variant_lower",
                       "vs_first_variant_upper", "vs_first_variant_verdict"))

    sub = len(variants)
    height = TOP + len(methods) * ROW_H + BOTTOM + 18 * math.ceil(sub / 3)
    width = LEFT + len(panels) * (PANEL_W + GAP) + 10
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="DejaVu Sans, Arial, sans-serif" font-size="11">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{width / 2}" y="18" text-anchor="middle" font-size="13">{escape(title)}</text>']
    for i, m in enumerate(methods):
        y = TOP + i * ROW_H + ROW_H / 2
        if i % 2 == 0:
            out.append(f'<rect x="4" y="{TOP + i * ROW_H}" width="{width - 8}" height="{ROW_H}" fill="#f3f3f3"/>')
        out.append(f'<text x="{LEFT - 8}" y="{y + 4}" text-anchor="end">{escape(m)}</text>')

    for p, (name, est_key, lo_key, hi_key, verdict_key) in enumerate(panels):
        x0 = LEFT + p * (PANEL_W + GAP)
        values = []
        for r in rows:
            for key in (lo_key, hi_key):
                v = number(r[key])
                if v is not None and math.isfinite(v):
                    values.append(v)
        if not values:
            continue
        lo, hi = min(values), max(values)
        if verdict_key:
            lo, hi = min(lo, 0.0), max(hi, 0.0)
        pad = 0.04 * (hi - lo if hi > lo else 1.0)
        lo, hi = lo - pad, hi + pad

        def sx(v):
            return x0 + (v - lo) / (hi - lo) * PANEL_W

        out.append(f'<text x="{x0 + PANEL_W / 2}" y="{TOP - 22}" text-anchor="middle" font-size="12">'
                   f'{escape(name)}</text>')
        bottom = TOP + len(methods) * ROW_H
        out.append(f'<line x1="{x0}" y1="{bottom}" x2="{x0 + PANEL_W}" y2="{bottom}" stroke="black"/>')
        for t in nice_ticks(lo, hi):
            if lo <= t <= hi:
                out.append(f'<line x1="{sx(t):.1f}" y1="{TOP}" x2="{sx(t):.1f}" y2="{bottom + 4}" '
                           f'stroke="#cccccc" stroke-width="0.6"/>')
                out.append(f'<text x="{sx(t):.1f}" y="{bottom + 16}" text-anchor="middle">{t:g}</text>')
        if verdict_key:
            out.append(f'<line x1="{sx(0):.1f}" y1="{TOP}" x2="{sx(0):.1f}" y2="{bottom}" stroke="black" '
                       f'stroke-dasharray="3,2"/>')
        for i, m in enumerate(methods):
            for k, v in enumerate(variants):
                r = cell.get((v, m))
                if r is None:
                    continue
                est, a, b = number(r[est_key]), number(r[lo_key]), number(r[hi_key])
                if est is None or a is None or b is None:
                    continue
                y = TOP + i * ROW_H + (k + 1) * ROW_H / (sub + 1)
                color = COLORS[k % len(COLORS)]
                out.append(f'<line x1="{sx(a):.1f}" y1="{y:.1f}" x2="{sx(b):.1f}" y2="{y:.1f}" '
                           f'stroke="{color}" stroke-width="1.6"/>')
                resolved = verdict_key is None or r[verdict_key] in ("better", "worse")
                fill = color if resolved else "white"
                out.append(f'<circle cx="{sx(est):.1f}" cy="{y:.1f}" r="3.2" fill="{fill}" stroke="{color}" '
                           f'stroke-width="1.4"/>')

    legend_y = TOP + len(methods) * ROW_H + 36
    for k, v in enumerate(variants):
        x = LEFT + (k % 3) * 150
        y = legend_y + 18 * (k // 3)
        color = COLORS[k % len(COLORS)]
        out.append(f'<line x1="{x}" y1="{y - 4}" x2="{x + 22}" y2="{y - 4}" stroke="{color}" stroke-width="1.6"/>')
        out.append(f'<circle cx="{x + 11}" cy="{y - 4}" r="3.2" fill="{color}"/>')
        out.append(f'<text x="{x + 28}" y="{y}">{escape(v)}</text>')
    out.append(f'<text x="{width - 10}" y="{legend_y}" text-anchor="end">Δ marks: filled, resolved by Holm; '
               f'hollow, not resolved</text>')
    out.append("</svg>")
    with open(target, "w") as f:
        f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main(sys.argv)
