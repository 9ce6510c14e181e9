"""Content checks of one case's files, shared by every reader (EMIDEC today; ACDC and
manifest readers call the same functions).

A file can parse and still make no sense: a blank series exported by mistake, a mask
without the LV cavity, a mask resampled onto another grid than its image, a spacing in
the wrong unit, a file renamed by hand, a clinical sheet edited twice. Each function
below takes what a reader has already opened (nibabel images, voxel arrays, paths) and
returns a list of :class:`Problem`; it never raises for bad content and never reads
more than it is given, except :func:`stored_zooms` (the header bytes) and
:func:`check_clinical_repeats` (the clinical file).

Levels: ``error`` makes the case unusable (``check-data`` exits 3; ``train`` skips the
case, or stops with ``--strict``); ``warning`` leaves it usable. Every message names
what was expected. The checks and their levels are listed in ``docs/data-format.md``
("Checks").

Typical use by a reader, for one case::

    problems = check_dimensions(image_img.shape, cid, image_path)
    problems += check_spacing(stored_zooms(image_path, image_img), cid, image_path)
    problems += check_geometry(image_img, mask_img, cid, image_path, mask_path)
    problems += check_image_voxels(image, cid, image_path, mask=mask)
    problems += check_mask_voxels(mask, cid, mask_path, image.shape)
    problems += check_file_names(cid, {"image": image_path, "mask": mask_path}, other_ids)
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Literal, Mapping, Sequence

import numpy as np

from attri_ssc.data.attributes import LABEL_CAVITY, LABEL_INFARCT, LABEL_MYOCARDIUM, LABEL_NO_REFLOW, VALID_LABELS

log = logging.getLogger(__name__)

#: Plausible voxel spacing of cardiac MRI (mm); outside is a warning (a unit error, most often).
IN_PLANE_SPACING_MM: tuple[float, float] = (0.3, 5.0)
SLICE_SPACING_MM: tuple[float, float] = (0.5, 20.0)

#: Structures the attributes need, each as (description, labels): a case whose mask has
#: none of a structure's labels on any slice is unusable.
REQUIRED_STRUCTURES: tuple[tuple[str, frozenset[int]], ...] = (
    ("LV cavity (label 1)", frozenset({LABEL_CAVITY})),
    ("myocardium (labels 2-4)", frozenset({LABEL_MYOCARDIUM, LABEL_INFARCT, LABEL_NO_REFLOW})),
)

#: Relative tolerance when comparing the image's and the mask's voxel spacing.
SPACING_RTOL = 1e-3


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the data.

    Attributes:
        case_id: the case concerned ('' for the folder as a whole).
        path: the file or folder concerned.
        message: what is wrong and what was expected.
        severity: 'error' makes the case unusable; 'warning' does not.
    """

    case_id: str
    path: str
    message: str
    severity: Literal["error", "warning"] = "error"

    @property
    def level(self) -> str:
        """Alias of :attr:`severity`."""
        return self.severity

    def __str__(self) -> str:
        who = f"case {self.case_id}: " if self.case_id else ""
        return f"{self.severity}: {who}{self.path}: {self.message}"


def errors_of(problems: Iterable[Problem]) -> list[Problem]:
    """The problems that make a case unusable."""
    return [p for p in problems if p.severity == "error"]


# --------------------------------------------------------------------------- headers


def stored_zooms(path: str | Path, img) -> tuple[float, ...]:
    """Voxel spacing as written in the header, sign included: on load nibabel replaces a
    zero spacing by 1 mm and a negative one by its absolute value, which would hide a
    broken header. Falls back to nibabel's values for unusual header classes."""
    from nibabel.openers import ImageOpener

    try:
        with ImageOpener(str(path)) as fh:
            header = type(img.header).from_fileobj(fh, check=False)
        pixdim = header["pixdim"]
        n = int(header["dim"][0])
        return tuple(float(z) for z in pixdim[1:1 + n])
    except Exception:
        return tuple(float(z) for z in img.header.get_zooms())


def volume_shape(shape: Sequence[int]) -> tuple[int, ...] | None:
    """(X, Y, Z) of a header shape: the shape itself when 3D, the first three axes when the
    others are all 1 (an (X, Y, Z, 1) export), else None."""
    shape = tuple(int(s) for s in shape)
    if len(shape) == 3:
        return shape
    if len(shape) > 3 and all(s == 1 for s in shape[3:]):
        return shape[:3]
    return None


