"""Synthetic delayed-enhancement (DE-MRI) short-axis cases in EMIDEC's exact layout.

Each case is a stack of short-axis slices from base (slice 0) to apex through a truncated
prolate-spheroid LV: the cavity radius of slice k at depth z_k is
``r_k = R0 * sqrt(1 - (z_k / L)^2)`` and the wall is a concentric ring of thickness
``t_k = t0 * (1 - 0.15 z_k / L)``, so every slice's areas, and the wall thickness, are
known in closed form. Pathological cases carry an infarct: an angular sector of the wall
(width w) reaching from the endocardium out to a transmural fraction tau of the wall,
over a run of consecutive slices, optionally with a no-reflow core (a narrower, shallower
sector inside it). A right ventricle (bright blood crescent with a thin dark free wall)
sits against the septum, inside a body of textured soft tissue surrounded by air.

Intensities follow DE-MRI: blood bright, nulled normal myocardium dark, infarct very
bright, no-reflow dark inside the infarct. The noisy image is
``|clean * bias + n1 + i n2|`` (Rician noise of standard deviation ``noise_std`` per
channel, a smooth multiplicative bias field); the *clean* image is noise- and bias-free.

Clinical fields are drawn with plausible dependencies: a body-size factor drives cavity
radius, wall thickness and LV length (LV vs myocardial volume r about 0.6-0.7); infarcts
dilate the LV; the ejection fraction (FEVG) falls with infarct fraction and dilation;
troponin and NT-proBNP rise with infarct size and falling FEVG; ages 30-85.

Outputs under OUT (the case folders keep EMIDEC's layout exactly):

* ``Case_<id>/Images/Case_<id>.nii.gz`` (int16), ``Case_<id>/Contours/Case_<id>.nii.gz``
  (uint8 labels 0-4), ``Case <id>.txt`` (cp1252, some non-breaking spaces before colons,
  ``Killip Max:`` without a space), ``Readme.txt``;
* beside the layout: ``phantom_clean/Case_<id>.nii.gz`` (float32 noise-free image, same
  scale as the image), ``phantom_ground_truth.json`` (factors, case and per-slice
  attributes) and ``phantom_ground_truth.csv`` (one row per case).

Image intensities are stored as 1000 × the model units below (infarct = 1.0).
"""

from __future__ import annotations

import copy
import csv
import io
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from attri_ssc.data.attributes import (IMAGE_ATTRIBUTES, LABEL_CAVITY, LABEL_INFARCT, LABEL_MYOCARDIUM,
                                       LABEL_NO_REFLOW, LABEL_RV)
from attri_ssc.data.clinical import FIELDS, format_clinical
from attri_ssc.data.emidec import CLEAN_DIRNAME, GROUND_TRUTH_CSV, GROUND_TRUTH_JSON
from attri_ssc.io_utils import atomic_write, write_json

#: Mean tissue intensities (model units; stored ×1000). Each case jitters them by ±8%.
INTENSITIES: dict[str, float] = {
    "air": 0.03,
    "tissue": 0.33,
    "lv_blood": 0.62,
    "rv_blood": 0.58,
    "myocardium": 0.07,
    "rv_wall": 0.11,
    "infarct": 1.0,
    "no_reflow": 0.08,
}
STORE_SCALE = 1000.0


