"""Training curves from a run's ``metrics.jsonl`` (rendered, never recomputed)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from attri_ssc.io_utils import atomic_write  # noqa: E402


def read_metrics(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_training_curves(run_dir: str | Path, out_png: str | Path) -> Path:
    """Loss terms, code density and live atoms against the global step, stages shaded."""
    records = read_metrics(run_dir)
    steps = [r for r in records if r["kind"] == "step"]
    vals = [r for r in records if r["kind"] == "val"]
    starts = [r for r in records if r["kind"] == "stage_start"]
    panels = [("loss terms", ("recon", "latent_fit", "latent_sparsity", "ar", "gs", "drift", "kl", "cls")),
              ("code density / live atoms", ("density",)),
              ("validation", ("psnr",))]
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
    x = [r["global_step"] for r in steps]
    for key in panels[0][1]:
        ys = [(r["global_step"], r[key]) for r in steps if key in r and r[key] > 0]
        if ys:
            axes[0].plot(*zip(*ys), label=key, lw=1)
    axes[0].set_yscale("log")
    axes[0].set_title("training loss terms (weighted)")
    axes[0].legend(fontsize=7)
    if any("density" in r for r in steps):
        axes[1].plot(x, [r.get("density", float("nan")) for r in steps], color="C0", label="code density")
        axes[1].set_ylim(0, 1)
        axes[1].set_ylabel("fraction of non-zero codes")
        twin = axes[1].twinx()
        twin.plot(x, [r.get("live_atoms", float("nan")) for r in steps], color="C3", lw=1, label="live atoms")
        twin.set_ylabel("live atoms in batch", color="C3")
        axes[1].set_title("sparsity")
    else:
        axes[1].axis("off")
    if vals:
        axes[2].plot([v["global_step"] for v in vals], [v.get("psnr", float("nan")) for v in vals], "o-",
                     label="val PSNR (dB)")
        axes[2].set_title("validation PSNR vs input (dB)")
    for ax in axes:
        ax.set_xlabel("global step")
        for s in starts[1:]:
            ax.axvline(s["global_step"], color="grey", ls="--", lw=0.8)
    fig.tight_layout()
    out_png = Path(out_png)
    atomic_write(out_png, lambda tmp: fig.savefig(tmp, format="png", dpi=90))
    plt.close(fig)
    return out_png