def check_dimensions(shape: Sequence[int], case_id: str, path: str | Path) -> list[Problem]:
    """A volume must be (X, Y, slices); trailing axes of size 1 are read away (warning),
    anything else (2D, a time series, several channels) is an error."""
    shape = tuple(int(s) for s in shape)
    if len(shape) == 3:
        return []
    if volume_shape(shape) is not None:
        return [Problem(case_id, str(path), f"extra dimension(s) of size 1 in shape {shape}; read as the 3D "
                        f"volume {shape[:3]} (expected (X, Y, slices))", "warning")]
    return [Problem(case_id, str(path), f"expected a 3D (X, Y, slices) volume, got shape {shape}")]


def check_spacing(zooms: Sequence[float], case_id: str, path: str | Path) -> list[Problem]:
    """The first three header spacings (mm): missing, zero or non-finite is an error;
    negative is a warning (its absolute value is used, as nibabel and ITK do); outside
    :data:`IN_PLANE_SPACING_MM` / :data:`SLICE_SPACING_MM` is a warning."""
    zooms = tuple(float(z) for z in zooms[:3])
    if len(zooms) != 3 or not all(np.isfinite(z) and z != 0 for z in zooms):
        return [Problem(case_id, str(path), f"invalid voxel spacing {tuple(abs(z) for z in zooms)} in header; "
                        "expected three positive spacings in mm")]
    problems = []
    if any(z < 0 for z in zooms):
        problems.append(Problem(case_id, str(path), f"negative voxel spacing {zooms} in header; its absolute "
                                "value is used (expected positive spacings)", "warning"))
    sx, sy, sz = (abs(z) for z in zooms)
    lo, hi = IN_PLANE_SPACING_MM
    zlo, zhi = SLICE_SPACING_MM
    if not (lo <= sx <= hi and lo <= sy <= hi) or not zlo <= sz <= zhi:
        problems.append(Problem(
            case_id, str(path), f"voxel spacing {sx:g} x {sy:g} x {sz:g} mm is implausible for cardiac MRI "
            f"(expected in-plane {lo:g}-{hi:g} mm and slices {zlo:g}-{zhi:g} mm; is the header in another unit?)",
            "warning"))
    return problems


def _axcodes(affine: np.ndarray) -> tuple[str, ...]:
    import nibabel as nib

    return tuple(str(c) for c in nib.aff2axcodes(affine))


