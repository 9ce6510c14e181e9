"""Reader of folders in EMIDEC layout.

Layout (one case)::

    ROOT/Case_N006/Images/Case_N006.nii.gz      delayed-enhancement short-axis stack
    ROOT/Case_N006/Contours/Case_N006.nii.gz    labels 0 bg, 1 cavity, 2 myo, 3 infarct, 4 no-reflow
    ROOT/Case N006.txt                          clinical fields (note the space)

``Readme.txt`` and any other file are ignored. Case folders are looked for in ROOT and,
when ROOT has none, in its immediate sub-folders (an unzipped archive's top folder).
Clinical files are matched to folders by case id, never by sort order. A case is normal
(N) or pathological (P) by the first letter of its id. Voxel spacing comes from the
NIfTI header. The phantom generator's extras (``phantom_ground_truth.*`` and the
noise-free images in ``phantom_clean/``) sit beside the layout and are not cases; a
case's clean image, when present, is recorded in :attr:`EmidecCase.clean_path`.

Problems are collected, not raised one by one: :func:`scan_dataset` returns every
problem it finds, each naming the case and the file; :func:`read_dataset` raises one
:class:`DataError` listing them all, or (``skip_bad_cases=True``) logs and skips the
unusable cases. The content checks (blank images, missing structures, image/mask
geometry, implausible spacing, files named for another case, repeated clinical fields)
live in :mod:`attri_ssc.data.checks`, shared with the other readers.
"""

from __future__ import annotations

import gzip
import logging
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Literal

import numpy as np

from attri_ssc.data.checks import (REQUIRED_STRUCTURES, Problem, check_clinical_repeats, check_dimensions, check_file_names,
                                   check_geometry, check_image_voxels, check_mask_voxels, check_spacing,
                                   stored_zooms, volume_shape)
from attri_ssc.data.attributes import LABEL_CAVITY, LABEL_INFARCT, LABEL_MYOCARDIUM, LABEL_NO_REFLOW
from attri_ssc.data.clinical import ClinicalRecord, read_clinical
from attri_ssc.data.labels import CANONICAL, EMIDEC_LABELS, LabelMap
from attri_ssc.errors import DataError

log = logging.getLogger(__name__)

CLEAN_DIRNAME = "phantom_clean"
GROUND_TRUTH_JSON = "phantom_ground_truth.json"
GROUND_TRUTH_CSV = "phantom_ground_truth.csv"

_FOLDER_RE = re.compile(r"^Case_(?P<id>[A-Za-z0-9]+)$")
_TEXT_RE = re.compile(r"^Case[ _](?P<id>[A-Za-z0-9]+)\.txt$", re.IGNORECASE)
_NIFTI_SUFFIXES = (".nii.gz", ".nii")


@dataclass(frozen=True)
class CaseFiles:
    """Paths found for one case id (any may be missing)."""

    case_id: str
    folder: Path | None
    clinical_path: Path | None
    image_path: Path | None = None
    mask_path: Path | None = None
    clean_path: Path | None = None


class NiftiVolumes:
    """Loading of a case's NIfTI volumes, shared by every reader's cases (:class:`EmidecCase`,
    :class:`attri_ssc.data.cohort.CohortCase`). Needs the attributes ``case_id``,
    ``image_path``, ``mask_path``, ``clean_path`` (or None), ``shape`` (X, Y, Z) and
    ``label_map``."""

    def load_image(self) -> np.ndarray:
        """Image (X, Y, Z) float32."""
        return load_nifti(self.image_path, self.case_id)[0].astype(np.float32, copy=False)

    def load_mask(self) -> np.ndarray:
        """Canonical labels (X, Y, Z) uint8 (:mod:`attri_ssc.data.labels`), checked against the
        label map and shaped like the image."""
        data = load_nifti(self.mask_path, self.case_id)[0]
        return check_mask(data, self.mask_path, self.case_id, self.shape, self.label_map)

    def load_clean(self) -> np.ndarray | None:
        """Noise-free image (X, Y, Z) float32, or None when there is none."""
        if self.clean_path is None:
            return None
        data = load_nifti(self.clean_path, self.case_id)[0].astype(np.float32, copy=False)
        if data.shape != self.shape:
            raise DataError(
                f"case {self.case_id}: {self.clean_path}: clean image shape {data.shape} "
                f"differs from image shape {self.shape}"
            )
        return data


