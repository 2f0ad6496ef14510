"""Plots of the ABFT H200 runs: detection vs error magnitude, median layer overhead vs batch.

    python benchmarks/plot_abft_fused.py benchmarks/results/abft_fused_h200_run2.json \
        benchmarks/results/abft_fused_h200_run1.json
    python benchmarks/plot_abft_fused.py benchmarks/results/abft_stream_h200_run3.json - \
        --name abft_stream        # the sweep only, of the stream kernel
"""
import argparse
import json
import statistics

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_sweep(sweep_json, out_png):
    """Detected fraction vs additive error / largest output, one panel per dtype."""
    sw = json.load(open(sweep_json))["sweep"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), sharey=True)
    for ax, dt in zip(axes, ("fp16", "bf16", "tf32")):
        for r0 in sorted({(r["offset"], r["M"], r["K"], r["N"]) for r in sw if r["dtype"] == dt}):
            pts = sorted((r["rel_error"], r["detected"] / r["trials"]) for r in sw
                         if r["dtype"] == dt and r["kind"].startswith("additive")
                         and (r["offset"], r["M"], r["K"], r["N"]) == r0)
            ax.semilogx(*zip(*pts), marker="o", ms=3,
                        label=f"{r0[1]}x{r0[2]}x{r0[3]}{' +offset' if r0[0] else ''}")
        ax.set_title(dt)
        ax.set_xlabel("error / largest output")
    axes[0].set_ylabel("detected")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)


def plot_layer_overhead(layers_json, out_png):
    rows = json.load(open(layers_json))["layers"]
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for dt in ("fp16", "bf16", "tf32"):
        bs = sorted({r["batch"] for r in rows})
        med = [statistics.median(100 * r["auto_overhead"] for r in rows
                                 if r["dtype"] == dt and r["batch"] == b) for b in bs]
        ax.semilogx(bs, med, marker="o", label=f"{dt} median over layers")
    ax.axhline(5, color="k", lw=0.8, ls="--", label="goal 5%")
    ax.set_xlabel("batch")
    ax.set_ylabel("% over fastest unprotected")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("sweep_json")
    ap.add_argument("layers_json", nargs="?", default="-", help="'-': no layer plot")
    ap.add_argument("--out-dir", default="benchmarks/results")
    ap.add_argument("--name", default="abft_fused", help="file name prefix")
    a = ap.parse_args()
    plot_sweep(a.sweep_json, f"{a.out_dir}/{a.name}_detection_vs_magnitude.png")
    if a.layers_json != "-":
        plot_layer_overhead(a.layers_json, f"{a.out_dir}/{a.name}_layer_overhead.png")


if __name__ == "__main__":
    main()