def check_geometry(image_img, mask_img, case_id: str, image_path: str | Path, mask_path: str | Path,
                   image_zooms: Sequence[float] | None = None,
                   mask_zooms: Sequence[float] | None = None, compare_spacing: bool = True) -> list[Problem]:
    """Image and mask must share a voxel grid: shape, spacing and orientation differing
    are errors (the mask was resampled or exported from another series); an origin or
    rotation differing with the same grid is a warning (labels are matched voxel by voxel).

    Args:
        image_img, mask_img: nibabel images (headers; no voxel data is read).
        image_zooms, mask_zooms: spacings as stored (see :func:`stored_zooms`); default
            the headers' (nibabel-fixed) zooms.
        compare_spacing: False when the image's spacing was already reported invalid by
            :func:`check_spacing` (it is not compared again).
    """
    mask_path = str(mask_path)
    i_shape, m_shape = volume_shape(image_img.shape), volume_shape(mask_img.shape)
    if i_shape is None or m_shape is None:
        return []  # check_dimensions reports it
    if i_shape != m_shape:
        return [Problem(case_id, mask_path, f"mask shape {m_shape} differs from image shape {i_shape} (expected "
                        "the mask on the image's voxel grid)")]
    iz = np.abs(np.asarray(image_zooms if image_zooms is not None else image_img.header.get_zooms(), float)[:3])
    mz = np.abs(np.asarray(mask_zooms if mask_zooms is not None else mask_img.header.get_zooms(), float)[:3])
    problems = []
    if (compare_spacing and len(iz) == len(mz) == 3 and np.all(np.isfinite(iz) & (iz > 0)) and np.all(np.isfinite(mz) & (mz > 0))
            and not np.allclose(iz, mz, rtol=SPACING_RTOL, atol=1e-4)):
        problems.append(Problem(
            case_id, mask_path, f"mask voxel spacing {tuple(round(float(z), 4) for z in mz)} mm differs from the "
            f"image's {tuple(round(float(z), 4) for z in iz)} mm (expected the mask on the image's voxel grid)"))
    i_aff, m_aff = np.asarray(image_img.affine, float), np.asarray(mask_img.affine, float)
    if not (np.all(np.isfinite(i_aff)) and np.all(np.isfinite(m_aff))):
        return problems
    try:
        i_codes, m_codes = _axcodes(i_aff), _axcodes(m_aff)
    except Exception:  # a singular affine: no orientation to compare
        return problems
    if i_codes != m_codes:
        problems.append(Problem(
            case_id, mask_path, f"mask orientation {''.join(m_codes)} differs from the image's "
            f"{''.join(i_codes)} (expected the same voxel axes; the labels would be flipped or transposed)"))
        return problems
    voxel = float(np.min(iz)) if len(iz) and np.all(iz > 0) else 1.0
    shift = float(np.linalg.norm(i_aff[:3, 3] - m_aff[:3, 3]))
    rot = float(np.max(np.abs(i_aff[:3, :3] - m_aff[:3, :3]))) if not problems else 0.0
    if shift > 0.5 * voxel or rot > SPACING_RTOL * max(1.0, float(np.max(np.abs(i_aff[:3, :3])))):
        problems.append(Problem(
            case_id, mask_path, f"mask affine differs from the image's (origin {shift:.3g} mm apart); the mask is "
            "matched to the image voxel by voxel (expected identical affines)", "warning"))
    return problems


# --------------------------------------------------------------------------- voxels


def check_image_voxels(data: np.ndarray, case_id: str, path: str | Path, role: str = "image",
                       mask: np.ndarray | None = None) -> list[Problem]:
    """An image must be finite and not constant (a blank series); with the case's mask
    ``(X, Y, Z)``, a blank slice where the mask has myocardium is a warning."""
    data = np.asarray(data)
    if data.size == 0:
        return [Problem(case_id, str(path), f"{role} has no voxels (shape {data.shape}); expected an MR volume")]
    if not np.all(np.isfinite(data)):
        return [Problem(case_id, str(path), f"{role} has non-finite values (expected finite intensities)")]
    lo, hi = float(data.min()), float(data.max())
    if lo == hi:
        what = "has no signal (every voxel is 0)" if lo == 0 else f"is constant (every voxel is {lo:g})"
        return [Problem(case_id, str(path), f"{role} {what}; expected an MR image with contrast")]
    problems = []
    if mask is not None and role == "image" and data.ndim == 3 and np.shape(mask) == data.shape:
        has_myo = (np.asarray(mask) >= LABEL_MYOCARDIUM).any(axis=(0, 1))
        flat = data.max(axis=(0, 1)) == data.min(axis=(0, 1))
        blank = [int(k) for k in np.flatnonzero(has_myo & flat)]
        if blank:
            problems.append(Problem(
                case_id, str(path), f"slice(s) {blank} are blank (constant) in the image but hold myocardium in "
                "the mask (expected signal where the heart is)", "warning"))
    return problems