@dataclass(frozen=True)
class EmidecCase(NiftiVolumes):
    """A usable case: files, geometry from the header, and clinical record.

    Attributes:
        case_id: e.g. 'N006'.
        label: 'N' (normal) or 'P' (pathological).
        image_path, mask_path, clinical_path: the case's files.
        clean_path: noise-free image (phantoms only) or None.
        spacing: voxel spacing (sx, sy, sz) in mm from the image header.
        shape: (X, Y, Z) voxels; Z is the number of short-axis slices.
        clinical: the parsed clinical file.
        label_map: how the mask files number the structures (EMIDEC's by default).

    The properties ``patient_id``, ``group``, ``frame``, ``layout``, ``categorical`` and
    :meth:`clinical_values` are the interface every reader's cases share
    (:class:`attri_ssc.data.cohort.CohortCase`).
    """

    case_id: str
    label: Literal["N", "P"]
    image_path: Path
    mask_path: Path
    clinical_path: Path
    clean_path: Path | None
    spacing: tuple[float, float, float]
    shape: tuple[int, int, int]
    clinical: ClinicalRecord = field(repr=False)
    label_map: LabelMap = field(default=EMIDEC_LABELS, repr=False)

    layout = "emidec"
    frame = ""

    @property
    def pathological(self) -> bool:
        return self.label == "P"

    @property
    def patient_id(self) -> str:
        """The split unit: one EMIDEC case is one patient."""
        return self.case_id

    @property
    def group(self) -> str:
        """Stratum of the patient-level split: 'N' or 'P'."""
        return self.label

    @property
    def categorical(self) -> dict[str, str]:
        return {"group": self.label}

    def clinical_values(self) -> dict[str, float]:
        """Case-level attribute values (physical units) from the clinical file."""
        return {**self.clinical.attribute_values(), "pathological": float(self.pathological)}


def _nifti_header(path: Path, case_id: str):
    import nibabel as nib
    from nibabel.imageglobals import logger as nib_logger

    # nibabel prints the header fixes it makes (zero spacing -> 1 mm, ...) to stderr;
    # inspect_case reports such headers itself (see checks.stored_zooms), so keep quiet here.
    level = nib_logger.level
    nib_logger.setLevel(logging.ERROR)
    try:
        return nib.load(str(path))
    except Exception as exc:  # nibabel raises many types for unreadable files
        raise DataError(f"case {case_id}: {path}: not a readable NIfTI file ({type(exc).__name__}: {exc})") from None
    finally:
        nib_logger.setLevel(level)


def load_nifti(path: Path, case_id: str = "") -> tuple[np.ndarray, tuple[float, ...]]:
    """Voxel array and spacing of a NIfTI file; any failure becomes a :class:`DataError`
    naming the case and the file (e.g. a truncated .nii.gz)."""
    img = _nifti_header(Path(path), case_id)
    try:
        data = np.asanyarray(img.dataobj)
    except Exception as exc:
        raise DataError(
            f"case {case_id}: {path}: cannot read voxel data, the file may be truncated "
            f"({type(exc).__name__}: {exc})"
        ) from None
    if str(path).endswith(".gz"):
        _check_gzip(Path(path), case_id)
    zooms = tuple(float(z) for z in img.header.get_zooms())
    data = np.asarray(data)
    squeezed = volume_shape(data.shape)
    if squeezed is not None and squeezed != data.shape:  # (X, Y, Z, 1): reported as a warning by the checks
        data = data.reshape(squeezed)
    return data, zooms


