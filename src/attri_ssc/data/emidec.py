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
unusable cases.
"""

from __future__ import annotations

import gzip
import logging
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from attri_ssc.data.attributes import LABEL_CAVITY, myocardium
from attri_ssc.data.clinical import ClinicalRecord, read_clinical
from attri_ssc.data.labels import EMIDEC_LABELS, LabelMap
from attri_ssc.errors import DataError

log = logging.getLogger(__name__)

CLEAN_DIRNAME = "phantom_clean"
GROUND_TRUTH_JSON = "phantom_ground_truth.json"
GROUND_TRUTH_CSV = "phantom_ground_truth.csv"

_FOLDER_RE = re.compile(r"^Case_(?P<id>[A-Za-z0-9]+)$")
_TEXT_RE = re.compile(r"^Case[ _](?P<id>[A-Za-z0-9]+)\.txt$", re.IGNORECASE)
_NIFTI_SUFFIXES = (".nii.gz", ".nii")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the data.

    Attributes:
        case_id: the case concerned ('' for the folder as a whole).
        path: the file or folder concerned.
        message: what is wrong.
        severity: 'error' makes the case unusable; 'warning' does not.
    """

    case_id: str
    path: str
    message: str
    severity: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        who = f"case {self.case_id}: " if self.case_id else ""
        return f"{self.severity}: {who}{self.path}: {self.message}"


@dataclass(frozen=True)
class CaseFiles:
    """Paths found for one case id (any may be missing)."""

    case_id: str
    folder: Path | None
    clinical_path: Path | None
    image_path: Path | None = None
    mask_path: Path | None = None
    clean_path: Path | None = None


@dataclass(frozen=True)
class EmidecCase:
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


def _nifti_header(path: Path, case_id: str):
    import nibabel as nib
    from nibabel.imageglobals import logger as nib_logger

    # nibabel prints the header fixes it makes (zero spacing -> 1 mm, ...) to stderr;
    # inspect_case reports such headers itself (see _stored_zooms), so keep quiet here.
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
    return np.asarray(data), zooms


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


def _stored_zooms(path: Path, img) -> tuple[float, ...]:
    """Voxel spacing as written in the header: on load nibabel replaces a zero spacing by
    1 mm (and a negative one by its absolute value), which would hide a broken header."""
    from nibabel.openers import ImageOpener

    try:
        with ImageOpener(str(path)) as fh:
            header = type(img.header).from_fileobj(fh, check=False)
        return tuple(abs(float(z)) for z in header.get_zooms())
    except Exception:  # unusual header classes: fall back to nibabel's (fixed) values
        return tuple(float(z) for z in img.header.get_zooms())


