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

import numpy as np

from attri_ssc.data.emidec import Problem, _nifti_header, _stored_zooms, check_mask, load_nifti
from attri_ssc.data.labels import EMIDEC_LABELS, LabelMap
from attri_ssc.errors import DataError


@dataclass(frozen=True)
class CohortCase:
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

    def load_image(self) -> np.ndarray:
        """Image (X, Y, Z) float32."""
        return load_nifti(self.image_path, self.case_id)[0].astype(np.float32, copy=False)

    def load_mask(self) -> np.ndarray:
        """Canonical labels (X, Y, Z) uint8, checked against the label map."""
        data = load_nifti(self.mask_path, self.case_id)[0]
        return check_mask(data, self.mask_path, self.case_id, self.shape, self.label_map)

    def load_clean(self) -> np.ndarray | None:
        """Noise-free image (X, Y, Z) float32 (phantoms), or None."""
        if self.clean_path is None:
            return None
        data = load_nifti(self.clean_path, self.case_id)[0].astype(np.float32, copy=False)
        if data.shape != self.shape:
            raise DataError(f"case {self.case_id}: {self.clean_path}: clean image shape {data.shape} "
                            f"differs from image shape {self.shape}")
        return data


def inspect_volumes(case_id: str, image_path: Path, mask_path: Path, clean_path: Path | None,
                    label_map: LabelMap, check_arrays: bool = False
                    ) -> tuple[tuple[float, float, float] | None, tuple[int, int, int] | None, list[Problem]]:
    """Headers (and with ``check_arrays`` the voxels) of one sample's image, mask and clean
    image: the same checks as the EMIDEC reader (readable, 3D, valid spacing, mask shaped
    like the image, mask values known to the label map, not empty, finite image).

    Returns:
        (spacing, shape, problems); spacing/shape are None when the image is unusable.
    """
    problems: list[Problem] = []
    headers = {}
    for role, path in (("image", image_path), ("mask", mask_path)):
        if not Path(path).is_file():
            problems.append(Problem(case_id, str(path), f"{role} file not found"))
            continue
        try:
            img = _nifti_header(Path(path), case_id)
        except DataError as exc:
            problems.append(Problem(case_id, str(path), str(exc).split(f"{path}: ", 1)[-1]))
            continue
        if len(img.shape) != 3:
            problems.append(Problem(case_id, str(path), f"expected a 3D (X, Y, slices) volume, got shape {img.shape}"))
            continue
        headers[role] = img
    spacing = shape = None
    if "image" in headers:
        img = headers["image"]
        zooms = _stored_zooms(Path(image_path), img)[:3]
        shape = tuple(int(s) for s in img.shape)
        if len(zooms) != 3 or not all(np.isfinite(z) and z > 0 for z in zooms):
            problems.append(Problem(case_id, str(image_path), f"invalid voxel spacing {zooms} in header"))
        else:
            spacing = tuple(float(z) for z in zooms)
    if "mask" in headers and shape is not None and tuple(headers["mask"].shape) != shape:
        problems.append(Problem(case_id, str(mask_path),
                                f"mask shape {tuple(headers['mask'].shape)} differs from image shape {shape}"))
        shape_ok = False
    else:
        shape_ok = True
    if clean_path is not None and not Path(clean_path).is_file():
        problems.append(Problem(case_id, str(clean_path), "clean image file not found"))
    if check_arrays:
        for role, path in (("image", image_path), ("mask", mask_path), ("clean", clean_path)):
            if path is None or (role != "clean" and role not in headers) or not Path(path).is_file():
                continue
            try:
                data, _ = load_nifti(Path(path), case_id)
                if role == "mask":
                    if shape is not None and shape_ok:
                        check_mask(data, Path(path), case_id, shape, label_map)
                elif not np.all(np.isfinite(data)):
                    problems.append(Problem(case_id, str(path), f"{role} has non-finite values"))
                elif role == "clean" and shape is not None and data.shape != shape:
                    problems.append(Problem(case_id, str(path), f"clean image shape {data.shape} differs from {shape}"))
            except DataError as exc:
                problems.append(Problem(case_id, str(path), str(exc).split(f"{path}: ", 1)[-1]))
    if any(p.severity == "error" for p in problems):
        return None, None, problems
    return spacing, shape, problems  # type: ignore[return-value]


__all__ = ["CohortCase", "inspect_volumes"]
