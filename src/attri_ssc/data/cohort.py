"""The case every non-EMIDEC reader returns, and the volume checks they share.

A reader (EMIDEC, ACDC, manifest) turns a folder into a list of cases with one
interface, which :func:`attri_ssc.data.datasets.build_datasets` consumes:

* ``case_id``: the sample's id, unique in the folder (an ACDC frame: ``patient001_ED``);
* ``patient_id``: the split unit (samples of one patient always share a split);
* ``group``: the stratum of the patient-level split (EMIDEC N/P, ACDC's pathology group,
  a manifest's ``group`` column);
* ``pathological``: the dataset items' 0/1 ``label``;
* ``frame``: '' or the cardiac phase ('ED'/'ES'), from which ``fevg`` is computed;
* ``image_path``, ``mask_path``, ``clean_path``, ``spacing`` (mm), ``shape`` (X, Y, Z);
* ``clinical_values()``: case-level numeric attributes in physical units;
* ``categorical``: case-level categorical values (text);
* ``load_image()``, ``load_mask()`` (canonical labels, :mod:`attri_ssc.data.labels`),
  ``load_clean()``.

:class:`attri_ssc.data.emidec.EmidecCase` has the same members; :class:`CohortCase` is
the plain version the ACDC and manifest readers fill.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from attri_ssc.data.checks import (Problem, check_dimensions, check_file_names, check_geometry, check_spacing,
                                   errors_of, stored_zooms, volume_shape)
from attri_ssc.data.emidec import NiftiVolumes, _nifti_header, check_case_voxels
from attri_ssc.data.labels import EMIDEC_LABELS, LabelMap
from attri_ssc.errors import DataError


@dataclass(frozen=True)
class CohortCase(NiftiVolumes):
    """One usable sample of an ACDC or manifest folder (see module doc for the members).

    Attributes:
        source: the file that described the case (Info.cfg, the manifest row 'FILE:ROW').
        layout: 'acdc' or 'manifest'.
    """

    case_id: str
    patient_id: str
    group: str
    pathological: bool
    image_path: Path
    mask_path: Path
    clean_path: Path | None
    spacing: tuple[float, float, float]
    shape: tuple[int, int, int]
    values: dict[str, float] = field(default_factory=dict, repr=False)
    categorical: dict[str, str] = field(default_factory=dict, repr=False)
    label_map: LabelMap = field(default=EMIDEC_LABELS, repr=False)
    frame: str = ""
    layout: str = "manifest"
    source: str = ""

    @property
    def label(self) -> str:
        """The stratum (as EmidecCase.label)."""
        return self.group

    def clinical_values(self) -> dict[str, float]:
        """Case-level numeric attributes (physical units), ``pathological`` included."""
        return {**self.values, "pathological": float(self.pathological)}


def inspect_volumes(case_id: str, image_path: Path, mask_path: Path, clean_path: Path | None,
                    label_map: LabelMap, check_arrays: bool = False, other_ids: Iterable[str] = (),
                    ) -> tuple[tuple[float, float, float] | None, tuple[int, int, int] | None, list[Problem]]:
    """Headers (and with ``check_arrays`` the voxels) of one sample's image, mask and clean
    image, through the content checks every reader shares (:mod:`attri_ssc.data.checks`):
    readable, 3D, plausible spacing, mask on the image's grid, mask values known to the label
    map with the structures the attributes need, an image with signal, files not named for
    another case (``other_ids``).

    Returns:
        (spacing, shape, problems); spacing/shape are None when the sample is unusable.
    """
    problems: list[Problem] = []
    headers = {}
    zooms: dict[str, tuple[float, ...]] = {}
    for role, path in (("image", image_path), ("mask", mask_path)):
        if not Path(path).is_file():
            problems.append(Problem(case_id, str(path), f"{role} file not found"))
            continue
        try:
            img = _nifti_header(Path(path), case_id)
        except DataError as exc:
            problems.append(Problem(case_id, str(path), str(exc).split(f"{path}: ", 1)[-1]))
            continue
        dims = check_dimensions(img.shape, case_id, path)
        problems += dims
        if errors_of(dims):
            continue
        headers[role] = img
        zooms[role] = stored_zooms(path, img)[:3]
    problems += check_file_names(case_id, {"image": image_path, "mask": mask_path, "clean": clean_path}, other_ids)
    spacing = shape = None
    if "image" in headers:
        spacing_problems = check_spacing(zooms["image"], case_id, image_path)
        problems += spacing_problems
        shape = volume_shape(headers["image"].shape)
        if not errors_of(spacing_problems):
            spacing = tuple(abs(float(z)) for z in zooms["image"])
    if "image" in headers and "mask" in headers:
        problems += check_geometry(headers["image"], headers["mask"], case_id, image_path, mask_path,
                                   zooms["image"], zooms["mask"], compare_spacing=spacing is not None)
    if clean_path is not None and not Path(clean_path).is_file():
        problems.append(Problem(case_id, str(clean_path), "clean image file not found"))
    if check_arrays:
        def usable(role: str, path: Path | None) -> Path | None:
            ok = path is not None and (role == "clean" or role in headers) and Path(path).is_file()
            return Path(path) if ok else None  # type: ignore[arg-type]

        roles = {"image": usable("image", image_path), "mask": usable("mask", mask_path),
                 "clean": usable("clean", clean_path)}
        geometry_ok = not any(p.severity == "error" and p.path == str(mask_path) for p in problems)
        problems += check_case_voxels(case_id, roles, shape if geometry_ok else None, label_map=label_map)
    if errors_of(problems) or spacing is None or shape is None:
        return None, None, problems
    return spacing, shape, problems  # type: ignore[return-value]


__all__ = ["CohortCase", "inspect_volumes"]
