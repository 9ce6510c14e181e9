"""In-plane flips and transposes of training batches (attribute-preserving augmentation).

Every supervised image attribute (cavity and myocardial area or volume, wall thickness, scar) is
unchanged by mirroring the image in-plane or swapping its two in-plane axes, so these
transforms enlarge a small training set without touching the labels. Off by default (the
paper does not augment). Measured on the demo phantoms (`docs/experiments-slice-volumes.md`):
the 15-minute ``demo-2d`` model reconstructs its 70 training cases 2 dB better than held-out
ones; ``dihedral`` closed that gap but did not raise held-out PSNR within the same budget.

The transforms act on the last two axes of ``(B, C, *spatial)`` tensors, so 2D slices
``(B, C, H, W)`` and 3D volumes ``(B, C, D, H, W)`` share one code path (the slice axis D
of a volume is never flipped). Which transform a sample gets is a pure function of
``(seed, global_step, rank)``, so a resumed run sees exactly the batches the uninterrupted
run saw.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from attri_ssc.config import AUGMENTATIONS

# AUGMENTATIONS: ``none``; ``flip``: each in-plane axis mirrored with probability 1/2
# (4 transforms); ``dihedral``: flips plus a transpose of the in-plane axes with
# probability 1/2 (the 8 symmetries of the square; needs square in-plane sizes).

#: Batch entries that are images (and so are transformed); everything else is a label.
IMAGE_KEYS = ("image", "clean")


def draw_transforms(n: int, kind: str, seed: int, global_step: int, rank: int = 0) -> np.ndarray:
    """One in-plane transform per sample: a bool array ``(n, 3)`` of (flip rows, flip
    columns, transpose), all False for ``none``; deterministic in its arguments."""
    if kind not in AUGMENTATIONS:
        raise ValueError(f"augmentation must be one of {AUGMENTATIONS}, got {kind!r}")
    flags = np.zeros((n, 3), dtype=bool)
    if kind == "none":
        return flags
    rng = np.random.default_rng([int(seed), int(global_step), int(rank), 0xA06])
    draws = rng.random((n, 3)) < 0.5
    flags[:, :2] = draws[:, :2]
    if kind == "dihedral":
        flags[:, 2] = draws[:, 2]
    return flags


def apply_transform(x: Tensor, flip_rows: bool, flip_cols: bool, transpose: bool) -> Tensor:
    """Transform one sample ``(C, *spatial)`` (or any tensor whose last two axes are the
    in-plane rows and columns); returns a new contiguous tensor of the same shape."""
    dims = [d for d, on in ((-2, flip_rows), (-1, flip_cols)) if on]
    if dims:
        x = torch.flip(x, dims)
    if transpose:
        if x.shape[-1] != x.shape[-2]:
            raise ValueError(f"a transpose needs square in-plane sizes, got {tuple(x.shape[-2:])}")
        x = x.transpose(-1, -2)
    return x.contiguous()


def augment_batch(batch: dict[str, Any], kind: str, seed: int, global_step: int, rank: int = 0) -> dict[str, Any]:
    """``batch`` with its image entries (``image``, ``clean``: ``(B, C, *spatial)``) transformed
    sample by sample; labels and metadata are returned unchanged."""
    if kind == "none":
        return batch
    n = int(batch["image"].shape[0])
    flags = draw_transforms(n, kind, seed, global_step, rank)
    out = dict(batch)
    for key in IMAGE_KEYS:
        if key in batch and torch.is_tensor(batch[key]):
            out[key] = torch.stack([apply_transform(batch[key][i], *map(bool, flags[i])) for i in range(n)])
    return out


def check_augmentation(kind: str, spatial_shape: tuple[int, ...]) -> None:
    """Raise ``ValueError`` when ``kind`` cannot be applied to inputs of ``spatial_shape``."""
    if kind not in AUGMENTATIONS:
        raise ValueError(f"train.augment must be one of {AUGMENTATIONS}, got {kind!r}")
    if kind == "dihedral" and spatial_shape[-1] != spatial_shape[-2]:
        raise ValueError(
            f"train.augment=dihedral transposes the in-plane axes and needs square slices, got "
            f"in-plane size {tuple(spatial_shape[-2:])}; use train.augment=flip")