def _check_gzip(path: Path, case_id: str) -> None:
    """Decompress ``path`` to its end so that gzip's CRC and length are checked: nibabel
    reads only the bytes it needs, so damaged voxel data would otherwise pass silently."""
    try:
        with gzip.open(path, "rb") as fh:
            while fh.read(1 << 22):
                pass
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(
            f"case {case_id}: {path}: damaged gzip data, the file is corrupt or truncated "
            f"({type(exc).__name__}: {exc})"
        ) from None


def required_structures(label_map: LabelMap) -> tuple[tuple[str, frozenset[int]], ...]:
    """The structures the attributes need, in canonical codes, described with the cohort's
    own file values (for :func:`attri_ssc.data.checks.check_mask_voxels` on canonical masks)."""
    if label_map == EMIDEC_LABELS:
        return REQUIRED_STRUCTURES
    myo = [v for v in (label_map.myocardium, label_map.infarct, label_map.no_reflow) if v is not None]
    return (
        (f"LV cavity (label {label_map.lv_cavity})", frozenset({LABEL_CAVITY})),
        (f"myocardium (label(s) {', '.join(map(str, myo))})", frozenset({LABEL_MYOCARDIUM, LABEL_INFARCT, LABEL_NO_REFLOW})),
    )


def mask_problems(data: np.ndarray, path: Path, case_id: str, shape: tuple[int, ...],
                  label_map: LabelMap = EMIDEC_LABELS) -> list[Problem]:
    """Every problem of a label volume read through ``label_map``: file values the map does
    not name, then :func:`attri_ssc.data.checks.check_mask_voxels` on the canonical codes."""
    data = np.asarray(data)
    if data.shape != tuple(shape) or not np.all(np.isfinite(data)) or not np.array_equal(np.rint(data), data):
        return check_mask_voxels(data, case_id, path, shape)  # shape, finiteness, integer labels
    try:
        canonical = label_map.to_canonical(np.rint(data), path, case_id)
    except DataError as exc:
        return [Problem(case_id, str(path), str(exc).split(f"{path}: ", 1)[-1])]
    return check_mask_voxels(canonical, case_id, path, shape, required=required_structures(label_map),
                             valid_labels=frozenset(CANONICAL.values()))


def check_mask(data: np.ndarray, path: Path, case_id: str, shape: tuple[int, ...],
               label_map: LabelMap = EMIDEC_LABELS) -> np.ndarray:
    """Validate a label volume against ``label_map`` (:func:`mask_problems`); returns its
    canonical codes (uint8, :data:`attri_ssc.data.labels.CANONICAL`) or raises
    :class:`DataError` with the first problem, naming the file."""
    errors = [p for p in mask_problems(data, path, case_id, shape, label_map) if p.severity == "error"]
    if errors:
        raise DataError(f"case {case_id}: {path}: {errors[0].message}")
    return label_map.to_canonical(np.rint(data), path, case_id)


def _find_nifti(folder: Path, case_name: str) -> Path | None:
    for suffix in _NIFTI_SUFFIXES:
        candidate = folder / f"{case_name}{suffix}"
        if candidate.is_file():
            return candidate
    found = sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(_NIFTI_SUFFIXES))
    return found[0] if len(found) == 1 else None


