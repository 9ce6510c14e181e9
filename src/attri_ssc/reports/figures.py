"""Matplotlib PNG figures for interpretation: interpolation grid, edit strip (Figure 3),
W heatmap, sample grid. Agg backend, written atomically; 3D images show their middle slice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from attri_ssc.io_utils import atomic_write  # noqa: E402


def as_2d(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """(1, H, W), (H, W) or (1, D, H, W) → (H, W) float array (3D: the middle slice)."""
    arr = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    arr = np.asarray(arr, dtype=np.float64)
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 3:
        arr = arr[arr.shape[0] // 2]
    if arr.ndim != 2:
        raise ValueError(f"cannot show an image of shape {tuple(arr.shape)}")
    return arr


def _save(fig, path: str | Path) -> Path:
    def write(tmp: Path) -> None:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")

    try:
        return atomic_write(path, write)
    finally:
        plt.close(fig)


def _hide(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def interpolation_grid(images: torch.Tensor, alphas: Sequence[float], path: str | Path,
                       title: str = "", inputs: tuple[torch.Tensor, torch.Tensor] | None = None) -> Path:
    """One row of decoded interpolation frames (n, 1, *S) labelled by α; the two inputs,
    when given, framed at either end."""
    frames = [as_2d(im) for im in images]
    cols = len(frames) + (2 if inputs is not None else 0)
    fig, axes = plt.subplots(1, cols, figsize=(1.6 * cols, 2.0), squeeze=False)
    items: list[tuple[np.ndarray, str]] = []
    if inputs is not None:
        items.append((as_2d(inputs[0]), "input A"))
    items += [(f, f"α={a:.2f}") for f, a in zip(frames, alphas)]
    if inputs is not None:
        items.append((as_2d(inputs[1]), "input B"))
    for ax, (img, label) in zip(axes[0], items):
        ax.imshow(img, cmap="gray", vmin=0, vmax=1)
        ax.set_title(label, fontsize=8)
        _hide(ax)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def edit_strip(original: torch.Tensor, images: torch.Tensor, alphas: Sequence[float], path: str | Path,
               saliency: torch.Tensor | None = None, title: str = "") -> Path:
    """Figure-3-like strip: decoded edits left (α < 0) to right (α > 0), the original image in
    the centre (yellow frame); under each edit its saliency map; a last row shows each edit
    minus the α = 0 reconstruction (red: brighter, blue: darker).

    Args:
        original: the input image (1, *S).
        images: (n, 1, *S) decoded edits with α = 0 at index n // 2.
        alphas: the n α values.
        saliency: (n, 1, *S) maps, or None.
    """
    n = len(alphas)
    centre = n // 2
    frames = [as_2d(im).clip(0, 1) for im in images]
    recon = frames[centre]
    rows = 2 + (saliency is not None)
    fig, axes = plt.subplots(rows, n, figsize=(1.5 * n, 1.6 * rows + 0.4), squeeze=False)
    diff_max = max(1e-6, max(float(np.abs(f - recon).max()) for f in frames))
    sal = [as_2d(s) for s in saliency] if saliency is not None else None
    sal_max = max(1e-12, max(float(s.max()) for s in sal)) if sal is not None else 1.0
    for i, a in enumerate(alphas):
        ax = axes[0, i]
        ax.imshow(as_2d(original) if i == centre else frames[i], cmap="gray", vmin=0, vmax=1)
        ax.set_title("original" if i == centre else f"α={a:+.2f}", fontsize=8)
        _hide(ax)
        if i == centre:
            for spine in ax.spines.values():
                spine.set_edgecolor("gold")
                spine.set_linewidth(3)
        r = 1
        if sal is not None:
            axes[r, i].imshow(sal[i], cmap="inferno", vmin=0, vmax=sal_max)
            _hide(axes[r, i])
            r += 1
        axes[r, i].imshow(frames[i] - recon, cmap="seismic", vmin=-diff_max, vmax=diff_max)
        _hide(axes[r, i])
    axes[0, 0].set_ylabel("edit", fontsize=8)
    if sal is not None:
        axes[1, 0].set_ylabel("saliency", fontsize=8)
    axes[rows - 1, 0].set_ylabel("edit − recon", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def weight_heatmap(weight: torch.Tensor | np.ndarray, names: Sequence[str], path: str | Path,
                   title: str = "Mapper W (attributes × atoms)", used_only: bool = True) -> Path:
    """Heatmap of W (|A|, K), diverging colours centred at 0; by default only the atoms some
    attribute uses are shown (labelled by index)."""
    w = weight.detach().cpu().numpy() if isinstance(weight, torch.Tensor) else np.asarray(weight)
    cols = np.flatnonzero(np.any(w != 0, axis=0)) if used_only else np.arange(w.shape[1])
    if cols.size == 0:
        cols = np.arange(w.shape[1])
    sub = w[:, cols]
    vmax = max(1e-12, float(np.abs(sub).max()))
    fig, ax = plt.subplots(figsize=(max(4.0, 0.35 * len(cols) + 2), 0.5 * len(names) + 1.5))
    im = ax.imshow(sub, cmap="RdBu_r", vmin=-vmax, vmax=vmax, aspect="auto")
    ax.set_yticks(range(len(names)), labels=list(names), fontsize=8)
    ax.set_xticks(range(len(cols)), labels=[str(c) for c in cols], fontsize=7, rotation=90)
    ax.set_xlabel("atom")
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, shrink=0.8)
    return _save(fig, path)


def sample_grid(images: torch.Tensor, path: str | Path, ncols: int = 8, title: str = "") -> Path:
    """Grid of images (n, 1, *S)."""
    n = images.shape[0]
    ncols = max(1, min(ncols, n))
    nrows = (n + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.5 * ncols, 1.5 * nrows + 0.3), squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i < n:
            ax.imshow(as_2d(images[i]).clip(0, 1), cmap="gray", vmin=0, vmax=1)
        _hide(ax)
        if i >= n:
            ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


__all__ = ["as_2d", "edit_strip", "interpolation_grid", "sample_grid", "weight_heatmap"]