def check_mask_voxels(data: np.ndarray, case_id: str, path: str | Path, shape: Sequence[int],
                      required: Sequence[tuple[str, frozenset[int]]] = REQUIRED_STRUCTURES,
                      valid_labels: frozenset[int] = VALID_LABELS) -> list[Problem]:
    """A label volume must have the image's ``shape``, finite integer labels in
    ``valid_labels``, each ``required`` structure on at least one slice, and background on
    every slice (``(X, Y, Z)`` volumes)."""
    data = np.asarray(data)
    path = str(path)
    if data.shape != tuple(shape):
        return [Problem(case_id, path, f"mask shape {data.shape} differs from image shape {tuple(shape)} (expected "
                        "the mask on the image's voxel grid)")]
    if not np.all(np.isfinite(data)):
        return [Problem(case_id, path, "mask has non-finite values (expected integer labels)")]
    rounded = np.rint(data)
    if not np.array_equal(rounded, data):
        return [Problem(case_id, path, "mask has non-integer values (expected integer labels)")]
    values = {int(v) for v in np.unique(rounded)}
    unknown = sorted(values - set(valid_labels))
    if unknown:
        return [Problem(case_id, path, f"mask has unknown label(s) {unknown}; expected 0 background, "
                        "1 cavity, 2 myocardium, 3 infarct, 4 no-reflow")]
    if not values - {0}:
        return [Problem(case_id, path, "mask is empty (background only: no cavity or myocardium)")]
    n_slices = data.shape[-1] if data.ndim else 0
    problems = [Problem(case_id, path, f"mask has no {name} on any of its {n_slices} slice(s); the attributes "
                        "need it (expected it on at least one slice)")
                for name, labels in required if not values & set(labels)]
    if data.ndim == 3:
        # A slice without background has no outer wall: its thickness cannot be measured.
        full = [int(k) for k in np.flatnonzero((rounded != 0).all(axis=(0, 1)))]
        if full:
            problems.append(Problem(case_id, path, f"slice(s) {full} have no background: the labels fill the whole "
                                    "slice (expected background around the heart)"))
    return problems


# --------------------------------------------------------------------------- names and clinical files


def _tokens(name: str) -> set[str]:
    return {t.upper() for t in re.split(r"[^A-Za-z0-9]+", name) if t}


def check_file_names(case_id: str, files: Mapping[str, str | Path | None], other_ids: Iterable[str],
                     extra_files: Iterable[str | Path] = ()) -> list[Problem]:
    """A file of case ``case_id`` named for another case (its name holds another known
    id as a word and not its own): an error for a file the case uses (``files``: role ->
    path), a warning for another file lying in the case's folders (``extra_files``).

    Words are the name's runs of letters and digits, compared case-insensitively, so the
    check works for ``Case_P012.nii.gz`` and ``patient012_frame01.nii.gz`` alike.
    """
    own = case_id.upper()
    others = {i.upper() for i in other_ids} - {own}
    problems = []

    def foreign(path: Path) -> str | None:
        words = _tokens(path.name)
        if own in words:
            return None
        hits = sorted(words & others)
        return hits[0] if hits else None

    for role, path in files.items():
        if path is None:
            continue
        other = foreign(Path(path))
        if other:
            problems.append(Problem(case_id, str(path), f"the {role} file is named for case {other} but is read as "
                                    f"case {case_id}'s (expected a file named for {case_id}; renamed or copied by "
                                    "hand?)"))
    used = {Path(p) for p in files.values() if p is not None}
    for path in extra_files:
        path = Path(path)
        if path in used:
            continue
        other = foreign(path)
        if other:
            problems.append(Problem(case_id, str(path), f"a file named for case {other} lies in case {case_id}'s "
                                    "folder (ignored; expected only this case's files there)", "warning"))
    return problems


def check_clinical_repeats(path: str | Path, case_id: str) -> list[Problem]:
    """A clinical field given more than once: an error when the values differ (which one
    is right?), a warning when they agree. The parser reads the first occurrence."""
    from attri_ssc.data.clinical import FIELDS, decode_bytes, field_occurrences, normalised_value

    try:
        text, _ = decode_bytes(Path(path).read_bytes())
    except OSError:
        return []  # the parser reports unreadable files
    problems = []
    for key, raws in field_occurrences(text).items():
        printed = FIELDS[key][0]
        values = [normalised_value(key, r) for r in raws]
        if len(set(map(repr, values))) > 1:
            listing = ", ".join(repr(r) for r in raws)
            problems.append(Problem(case_id, str(path), f"field '{printed}' is given {len(raws)} times with "
                                    f"different values ({listing}); expected it once"))
        else:
            problems.append(Problem(case_id, str(path), f"field '{printed}' is given {len(raws)} times (same "
                                    "value); expected it once", "warning"))
    return problems


__all__ = [
    "IN_PLANE_SPACING_MM",
    "Problem",
    "REQUIRED_STRUCTURES",
    "SLICE_SPACING_MM",
    "check_clinical_repeats",
    "check_dimensions",
    "check_file_names",
    "check_geometry",
    "check_image_voxels",
    "check_mask_voxels",
    "check_spacing",
    "errors_of",
    "stored_zooms",
    "volume_shape",
]
