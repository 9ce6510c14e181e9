"""Images as the page shows them: PNG bytes on fixed, shared scales.

Every grey panel (original, reconstruction, edited, interpolation frames, thumbnails) maps
intensities through one scale, :data:`INTENSITY_RANGE` (the preprocessing puts images in
[0, 1]; decoded values outside it are clipped), so a brightness difference between panels is
a difference of the images, never of their display. The difference map (edited −
reconstruction) uses a diverging colour map symmetric about 0; the saliency map an RGBA
heat map whose transparency follows the saliency, for drawing over the edited image.

PNGs are written at the image's own resolution; the page scales them up (nearest
neighbour) to at least 256 px.
"""

from __future__ import annotations

import base64
import io

import numpy as np

#: The shared grey scale of every image panel (model inputs are scaled to [0, 1]).
INTENSITY_RANGE = (0.0, 1.0)
#: The difference map's scale is ±max(|edited − reconstruction|), but never narrower than this
#: (so a null edit shows as flat grey, not as amplified rounding noise).
MIN_DIFFERENCE_SCALE = 0.02


def to_plane(image, slice_index: int | None = None) -> np.ndarray:
    """One 2D plane (H, W) float64 of an image (1, H, W) or a volume (1, D, H, W) at ``slice_index``."""
    arr = image.detach().cpu().numpy() if hasattr(image, "detach") else np.asarray(image)
    arr = np.asarray(arr, dtype=np.float64)
    if arr.ndim in (3, 4) and arr.shape[0] == 1:  # the channel
        arr = arr[0]
    if arr.ndim == 3:
        index = arr.shape[0] // 2 if slice_index is None else int(slice_index)
        arr = arr[index]
    if arr.ndim != 2:
        raise ValueError(f"expected an image (1, H, W) or a volume (1, D, H, W), got shape {np.shape(image)}")
    return arr


def png_bytes(pixels: np.ndarray) -> bytes:
    """PNG of uint8 pixels (H, W) grey, (H, W, 3) RGB or (H, W, 4) RGBA."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def grey_png(plane: np.ndarray) -> bytes:
    """PNG of a plane (H, W) on the shared :data:`INTENSITY_RANGE`."""
    lo, hi = INTENSITY_RANGE
    scaled = np.clip((plane - lo) / (hi - lo), 0.0, 1.0)
    return png_bytes(np.round(scaled * 255).astype(np.uint8))


def difference_png(edited: np.ndarray, reference: np.ndarray) -> tuple[bytes, float]:
    """(PNG of edited − reference in a blue-white-red map, the symmetric scale s: blue −s, red +s)."""
    from matplotlib import colormaps

    diff = np.clip(edited, *INTENSITY_RANGE) - np.clip(reference, *INTENSITY_RANGE)
    scale = max(float(np.abs(diff).max()), MIN_DIFFERENCE_SCALE)
    rgba = colormaps["RdBu_r"](0.5 + 0.5 * diff / scale)
    return png_bytes(np.round(rgba[..., :3] * 255).astype(np.uint8)), scale


def saliency_png(saliency: np.ndarray) -> tuple[bytes, float]:
    """(RGBA PNG of a non-negative map, its maximum): colour and opacity both grow with the saliency."""
    from matplotlib import colormaps

    peak = float(saliency.max()) if saliency.size else 0.0
    level = np.clip(saliency / peak, 0.0, 1.0) if peak > 0 else np.zeros_like(saliency)
    rgba = colormaps["inferno"](level)
    rgba[..., 3] = level
    return png_bytes(np.round(rgba * 255).astype(np.uint8)), peak
