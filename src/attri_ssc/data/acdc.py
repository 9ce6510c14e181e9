"""Reader of folders in ACDC layout (cine short-axis; Bernard et al., IEEE TMI 2018).

Layout (one patient)::

    ROOT/patient001/Info.cfg                   ED: 1, ES: 12, Group: DCM, Height: 184.0,
                                               NbFrame: 30, Weight: 95.0 (``Key: value`` lines)
    ROOT/patient001/patient001_frame01.nii.gz      ED frame (X, Y, slices)
    ROOT/patient001/patient001_frame01_gt.nii.gz   its labels: 0 bg, 1 RV, 2 myocardium, 3 LV cavity
    ROOT/patient001/patient001_frame12.nii.gz      ES frame, and ``_gt``
    ROOT/patient001/patient001_4d.nii.gz           the whole cine: not read

Patient folders are looked for in ROOT, then in its sub-folders and theirs (so the
unzipped archive's ``database/training`` is found from its top). Each patient gives two
samples, ``patient001_ED`` and ``patient001_ES``, of one patient: they always land in the
same split. Height (cm) and weight (kg) are clinical attributes; the pathology group (NOR,
MINF, DCM, HCM, RV) is a categorical label, the stratum of the split and the items'
``label`` (0 for NOR, 1 otherwise), never a regression target. ``fevg`` (ejection
fraction, %) is *computed*, not read: 100 (EDV - ESV) / EDV from the LV cavity volumes of
the two masks (:func:`attri_ssc.data.datasets.build_datasets`); both samples carry it.

Masks are read through ``data.label_map`` (ACDC's own numbering by default).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from attri_ssc.data.attributes import LABEL_CAVITY
from attri_ssc.data.cohort import CohortCase, inspect_volumes
from attri_ssc.data.emidec import Problem
from attri_ssc.data.labels import ACDC_LABELS, LabelMap
from attri_ssc.errors import DataError

INFO_NAME = "Info.cfg"
GROUPS: tuple[str, ...] = ("NOR", "MINF", "DCM", "HCM", "RV")
_PATIENT_RE = re.compile(r"^patient(?P<num>\d+)$")
_REQUIRED = ("ED", "ES", "Group", "Height", "Weight")


def is_patient_folder(path: Path) -> bool:
    """A ``patientNNN`` folder holding an ``Info.cfg``."""
    return path.is_dir() and bool(_PATIENT_RE.match(path.name)) and (path / INFO_NAME).is_file()


def find_patient_folders(root: Path, depth: int = 2) -> list[Path]:
    """``patientNNN`` folders in ``root`` or, when it has none, up to ``depth`` levels below."""
    found = sorted(p for p in root.iterdir() if is_patient_folder(p))
    if found or depth == 0:
        return found
    out: list[Path] = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        out.extend(find_patient_folders(sub, depth - 1))
    return out


def parse_info(path: Path) -> tuple[dict[str, object], list[str]]:
    """Parse an ``Info.cfg``: (fields, problems). Fields: ED, ES, NbFrame (int), Group (str),
    Height, Weight (float); every problem names the field and what was expected."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return {}, [f"cannot read ({exc.strerror or exc})"]
    raw: dict[str, str] = {}
    for line in text.splitlines():
        if ":" in line:
            key, value = line.split(":", 1)
            raw.setdefault(key.strip(), value.strip())
    problems: list[str] = []
    fields: dict[str, object] = {}
    for key in _REQUIRED:
        if key not in raw:
            problems.append(f"missing field '{key}'")
    for key in ("ED", "ES", "NbFrame"):
        if key not in raw:
            continue
        try:
            number = float(raw[key])
        except ValueError:
            problems.append(f"field '{key}' must be a frame number, got {raw[key]!r}")
            continue
        if number != round(number) or number < 1:
            problems.append(f"field '{key}' must be a positive integer, got {raw[key]!r}")
            continue
        fields[key] = int(round(number))
    for key, unit in (("Height", "cm"), ("Weight", "kg")):
        if key not in raw:
            continue
        try:
            number = float(raw[key].replace(",", "."))
        except ValueError:
            problems.append(f"field '{key}' must be a number ({unit}), got {raw[key]!r}")
            continue
        if not np.isfinite(number) or number <= 0:
            problems.append(f"field '{key}' must be a positive number ({unit}), got {raw[key]!r}")
            continue
        fields[key] = number
    if "Group" in raw:
        if raw["Group"] not in GROUPS:
            problems.append(f"field 'Group' must be one of {', '.join(GROUPS)}, got {raw['Group']!r}")
        else:
            fields["Group"] = raw["Group"]
    if "ED" in fields and "ES" in fields and fields["ED"] == fields["ES"]:
        problems.append(f"fields 'ED' and 'ES' name the same frame ({fields['ED']}); they must differ")
    n_frames = fields.get("NbFrame")
    for key in ("ED", "ES"):
        if isinstance(n_frames, int) and key in fields and fields[key] > n_frames:  # type: ignore[operator]
            problems.append(f"field '{key}' = {fields[key]} exceeds 'NbFrame' = {n_frames}")
    return fields, problems