@dataclass(frozen=True)
class PhantomTruth:
    """Ground truth of one phantom case.

    Attributes:
        case_id: e.g. 'P004'.
        label: 'N' or 'P'.
        shape: (X, Y, Z) voxels.
        spacing: (sx, sy, sz) mm.
        factors: generative factors (radii, thickness, infarct sector, intensities, ...).
        attributes: case-level attributes, analytic (image ones, named as in
            :data:`attri_ssc.data.attributes.IMAGE_ATTRIBUTES`) and clinical.
        slices: per slice (base → apex): index, cavity_radius_mm and the image
            attributes of that slice (volumes = area × slice thickness).
    """

    case_id: str
    label: str
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    factors: dict[str, Any]
    attributes: dict[str, float]
    slices: list[dict[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PhantomTruth":
        return cls(
            case_id=d["case_id"],
            label=d["label"],
            shape=tuple(d["shape"]),
            spacing=tuple(d["spacing"]),
            factors=d["factors"],
            attributes=d["attributes"],
            slices=list(d["slices"]),
        )


def load_ground_truth(root: str | Path) -> dict[str, PhantomTruth]:
    """Read ``phantom_ground_truth.json`` of a generated folder: case id → truth."""
    data = json.loads((Path(root) / GROUND_TRUTH_JSON).read_text(encoding="utf-8"))
    return {c["case_id"]: PhantomTruth.from_dict(c) for c in data["cases"]}


def _sector(theta: np.ndarray, centre: float, width: float) -> np.ndarray:
    """Boolean: angle ``theta`` within ``width/2`` of ``centre`` (radians, wrapped)."""
    d = np.angle(np.exp(1j * (theta - centre)))
    return np.abs(d) < width / 2


def _ring_sector_area(r_in: float, depth: float, width: float) -> float:
    """Area (mm²) of an angular sector of width ``width`` between r_in and r_in + depth."""
    return 0.5 * width * ((r_in + depth) ** 2 - r_in**2)


def _draw_case(rng: np.random.Generator, label: str) -> dict[str, Any]:
    """Draw the generative factors and clinical fields of one case (no images)."""
    path = label == "P"
    size = rng.normal()
    spacing_xy = float(np.round(rng.uniform(1.37, 1.88), 4))
    dz = float(np.round(rng.uniform(8.0, 13.0) * 2) / 2)
    nx, ny = int(rng.integers(208, 257)), int(rng.integers(208, 257))

    if path:
        width = math.radians(rng.uniform(40.0, 160.0))
        transmurality = float(rng.uniform(0.3, 1.0))
        span = float(rng.uniform(0.35, 1.0))
    else:
        width = transmurality = span = 0.0
    severity = (width / (2 * math.pi)) * transmurality * span
    dilation = math.exp(0.5 * severity + rng.normal(0.03, 0.04)) if path else math.exp(rng.normal(0.0, 0.04))

    r0 = 24.0 * math.exp(0.06 * size + 0.10 * rng.normal()) * dilation
    t0 = 8.6 * math.exp(0.05 * size + 0.14 * rng.normal())
    stack = 74.0 * math.exp(0.03 * size + 0.04 * rng.normal()) * math.sqrt(dilation)
    n_slices = int(np.clip(round(stack / dz), 5, 10))
    apex_fraction = float(rng.uniform(0.80, 0.93))  # z of last slice centre / L

    factors: dict[str, Any] = {
        "size": size,
        "dilation": dilation,
        "cavity_radius_base_mm": r0,
        "wall_thickness_base_mm": t0,
        "apex_fraction": apex_fraction,
        "lv_center_offset_mm": [float(rng.uniform(-25, 25)), float(rng.uniform(-25, 25))],
        "lv_center_drift_mm": [float(rng.normal(0, 3)), float(rng.normal(0, 3))],
        "rv_angle_deg": float(rng.uniform(150, 210)),
        "rv_radius_factor": float(rng.uniform(1.1, 1.3)),
        "body_semi_axes_frac": [float(rng.uniform(0.40, 0.47)), float(rng.uniform(0.33, 0.40))],
    }
    infarct: dict[str, Any] = {"present": path}
    no_reflow: dict[str, Any] = {"present": False}
    if path:
        n_inf = max(1, int(round(span * n_slices)))
        start = int(rng.integers(0, n_slices - n_inf + 1))
        infarct.update(
            angle_deg=float(rng.uniform(0, 360)),
            width_deg=math.degrees(width),
            transmurality=transmurality,
            slices=list(range(start, start + n_inf)),
        )
        if rng.random() < 0.5:
            nr_slices = infarct["slices"][max(0, n_inf // 2 - 1) : n_inf // 2 + 1]
            nr_width = math.degrees(width) * float(rng.uniform(0.3, 0.6))
            offset = (math.degrees(width) - nr_width) / 2 * float(rng.uniform(-0.8, 0.8))
            no_reflow.update(
                present=True,
                angle_deg=infarct["angle_deg"] + offset,
                width_deg=nr_width,
                transmurality=transmurality * float(rng.uniform(0.3, 0.7)),
                slices=nr_slices,
            )
    factors["infarct"] = infarct
    factors["no_reflow"] = no_reflow
    factors["intensities"] = {k: v * float(rng.uniform(0.92, 1.08)) for k, v in INTENSITIES.items()}
    return {
        "factors": factors,
        "spacing": (spacing_xy, spacing_xy, dz),
        "shape": (nx, ny, n_slices),
    }


def _geometry(draw: dict[str, Any]) -> tuple[list[dict[str, float]], dict[str, float]]:
    """Analytic per-slice and case image attributes of a drawn case."""
    f = draw["factors"]
    sx, sy, dz = draw["spacing"]
    n = draw["shape"][2]
    z = (np.arange(n) + 0.5) * dz
    length = z[-1] / f["apex_fraction"]
    r = f["cavity_radius_base_mm"] * np.sqrt(1.0 - (z / length) ** 2)
    t = f["wall_thickness_base_mm"] * (1.0 - 0.15 * z / length)
    if f.get("es_scale"):
        # End-systole: every cavity radius scaled by c (so ESV = c² EDV and EF = 1 - c²);
        # the wall thickens so that each slice keeps its myocardial area (incompressible).
        c = float(f["es_scale"])
        r_es = c * r
        t = np.sqrt(r_es**2 + (r + t) ** 2 - r**2) - r_es
        r = r_es
    slices = []
    inf, nr = f["infarct"], f["no_reflow"]
    for k in range(n):
        cav_a = math.pi * r[k] ** 2
        myo_a = math.pi * ((r[k] + t[k]) ** 2 - r[k] ** 2)
        inf_a = nr_a = 0.0
        if inf["present"] and k in inf["slices"]:
            inf_a = _ring_sector_area(r[k], inf["transmurality"] * t[k], math.radians(inf["width_deg"]))
        if nr["present"] and k in nr["slices"]:
            nr_a = _ring_sector_area(r[k], nr["transmurality"] * t[k], math.radians(nr["width_deg"]))
        slices.append(
            {
                "index": k,
                "depth_mm": float(z[k]),
                "cavity_radius_mm": float(r[k]),
                "lv_volume": cav_a * dz / 1000.0,
                "myo_volume": myo_a * dz / 1000.0,
                "infarct_volume": inf_a * dz / 1000.0,
                "no_reflow_volume": nr_a * dz / 1000.0,
                "infarct_fraction": 100.0 * inf_a / myo_a,
                "scar_presence": float(inf_a > 0),
                "wall_thickness": float(t[k]),
                "lv_area": cav_a / 100.0,
                "myo_area": myo_a / 100.0,
                "infarct_area": inf_a / 100.0,
            }
        )
    tot = {k: sum(s[k] for s in slices)
           for k in ("lv_volume", "myo_volume", "infarct_volume", "no_reflow_volume", "lv_area", "myo_area", "infarct_area")}
    case = {
        **tot,
        "infarct_fraction": 100.0 * tot["infarct_volume"] / tot["myo_volume"],
        "scar_presence": float(tot["infarct_volume"] > 0),
        "wall_thickness": sum(s["wall_thickness"] * s["myo_volume"] for s in slices) / tot["myo_volume"],
    }
    f["lv_length_mm"] = float(length)
    return slices, case


def _clinical(rng: np.random.Generator, label: str, case: dict[str, float], factors: dict[str, Any], dz: float) -> dict[str, Any]:
    path = label == "P"
    frac = case["infarct_fraction"] / 100.0
    fevg = 63.0 - 55.0 * frac - 45.0 * (factors["dilation"] - 1.0) + rng.normal(0, 4.0)
    fevg = float(np.clip(round(fevg), 15, 78))
    age = int(np.clip(round(rng.normal(60 if path else 52, 12 if path else 13)), 30, 85))
    sex = "M" if rng.random() < (0.8 if path else 0.6) else "F"
    tobacco = int(rng.choice([1, 2, 3], p=[0.4, 0.3, 0.3] if path else [0.55, 0.25, 0.2]))
    overweight = int(rng.random() < 0.25 + 0.15 * (factors["size"] > 0.5))
    hypertension = int(rng.random() < float(np.clip(0.25 + 0.008 * (age - 50), 0.05, 0.7)))
    diabetes = int(rng.random() < (0.2 if path else 0.12))
    familial = int(rng.random() < (0.25 if path else 0.18))
    ecg = int(rng.random() < (0.85 if path else 0.05))
    if path:
        troponin = float(np.exp(rng.normal(math.log(5.0 + 150.0 * frac), 0.5)))
    else:
        troponin = float(np.exp(rng.normal(math.log(0.02), 0.8)))
    killip = 1
    if path:
        killip += int(fevg < 45 and rng.random() < 0.4) + int(fevg < 35 and rng.random() < 0.5)
    ntprobnp = float(np.exp(rng.normal(math.log(120.0) + 0.045 * (60.0 - fevg), 0.6)))
    return {
        "gap_between_slices": dz,
        "sex": sex,
        "age": age,
        "tobacco": tobacco,
        "overweight": overweight,
        "arterial_hypertension": hypertension,
        "diabetes": diabetes,
        "familial_history": familial,
        "ecg_st": ecg,
        "troponin": round(troponin, 2),
        "killip_max": killip,
        "fevg": fevg,
        "ntprobnp": round(ntprobnp),
    }


def _render(
    rng: np.random.Generator, draw: dict[str, Any], slices: list[dict[str, float]], noise_std: float, bias_strength: float,
    label_rv: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rasterise a drawn case: (noisy image, clean image, labels), each (X, Y, Z). Labels are
    canonical (:mod:`attri_ssc.data.labels`); the RV blood pool is labelled (5) only with
    ``label_rv``."""
    f = draw["factors"]
    sx, sy, dz = draw["spacing"]
    nx, ny, nz = draw["shape"]
    lev = f["intensities"]
    x = ((np.arange(nx) - (nx - 1) / 2) * sx).astype(np.float32)
    y = ((np.arange(ny) - (ny - 1) / 2) * sy).astype(np.float32)
    frac_z = np.array([s["depth_mm"] for s in slices], dtype=np.float32) / f["lv_length_mm"]
    cx = f["lv_center_offset_mm"][0] + f["lv_center_drift_mm"][0] * frac_z  # (Z,)
    cy = f["lv_center_offset_mm"][1] + f["lv_center_drift_mm"][1] * frac_z
    r_in = np.array([s["cavity_radius_mm"] for s in slices], dtype=np.float32)
    t = np.array([s["wall_thickness"] for s in slices], dtype=np.float32)
    r_out = r_in + t

    dx = x[:, None, None] - cx[None, None, :]  # (X, 1, Z)
    dy = y[None, :, None] - cy[None, None, :]  # (1, Y, Z)
    rad = np.sqrt(dx**2 + dy**2)  # (X, Y, Z)
    theta = np.arctan2(dy, dx)

    labels = np.zeros((nx, ny, nz), dtype=np.uint8)
    cav = rad < r_in
    myo = (rad >= r_in) & (rad < r_out)
    labels[cav] = LABEL_CAVITY
    labels[myo] = LABEL_MYOCARDIUM
    inf, nr = f["infarct"], f["no_reflow"]
    if inf["present"]:
        in_slices = np.isin(np.arange(nz), inf["slices"])
        m = (
            myo
            & _sector(theta, math.radians(inf["angle_deg"]), math.radians(inf["width_deg"]))
            & (rad < r_in + inf["transmurality"] * t)
            & in_slices
        )
        labels[m] = LABEL_INFARCT
    if nr["present"]:
        in_slices = np.isin(np.arange(nz), nr["slices"])
        m = (
            myo
            & _sector(theta, math.radians(nr["angle_deg"]), math.radians(nr["width_deg"]))
            & (rad < r_in + nr["transmurality"] * t)
            & in_slices
        )
        labels[m] = LABEL_NO_REFLOW

    # Body (ellipse) of textured tissue in air.
    ax, ay = f["body_semi_axes_frac"][0] * nx * sx, f["body_semi_axes_frac"][1] * ny * sy
    body = (x[:, None] / ax) ** 2 + (y[None, :] / ay) ** 2 < 1.0  # (X, Y)
    texture = ndimage.gaussian_filter(rng.standard_normal((nx, ny, nz)).astype(np.float32), (3.0, 3.0, 0.7))
    texture /= texture.std() + 1e-8
    clean = np.where(body[:, :, None], lev["tissue"] * (1.0 + 0.15 * texture), lev["air"]).astype(np.float32)

    # Right ventricle against the septum; it shrinks faster than the LV toward the apex.
    psi = math.radians(f["rv_angle_deg"])
    # The RV is a large disc overlapping the LV, minus the LV: a crescent on the septum.
    r_rv = f["rv_radius_factor"] * r_out * np.sqrt(np.clip(1.0 - 0.6 * frac_z**2, 0.0, None))
    d_rv = 0.62 * r_rv
    rad_rv = np.sqrt((dx - d_rv * math.cos(psi)) ** 2 + (dy - d_rv * math.sin(psi)) ** 2)
    outside_lv = rad >= r_out
    rv_blood = (rad_rv < r_rv) & outside_lv
    rv_wall = (rad_rv < r_rv + 3.0) & outside_lv & ~rv_blood
    clean[rv_wall] = lev["rv_wall"]
    clean[rv_blood] = lev["rv_blood"]
    clean[labels == LABEL_CAVITY] = lev["lv_blood"]
    clean[labels == LABEL_MYOCARDIUM] = lev["myocardium"]
    clean[labels == LABEL_INFARCT] = lev["infarct"]
    clean[labels == LABEL_NO_REFLOW] = lev["no_reflow"]
    if label_rv:
        labels[rv_blood] = LABEL_RV
    # Partial-volume edges: a slight in-plane blur.
    clean = ndimage.gaussian_filter(clean, (0.6, 0.6, 0.0))

    # Smooth multiplicative bias field (second-order polynomial in x, y; linear in z).
    xn = (x / (x.max() + 1e-6))[:, None, None]
    yn = (y / (y.max() + 1e-6))[None, :, None]
    zn = np.linspace(-1, 1, nz, dtype=np.float32)[None, None, :]
    c = rng.normal(size=6).astype(np.float32)
    poly = c[0] * xn + c[1] * yn + c[2] * xn * yn + c[3] * xn**2 + c[4] * yn**2 + 0.3 * c[5] * zn
    poly /= np.abs(poly).max() + 1e-6
    bias = np.exp(bias_strength * poly)

    signal = clean * bias
    if noise_std > 0:
        n1 = rng.standard_normal(signal.shape, dtype=np.float32) * noise_std
        n2 = rng.standard_normal(signal.shape, dtype=np.float32) * noise_std
        noisy = np.sqrt((signal + n1) ** 2 + n2**2)
    else:
        noisy = signal
    return noisy.astype(np.float32), clean.astype(np.float32), labels


def _save_nifti(path: Path, data: np.ndarray, spacing: tuple[float, float, float]) -> None:
    import nibabel as nib

    affine = np.diag([spacing[0], spacing[1], spacing[2], 1.0])
    img = nib.Nifti1Image(data, affine)
    img.header.set_zooms(spacing)
    img.header.set_xyzt_units("mm")
    atomic_write(path, lambda tmp: _write_gz(img, tmp))


def _write_gz(img, tmp: Path) -> None:
    # nibabel picks compression from the file name; the temp name lacks '.gz', so write
    # the gzip stream ourselves (fast level: the files are regenerated, not archived).
    import gzip

    buf = io.BytesIO()
    file_map = img.make_file_map({"image": buf})
    img.to_file_map(file_map)
    with gzip.open(tmp, "wb", compresslevel=1) as fh:
        fh.write(buf.getvalue())


_README = (
    "Synthetic delayed-enhancement short-axis cases in the EMIDEC layout "
    "(donn\u00e9es synth\u00e9tiques, g\u00e9n\u00e9r\u00e9es par attri-ssc).\r\n"
    "Labels: 0 background, 1 LV cavity, 2 myocardium, 3 infarction, 4 no-reflow.\r\n"
)


PHANTOM_LAYOUTS: tuple[str, ...] = ("emidec", "acdc", "manifest")
#: Canonical label → ACDC's file value (1 RV, 2 myocardium, 3 LV cavity).
_ACDC_VALUES = np.array([0, 3, 2, 2, 2, 1], dtype=np.uint8)
#: Clinical columns of a phantom manifest (EMIDEC's fields as numbers; sex 1 male / 0 female).
MANIFEST_CLINICAL: tuple[str, ...] = ("fevg", "age", "sex", "tobacco", "overweight", "arterial_hypertension", "diabetes",
                                      "familial_history", "ecg_st", "troponin", "killip_max", "ntprobnp")


def _label_of(i: int, normal_fraction: float) -> str:
    """Case i is N where floor((i+1)f) > floor(i f): N cases spread evenly."""
    return "N" if math.floor((i + 1) * normal_fraction + 1e-9) > math.floor(i * normal_fraction + 1e-9) else "P"


def generate_phantoms(
    out_dir: str | Path,
    n_cases: int,
    seed: int = 0,
    noise_std: float = 0.04,
    bias_strength: float = 0.1,
    normal_fraction: float = 1.0 / 3.0,
    layout: str = "emidec",
) -> list[PhantomTruth]:
    """Write ``n_cases`` synthetic cases in ``layout`` and return their ground truth.

    Layouts:

    * ``emidec`` (default): DE-MRI cases in EMIDEC's layout (module doc).
    * ``manifest``: the very same cases (same seed → same voxels, labels and clinical
      values) as ``images/<id>.nii.gz``, ``masks/<id>.nii.gz`` (EMIDEC's numbering),
      ``clean/<id>.nii.gz`` and a ``manifest.csv`` (case_id, group, pathological, image,
      mask, clean, then :data:`MANIFEST_CLINICAL`).
    * ``acdc``: cine-like patients in ACDC's layout, ``patientNNN/Info.cfg`` plus an ED and
      an ES frame (``patientNNN_frameMM.nii.gz`` and ``_gt``, ACDC's labels 1 RV,
      2 myocardium, 3 LV cavity, no scar). The ES frame is the ED heart with every cavity
      radius scaled by c = sqrt(1 - EF/100) and each slice's myocardial area kept, so the
      ejection fraction computed from the two LV cavity volumes has the analytic ground
      truth EF. Groups: NOR for normal draws, MINF (scar not labelled, as in ACDC) for
      the others. Ground truth is per sample (``patientNNN_ED``, ``patientNNN_ES``):
      image attributes of the frame, height, weight, the patient's ``fevg``.

    Every layout gets ``phantom_ground_truth.json`` / ``.csv`` beside it.

    Args:
        out_dir: output folder (created; existing case files are overwritten).
        n_cases: number of cases (ACDC: patients), >= 1.
        seed: master seed; case i depends only on (seed, i), so a larger ``n_cases``
            extends a smaller one with the same seed.
        noise_std: Rician noise standard deviation per channel, in model units
            (infarct = 1, blood ≈ 0.6). 0 gives a noise-free image.
        bias_strength: amplitude of the log bias field (0.1 → gains in [0.90, 1.11]).
        normal_fraction: share of normal (N; ACDC NOR) cases, in [0, 1].
        layout: 'emidec', 'manifest' or 'acdc'.

    Returns:
        One :class:`PhantomTruth` per case (ACDC: per frame), in generation order.
    """
    if not isinstance(n_cases, int) or n_cases < 1:
        raise ValueError(f"n_cases must be a positive integer, got {n_cases!r}")
    if noise_std < 0:
        raise ValueError(f"noise_std must be >= 0, got {noise_std!r}")
    if bias_strength < 0:
        raise ValueError(f"bias_strength must be >= 0, got {bias_strength!r}")
    if not 0.0 <= normal_fraction <= 1.0:
        raise ValueError(f"normal_fraction must be in [0, 1], got {normal_fraction!r}")
    if layout not in PHANTOM_LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(PHANTOM_LAYOUTS)}, got {layout!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if layout == "acdc":
        truths = _generate_acdc(out, n_cases, seed, noise_std, bias_strength, normal_fraction)
    else:
        truths = _generate_de(out, n_cases, seed, noise_std, bias_strength, normal_fraction, layout)
    write_json(
        out / GROUND_TRUTH_JSON,
        {
            "generator": "attri_ssc.data.phantoms",
            "layout": layout,
            "seed": seed,
            "n_cases": n_cases,
            "noise_std": noise_std,
            "bias_strength": bias_strength,
            "store_scale": STORE_SCALE,
            "image_attributes": list(IMAGE_ATTRIBUTES),
            "seconds": round(time.perf_counter() - start, 3),
            "cases": [t.to_dict() for t in truths],
        },
    )
    _write_csv(out / GROUND_TRUTH_CSV, truths)
    return truths


def _generate_de(out: Path, n_cases: int, seed: int, noise_std: float, bias_strength: float,
                 normal_fraction: float, layout: str) -> list[PhantomTruth]:
    """DE-MRI phantoms in EMIDEC layout or as a manifest (identical cases either way)."""
    if layout == "emidec":
        (out / CLEAN_DIRNAME).mkdir(exist_ok=True)
    n_counts = {"N": 0, "P": 0}
    truths: list[PhantomTruth] = []
    rows: list[dict[str, Any]] = []
    for i in range(n_cases):
        label = _label_of(i, normal_fraction)
        n_counts[label] += 1
        case_id = f"{label}{n_counts[label]:03d}"
        rng = np.random.default_rng([seed, i])
        draw = _draw_case(rng, label)
        slices, case_attrs = _geometry(draw)
        clinical = _clinical(rng, label, case_attrs, draw["factors"], draw["spacing"][2])
        noisy, clean, labels = _render(rng, draw, slices, noise_std, bias_strength)

        stored = np.clip(np.rint(noisy * STORE_SCALE), 0, np.iinfo(np.int16).max).astype(np.int16)
        if layout == "emidec":
            name = f"Case_{case_id}"
            _save_nifti(out / name / "Images" / f"{name}.nii.gz", stored, draw["spacing"])
            _save_nifti(out / name / "Contours" / f"{name}.nii.gz", labels, draw["spacing"])
            _save_nifti(out / CLEAN_DIRNAME / f"{name}.nii.gz", clean * STORE_SCALE, draw["spacing"])
            keys = list(FIELDS)
            n_nbsp = int(rng.integers(1, 5))
            nbsp = set(rng.choice(keys, size=n_nbsp, replace=False).tolist())
            text = format_clinical(clinical, nbsp_fields=nbsp)
            raw = text.encode("cp1252")
            atomic_write(out / f"Case {case_id}.txt", lambda tmp, raw=raw: tmp.write_bytes(raw))
        else:
            paths = {"image": f"images/{case_id}.nii.gz", "mask": f"masks/{case_id}.nii.gz",
                     "clean": f"clean/{case_id}.nii.gz"}
            _save_nifti(out / paths["image"], stored, draw["spacing"])
            _save_nifti(out / paths["mask"], labels, draw["spacing"])
            _save_nifti(out / paths["clean"], clean * STORE_SCALE, draw["spacing"])
            values = {**clinical, "sex": 1 if clinical["sex"] == "M" else 0}
            rows.append({"case_id": case_id, "group": label, "pathological": int(label == "P"), **paths,
                         **{k: values[k] for k in MANIFEST_CLINICAL}})

        draw["factors"]["noise_std"] = noise_std
        draw["factors"]["bias_strength"] = bias_strength
        attributes = {**case_attrs, **{k: v for k, v in clinical.items() if k not in ("sex", "gap_between_slices")}}
        attributes["sex"] = 1.0 if clinical["sex"] == "M" else 0.0
        attributes["pathological"] = float(label == "P")
        truths.append(
            PhantomTruth(
                case_id=case_id,
                label=label,
                shape=tuple(int(s) for s in draw["shape"]),
                spacing=tuple(float(s) for s in draw["spacing"]),
                factors=draw["factors"],
                attributes={k: float(v) for k, v in attributes.items()},
                slices=slices,
            )
        )
    if layout == "emidec":
        atomic_write(out / "Readme.txt", lambda tmp: tmp.write_bytes(_README.encode("cp1252")))
    else:
        _write_rows(out / "manifest.csv", rows)
    return truths


def _generate_acdc(out: Path, n_cases: int, seed: int, noise_std: float, bias_strength: float,
                   normal_fraction: float) -> list[PhantomTruth]:
    """Cine-like ED/ES phantoms in ACDC layout (see :func:`generate_phantoms`)."""
    truths: list[PhantomTruth] = []
    for i in range(n_cases):
        label = _label_of(i, normal_fraction)
        group = "NOR" if label == "N" else "MINF"
        pid = f"patient{i + 1:03d}"
        rng = np.random.default_rng([seed, i])
        draw = _draw_case(rng, label)
        f = draw["factors"]
        f["infarct"], f["no_reflow"] = {"present": False}, {"present": False}  # ACDC labels no scar
        ef = float(np.clip(rng.normal(62.0, 4.0), 52.0, 72.0) if label == "N" else np.clip(rng.normal(40.0, 8.0), 20.0, 52.0))
        height = float(np.round(np.clip(rng.normal(172.0 + 6.0 * f["size"], 6.0), 150.0, 200.0), 1))
        weight = float(np.round(np.clip(rng.normal(0.9 * (height - 100.0) + 8.0 * f["size"], 8.0), 45.0, 130.0), 1))
        n_frames = int(rng.integers(20, 31))
        es = int(rng.integers(8, min(15, n_frames)))
        ed_slices, ed_attrs = _geometry(draw)
        draw_es = copy.deepcopy(draw)
        draw_es["factors"]["es_scale"] = math.sqrt(1.0 - ef / 100.0)
        es_slices, es_attrs = _geometry(draw_es)
        ef_exact = 100.0 * (ed_attrs["lv_volume"] - es_attrs["lv_volume"]) / ed_attrs["lv_volume"]
        info = (f"ED: 1\nES: {es}\nGroup: {group}\nHeight: {height:.1f}\nNbFrame: {n_frames}\n"
                f"Weight: {weight:.1f}\n")
        folder = out / pid
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(folder / "Info.cfg", lambda tmp, info=info: tmp.write_text(info, encoding="utf-8"))
        for phase, frame, d, slices, attrs, frng in (
            ("ED", 1, draw, ed_slices, ed_attrs, rng),
            ("ES", es, draw_es, es_slices, es_attrs, np.random.default_rng([seed, i, 1])),
        ):
            noisy, _, labels = _render(frng, d, slices, noise_std, bias_strength, label_rv=True)
            stored = np.clip(np.rint(noisy * STORE_SCALE), 0, np.iinfo(np.int16).max).astype(np.int16)
            stem = f"{pid}_frame{frame:02d}"
            _save_nifti(folder / f"{stem}.nii.gz", stored, d["spacing"])
            _save_nifti(folder / f"{stem}_gt.nii.gz", _ACDC_VALUES[labels], d["spacing"])
            factors = {**d["factors"], "noise_std": noise_std, "bias_strength": bias_strength, "ejection_fraction": ef_exact,
                       "frame": frame, "phase": phase, "group": group}
            attributes = {**attrs, "height": height, "weight": weight, "fevg": ef_exact, "pathological": float(label == "P")}
            truths.append(PhantomTruth(
                case_id=f"{pid}_{phase}", label=group, shape=tuple(int(s) for s in d["shape"]),
                spacing=tuple(float(s) for s in d["spacing"]), factors=factors,
                attributes={k: float(v) for k, v in attributes.items()}, slices=slices,
            ))
    return truths


def _write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    text = buf.getvalue()
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _write_csv(path: Path, truths: list[PhantomTruth]) -> None:
    rows = []
    for t in truths:
        f = t.factors
        row: dict[str, Any] = {
            "case_id": t.case_id,
            "label": t.label,
            "n_slices": t.shape[2],
            "spacing_xy_mm": t.spacing[0],
            "slice_thickness_mm": t.spacing[2],
            "size_factor": f["size"],
            "dilation": f["dilation"],
            "cavity_radius_base_mm": f["cavity_radius_base_mm"],
            "wall_thickness_base_mm": f["wall_thickness_base_mm"],
            "infarct_width_deg": f["infarct"].get("width_deg", 0.0),
            "infarct_transmurality": f["infarct"].get("transmurality", 0.0),
            "infarct_n_slices": len(f["infarct"].get("slices", [])),
            "no_reflow_present": int(f["no_reflow"]["present"]),
            "noise_std": f["noise_std"],
        }
        row.update(t.attributes)
        rows.append(row)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    text = buf.getvalue()
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


__all__ = ["INTENSITIES", "MANIFEST_CLINICAL", "PHANTOM_LAYOUTS", "PhantomTruth", "STORE_SCALE", "generate_phantoms",
           "load_ground_truth"]
