"""One entry point for every data folder: detect its layout and read its cases.

Layouts (each has a reader returning cases with one interface, :mod:`attri_ssc.data.cohort`):

* ``emidec``: ``Case_<id>/Images``, ``Case_<id>/Contours`` and ``Case <id>.txt``
  (:mod:`attri_ssc.data.emidec`);
* ``acdc``: ``patientNNN/Info.cfg`` with ED/ES frames and their ``_gt`` masks
  (:mod:`attri_ssc.data.acdc`);
* ``manifest``: ``manifest.csv`` listing images, masks and clinical columns
  (:mod:`attri_ssc.data.manifest`); the path may also be the CSV file itself.

:func:`detect_layout` looks for the evidence of each; when a folder shows none, or more
than one, it raises a :class:`DataError` that says what it found and asks for
``--layout``. :func:`resolve_data_config` fills ``data.layout`` and ``data.label_map``
(the layout's standard map unless one is given) so that a run records how its folder was
read and evaluate/interpret read it the same way.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from attri_ssc.data.config import LAYOUTS, DataConfig
from attri_ssc.data.emidec import Problem, raise_or_skip
from attri_ssc.data.labels import LAYOUT_LABELS, LabelMap
from attri_ssc.errors import ConfigError, DataError

log = logging.getLogger(__name__)


def _emidec_evidence(root: Path) -> bool:
    from attri_ssc.data.emidec import _FOLDER_RE, _search_dirs

    return any(p.is_dir() and _FOLDER_RE.match(p.name) for d in _search_dirs(root) for p in d.iterdir())


def detect_layout(path: str | Path) -> str:
    """'emidec', 'acdc' or 'manifest' from what ``path`` holds.

    Raises:
        DataError: ``path`` is missing, shows no layout, or shows several.
    """
    from attri_ssc.data.acdc import find_patient_folders
    from attri_ssc.data.manifest import MANIFEST_NAME, find_manifest

    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: data folder does not exist")
    if path.is_file():
        if path.suffix.lower() == ".csv":
            return "manifest"
        raise DataError(f"{path}: not a folder (a data path is a folder, or a manifest .csv file)")
    found = []
    if find_manifest(path) is not None:
        found.append(("manifest", f"{MANIFEST_NAME}"))
    if find_patient_folders(path):
        found.append(("acdc", "patientNNN/Info.cfg folders"))
    if _emidec_evidence(path):
        found.append(("emidec", "Case_<id> folders"))
    if len(found) == 1:
        return found[0][0]
    if not found:
        raise DataError(f"{path}: no cases found in any layout: no {MANIFEST_NAME} (manifest), no patientNNN/Info.cfg "
                        "folders (acdc), no Case_<id>/Images folders (emidec)")
    listing = "; ".join(f"{what} ({name})" for name, what in found)
    raise DataError(f"{path}: the folder looks like several layouts: {listing}; name one with --layout "
                    f"({'|'.join(LAYOUTS)})")


def check_layout(layout: str | None) -> str | None:
    """``layout`` unchanged when it is None or known; else a :class:`ConfigError`."""
    if layout is not None and layout not in LAYOUTS:
        raise ConfigError(f"unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
    return layout


@dataclass
class FolderScan:
    """What :func:`scan_folder` found.

    Attributes:
        path: the data path read.
        layout: the layout used.
        label_map: the label map used.
        cases: usable cases (EmidecCase or CohortCase), sorted by case id.
        problems: every problem (errors and warnings), each naming the file.
    """

    path: Path
    layout: str
    label_map: LabelMap
    cases: list[Any]
    problems: list[Problem]


def scan_folder(path: str | Path, layout: str | None = None, label_map: LabelMap | None = None,
                columns: Mapping[str, str] | None = None, check_arrays: bool = False) -> FolderScan:
    """Read the cases of ``path`` in ``layout`` (detected when None); nothing raised for
    problems in the data (they are returned), only for a missing path or an unknown layout."""
    layout = check_layout(layout) or detect_layout(path)
    label_map = label_map or LAYOUT_LABELS[layout]
    if layout == "emidec":
        from attri_ssc.data.emidec import scan_dataset

        cases, problems = scan_dataset(path, check_arrays=check_arrays, label_map=label_map)
    elif layout == "acdc":
        from attri_ssc.data.acdc import scan_acdc

        cases, problems = scan_acdc(path, check_arrays=check_arrays, label_map=label_map)
    else:
        from attri_ssc.data.manifest import scan_manifest

        cases, problems = scan_manifest(path, check_arrays=check_arrays, label_map=label_map, columns=columns)
    return FolderScan(Path(path), layout, label_map, sorted(cases, key=lambda c: c.case_id), problems)


def open_folder(path: str | Path, layout: str | None = None, label_map: LabelMap | None = None,
                columns: Mapping[str, str] | None = None, skip_bad_cases: bool = False,
                check_arrays: bool = False) -> list[Any]:
    """The usable cases of ``path`` (any layout), sorted by case id.

    Raises:
        DataError: one error listing every problem; with ``skip_bad_cases`` the unusable
            cases are logged and skipped and only an empty result raises.
    """
    scan = scan_folder(path, layout, label_map, columns, check_arrays)
    return raise_or_skip(path, scan.cases, scan.problems, skip_bad_cases)


def open_with_config(path: str | Path, cfg: DataConfig, check_arrays: bool = False) -> list[Any]:
    """:func:`open_folder` with ``cfg``'s layout, label map, columns and skip policy."""
    return open_folder(path, cfg.layout, cfg.label_map, cfg.column_kinds, cfg.skip_bad_cases, check_arrays)


def resolve_data_config(cfg: DataConfig, path: str | Path, layout: str | None = None) -> DataConfig:
    """``cfg`` with ``layout`` (the argument, else cfg's, else detected) and ``label_map``
    (cfg's, else the layout's standard map) filled in: what a run records."""
    chosen = check_layout(layout) or cfg.layout or detect_layout(path)
    label_map = cfg.label_map or LAYOUT_LABELS[chosen]
    if chosen == cfg.layout and label_map == cfg.label_map:
        return cfg
    return dataclasses.replace(cfg, layout=chosen, label_map=label_map)


def samples_of_patients(cases: Sequence[Any]) -> dict[str, list[str]]:
    """patient id → its samples' case ids (sorted)."""
    out: dict[str, list[str]] = {}
    for c in cases:
        out.setdefault(c.patient_id, []).append(c.case_id)
    return {p: sorted(ids) for p, ids in out.items()}


__all__ = ["FolderScan", "check_layout", "detect_layout", "open_folder", "open_with_config",
           "resolve_data_config", "samples_of_patients", "scan_folder"]
