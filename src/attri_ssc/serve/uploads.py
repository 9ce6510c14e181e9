"""Uploaded NIfTI files, checked in memory before anything touches the disk.

The explorer accepts a short-axis image (``.nii`` or ``.nii.gz``) and, optionally, its label
mask. Every check that can be made on the bytes is made here, so a hostile or broken upload is
refused with a message naming the form field, and never reaches the readers of the data layer:

* the upload's size in bytes is capped (``UploadLimits.max_bytes``, before and after gzip, so a
  small archive cannot inflate into gigabytes);
* the NIfTI header is parsed from the bytes (``nibabel.Nifti1Image.from_bytes``), and the voxel
  count it declares is capped (``UploadLimits.max_voxels``) before the data is read;
* the data must be 3D (a stack of short-axis slices; a trailing singleton dimension is
  dropped), numeric and finite, with positive voxel spacing; a mask must have the image's shape
  and non-negative integer labels.

The checked volumes are then written, by the server, into a folder the server owns and
names (the client never names a file on the server), in the layout the data readers expect.
"""

from __future__ import annotations

import io
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class UploadError(ValueError):
    """An upload that cannot be used; ``field`` names the form field (``image`` or ``mask``)."""

    def __init__(self, field: str, message: str, status: int = 422):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.status = status


@dataclass(frozen=True)
class UploadLimits:
    """Caps on one uploaded file.

    Attributes:
        max_bytes: the file as sent (and, when gzipped, as inflated) may not exceed this.
        max_voxels: the volume's declared voxel count may not exceed this.
    """

    max_bytes: int = 64 * 2**20
    max_voxels: int = 16 * 2**20

    def __post_init__(self) -> None:
        if self.max_bytes < 1024 or self.max_voxels < 64:
            raise ValueError(f"limits too small to hold any image: {self}")


@dataclass(frozen=True)
class CheckedVolume:
    """A NIfTI volume that passed :func:`read_nifti_bytes`: ``data`` (X, Y, Z) float32 or int, ``affine`` (4, 4)."""

    data: np.ndarray
    affine: np.ndarray
    zooms: tuple[float, float, float]


_GZIP_MAGIC = b"\x1f\x8b"


def _inflate(raw: bytes, field: str, limit: int) -> bytes:
    """Gunzip ``raw`` without ever holding more than ``limit`` inflated bytes."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)  # gzip header
    try:
        out = inflater.decompress(raw, limit + 1)
    except zlib.error as exc:
        raise UploadError(field, f"broken gzip data ({exc})") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise UploadError(field, f"inflates to more than the upload limit of {limit} bytes", status=413)
    if not inflater.eof:
        raise UploadError(field, "truncated gzip data (the file ends early)")
    return out


def read_nifti_bytes(raw: bytes, field: str, limits: UploadLimits) -> CheckedVolume:
    """Parse and check one uploaded NIfTI file (module doc).

    Args:
        raw: the file's bytes as uploaded (``.nii`` or gzipped ``.nii.gz``).
        field: the form field, named in every error.
        limits: the caps.
    Raises:
        UploadError: with ``field`` and a message saying what is wrong (status 413 for a size cap).
    """
    import nibabel as nib

    if len(raw) == 0:
        raise UploadError(field, "the file is empty")
    if len(raw) > limits.max_bytes:
        raise UploadError(field, f"{len(raw)} bytes exceed the upload limit of {limits.max_bytes} bytes", status=413)
    if raw[:2] == _GZIP_MAGIC:
        raw = _inflate(raw, field, limits.max_bytes)
    if len(raw) < 348:
        raise UploadError(field, f"not a NIfTI file: {len(raw)} bytes, shorter than a NIfTI-1 header (348)")
    try:
        header = nib.Nifti1Header.from_fileobj(io.BytesIO(raw), check=True)
    except Exception as exc:  # nibabel raises several types for a bad header
        raise UploadError(field, f"not a readable NIfTI-1 header ({type(exc).__name__}: {exc})") from None
    shape = tuple(int(s) for s in header.get_data_shape())
    if any(s < 1 for s in shape):
        raise UploadError(field, f"declares an empty shape {shape}")
    voxels = int(np.prod(shape, dtype=np.int64))
    if voxels > limits.max_voxels:
        raise UploadError(field, f"{voxels} voxels {shape} exceed the limit of {limits.max_voxels}", status=413)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) != 3:
        raise UploadError(field, f"must be a 3D stack of short-axis slices (X, Y, slices), got shape "
                                 f"{tuple(header.get_data_shape())}")
    try:
        image = nib.Nifti1Image.from_bytes(raw)
        data = np.asanyarray(image.dataobj).reshape(shape)
    except Exception as exc:
        raise UploadError(field, f"the image data cannot be read ({type(exc).__name__}: {exc})") from None
    if data.dtype.kind not in "biuf":
        raise UploadError(field, f"voxels must be numbers, got dtype {data.dtype}")
    if data.dtype.kind == "f" and not np.all(np.isfinite(data)):
        raise UploadError(field, "contains NaN or infinite voxels")
    zooms = tuple(float(z) for z in header.get_zooms()[:3])
    if not all(np.isfinite(z) and z > 0 for z in zooms):
        raise UploadError(field, f"voxel spacing must be positive, got {zooms}")
    return CheckedVolume(data=data, affine=np.asarray(image.affine, dtype=np.float64), zooms=zooms)


def check_mask(mask: CheckedVolume, image: CheckedVolume, field: str = "mask") -> None:
    """A mask must match the image's shape and hold non-negative integer labels."""
    if mask.data.shape != image.data.shape:
        raise UploadError(field, f"shape {mask.data.shape} differs from the image's {image.data.shape}")
    values = mask.data
    if values.dtype.kind == "f" and not np.all(values == np.round(values)):
        raise UploadError(field, "labels must be integers (0 background, 1 cavity, 2 myocardium, 3 infarct, "
                                 "4 no-reflow)")
    if values.min() < 0:
        raise UploadError(field, f"labels must be >= 0, got {values.min()}")


def write_case(folder: Path, case_id: str, image: CheckedVolume, mask: CheckedVolume | None) -> Path:
    """Write the checked volumes as one case in EMIDEC layout under ``folder`` (server-owned).

    Returns the case folder ``folder/Case_<case_id>``.
    """
    import nibabel as nib

    case = folder / f"Case_{case_id}"
    (case / "Images").mkdir(parents=True, exist_ok=False)
    nib.save(nib.Nifti1Image(np.asarray(image.data, dtype=np.float32), image.affine),
             case / "Images" / f"Case_{case_id}.nii.gz")
    if mask is not None:
        (case / "Contours").mkdir()
        nib.save(nib.Nifti1Image(np.asarray(mask.data, dtype=np.uint8), image.affine),
                 case / "Contours" / f"Case_{case_id}.nii.gz")
    return case

