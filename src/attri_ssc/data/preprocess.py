"""Preprocessing: fixed in-plane spacing, fixed field of view, intensities in [0, 1].

Why: a fixed spacing and a fixed field of view (not a per-case bounding box resized to a
fixed size, as Attri-VAE does) keep image scale meaning physical size, so volumes and
thicknesses stay visible to the model.

Steps for a stack (X, Y, Z) with spacing (sx, sy, sz):

1. Centre: the LV cavity centroid (label 1) in mm: per slice in 2D mode (each slice is
   centred on its own cavity; a slice without cavity uses its myocardium's centroid,
   else the stack's), the stack's in 3D mode (slices stay aligned).
2. Resample in-plane onto a ``size × size`` grid of ``spacing_mm`` pixels around the
   centre (bilinear for images after a Gaussian anti-alias when downsampling; nearest for
   labels); outside the source image is padding. Slices are not resampled through-plane.
3. Intensities: the (low, high) percentiles of the stack's in-view voxels map to 0 and 1,
   clipped; padding becomes 0. The clean image, when given, uses the noisy image's
   mapping so the two stay comparable.
4. 3D mode: zero-pad the slice axis (centred) to ``n_slices``.

Output arrays are (Z, H, W) with H along the NIfTI's first axis and W along its second.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from attri_ssc.data.attributes import LABEL_CAVITY, myocardium


@dataclass(frozen=True)
class PreprocessParams:
    """Parameters of :func:`preprocess_stack` (everything that changes its output).

    Attributes:
        spacing_mm: output in-plane spacing (mm), > 0.
        size: output in-plane side (pixels), >= 1.
        percentiles: (low, high) intensity percentiles mapped to 0 and 1.
        center_per_slice: centre each slice on its own cavity (2D) or the stack (3D).
    """

    spacing_mm: float
    size: int
    percentiles: tuple[float, float]
    center_per_slice: bool

    def __post_init__(self) -> None:
        if self.spacing_mm <= 0:
            raise ValueError(f"spacing_mm must be > 0, got {self.spacing_mm}")
        if self.size < 1:
            raise ValueError(f"size must be >= 1, got {self.size}")
        lo, hi = self.percentiles
        if not 0 <= lo < hi <= 100:
            raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {self.percentiles}")

    def to_dict(self) -> dict:
        return {
            "spacing_mm": float(self.spacing_mm),
            "size": int(self.size),
            "percentiles": [float(p) for p in self.percentiles],
            "center_per_slice": bool(self.center_per_slice),
        }


def _centroid(mask2d: np.ndarray) -> np.ndarray | None:
    idx = np.argwhere(mask2d)
    return idx.mean(axis=0) if idx.size else None


def slice_centers(mask: np.ndarray, spacing: tuple[float, float, float], per_slice: bool) -> np.ndarray:
    """Centre of each slice's field of view in mm (relative to voxel (0, 0)).

    Args:
        mask: labels (X, Y, Z).
        spacing: (sx, sy, sz).
        per_slice: True: each slice's cavity centroid (fallbacks in the module doc);
            False: the stack's cavity centroid for every slice.

    Returns:
        (Z, 2) float64, in mm along X and Y.
    """
    sxy = np.array(spacing[:2], dtype=np.float64)
    cav = mask == LABEL_CAVITY
    myo = myocardium(mask)
    n_z = mask.shape[2]
    if cav.any():
        stack_c = np.argwhere(cav)[:, :2].mean(axis=0)
    elif myo.any():
        stack_c = np.argwhere(myo)[:, :2].mean(axis=0)
    else:
        stack_c = (np.array(mask.shape[:2], dtype=np.float64) - 1) / 2
    centers = np.tile(stack_c * sxy, (n_z, 1))
    if per_slice:
        for k in range(n_z):
            c = _centroid(cav[:, :, k])
            if c is None:
                c = _centroid(myo[:, :, k])
            if c is not None:
                centers[k] = c * sxy
    return centers


def resample_slices(
    volume: np.ndarray,
    spacing: tuple[float, float, float],
    centers_mm: np.ndarray,
    out_spacing: float,
    size: int,
    order: int,
    cval: float,
) -> np.ndarray:
    """Resample each slice onto a ``size × size`` grid of ``out_spacing`` mm pixels.

    Args:
        volume: (X, Y, Z) array.
        spacing: (sx, sy, sz) mm.
        centers_mm: (Z, 2) grid centre of each slice, mm along X and Y.
        out_spacing: output pixel spacing (mm).
        size: output side (pixels).
        order: 0 (nearest; labels) or 1 (bilinear; images, anti-aliased when downsampling).
        cval: value outside the source.

    Returns:
        (Z, size, size) array of ``volume``'s dtype for order 0, float32 otherwise.
    """
    sx, sy = float(spacing[0]), float(spacing[1])
    src = volume
    if order > 0:
        src = volume.astype(np.float32, copy=False)
        sig = [max(0.0, (out_spacing / s - 1.0) / 2.0) for s in (sx, sy)]
        if sig[0] > 0 or sig[1] > 0:
            src = ndimage.gaussian_filter(src, (sig[0], sig[1], 0.0), mode="nearest")
    n_z = volume.shape[2]
    offs = (np.arange(size) - (size - 1) / 2) * out_spacing  # (size,)
    ix = (centers_mm[:, 0, None, None] + offs[None, :, None]) / sx  # (Z, size, 1)
    iy = (centers_mm[:, 1, None, None] + offs[None, None, :]) / sy  # (Z, 1, size)
    iz = np.arange(n_z, dtype=np.float64)[:, None, None]
    coords = np.stack(np.broadcast_arrays(ix, iy, iz), axis=0)  # (3, Z, size, size)
    out = ndimage.map_coordinates(src, coords, order=order, mode="constant", cval=cval, prefilter=False)
    return out if order == 0 else out.astype(np.float32)


def scale_intensity(
    image: np.ndarray, percentiles: tuple[float, float], clean: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None, tuple[float, float]]:
    """Map the image's (low, high) percentiles (NaN = padding, ignored) to [0, 1].

    Returns:
        image in [0, 1] (padding 0), clean mapped the same way (or None), (low, high).
    """
    valid = image[np.isfinite(image)]
    if valid.size == 0:
        lo = hi = 0.0
    else:
        lo, hi = (float(v) for v in np.percentile(valid, percentiles))
    span = hi - lo if hi > lo else 1.0

    def _map(a: np.ndarray) -> np.ndarray:
        out = np.clip((a - lo) / span, 0.0, 1.0)
        return np.nan_to_num(out, nan=0.0).astype(np.float32)

    return _map(image), (None if clean is None else _map(clean)), (lo, hi)


def pad_slices(stack: np.ndarray, n_slices: int) -> np.ndarray:
    """Zero-pad (Z, H, W) to (n_slices, H, W), centred; Z > n_slices is a ValueError."""
    z = stack.shape[0]
    if z > n_slices:
        raise ValueError(f"stack has {z} slices, more than n_slices={n_slices}")
    before = (n_slices - z) // 2
    return np.pad(stack, ((before, n_slices - z - before), (0, 0), (0, 0)))


def preprocess_stack(
    image: np.ndarray,
    mask: np.ndarray,
    spacing: tuple[float, float, float],
    params: PreprocessParams,
    clean: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Steps 1-3 of the module doc for one case (padding is the dataset's job).

    Args:
        image, mask, clean: (X, Y, Z) arrays of one case (clean optional).
        spacing: (sx, sy, sz) mm.
        params: :class:`PreprocessParams`.

    Returns:
        dict with 'image' (Z, S, S) float32 in [0, 1], 'mask' (Z, S, S) uint8,
        'centers_mm' (Z, 2), 'intensity_range' (2,), and 'clean' when given.
    """
    centers = slice_centers(mask, spacing, params.center_per_slice)
    img = resample_slices(image, spacing, centers, params.spacing_mm, params.size, order=1, cval=np.nan)
    msk = resample_slices(mask.astype(np.uint8), spacing, centers, params.spacing_mm, params.size, order=0, cval=0)
    cln = None
    if clean is not None:
        cln = resample_slices(clean, spacing, centers, params.spacing_mm, params.size, order=1, cval=np.nan)
    img, cln, (lo, hi) = scale_intensity(img, params.percentiles, cln)
    out = {
        "image": img,
        "mask": msk.astype(np.uint8),
        "centers_mm": centers.astype(np.float64),
        "intensity_range": np.array([lo, hi], dtype=np.float64),
    }
    if cln is not None:
        out["clean"] = cln
    return out


__all__ = [
    "PreprocessParams",
    "pad_slices",
    "preprocess_stack",
    "resample_slices",
    "scale_intensity",
    "slice_centers",
]