def check_mask(data: np.ndarray, path: Path, case_id: str, shape: tuple[int, ...],
               label_map: LabelMap = EMIDEC_LABELS) -> np.ndarray:
    """Validate a label volume against ``label_map``; returns its canonical codes (uint8,
    :data:`attri_ssc.data.labels.CANONICAL`) or raises :class:`DataError` naming the file."""
    if data.shape != tuple(shape):
        raise DataError(f"case {case_id}: {path}: mask shape {data.shape} differs from image shape {tuple(shape)}")
    if not np.all(np.isfinite(data)):
        raise DataError(f"case {case_id}: {path}: mask has non-finite values")
    rounded = np.rint(data)
    if not np.array_equal(rounded, data):
        raise DataError(f"case {case_id}: {path}: mask has non-integer values")
    canonical = label_map.to_canonical(rounded, path, case_id)
    if not ((canonical == LABEL_CAVITY).any() or myocardium(canonical).any()):
        raise DataError(f"case {case_id}: {path}: mask is empty (background only: no cavity or myocardium)")
    return canonical


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
                 label_map: LabelMap = EMIDEC_LABELS) -> tuple[EmidecCase | None, list[Problem]]:
    """Open one case's headers and clinical file (and, with ``check_arrays``, its voxel
    data); return the case when usable and every problem found."""
    cid = files.case_id
    problems: list[Problem] = []
    clinical = None
    if files.clinical_path is not None:
        try:
            clinical = read_clinical(files.clinical_path)
        except DataError as exc:
            problems.append(Problem(cid, str(files.clinical_path), str(exc).removeprefix(f"{files.clinical_path}: ")))
    spacing = shape = None
    headers = {}
    for role, path in (("image", files.image_path), ("mask", files.mask_path)):
        if path is None:
            continue
        try:
            img = _nifti_header(path, cid)
        except DataError as exc:
            problems.append(Problem(cid, str(path), str(exc).split(f"{path}: ", 1)[-1]))
            continue
        headers[role] = img
        if len(img.shape) != 3:
            problems.append(Problem(cid, str(path), f"expected a 3D (X, Y, slices) volume, got shape {img.shape}"))
    if "image" in headers:
        img = headers["image"]
        zooms = _stored_zooms(files.image_path, img)[:3]
        if len(img.shape) == 3:
            shape = tuple(int(s) for s in img.shape)
            if len(zooms) != 3 or not all(np.isfinite(z) and z > 0 for z in zooms):
                problems.append(Problem(cid, str(files.image_path), f"invalid voxel spacing {zooms} in header"))
            else:
                spacing = zooms
    if "mask" in headers and shape is not None and tuple(headers["mask"].shape) != shape:
        problems.append(
            Problem(
                cid, str(files.mask_path), f"mask shape {tuple(headers['mask'].shape)} differs from image shape {shape}"
            )
        )
    if check_arrays:
        for role, path in (("image", files.image_path), ("mask", files.mask_path), ("clean", files.clean_path)):
            if path is None or role not in headers and role != "clean":
                continue
            try:
                data, _ = load_nifti(path, cid)
                if role == "mask" and shape is not None and data.shape == shape:
                    check_mask(data, path, cid, shape, label_map)
                elif role == "mask":
                    continue  # shape problem already reported
                elif not np.all(np.isfinite(data)):
                    problems.append(Problem(cid, str(path), f"{role} has non-finite values"))
                elif role == "clean" and shape is not None and data.shape != shape:
                    problems.append(Problem(cid, str(path), f"clean image shape {data.shape} differs from {shape}"))
            except DataError as exc:
                problems.append(Problem(cid, str(path), str(exc).split(f"{path}: ", 1)[-1]))
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


def scan_dataset(root: str | Path, check_arrays: bool = False,
                 label_map: LabelMap = EMIDEC_LABELS) -> tuple[list[EmidecCase], list[Problem]]:
    """Every usable case under ``root`` and every problem found (nothing raised except
    for a missing root folder)."""
    files, problems = discover(root)
    cases: list[EmidecCase] = []
    bad_ids = {p.case_id for p in problems if p.severity == "error"}
    for f in files:
        case, case_problems = inspect_case(f, check_arrays=check_arrays, label_map=label_map)
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
        check_arrays: also read voxel data (labels, finiteness, truncation); otherwise
            only headers and clinical files are read here and voxel problems surface
            when the arrays are loaded.
    """
    cases, problems = scan_dataset(root, check_arrays=check_arrays, label_map=label_map)
    return raise_or_skip(root, cases, problems, skip_bad_cases)


def raise_or_skip(root: str | Path, cases: list, problems: list[Problem], skip_bad_cases: bool) -> list:
    """Any reader's (cases, problems) → the usable cases: one :class:`DataError` listing every
    error, or (``skip_bad_cases``) the errors logged and the cases kept; warnings are logged."""
    errors = [p for p in problems if p.severity == "error"]
    for p in problems:
        if p.severity == "warning":
            log.warning("%s", p)
    if errors and not skip_bad_cases:
        listing = "\n  ".join(str(p) for p in errors)
        raise DataError(f"{root}: {len(errors)} problem(s) in the data:\n  {listing}")
    for p in errors:
        log.warning("skipping: %s", p)
    if not cases:
        raise DataError(f"{root}: no usable cases" + (f" ({len(errors)} problem(s), all skipped)" if errors else ""))
    return cases


__all__ = [
    "CLEAN_DIRNAME",
    "CaseFiles",
    "EmidecCase",
    "GROUND_TRUTH_CSV",
    "GROUND_TRUTH_JSON",
    "Problem",
    "check_mask",
    "discover",
    "inspect_case",
    "load_nifti",
    "raise_or_skip",
    "read_dataset",
    "scan_dataset",
]
