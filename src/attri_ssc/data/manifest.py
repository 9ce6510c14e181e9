"""Reader of a manifest: a CSV listing a cohort's NIfTI images, masks and clinical values.

``ROOT/manifest.csv`` (or any ``.csv`` file given as the data path), UTF-8 (a BOM is
fine), one row per sample, a header row naming the columns:

==================  ========  =================================================================
column              needed    meaning
==================  ========  =================================================================
``case_id``         yes       the sample's id, unique (letters, digits, ``_``, ``-``, ``.``)
``image``           yes       image NIfTI (X, Y, slices), relative to the manifest's folder
``mask``            yes       label NIfTI shaped like the image, read through ``data.label_map``
``patient_id``      no        split unit (default: ``case_id``); a patient's samples share a split
``group``           no        stratum of the split and report label (text; default ``P``/``N``
                              from ``pathological``, else ``all``)
``pathological``    no        0/1, the items' ``label`` (default 0)
``frame``           no        ``ED``/``ES`` (or empty): a patient with both gets ``fevg`` computed
                              from the LV cavity volumes, unless an ``fevg`` column gives it
``clean``           no        noise-free image (phantoms)
anything else       no        a clinical attribute of the case: a number, or text when declared
                              ``categorical`` in ``data.columns`` (registered categorical
                              attributes such as ``tobacco`` count as declared)
==================  ========  =================================================================

Column names are identifiers (``age``, ``nt_probnp``); a name of an attribute measured from
the masks (``lv_volume``, ...) is refused. Values are checked like the EMIDEC reader's: every
problem names the manifest, the line, the column and what was expected (an empty or
non-numeric value, a missing file, a duplicate id, a mask value the label map does not name).
"""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path
from typing import Mapping

from attri_ssc.data.attributes import ATTRIBUTES, IMAGE_ATTRIBUTES
from attri_ssc.data.cohort import CohortCase, inspect_volumes
from attri_ssc.data.emidec import Problem
from attri_ssc.data.labels import EMIDEC_LABELS, LabelMap
from attri_ssc.errors import DataError

MANIFEST_NAME = "manifest.csv"
REQUIRED_COLUMNS: tuple[str, ...] = ("case_id", "image", "mask")
RESERVED_COLUMNS: tuple[str, ...] = ("case_id", "image", "mask", "patient_id", "group", "pathological", "frame", "clean")
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def find_manifest(path: str | Path) -> Path | None:
    """The manifest of ``path``: the file itself when it is a ``.csv``, else ``path/manifest.csv``."""
    path = Path(path)
    if path.is_file() and path.suffix.lower() == ".csv":
        return path
    candidate = path / MANIFEST_NAME
    return candidate if candidate.is_file() else None


def _column_kinds(header: list[str], declared: Mapping[str, str]) -> dict[str, str]:
    """Clinical column → 'numeric' or 'categorical'."""
    kinds = {}
    for name in header:
        if name in RESERVED_COLUMNS:
            continue
        spec = ATTRIBUTES.get(name)
        if declared.get(name) == "categorical" or (spec is not None and spec.kind == "categorical"):
            kinds[name] = "categorical"
        else:
            kinds[name] = "numeric"
    return kinds