def _search_dirs(root: Path) -> list[Path]:
    has_cases = any(p.is_dir() and _FOLDER_RE.match(p.name) for p in root.iterdir())
    if has_cases:
        return [root]
    return [root] + sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def discover(root: str | Path) -> tuple[list[CaseFiles], list[Problem]]:
    """Find every case folder and clinical file under ``root`` and pair them by id.

    Returns:
        files: one :class:`CaseFiles` per distinct case id, sorted by id.
        problems: missing pieces, duplicate ids, unlabeled ids, an empty folder.
    """
    root = Path(root)
    if not root.exists():
        raise DataError(f"{root}: data folder does not exist")
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    folders: dict[str, list[Path]] = {}
    texts: dict[str, list[Path]] = {}
    for directory in _search_dirs(root):
        for entry in sorted(directory.iterdir()):
            if entry.is_dir():
                m = _FOLDER_RE.match(entry.name)
                if m:
                    folders.setdefault(m["id"].upper(), []).append(entry)
            elif entry.is_file():
                m = _TEXT_RE.match(entry.name)
                if m:
                    texts.setdefault(m["id"].upper(), []).append(entry)
    problems: list[Problem] = []
    if not folders:
        problems.append(
            Problem("", str(root), "no cases found (expected Case_<id>/Images/Case_<id>.nii.gz folders)")
        )
        return [], problems
    files: list[CaseFiles] = []
    for case_id in sorted(set(folders) | set(texts)):
        f_list, t_list = folders.get(case_id, []), texts.get(case_id, [])
        if len(f_list) > 1:
            problems.append(
                Problem(case_id, ", ".join(map(str, f_list)), f"duplicate case id {case_id}: {len(f_list)} case folders")
            )
            continue
        if len(t_list) > 1:
            problems.append(
                Problem(case_id, ", ".join(map(str, t_list)), f"duplicate case id {case_id}: {len(t_list)} clinical files")
            )
            continue
        if not f_list:
            problems.append(
                Problem(case_id, str(t_list[0]), "clinical file without a case folder", "warning")
            )
            continue
        folder = f_list[0]
        clinical = t_list[0] if t_list else None
        if clinical is None:
            problems.append(Problem(case_id, str(folder.parent / f"Case {case_id}.txt"), "missing clinical file"))
        image = mask = None
        images_dir, contours_dir = folder / "Images", folder / "Contours"
        if not images_dir.is_dir():
            problems.append(Problem(case_id, str(images_dir), "missing Images folder"))
        else:
            image = _find_nifti(images_dir, folder.name)
            if image is None:
                problems.append(Problem(case_id, str(images_dir), f"no {folder.name}.nii.gz in Images folder"))
        if not contours_dir.is_dir():
            problems.append(Problem(case_id, str(contours_dir), "missing Contours folder"))
        else:
            mask = _find_nifti(contours_dir, folder.name)
            if mask is None:
                problems.append(Problem(case_id, str(contours_dir), f"no {folder.name}.nii.gz in Contours folder"))
        clean = None
        for suffix in _NIFTI_SUFFIXES:
            candidate = folder.parent / CLEAN_DIRNAME / f"{folder.name}{suffix}"
            if candidate.is_file():
                clean = candidate
                break
        if case_id[0] not in "NP":
            problems.append(Problem(case_id, str(folder), "case id must start with N (normal) or P (pathological)"))
        files.append(CaseFiles(case_id, folder, clinical, image, mask, clean))
    return files, problems


