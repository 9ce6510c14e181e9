"""Content that parses but makes no sense (issue 24, item 1): a corpus of broken folders.

``tests/test_malformed_inputs.py`` covers files that do not parse (truncated NIfTI,
unknown labels, bad clinical fields). Here every file is well-formed and the content is
wrong: a blank series, a mask without a structure the attributes need, a mask on another
grid than its image, a spacing in the wrong unit, a file renamed by hand, a clinical
sheet edited twice. Each entry clones phantom case P001 of the session ``phantom_dir``
under a new id and breaks the clone in one way (nibabel rewrites the file).

Before :mod:`attri_ssc.data.checks` existed, ``check-data`` (main at 2171276, run on this
corpus) reported 14 of the 15 entries with no message at all, as usable cases, and
refused ``image_trailing_axis`` (an (X, Y, Z, 1) export, now read as 3D with a warning);
training read the 14 silently.

| entry | what is wrong | level: message |
|---|---|---|
| image_no_signal | every image voxel 0 | error: image has no signal |
| image_constant | every image voxel 100 | error: image is constant |
| mask_no_cavity | label 1 removed everywhere | error: mask has no LV cavity (label 1) on any of its N slice(s) |
| mask_no_myocardium | labels 2-4 removed everywhere | error: mask has no myocardium (labels 2-4) ... |
| mask_fills_a_slice | one slice all myocardium | error: slice(s) [k] have no background |
| mask_other_spacing | mask header 1.25x the in-plane spacing | error: mask voxel spacing ... differs |
| mask_flipped | mask affine mirrored along X | error: mask orientation LAS differs from the image's RAS |
| image_named_for_other_case | ``Images/Case_N001.nii.gz`` in the clone | error: the image file is named for case N001 |
| clinical_field_twice_differently | ``FEVG`` given twice, two values | error: field 'FEVG' is given 2 times with different values |
| mask_shifted_origin | mask origin 5 voxels away | warning: mask affine differs from the image's |
| spacing_in_cm | in-plane spacing written in cm | warning: voxel spacing ... is implausible for cardiac MRI |
| image_trailing_axis | image saved (X, Y, Z, 1) | warning: extra dimension(s) of size 1 (read as 3D) |
| stray_file_of_other_case | another case's image beside the right one | warning: a file named for case P002 lies in ... |
| clinical_field_twice_same | ``FEVG`` repeated, same value | warning: field 'FEVG' is given 2 times (same value) |
| blank_slice | a slice with myocardium is blank in the image | warning: slice(s) [k] are blank |
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

import nibabel as nib
import numpy as np
import pytest

from attri_ssc.data import checks
from attri_ssc.data.config import DataConfig
from attri_ssc.data.datasets import build_datasets
from attri_ssc.errors import DataError

VALID_IDS = {"N001", "N002", "P001", "P002", "P003", "P004"}


def _nii(root: Path, cid: str, kind: str) -> Path:
    return root / f"Case_{cid}" / kind / f"Case_{cid}.nii.gz"


def _voxels(path: Path) -> np.ndarray:
    return np.asarray(nib.load(path).dataobj)


def _rewrite(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> None:
    """Save ``array`` at ``path`` with the old header (and ``affine`` when given)."""
    old = nib.load(path)
    img = nib.Nifti1Image(array, old.affine if affine is None else affine, old.header.copy())
    img.header.set_data_dtype(array.dtype)
    nib.save(img, path)


def _myo_slice(root: Path, cid: str) -> int:
    mask = _voxels(_nii(root, cid, "Contours"))
    return int(np.flatnonzero((mask >= 2).any(axis=(0, 1)))[0])


def _append_clinical(root: Path, cid: str, line: str) -> None:
    path = root / f"Case {cid}.txt"
    path.write_bytes(path.read_bytes() + line.encode("cp1252"))


def _fevg(root: Path, cid: str) -> str:
    from attri_ssc.data.clinical import read_clinical

    return f"{read_clinical(root / f'Case {cid}.txt').fevg:g}"


def image_no_signal(root, cid):
    path = _nii(root, cid, "Images")
    _rewrite(path, np.zeros(_voxels(path).shape, np.float32))


def image_constant(root, cid):
    path = _nii(root, cid, "Images")
    _rewrite(path, np.full(_voxels(path).shape, 100.0, np.float32))


def mask_no_cavity(root, cid):
    path = _nii(root, cid, "Contours")
    mask = _voxels(path).copy()
    mask[mask == 1] = 0
    _rewrite(path, mask)


def mask_no_myocardium(root, cid):
    path = _nii(root, cid, "Contours")
    mask = _voxels(path).copy()
    mask[mask >= 2] = 0
    _rewrite(path, mask)


def mask_fills_a_slice(root, cid):
    path = _nii(root, cid, "Contours")
    mask = _voxels(path).copy()
    mask[:, :, _myo_slice(root, cid)] = 2
    _rewrite(path, mask)


def mask_other_spacing(root, cid):
    path = _nii(root, cid, "Contours")
    affine = nib.load(path).affine.copy()
    affine[:2, :2] *= 1.25
    _rewrite(path, _voxels(path), affine)


def mask_flipped(root, cid):
    path = _nii(root, cid, "Contours")
    affine = nib.load(path).affine.copy()
    affine[:, 0] *= -1
    _rewrite(path, _voxels(path), affine)


def image_named_for_other_case(root, cid):
    path = _nii(root, cid, "Images")
    path.rename(path.with_name("Case_N001.nii.gz"))


def clinical_field_twice_differently(root, cid):
    _append_clinical(root, cid, f"FEVG : {float(_fevg(root, cid)) + 10:g}\r\n")


def mask_shifted_origin(root, cid):
    path = _nii(root, cid, "Contours")
    affine = nib.load(path).affine.copy()
    affine[:3, 3] += 5 * np.abs(np.diag(affine)[:3]).min()
    _rewrite(path, _voxels(path), affine)


def spacing_in_cm(root, cid):
    for kind in ("Images", "Contours"):
        path = _nii(root, cid, kind)
        affine = nib.load(path).affine.copy()
        affine[:2, :2] /= 10.0
        _rewrite(path, _voxels(path), affine)


def image_trailing_axis(root, cid):
    path = _nii(root, cid, "Images")
    _rewrite(path, _voxels(path)[..., None])


def stray_file_of_other_case(root, cid):
    shutil.copy(_nii(root, "P002", "Images"), root / f"Case_{cid}" / "Images" / "Case_P002.nii.gz")


def clinical_field_twice_same(root, cid):
    _append_clinical(root, cid, f"FEVG : {_fevg(root, cid)}\r\n")


def blank_slice(root, cid):
    path = _nii(root, cid, "Images")
    image = _voxels(path).astype(np.float32)
    image[:, :, _myo_slice(root, cid)] = 0.0
    _rewrite(path, image)


# (breaker, clone id, level, file named relative to the root, message)
Entry = tuple[Callable[[Path, str], None], str, str, str, str]
CORPUS: dict[str, Entry] = {f.__name__: (f, cid, level, where, message) for f, cid, level, where, message in [
    (image_no_signal, "P201", "error", "Case_{id}/Images/Case_{id}.nii.gz",
     "image has no signal (every voxel is 0); expected an MR image with contrast"),
    (image_constant, "P202", "error", "Case_{id}/Images/Case_{id}.nii.gz", "image is constant (every voxel is 100)"),
    (mask_no_cavity, "P203", "error", "Case_{id}/Contours/Case_{id}.nii.gz", "mask has no LV cavity (label 1) on any"),
    (mask_no_myocardium, "P204", "error", "Case_{id}/Contours/Case_{id}.nii.gz",
     "mask has no myocardium (labels 2-4) on any"),
    (mask_fills_a_slice, "P205", "error", "Case_{id}/Contours/Case_{id}.nii.gz", "have no background"),
    (mask_other_spacing, "P206", "error", "Case_{id}/Contours/Case_{id}.nii.gz",
     "mm (expected the mask on the image's voxel grid)"),
    (mask_flipped, "P207", "error", "Case_{id}/Contours/Case_{id}.nii.gz",
     "mask orientation LAS differs from the image's RAS"),
    (image_named_for_other_case, "P208", "error", "Case_{id}/Images/Case_N001.nii.gz",
     "the image file is named for case N001 but is read as case {id}'s"),
    (clinical_field_twice_differently, "P209", "error", "Case {id}.txt",
     "field 'FEVG' is given 2 times with different values"),
    (mask_shifted_origin, "P210", "warning", "Case_{id}/Contours/Case_{id}.nii.gz",
     "mask affine differs from the image's"),
    (spacing_in_cm, "P211", "warning", "Case_{id}/Images/Case_{id}.nii.gz",
     "mm is implausible for cardiac MRI (expected in-plane 0.3-5 mm"),
    (image_trailing_axis, "P212", "warning", "Case_{id}/Images/Case_{id}.nii.gz",
     "extra dimension(s) of size 1 in shape"),
    (stray_file_of_other_case, "P213", "warning", "Case_{id}/Images/Case_P002.nii.gz",
     "a file named for case P002 lies in case {id}'s folder"),
    (clinical_field_twice_same, "P214", "warning", "Case {id}.txt", "field 'FEVG' is given 2 times (same value)"),
    (blank_slice, "P215", "warning", "Case_{id}/Images/Case_{id}.nii.gz", "are blank (constant) in the image"),
]}
ERRORS = {n for n, e in CORPUS.items() if e[2] == "error"}
WARNINGS = {n for n, e in CORPUS.items() if e[2] == "warning"}


def _clone(src: Path, root: Path, cid: str) -> None:
    shutil.copytree(src / "Case_P001", root / f"Case_{cid}")
    for kind in ("Images", "Contours"):
        folder = root / f"Case_{cid}" / kind
        (folder / "Case_P001.nii.gz").rename(folder / f"Case_{cid}.nii.gz")
    shutil.copy(src / "Case P001.txt", root / f"Case {cid}.txt")


@pytest.fixture(scope="module")
def corpus(phantom_dir, tmp_path_factory) -> Path:
    """The six valid phantom cases plus every entry, in one folder (read-only)."""
    root = tmp_path_factory.mktemp("content") / "data"
    shutil.copytree(phantom_dir, root, ignore=shutil.ignore_patterns("phantom_*"))
    for breaker, cid, *_ in CORPUS.values():
        _clone(phantom_dir, root, cid)
        breaker(root, cid)
    return root


@pytest.fixture(scope="module")
def cfg(tmp_path_factory) -> DataConfig:
    return DataConfig(spacing_mm=8.0, field_of_view_mm=128.0, split_fractions=(0.5, 0.25, 0.25),
                      cache_dir=str(tmp_path_factory.mktemp("content-cache")))


def test_check_data_reports_each_content_problem_once_and_exits_3(corpus):
    proc = subprocess.run([sys.executable, "-m", "attri_ssc", "check-data", str(corpus)],
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 3, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stdout.splitlines()
    for name, (_, cid, level, where, message) in CORPUS.items():
        mine = [line for line in lines if f"case {cid}:" in line]
        expected = f"{level}: case {cid}: {corpus / where.format(id=cid)}: "
        assert len(mine) == 1 and mine[0].startswith(expected), (name, expected, mine)
        assert message.format(id=cid) in mine[0], (name, mine[0])
        assert "expected" in mine[0], (name, mine[0])  # every message says what was expected
    assert not [line for line in lines if any(f"case {v}:" in line for v in VALID_IDS)]
    assert lines[-1] == (f"{len(VALID_IDS) + len(WARNINGS)} usable case(s); {len(ERRORS)} error(s) in "
                         f"{len(ERRORS)} case(s); {len(WARNINGS)} warning(s)"), lines[-1]
    bad = proc.stderr.strip().split("unusable: ")[-1].split(", ")
    assert sorted(bad) == sorted(CORPUS[n][1] for n in ERRORS)


#: Errors found in headers, names and clinical files, before any voxel is read.
HEADER_ERRORS = {"mask_other_spacing", "mask_flipped", "image_named_for_other_case", "clinical_field_twice_differently"}


def test_build_datasets_refuses_with_every_error_or_skips_and_records(corpus, cfg, caplog):
    """Strict: one DataError lists every header-level problem (the voxel-level ones are
    listed together once the headers are clean: next test). Skipping: every unusable
    case is left out and recorded with its problems."""
    with pytest.raises(DataError) as err:
        build_datasets(corpus, cfg)
    text = str(err.value)
    assert f"{len(HEADER_ERRORS)} problem(s) in the data" in text, text
    for name in HEADER_ERRORS:
        _, cid, _, where, message = CORPUS[name]
        line = [x for x in text.splitlines() if f"case {cid}: {corpus / where.format(id=cid)}: " in x]
        assert len(line) == 1 and message.format(id=cid) in line[0], (name, line)
    skip = DataConfig(**{**cfg.to_dict(), "skip_bad_cases": True})
    with caplog.at_level(logging.WARNING):
        bundle = build_datasets(corpus, skip)
    assert set(bundle.cases) == VALID_IDS | {CORPUS[n][1] for n in WARNINGS}
    assert set(bundle.skipped) == {CORPUS[n][1] for n in ERRORS}
    for name in ERRORS:
        _, cid, _, _, message = CORPUS[name]
        assert any(message.format(id=cid) in m for m in bundle.skipped[cid]), (name, bundle.skipped[cid])
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for name in WARNINGS:
        assert CORPUS[name][4].format(id=CORPUS[name][1]) in logged, name
    for ds in (bundle.train, bundle.val, bundle.test):
        assert np.isfinite(ds.images.numpy()).all() and np.isfinite(ds.raw_attributes.numpy()).all()


def test_voxel_level_errors_are_listed_together(corpus, cfg, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(corpus, root)
    for name in HEADER_ERRORS:
        cid = CORPUS[name][1]
        shutil.rmtree(root / f"Case_{cid}")
        (root / f"Case {cid}.txt").unlink()
    with pytest.raises(DataError) as err:
        build_datasets(root, cfg)
    text = str(err.value)
    voxel_errors = ERRORS - HEADER_ERRORS
    assert f"{len(voxel_errors)} problem(s) in the data" in text, text
    for name in voxel_errors:
        _, cid, _, where, message = CORPUS[name]
        assert f"error: case {cid}: {root / where.format(id=cid)}: " in text and message.format(id=cid) in text, name


def test_a_trailing_axis_of_size_1_reads_as_the_3d_volume(corpus, cfg):
    skip = DataConfig(**{**cfg.to_dict(), "skip_bad_cases": True})
    cases = build_datasets(corpus, skip).cases
    clone, original = cases[CORPUS["image_trailing_axis"][1]], cases["P001"]
    assert clone.shape == original.shape
    np.testing.assert_array_equal(clone.load_image(), original.load_image())


# --------------------------------------------------------------------------- the functions, on arrays


def test_spacing_levels_at_the_documented_bounds():
    ok = checks.check_spacing((0.3, 5.0, 0.5), "N1", "f")
    assert ok == []
    assert [p.severity for p in checks.check_spacing((0.29, 1.0, 8.0), "N1", "f")] == ["warning"]
    assert [p.severity for p in checks.check_spacing((1.0, 1.0, 20.5), "N1", "f")] == ["warning"]
    assert [p.severity for p in checks.check_spacing((1.0, 0.0, 8.0), "N1", "f")] == ["error"]
    assert [p.severity for p in checks.check_spacing((1.0, float("nan"), 8.0), "N1", "f")] == ["error"]
    assert [p.severity for p in checks.check_spacing((-1.0, 1.0, 8.0), "N1", "f")] == ["warning"]
    assert [p.severity for p in checks.check_spacing((1.0, 1.0), "N1", "f")] == ["error"]


def test_file_names_of_other_layouts_are_recognised():
    """Words of a name are compared, so the check is not tied to EMIDEC's ``Case_`` names."""
    ids = ["patient001", "patient002"]
    wrong = checks.check_file_names("patient001", {"image": "patient002_frame01.nii.gz"}, ids)
    assert [p.severity for p in wrong] == ["error"] and "named for case PATIENT002" in wrong[0].message
    assert checks.check_file_names("patient001", {"image": "patient001_frame01.nii.gz"}, ids) == []
    # a name holding neither id (a scanner export) is not an error
    assert checks.check_file_names("patient001", {"image": "series_7.nii.gz"}, ids) == []


def test_blank_slice_and_constant_image_levels():
    image = np.random.default_rng(0).normal(size=(8, 8, 3)).astype(np.float32)
    mask = np.zeros((8, 8, 3), np.uint8)
    mask[2:6, 2:6, :] = 2
    mask[3:5, 3:5, :] = 1
    image[:, :, 1] = 7.0
    problems = checks.check_image_voxels(image, "P1", "img", mask=mask)
    assert [(p.severity, "[1]" in p.message) for p in problems] == [("warning", True)]
    assert [p.severity for p in checks.check_image_voxels(np.full((4, 4, 2), 3.0), "P1", "img")] == ["error"]
    assert checks.check_mask_voxels(mask, "P1", "m", mask.shape) == []