def scan_manifest(path: str | Path, check_arrays: bool = False, label_map: LabelMap | None = None,
                  columns: Mapping[str, str] | None = None) -> tuple[list[CohortCase], list[Problem]]:
    """Every usable sample listed by the manifest of ``path`` and every problem found.

    Args:
        path: the folder holding ``manifest.csv``, or the CSV file itself.
        check_arrays: also read the voxels (labels, finiteness, truncation).
        label_map: the masks' numbering (EMIDEC's by default).
        columns: ``data.columns`` declarations (name → unit or 'categorical').
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: data folder does not exist")
    manifest = find_manifest(path)
    if manifest is None:
        return [], [Problem("", str(path), f"no {MANIFEST_NAME} found (a manifest folder needs one)")]
    label_map = label_map or EMIDEC_LABELS
    declared = dict(columns or {})
    base = manifest.parent
    try:
        text = manifest.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        return [], [Problem("", str(manifest), f"not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8 CSV")]
    except OSError as exc:
        return [], [Problem("", str(manifest), f"cannot read ({exc.strerror or exc})")]
    rows = list(csv.reader(text.splitlines()))
    problems: list[Problem] = []
    if not rows or not any(cell.strip() for cell in rows[0]):
        return [], [Problem("", str(manifest), "empty manifest: expected a header row "
                                               f"({', '.join(REQUIRED_COLUMNS)}, ...) and one row per case")]
    header = [cell.strip() for cell in rows[0]]
    header_problems = []
    for name in REQUIRED_COLUMNS:
        if name not in header:
            header_problems.append(f"missing column '{name}' (needed: {', '.join(REQUIRED_COLUMNS)})")
    for i, name in enumerate(header):
        if not name.isidentifier():
            header_problems.append(f"column {i + 1} has the name {name!r}; column names must be identifiers "
                                   "(letters, digits, '_', not starting with a digit)")
        elif name in IMAGE_ATTRIBUTES:
            header_problems.append(f"column '{name}' is the name of an attribute measured from the masks; rename it")
        if header.count(name) > 1 and header.index(name) == i:
            header_problems.append(f"column '{name}' appears {header.count(name)} times")
    for name, kind in declared.items():
        if name not in header:
            header_problems.append(f"data.columns declares column '{name}' ({kind}), which the manifest lacks")
    if header_problems:
        return [], [Problem("", f"{manifest}:1", msg) for msg in header_problems]
    kinds = _column_kinds(header, declared)
    cases: list[CohortCase] = []
    first_line: dict[str, int] = {}
    frames_of: dict[tuple[str, str], str] = {}
    for line_no, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue  # blank line
        where = f"{manifest}:{line_no}"
        if len(row) != len(header):
            problems.append(Problem("", where, f"{len(row)} value(s) for {len(header)} column(s) "
                                               f"({', '.join(header)})"))
            continue
        cell = {name: value.strip() for name, value in zip(header, row)}
        cid = cell["case_id"]
        if not _ID_RE.match(cid):
            problems.append(Problem("", where, f"column 'case_id': {cid!r} is not an id "
                                               "(letters, digits, '_', '-', '.')"))
            continue
        if cid in first_line:
            problems.append(Problem(cid, where, f"column 'case_id': duplicate id {cid} (first on line {first_line[cid]})"))
            continue
        first_line[cid] = line_no
        row_problems: list[str] = []
        values: dict[str, float] = {}
        categorical: dict[str, str] = {}
        for name, kind in kinds.items():
            raw = cell[name]
            if raw == "":
                row_problems.append(f"column '{name}': empty value (expected {'a category' if kind == 'categorical' else 'a number'})")
            elif kind == "categorical":
                categorical[name] = raw
            else:
                try:
                    number = float(raw)
                except ValueError:
                    row_problems.append(f"column '{name}': {raw!r} is not a number (declare the column as "
                                        f"categorical with --set data.columns.{name}=categorical if it holds categories)")
                    continue
                if not math.isfinite(number):
                    row_problems.append(f"column '{name}': {raw!r} is not a finite number")
                    continue
                values[name] = number
        pathological = False
        if "pathological" in cell:
            if cell["pathological"] in ("0", "1"):
                pathological = cell["pathological"] == "1"
            else:
                row_problems.append(f"column 'pathological': expected 0 or 1, got {cell['pathological']!r}")
        patient = cell.get("patient_id") or cid
        if "patient_id" in cell and not _ID_RE.match(patient):
            row_problems.append(f"column 'patient_id': {patient!r} is not an id")
        if cell.get("group"):
            group = cell["group"]
        elif "pathological" in cell:
            group = "P" if pathological else "N"
        else:
            group = "all"
        frame = cell.get("frame", "").upper()
        if frame not in ("", "ED", "ES"):
            row_problems.append(f"column 'frame': expected ED, ES or empty, got {cell['frame']!r}")
        elif frame:
            other = frames_of.get((patient, frame))
            if other is not None:
                row_problems.append(f"column 'frame': patient {patient} has two {frame} frames ({other} and {cid})")
            frames_of[(patient, frame)] = cid
        paths: dict[str, Path | None] = {}
        for col in ("image", "mask", "clean"):
            raw = cell.get(col, "")
            if raw == "":
                if col != "clean":
                    row_problems.append(f"column '{col}': empty (expected a NIfTI path relative to {base})")
                paths[col] = None
                continue
            p = Path(raw)
            p = p if p.is_absolute() else base / p
            if not p.is_file():
                row_problems.append(f"column '{col}': file not found: {p}")
            paths[col] = p
        if row_problems:
            problems.extend(Problem(cid, where, msg) for msg in row_problems)
            continue
        spacing, shape, vol_problems = inspect_volumes(cid, paths["image"], paths["mask"], paths["clean"],  # type: ignore[arg-type]
                                                       label_map, check_arrays)
        problems.extend(vol_problems)
        if spacing is None or shape is None:
            continue
        cases.append(CohortCase(
            case_id=cid, patient_id=patient, group=group, pathological=pathological,
            image_path=paths["image"], mask_path=paths["mask"], clean_path=paths["clean"],  # type: ignore[arg-type]
            spacing=spacing, shape=shape, values=values, categorical={"group": group, **categorical},
            label_map=label_map, frame=frame, layout="manifest", source=where,
        ))
    if not first_line and not problems:
        problems.append(Problem("", str(manifest), "the manifest lists no cases (only a header row)"))
    # A patient's samples must agree on the patient-level values.
    by_patient: dict[str, list[CohortCase]] = {}
    for c in cases:
        by_patient.setdefault(c.patient_id, []).append(c)
    for pid, samples in by_patient.items():
        if len({(s.group, s.pathological) for s in samples}) > 1:
            problems.append(Problem(pid, str(manifest), f"patient {pid}'s rows disagree on 'group'/'pathological' "
                                                        f"({', '.join(s.case_id for s in samples)})"))
            cases = [c for c in cases if c.patient_id != pid]
    return cases, problems


__all__ = ["MANIFEST_NAME", "REQUIRED_COLUMNS", "RESERVED_COLUMNS", "find_manifest", "scan_manifest"]