def inspect_case(files: CaseFiles, check_arrays: bool = False,
                 other_ids: Iterable[str] = (),
                 label_map: LabelMap = EMIDEC_LABELS) -> tuple[EmidecCase | None, list[Problem]]:
    """Open one case's headers and clinical file (and, with ``check_arrays``, its voxel
    data); return the case when usable and every problem found.

    ``other_ids``: the other cases' ids in the folder, to recognise a file named for
    another case (:func:`attri_ssc.data.checks.check_file_names`).
    """
    cid = files.case_id
    problems: list[Problem] = []
    clinical = None
    if files.clinical_path is not None:
        try:
            clinical = read_clinical(files.clinical_path)
        except DataError as exc:
            problems.append(Problem(cid, str(files.clinical_path), str(exc).removeprefix(f"{files.clinical_path}: ")))
        else:
            problems += check_clinical_repeats(files.clinical_path, cid)
    extra = []
    if files.folder is not None:
        for sub in ("Images", "Contours"):
            if (files.folder / sub).is_dir():
                extra += sorted(p for p in (files.folder / sub).iterdir() if p.name.endswith(_NIFTI_SUFFIXES))
    problems += check_file_names(cid, {"image": files.image_path, "mask": files.mask_path}, other_ids, extra)
    spacing = shape = None
    headers = {}
    zooms: dict[str, tuple[float, ...]] = {}
    for role, path in (("image", files.image_path), ("mask", files.mask_path)):
        if path is None:
            continue
        try:
            img = _nifti_header(path, cid)
        except DataError as exc:
            problems.append(Problem(cid, str(path), str(exc).split(f"{path}: ", 1)[-1]))
            continue
        dims = check_dimensions(img.shape, cid, path)
        problems += dims
        if any(p.severity == "error" for p in dims):
            continue
        headers[role] = img
        zooms[role] = stored_zooms(path, img)[:3]
    if "image" in headers:
        spacing_problems = check_spacing(zooms["image"], cid, files.image_path)
        problems += spacing_problems
        shape = volume_shape(headers["image"].shape)
        if not any(p.severity == "error" for p in spacing_problems):
            spacing = tuple(abs(z) for z in zooms["image"])
    if "image" in headers and "mask" in headers:
        problems += check_geometry(headers["image"], headers["mask"], cid, files.image_path, files.mask_path,
                                   zooms["image"], zooms["mask"], compare_spacing=spacing is not None)
    if check_arrays:
        roles = {"image": files.image_path if "image" in headers else None,
                 "mask": files.mask_path if "mask" in headers else None, "clean": files.clean_path}
        mask_ok = not any(p.severity == "error" and p.path == str(files.mask_path) for p in problems)
        problems += check_case_voxels(cid, roles, shape if mask_ok else None, label_map=label_map)
    if clinical is not None and spacing is not None and abs(clinical.gap_between_slices - spacing[2]) > 0.51:
        problems.append(
            Problem(
                cid,
                str(files.clinical_path),
                f"'Gap between slices' {clinical.gap_between_slices:g} mm differs from the header's "
                f"slice spacing {spacing[2]:g} mm (the header is used)",
                "warning",
            )
        )
    fatal = [p for p in problems if p.severity == "error"]
    if fatal or clinical is None or spacing is None or files.image_path is None or files.mask_path is None:
        return None, problems
    case = EmidecCase(
        case_id=cid,
        label="N" if cid.startswith("N") else "P",
        image_path=files.image_path,
        mask_path=files.mask_path,
        clinical_path=files.clinical_path,
        clean_path=files.clean_path,
        spacing=spacing,  # type: ignore[arg-type]
        shape=shape,  # type: ignore[arg-type]
        clinical=clinical,
        label_map=label_map,
    )
    return case, problems


def check_case_voxels(case_id: str, paths: dict[str, Path | None], shape: tuple[int, ...] | None,
                      arrays: dict[str, np.ndarray] | None = None,
                      label_map: LabelMap = EMIDEC_LABELS) -> list[Problem]:
    """The voxel-level checks of one case, shared by every reader (:mod:`attri_ssc.data.checks`):
    unreadable or truncated data, non-finite or constant images, blank slices, mask labels
    (read through ``label_map``) and structures.

    Args:
        case_id: the case (sample).
        paths: role ('image', 'mask', 'clean') -> file, None when absent or already unusable.
        shape: the image's (X, Y, Z); None skips the mask checks (its geometry is wrong).
        arrays: role -> voxels already loaded (others are read from ``paths``).
        label_map: how the mask file numbers the structures (:func:`mask_problems`).
    """
    problems: list[Problem] = []
    arrays = dict(arrays or {})
    for role, path in paths.items():
        if path is None or role in arrays:
            continue
        try:
            arrays[role] = load_nifti(path, case_id)[0]
        except DataError as exc:
            problems.append(Problem(case_id, str(path), str(exc).split(f"{path}: ", 1)[-1]))
    canonical = None
    if "mask" in arrays and shape is not None:
        found = mask_problems(arrays["mask"], paths["mask"], case_id, shape, label_map)
        problems += found
        if not any(p.severity == "error" for p in found):
            canonical = label_map.to_canonical(np.rint(arrays["mask"]), paths["mask"], case_id)
    if "image" in arrays:
        image = arrays["image"]
        problems += check_image_voxels(image, case_id, paths["image"], "image",
                                       canonical if canonical is not None and canonical.shape == image.shape else None)
    if "clean" in arrays:
        clean = arrays["clean"]
        clean_problems = [p for p in check_image_voxels(clean, case_id, paths["clean"], "clean")
                          if "non-finite" in p.message]
        problems += clean_problems
        if not clean_problems and shape is not None and clean.shape != shape:
            problems.append(Problem(case_id, str(paths["clean"]), f"clean image shape {clean.shape} differs from "
                                    f"{shape}"))
    return problems