def frame_paths(folder: Path, frame: int) -> tuple[Path, Path]:
    """(image, mask) paths of frame ``frame`` (.nii.gz, or .nii when only that exists)."""
    stem = f"{folder.name}_frame{frame:02d}"
    for suffix in (".nii.gz", ".nii"):
        image, mask = folder / f"{stem}{suffix}", folder / f"{stem}_gt{suffix}"
        if image.is_file() or mask.is_file():
            return image, mask
    return folder / f"{stem}.nii.gz", folder / f"{stem}_gt.nii.gz"


def _lv_volume_ml(case: CohortCase) -> float:
    mask = case.load_mask()
    sx, sy, sz = case.spacing
    return float((mask == LABEL_CAVITY).sum()) * sx * sy * sz / 1000.0


def scan_acdc(root: str | Path, check_arrays: bool = False,
              label_map: LabelMap | None = None) -> tuple[list[CohortCase], list[Problem]]:
    """Every usable ED/ES sample under ``root`` and every problem found.

    With ``check_arrays`` the voxels are read too, and a patient whose ES LV cavity is not
    smaller than its ED cavity (swapped ED/ES, or wrong labels) is an error naming Info.cfg.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: data folder does not exist" if not root.exists() else f"{root}: not a folder")
    label_map = label_map or ACDC_LABELS
    folders = find_patient_folders(root)
    problems: list[Problem] = []
    if not folders:
        problems.append(Problem("", str(root), "no ACDC patients found (expected patientNNN/Info.cfg folders)"))
        return [], problems
    seen: dict[str, Path] = {}
    cases: list[CohortCase] = []
    for folder in folders:
        pid = folder.name
        if pid in seen:
            problems.append(Problem(pid, f"{seen[pid]}, {folder}", f"duplicate patient id {pid}: two folders"))
            continue
        seen[pid] = folder
        info_path = folder / INFO_NAME
        fields, info_problems = parse_info(info_path)
        problems.extend(Problem(pid, str(info_path), msg) for msg in info_problems)
        if info_problems:
            continue
        group = str(fields["Group"])
        pair: list[CohortCase] = []
        for phase in ("ED", "ES"):
            image, mask = frame_paths(folder, int(fields[phase]))  # type: ignore[arg-type]
            cid = f"{pid}_{phase}"
            spacing, shape, vol_problems = inspect_volumes(cid, image, mask, None, label_map, check_arrays)
            problems.extend(vol_problems)
            if spacing is None or shape is None:
                continue
            pair.append(CohortCase(
                case_id=cid, patient_id=pid, group=group, pathological=group != "NOR",
                image_path=image, mask_path=mask, clean_path=None, spacing=spacing, shape=shape,
                values={"height": float(fields["Height"]), "weight": float(fields["Weight"])},  # type: ignore[arg-type]
                categorical={"group": group}, label_map=label_map, frame=phase, layout="acdc",
                source=str(info_path),
            ))
        if len(pair) != 2:
            continue  # the missing frame is already a problem; a lone frame cannot give fevg
        if check_arrays:
            try:
                edv, esv = _lv_volume_ml(pair[0]), _lv_volume_ml(pair[1])
            except DataError:
                continue  # reported by inspect_volumes
            if not esv < edv:
                problems.append(Problem(pid, str(info_path),
                                        f"ES frame {fields['ES']} has an LV cavity of {esv:.1f} mL, not smaller than "
                                        f"ED frame {fields['ED']}'s {edv:.1f} mL: are 'ED' and 'ES' swapped, or the "
                                        f"label map wrong ({label_map.describe()})?"))
                continue
        cases.extend(pair)
    return cases, problems


__all__ = ["GROUPS", "INFO_NAME", "find_patient_folders", "frame_paths", "is_patient_folder", "parse_info", "scan_acdc"]
