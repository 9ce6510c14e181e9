"""Attribute registry and image-derived attributes in physical units.

Two scopes:

* ``image`` attributes are measured from the sample's own mask: the whole stack for a
  3D item, the single slice for a 2D item (a slice "volume" is its area times the slice
  thickness, so per-slice volumes of a case sum to the case volume).
* The ``*_area`` attributes are in-plane areas (cm²): a 2D item's is its slice's area, a
  3D item's the sum over its slices (its volume divided by the slice thickness). A slice
  image shows its area but not its thickness, which varies between cases (8-13 mm in
  EMIDEC), so a per-slice volume is the area times a factor no single slice can see: on
  the demo phantoms the exact in-plane myocardial area ranks the slice myocardial
  volumes only to Spearman 0.90. 2D models should therefore supervise areas.
* ``case`` attributes belong to the patient (clinical text file, N/P label); a 2D item
  carries its case's value.

Masks arrive here in the canonical codes of :mod:`attri_ssc.data.labels` (each reader
translates its cohort's numbering through ``data.label_map`` when it reads a mask):
0 background, 1 LV cavity, 2 normal myocardium, 3 infarction, 4 no-reflow, 5 RV cavity.
Myocardium is 2 ∪ 3 ∪ 4; the infarct (scar) is 3 ∪ 4, i.e. it includes the no-reflow
core, as in clinical infarct sizing. The RV is not part of any attribute. The scar
attributes need a cohort that labels scar (:data:`NEEDS_STRUCTURE`).

Wall thickness: for every myocardial pixel, the distance to the cavity plus the distance
to the outside of the myocardium (Euclidean distance transforms, scipy.ndimage) is the
local thickness of the wall through that pixel, less a correction of
:data:`WALL_EDGE_CORRECTION_PX` pixels: both distances run between pixel centres while
the wall's boundaries lie between pixels. The correction (0.78 px, not the 1 px of an
axis-aligned wall, because oblique boundaries pass closer to pixel centres) was
calibrated on 60 digitised circular rings (spacing 1.3-2 mm, radius 8-32 mm, thickness
3-12 mm; residual 0.09 px standard deviation). A slice's thickness is the mean over
its myocardial pixels; a case's is
the myocardium-weighted mean over slices. A slice with myocardium but no cavity (an
apical cap) has no inner wall: its thickness is the cap's largest through-width
(twice the largest distance to the outside, less the same correction).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Mapping

import numpy as np
from scipy import ndimage

from attri_ssc.data.labels import CANONICAL

LABEL_BACKGROUND = CANONICAL["background"]
LABEL_CAVITY = CANONICAL["lv_cavity"]
LABEL_MYOCARDIUM = CANONICAL["myocardium"]
LABEL_INFARCT = CANONICAL["infarct"]
LABEL_NO_REFLOW = CANONICAL["no_reflow"]
LABEL_RV = CANONICAL["rv"]
#: Canonical codes (what readers hand on after applying the label map).
VALID_LABELS = frozenset(CANONICAL.values())
_MYOCARDIAL = (LABEL_MYOCARDIUM, LABEL_INFARCT, LABEL_NO_REFLOW)
_SCAR = (LABEL_INFARCT, LABEL_NO_REFLOW)

#: Pixels subtracted from (distance to cavity + distance to outside); see module doc.
WALL_EDGE_CORRECTION_PX = 0.78


@dataclass(frozen=True)
class AttributeSpec:
    """One named attribute.

    Attributes:
        name: registry key.
        description: what it measures.
        unit: physical unit ('' when dimensionless).
        scope: 'image' (from the item's own mask) or 'case' (patient-level).
        kind: 'continuous', 'binary' or 'categorical' (categorical codes cannot be
            supervised as ordered values).
    """

    name: str
    description: str
    unit: str
    scope: Literal["image", "case"]
    kind: Literal["continuous", "binary", "categorical"] = "continuous"


def _specs(*items: AttributeSpec) -> dict[str, AttributeSpec]:
    return {s.name: s for s in items}


#: Image-derived attributes, in the order of :func:`measure_mask`'s output.
IMAGE_ATTRIBUTES: tuple[str, ...] = (
    "lv_volume",
    "myo_volume",
    "infarct_volume",
    "no_reflow_volume",
    "infarct_fraction",
    "scar_presence",
    "wall_thickness",
    "lv_area",
    "myo_area",
    "infarct_area",
)

#: Clinical attributes, in the order of :meth:`ClinicalRecord.attribute_values`.
CLINICAL_ATTRIBUTES: tuple[str, ...] = (
    "fevg",
    "age",
    "sex",
    "tobacco",
    "overweight",
    "arterial_hypertension",
    "diabetes",
    "familial_history",
    "ecg_st",
    "troponin",
    "killip_max",
    "ntprobnp",
)

ATTRIBUTES: dict[str, AttributeSpec] = _specs(
    AttributeSpec("lv_volume", "LV cavity volume (label 1)", "mL", "image"),
    AttributeSpec("myo_volume", "myocardial volume (labels 2, 3, 4)", "mL", "image"),
    AttributeSpec("infarct_volume", "infarct volume including no-reflow (labels 3, 4)", "mL", "image"),
    AttributeSpec("no_reflow_volume", "no-reflow (microvascular obstruction) volume (label 4)", "mL", "image"),
    AttributeSpec("infarct_fraction", "infarct volume as a percentage of myocardial volume", "%", "image"),
    AttributeSpec("scar_presence", "1 if any infarct or no-reflow voxel, else 0", "", "image", "binary"),
    AttributeSpec("wall_thickness", "mean myocardial wall thickness (distance transform)", "mm", "image"),
    AttributeSpec("lv_area", "LV cavity in-plane area (label 1; summed over the item's slices)", "cm²", "image"),
    AttributeSpec("myo_area", "myocardial in-plane area (labels 2, 3, 4; summed over slices)", "cm²", "image"),
    AttributeSpec("infarct_area", "infarct in-plane area including no-reflow (labels 3, 4; summed over slices)",
                  "cm²", "image"),
    AttributeSpec("fevg", "ejection fraction (FEVG): read from EMIDEC's clinical file or a manifest column; "
                  "computed from the ED and ES LV cavity volumes for ACDC (and manifests with a frame column)",
                  "%", "case"),
    AttributeSpec("age", "age", "years", "case"),
    AttributeSpec("sex", "sex, 1 male / 0 female", "", "case", "binary"),
    AttributeSpec("tobacco", "tobacco code 1/2/3 (meaning undocumented)", "", "case", "categorical"),
    AttributeSpec("overweight", "overweight, 1 yes / 0 no", "", "case", "binary"),
    AttributeSpec("arterial_hypertension", "arterial hypertension, 1 yes / 0 no", "", "case", "binary"),
    AttributeSpec("diabetes", "diabetes, 1 yes / 0 no", "", "case", "binary"),
    AttributeSpec("familial_history", "familial history of coronary artery disease, 1 yes / 0 no", "", "case", "binary"),
    AttributeSpec("ecg_st", "ECG ST elevation, 1 yes / 0 no", "", "case", "binary"),
    AttributeSpec("troponin", "troponin (as in the clinical file)", "", "case"),
    AttributeSpec("killip_max", "maximum Killip class (1-4)", "", "case"),
    AttributeSpec("ntprobnp", "NT-proBNP (as in the clinical file)", "", "case"),
    AttributeSpec("pathological", "1 for a P (pathological) case, 0 for N (normal)", "", "case", "binary"),
    AttributeSpec("height", "height (ACDC Info.cfg)", "cm", "case"),
    AttributeSpec("weight", "weight (ACDC Info.cfg)", "kg", "case"),
)

#: Image attributes that need a structure the cohort's label map may lack.
NEEDS_STRUCTURE: dict[str, str] = {
    "infarct_volume": "infarct",
    "no_reflow_volume": "no_reflow",
    "infarct_fraction": "infarct",
    "scar_presence": "infarct",
    "infarct_area": "infarct",
}


def check_supervised(names: tuple[str, ...] | list[str], columns: Mapping[str, str] | None = None) -> None:
    """Raise ValueError unless ``names`` are distinct, registered (or declared cohort
    columns, ``columns``: name → unit or 'categorical'), non-categorical."""
    if len(names) == 0:
        raise ValueError("at least one attribute is needed")
    columns = dict(columns or {})
    seen: set[str] = set()
    for name in names:
        if name not in ATTRIBUTES and name in columns:
            if name in seen:
                raise ValueError(f"attribute {name!r} is listed twice")
            seen.add(name)
            if columns[name] == "categorical":
                raise ValueError(f"attribute {name!r} is a categorical column; it has no order, so it cannot be supervised")
            continue
        if name not in ATTRIBUTES:
            raise ValueError(f"unknown attribute {name!r}; known: {', '.join(ATTRIBUTES)} "
                             "(or a manifest column declared in data.columns)")
        if name in seen:
            raise ValueError(f"attribute {name!r} is listed twice")
        seen.add(name)
        if ATTRIBUTES[name].kind == "categorical":
            raise ValueError(
                f"attribute {name!r} is categorical ({ATTRIBUTES[name].description}); "
                "it has no order, so it cannot be supervised"
            )


def myocardium(mask: np.ndarray) -> np.ndarray:
    """Boolean myocardium (canonical 2 ∪ 3 ∪ 4) of an integer mask of any shape."""
    return np.isin(mask, _MYOCARDIAL)


def scar(mask: np.ndarray) -> np.ndarray:
    """Boolean infarct including no-reflow (canonical 3 ∪ 4) of an integer mask."""
    return np.isin(mask, _SCAR)


def slice_wall_thickness(mask: np.ndarray, spacing_xy: tuple[float, float]) -> np.ndarray:
    """Mean wall thickness (mm) of each slice of a stack.

    Args:
        mask: integer labels (X, Y, Z), slices along the last axis.
        spacing_xy: in-plane pixel spacing (mm) along X and Y.

    Returns:
        (Z,) float64: the mean local thickness over the slice's myocardial pixels, 0 for
        slices without myocardium. One pair of distance transforms covers the stack:
        the through-plane sampling is set so large that no distance crosses slices.
    """
    mask = np.asarray(mask)
    sx, sy = float(spacing_xy[0]), float(spacing_xy[1])
    pix = WALL_EDGE_CORRECTION_PX * 0.5 * (sx + sy)
    far = 1e6  # through-plane "spacing": larger than any in-plane distance
    myo = myocardium(mask)
    cav = mask == LABEL_CAVITY
    n_z = mask.shape[-1]
    out = np.zeros(n_z, dtype=np.float64)
    has_myo = myo.any(axis=(0, 1))
    if not has_myo.any():
        return out
    inside = myo | cav
    # Distance from each pixel to the nearest pixel outside the heart (per slice).
    d_out = ndimage.distance_transform_edt(inside, sampling=(sx, sy, far))
    has_cav = cav.any(axis=(0, 1))
    if has_cav.any():
        d_in = ndimage.distance_transform_edt(~cav, sampling=(sx, sy, far))
    else:
        d_in = np.zeros_like(d_out)
    local = d_in + d_out - pix
    n_myo = myo.sum(axis=(0, 1))
    sums = np.where(myo, local, 0.0).sum(axis=(0, 1))
    caps = has_myo & ~has_cav
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(has_myo & has_cav, sums / np.maximum(n_myo, 1), 0.0)
    if caps.any():
        cap_width = 2.0 * np.where(myo, d_out, 0.0).max(axis=(0, 1)) - pix
        out = np.where(caps, cap_width, out)
    # A case whose outside is absent from a slice (myocardium fills it) would give
    # distances of order `far`; that is not a heart and is reported as NaN.
    out[out > far / 2] = np.nan
    return out


def measure_mask(mask: np.ndarray, spacing: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """All image attributes of a stack and of each of its slices.

    Args:
        mask: integer labels (X, Y, Z), slices along the last axis.
        spacing: voxel spacing (sx, sy, sz) in mm; sz is the slice thickness used to turn
            areas into volumes.

    Returns:
        case: (len(IMAGE_ATTRIBUTES),) float64, ordered as :data:`IMAGE_ATTRIBUTES`.
        per_slice: (Z, len(IMAGE_ATTRIBUTES)) float64, the same quantities per slice.
    """
    mask = np.asarray(mask)
    if mask.ndim != 3:
        raise ValueError(f"mask must be (X, Y, Z), got shape {mask.shape}")
    sx, sy, sz = (float(s) for s in spacing)
    voxel_ml = sx * sy * sz / 1000.0
    pixel_cm2 = sx * sy / 100.0
    n_cav = (mask == LABEL_CAVITY).sum(axis=(0, 1)).astype(np.float64)
    n_myo = myocardium(mask).sum(axis=(0, 1)).astype(np.float64)
    n_inf = scar(mask).sum(axis=(0, 1)).astype(np.float64)
    cav, myo, inf = n_cav * voxel_ml, n_myo * voxel_ml, n_inf * voxel_ml
    cav_a, myo_a, inf_a = n_cav * pixel_cm2, n_myo * pixel_cm2, n_inf * pixel_cm2
    nr = (mask == LABEL_NO_REFLOW).sum(axis=(0, 1)).astype(np.float64) * voxel_ml
    thick = slice_wall_thickness(mask, (sx, sy))
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(myo > 0, 100.0 * inf / np.maximum(myo, 1e-12), 0.0)
    present = (inf > 0).astype(np.float64)
    per_slice = np.stack([cav, myo, inf, nr, frac, present, thick, cav_a, myo_a, inf_a], axis=1)

    total_myo = myo.sum()
    case_thick = float((thick * myo).sum() / total_myo) if total_myo > 0 else 0.0
    case = np.array(
        [
            cav.sum(),
            total_myo,
            inf.sum(),
            nr.sum(),
            100.0 * inf.sum() / total_myo if total_myo > 0 else 0.0,
            float(inf.sum() > 0),
            case_thick,
            cav_a.sum(),
            myo_a.sum(),
            inf_a.sum(),
        ],
        dtype=np.float64,
    )
    return case, per_slice


__all__ = [
    "ATTRIBUTES",
    "AttributeSpec",
    "CLINICAL_ATTRIBUTES",
    "IMAGE_ATTRIBUTES",
    "LABEL_BACKGROUND",
    "LABEL_CAVITY",
    "LABEL_INFARCT",
    "LABEL_MYOCARDIUM",
    "LABEL_NO_REFLOW",
    "LABEL_RV",
    "NEEDS_STRUCTURE",
    "VALID_LABELS",
    "WALL_EDGE_CORRECTION_PX",
    "check_supervised",
    "measure_mask",
    "myocardium",
    "scar",
    "slice_wall_thickness",
]