def scan_dataset(root: str | Path, check_arrays: bool = False,
                 label_map: LabelMap = EMIDEC_LABELS) -> tuple[list[EmidecCase], list[Problem]]:
    """Every usable case under ``root`` and every problem found (nothing raised except
    for a missing root folder)."""
    files, problems = discover(root)
    cases: list[EmidecCase] = []
    bad_ids = {p.case_id for p in problems if p.severity == "error"}
    ids = [f.case_id for f in files]
    for f in files:
        case, case_problems = inspect_case(f, check_arrays=check_arrays, other_ids=ids, label_map=label_map)
        problems.extend(case_problems)
        if case is not None and f.case_id not in bad_ids:
            cases.append(case)
    return cases, problems


def read_dataset(root: str | Path, skip_bad_cases: bool = False, check_arrays: bool = False,
                 label_map: LabelMap = EMIDEC_LABELS) -> list[EmidecCase]:
    """Usable cases under ``root``, sorted by id.

    Args:
        root: folder in EMIDEC layout.
        skip_bad_cases: when False (default) any error raises one :class:`DataError`
            listing every problem; when True unusable cases are logged (warning) and
            skipped, and only an empty result raises.
        check_arrays: also read voxel data (labels, finiteness, truncation, the content
            checks); otherwise only headers and clinical files are read here and voxel
            problems surface when the arrays are loaded.
    """
    return read_usable_cases(root, skip_bad_cases, check_arrays, label_map)[0]


def read_usable_cases(root: str | Path, skip_bad_cases: bool = False, check_arrays: bool = False,
                      label_map: LabelMap = EMIDEC_LABELS) -> tuple[list[EmidecCase], dict[str, list[str]]]:
    """:func:`read_dataset`, also returning the skipped cases: case id ('' for the folder)
    -> the problems that made it unusable (each ``str(Problem)``)."""
    cases, problems = scan_dataset(root, check_arrays=check_arrays, label_map=label_map)
    return raise_or_skip(root, cases, problems, skip_bad_cases)


def raise_or_skip(root: str | Path, cases: list, problems: list[Problem],
                  skip_bad_cases: bool) -> tuple[list, dict[str, list[str]]]:
    """Any reader's (cases, problems) → (usable cases, skipped): one :class:`DataError` listing
    every error, or (``skip_bad_cases``) the errors logged and recorded per case id ('' for the
    folder) as ``str(Problem)``; warnings are logged."""
    errors = [p for p in problems if p.severity == "error"]
    for p in problems:
        if p.severity == "warning":
            log.warning("%s", p)
    if errors and not skip_bad_cases:
        listing = "\n  ".join(str(p) for p in errors)
        raise DataError(f"{root}: {len(errors)} problem(s) in the data:\n  {listing}")
    skipped: dict[str, list[str]] = {}
    for p in errors:
        log.warning("skipping: %s", p)
        skipped.setdefault(p.case_id, []).append(str(p))
    if not cases:
        raise DataError(f"{root}: no usable cases" + (f" ({len(errors)} problem(s), all skipped)" if errors else ""))
    return cases, skipped


__all__ = [
    "CLEAN_DIRNAME",
    "CaseFiles",
    "EmidecCase",
    "GROUND_TRUTH_CSV",
    "GROUND_TRUTH_JSON",
    "Problem",
    "check_case_voxels",
    "check_mask",
    "discover",
    "mask_problems",
    "required_structures",
    "inspect_case",
    "load_nifti",
    "raise_or_skip",
    "read_dataset",
    "read_usable_cases",
    "scan_dataset",
]
