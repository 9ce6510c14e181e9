"""A corpus of malformed EMIDEC-layout inputs and the documented behaviour of each (issue 8).

The corpus is generated from a small valid phantom set: each entry clones a valid case
under a new id and breaks the clone in one way. Every entry is checked two ways:

* ``attri-ssc check-data`` (a subprocess) on one folder holding the whole corpus beside
  the valid cases lists every problem, each naming the case and the file, and exits 3;
* ``build_datasets`` on the valid cases plus that one clone raises a ``DataError``
  naming the file and the problem, or with ``data.skip_bad_cases=true`` logs the case
  as skipped and trains on the rest.

Documented behaviour (``outcome``): ``error``: the case is unusable (exit 3, or a logged
skip with ``skip_bad_cases``); ``warn``: usable, with a warning; ``ok``: a quirk we read
correctly; ``ignored``: not a case (a warning). Cases already covered by
``tests/test_bad_data.py`` (missing Contours folder, truncated image, image/mask shape
mismatch, unknown label, missing or non-numeric clinical field, duplicate ids) are not
repeated here.

| entry | what is wrong | outcome: message |
|---|---|---|
| missing_images_folder | ``Images/`` deleted | error: missing Images folder |
| empty_images_folder | ``Images/`` holds no NIfTI | error: no Case_<id>.nii.gz in Images folder |
| ambiguous_images | two NIfTIs, neither named after the case | error: no Case_<id>.nii.gz in Images folder |
| zero_byte_mask | 0-byte ``.nii.gz`` | error: not a readable NIfTI file |
| truncated_mask | mask ``.nii.gz`` cut in half | error: cannot read voxel data, ... truncated |
| corrupt_gzip_image | 16 bytes zeroed mid-stream (CRC wrong) | error: damaged gzip data |
| float_labels | mask label 1.5 | error: mask has non-integer values |
| nan_in_mask | NaN in a float mask | error: mask has non-finite values |
| empty_mask | mask all background | error: mask is empty |
| image_all_nan | image all NaN | error: image has non-finite values |
| image_with_inf | one +inf voxel | error: image has non-finite values |
| image_2d | 2D NIfTI | error: expected a 3D (X, Y, slices) volume |
| image_4d | 4D NIfTI | error: expected a 3D (X, Y, slices) volume |
| zero_spacing | pixdim[1] = 0 (nibabel would say 1 mm) | error: invalid voxel spacing |
| nan_spacing | pixdim[3] = NaN | error: invalid voxel spacing |
| missing_clinical | no ``Case <id>.txt`` | error: missing clinical file |
| fevg_not_a_number | ``FEVG : n/a`` | error: field 'FEVG' is not a number |
| sex_invalid | ``Sex : X`` | error: field 'Sex' must be M or F |
| killip_out_of_range | ``Killip Max: 7`` | error: field 'Killip Max' must be 1-4 |
| clinical_binary_garbage | 1 KiB of arbitrary bytes | error: missing clinical field(s) |
| clinical_empty | 0-byte clinical file | error: missing clinical field(s) |
| id_not_n_or_p | ``Case_X120`` | error: case id must start with N ... or P ... |
| clinical_utf16 | clinical file saved as UTF-16 with BOM | ok: parsed (same values) |
| uncompressed_nifti | ``Case_<id>.nii`` instead of ``.nii.gz`` | ok |
| float_mask_integer_values | mask stored as float32 0.0..4.0 | ok |
| negative_spacing | pixdim[1] < 0 (image and mask) | warn: negative voxel spacing ...; its absolute value is used |
| gap_mismatch | "Gap between slices" 25 mm, header ~10 mm | warn: ... differs ... (the header is used) |
| orphan_clinical | ``Case <id>.txt`` without a case folder | ignored: clinical file without a case folder |

Folder-level inputs (data folder empty, only clinical files, a file instead of a folder,
absent) are errors for the whole run; a folder whose cases sit one level down (an
unzipped archive's top folder) is read.
"""

from __future__ import annotations

import gzip
import logging
import shutil
import struct
import subprocess
import sys
import os
from pathlib import Path
from typing import Callable

import nibabel as nib
import numpy as np
import pytest

from attri_ssc.cli import main
from attri_ssc.data.clinical import read_clinical
from attri_ssc.data.config import DataConfig
from attri_ssc.data.datasets import build_datasets
from attri_ssc.errors import DataError

VALID_IDS = {"N001", "P001", "P002", "P003"}


# --------------------------------------------------------------------------- breaking files


def _nii(root: Path, cid: str, kind: str) -> Path:
    return root / f"Case_{cid}" / kind / f"Case_{cid}.nii.gz"


def _clinical(root: Path, cid: str) -> Path:
    return root / f"Case {cid}.txt"


def _voxels(path: Path) -> np.ndarray:
    return np.asarray(nib.load(path).dataobj)


def _rewrite(path: Path, array: np.ndarray) -> None:
    """Save ``array`` to ``path`` with the old header's geometry and ``array``'s dtype."""
    old = nib.load(path)
    img = nib.Nifti1Image(array, old.affine, old.header.copy())
    img.header.set_data_dtype(array.dtype)
    nib.save(img, path)


def _patch_pixdim(path: Path, index: int, value: float) -> None:
    """Write ``pixdim[index]`` straight into the header bytes (nibabel would 'fix' it on save)."""
    raw = bytearray(gzip.decompress(path.read_bytes()))
    struct.pack_into("<f", raw, 76 + 4 * index, value)  # NIfTI-1: pixdim[8] at byte 76
    path.write_bytes(gzip.compress(bytes(raw)))


def _edit_clinical(root: Path, cid: str, prefix: str, line: str) -> None:
    path = _clinical(root, cid)
    text = path.read_bytes().decode("cp1252")
    path.write_bytes("".join(line if l.startswith(prefix) else l for l in text.splitlines(True)).encode("cp1252"))


def missing_images_folder(root, cid):
    shutil.rmtree(root / f"Case_{cid}" / "Images")


def empty_images_folder(root, cid):
    _nii(root, cid, "Images").unlink()


def ambiguous_images(root, cid):
    path = _nii(root, cid, "Images")
    shutil.copy(path, path.with_name("scan_a.nii.gz"))
    path.rename(path.with_name("scan_b.nii.gz"))


def zero_byte_mask(root, cid):
    _nii(root, cid, "Contours").write_bytes(b"")


def truncated_mask(root, cid):
    path = _nii(root, cid, "Contours")
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


def corrupt_gzip_image(root, cid):
    path = _nii(root, cid, "Images")
    raw = bytearray(path.read_bytes())
    mid = len(raw) // 2
    raw[mid:mid + 16] = bytes(16)
    path.write_bytes(bytes(raw))


def float_labels(root, cid):
    path = _nii(root, cid, "Contours")
    mask = _voxels(path).astype(np.float32)
    mask[mask == 2] = 1.5
    _rewrite(path, mask)


def nan_in_mask(root, cid):
    path = _nii(root, cid, "Contours")
    mask = _voxels(path).astype(np.float32)
    mask[0, 0, 0] = np.nan
    _rewrite(path, mask)


def empty_mask(root, cid):
    path = _nii(root, cid, "Contours")
    _rewrite(path, np.zeros_like(_voxels(path)))


def image_all_nan(root, cid):
    path = _nii(root, cid, "Images")
    _rewrite(path, np.full(_voxels(path).shape, np.nan, dtype=np.float32))


def image_with_inf(root, cid):
    path = _nii(root, cid, "Images")
    image = _voxels(path).astype(np.float32)
    image[3, 3, 1] = np.inf
    _rewrite(path, image)


def image_2d(root, cid):
    path = _nii(root, cid, "Images")
    nib.save(nib.Nifti1Image(np.ascontiguousarray(_voxels(path)[:, :, 0]), np.eye(4)), path)


def image_4d(root, cid):
    path = _nii(root, cid, "Images")
    nib.save(nib.Nifti1Image(np.stack([_voxels(path)] * 2, axis=-1), nib.load(path).affine), path)


def zero_spacing(root, cid):
    _patch_pixdim(_nii(root, cid, "Images"), 1, 0.0)


def nan_spacing(root, cid):
    _patch_pixdim(_nii(root, cid, "Images"), 3, float("nan"))


def negative_spacing(root, cid):
    # Image and mask alike, so that only the sign is wrong (not the grids' agreement).
    _patch_pixdim(_nii(root, cid, "Images"), 1, -1.5)
    _patch_pixdim(_nii(root, cid, "Contours"), 1, -1.5)


def missing_clinical(root, cid):
    _clinical(root, cid).unlink()


def fevg_not_a_number(root, cid):
    _edit_clinical(root, cid, "FEVG", "FEVG : n/a\r\n")


def sex_invalid(root, cid):
    _edit_clinical(root, cid, "Sex", "Sex : X\r\n")


def killip_out_of_range(root, cid):
    _edit_clinical(root, cid, "Killip", "Killip Max: 7\r\n")


def clinical_binary_garbage(root, cid):
    _clinical(root, cid).write_bytes(bytes(np.random.default_rng(0).integers(0, 256, 1024, dtype=np.uint8)))


def clinical_empty(root, cid):
    _clinical(root, cid).write_bytes(b"")


def clinical_utf16(root, cid):
    path = _clinical(root, cid)
    path.write_bytes(path.read_bytes().decode("cp1252").encode("utf-16"))


def uncompressed_nifti(root, cid):
    path = _nii(root, cid, "Images")
    nib.save(nib.load(path), path.with_name(f"Case_{cid}.nii"))
    path.unlink()


def float_mask_integer_values(root, cid):
    path = _nii(root, cid, "Contours")
    _rewrite(path, _voxels(path).astype(np.float32))


def gap_mismatch(root, cid):
    _edit_clinical(root, cid, "Gap", "Gap between slices : 25\r\n")


def orphan_clinical(root, cid):
    shutil.rmtree(root / f"Case_{cid}")


def id_not_n_or_p(root, cid):
    pass  # the id itself (X120) is the problem


# (breaker, case id, outcome, file named in the problem relative to the root, message)
Entry = tuple[Callable[[Path, str], None], str, str, str, str]
CORPUS: dict[str, Entry] = {f.__name__: (f, cid, outcome, where, message) for f, cid, outcome, where, message in [
    (missing_images_folder, "P101", "error", "Case_{id}/Images", "missing Images folder"),
    (empty_images_folder, "P102", "error", "Case_{id}/Images", "no Case_{id}.nii.gz in Images folder"),
    (ambiguous_images, "P103", "error", "Case_{id}/Images", "no Case_{id}.nii.gz in Images folder"),
    (zero_byte_mask, "P104", "error", "Case_{id}/Contours/Case_{id}.nii.gz", "not a readable NIfTI file"),
    (truncated_mask, "P105", "error", "Case_{id}/Contours/Case_{id}.nii.gz",
     "cannot read voxel data, the file may be truncated"),
    (corrupt_gzip_image, "P106", "error", "Case_{id}/Images/Case_{id}.nii.gz", "damaged gzip data"),
    (float_labels, "P107", "error", "Case_{id}/Contours/Case_{id}.nii.gz", "mask has non-integer values"),
    (nan_in_mask, "P108", "error", "Case_{id}/Contours/Case_{id}.nii.gz", "mask has non-finite values"),
    (empty_mask, "N109", "error", "Case_{id}/Contours/Case_{id}.nii.gz",
     "mask is empty (background only: no cavity or myocardium)"),
    (image_all_nan, "P110", "error", "Case_{id}/Images/Case_{id}.nii.gz", "image has non-finite values"),
    (image_with_inf, "P111", "error", "Case_{id}/Images/Case_{id}.nii.gz", "image has non-finite values"),
    (image_2d, "P112", "error", "Case_{id}/Images/Case_{id}.nii.gz", "expected a 3D (X, Y, slices) volume"),
    (image_4d, "P113", "error", "Case_{id}/Images/Case_{id}.nii.gz", "expected a 3D (X, Y, slices) volume"),
    (zero_spacing, "P114", "error", "Case_{id}/Images/Case_{id}.nii.gz", "invalid voxel spacing (0.0,"),
    (nan_spacing, "P115", "error", "Case_{id}/Images/Case_{id}.nii.gz", "invalid voxel spacing"),
    (missing_clinical, "N116", "error", "Case {id}.txt", "missing clinical file"),
    (fevg_not_a_number, "P117", "error", "Case {id}.txt", "field 'FEVG' is not a number: 'n/a'"),
    (sex_invalid, "P118", "error", "Case {id}.txt", "field 'Sex' must be M or F, got 'X'"),
    (killip_out_of_range, "P119", "error", "Case {id}.txt", "field 'Killip Max' must be 1-4, got 7"),
    (id_not_n_or_p, "X120", "error", "Case_{id}", "case id must start with N (normal) or P (pathological)"),
    (clinical_binary_garbage, "P121", "error", "Case {id}.txt", "missing clinical field(s): Gap between slices"),
    (clinical_empty, "P122", "error", "Case {id}.txt", "missing clinical field(s): Gap between slices"),
    (clinical_utf16, "P130", "ok", "", ""),
    (uncompressed_nifti, "P131", "ok", "", ""),
    (float_mask_integer_values, "P132", "ok", "", ""),
    (negative_spacing, "P133", "warn", "Case_{id}/Images/Case_{id}.nii.gz",
     "negative voxel spacing (-1.5,"),
    (gap_mismatch, "P134", "warn", "Case {id}.txt",
     "'Gap between slices' 25 mm differs from the header's slice spacing"),
    (orphan_clinical, "P135", "ignored", "Case {id}.txt", "clinical file without a case folder"),
]}
ERRORS = {name for name, entry in CORPUS.items() if entry[2] == "error"}
USABLE = {name for name, entry in CORPUS.items() if entry[2] in ("ok", "warn")}


def test_the_corpus_is_large_enough():
    assert len(ERRORS) >= 15 and len(CORPUS) >= 25
    assert len({entry[1] for entry in CORPUS.values()}) == len(CORPUS)  # distinct ids


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def valid(tmp_path_factory) -> Path:
    """Four valid phantom cases (N001, P001, P002, P003); read-only."""
    from attri_ssc.data.phantoms import generate_phantoms

    root = tmp_path_factory.mktemp("valid")
    generate_phantoms(root, n_cases=4, seed=11)
    assert {p.name for p in root.iterdir() if p.is_dir() and p.name.startswith("Case_")} == {
        f"Case_{c}" for c in VALID_IDS}
    return root


@pytest.fixture(scope="module")
def cfg(tmp_path_factory) -> DataConfig:
    # 16x16 slices; the cache makes the four valid cases cost nothing after the first read.
    return DataConfig(spacing_mm=8.0, field_of_view_mm=128.0, split_fractions=(0.5, 0.25, 0.25),
                      cache_dir=str(tmp_path_factory.mktemp("cache")))


def _add_broken_clone(valid: Path, root: Path, name: str) -> str:
    """Copy valid case P001 into ``root`` as the entry's id, then break it; returns the id."""
    breaker, cid, *_ = CORPUS[name]
    shutil.copytree(valid / "Case_P001", root / f"Case_{cid}")
    for kind in ("Images", "Contours"):
        folder = root / f"Case_{cid}" / kind
        (folder / "Case_P001.nii.gz").rename(folder / f"Case_{cid}.nii.gz")
    shutil.copy(valid / "Case P001.txt", root / f"Case {cid}.txt")
    breaker(root, cid)
    return cid


def _valid_copy(valid: Path, root: Path) -> Path:
    shutil.copytree(valid, root, ignore=shutil.ignore_patterns("phantom_*"))
    return root


@pytest.fixture(scope="module")
def corpus(valid, tmp_path_factory) -> Path:
    """The valid cases plus every corpus entry, in one folder."""
    root = _valid_copy(valid, tmp_path_factory.mktemp("corpus") / "data")
    for name in CORPUS:
        _add_broken_clone(valid, root, name)
    return root


def _where(root: Path, name: str) -> str:
    _, cid, _, where, _ = CORPUS[name]
    return str(root / where.format(id=cid))


# --------------------------------------------------------------------------- check-data


def test_check_data_lists_every_problem_and_exits_3(corpus):
    proc = subprocess.run([sys.executable, "-m", "attri_ssc", "check-data", str(corpus)],
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 3, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stdout.splitlines()
    for name, (_, cid, outcome, where, message) in CORPUS.items():
        mine = [line for line in lines if f"case {cid}:" in line]
        if outcome == "ok":
            assert not mine, (name, mine)
            continue
        severity = "error" if outcome == "error" else "warning"
        expected = f"{severity}: case {cid}: {_where(corpus, name)}: "
        assert len(mine) == 1 and mine[0].startswith(expected), (name, expected, mine)
        assert message.format(id=cid) in mine[0], (name, mine[0])
    n_warnings = len(CORPUS) - len(ERRORS) - len({n for n in CORPUS if CORPUS[n][2] == "ok"})
    assert lines[-1] == (f"{len(VALID_IDS) + len(USABLE)} usable case(s); {len(ERRORS)} error(s) in "
                         f"{len(ERRORS)} case(s); {n_warnings} warning(s)"), lines[-1]
    bad_ids = proc.stderr.strip().split("unusable: ")[-1].split(", ")
    assert proc.stderr.startswith("attri-ssc check-data: error: ")
    assert sorted(bad_ids) == sorted(CORPUS[name][1] for name in ERRORS)


def test_skip_bad_cases_keeps_exactly_the_usable_cases(corpus, cfg, caplog):
    skip = DataConfig(**{**cfg.to_dict(), "skip_bad_cases": True})
    with caplog.at_level(logging.WARNING):
        bundle = build_datasets(corpus, skip)
    assert set(bundle.cases) == VALID_IDS | {CORPUS[name][1] for name in USABLE}
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for name in ERRORS:
        assert f"case {CORPUS[name][1]}" in logged, name
    for ds in (bundle.train, bundle.val, bundle.test):
        assert torch_all_finite(ds.images) and torch_all_finite(ds.raw_attributes)


def torch_all_finite(t) -> bool:
    return bool(np.isfinite(t.numpy()).all())


# --------------------------------------------------------------------------- build_datasets, one entry at a time


@pytest.mark.parametrize("name", sorted(ERRORS))
def test_build_datasets_names_the_file_and_problem_or_skips(valid, cfg, tmp_path, caplog, name):
    root = _valid_copy(valid, tmp_path / "data")
    cid = _add_broken_clone(valid, root, name)
    message = CORPUS[name][4].format(id=cid)
    with pytest.raises(DataError) as err:
        build_datasets(root, cfg)
    text = str(err.value)
    assert _where(root, name) in text and message in text and f"case {cid}" in text, text
    skip = DataConfig(**{**cfg.to_dict(), "skip_bad_cases": True})
    with caplog.at_level(logging.WARNING):
        bundle = build_datasets(root, skip)
    assert set(bundle.cases) == VALID_IDS
    skips = [r.getMessage() for r in caplog.records if "skip" in r.getMessage()]
    assert any(cid in m and message in m for m in skips), skips


@pytest.mark.parametrize("name", sorted(USABLE | {"orphan_clinical"}))
def test_build_datasets_reads_the_accepted_quirks(valid, cfg, tmp_path, caplog, name):
    root = _valid_copy(valid, tmp_path / "data")
    cid = _add_broken_clone(valid, root, name)
    with caplog.at_level(logging.WARNING):
        bundle = build_datasets(root, cfg)
    outcome = CORPUS[name][2]
    expected = VALID_IDS | ({cid} if outcome in ("ok", "warn") else set())
    assert set(bundle.cases) == expected
    if outcome in ("warn", "ignored"):
        assert any(cid in r.getMessage() and CORPUS[name][4] in r.getMessage() for r in caplog.records)
    if outcome == "ok":
        # The clone of P001 reads exactly as P001 does: same clinical record, geometry, voxels.
        clone, original = bundle.cases[cid], bundle.cases["P001"]
        assert clone.shape == original.shape
        np.testing.assert_allclose(clone.spacing[1:], original.spacing[1:])
        np.testing.assert_array_equal(clone.load_mask(), original.load_mask())
        np.testing.assert_array_equal(clone.load_image(), original.load_image())
        same = {k: v for k, v in original.clinical.to_dict().items() if k not in ("source", "encoding")}
        assert {k: v for k, v in clone.clinical.to_dict().items() if k not in ("source", "encoding")} == same


def test_utf16_clinical_file_is_decoded(valid, tmp_path):
    root = _valid_copy(valid, tmp_path / "data")
    clinical_utf16(root, "P001")
    record = read_clinical(_clinical(root, "P001"))
    assert record.encoding == "utf-16" and record.fevg == read_clinical(_clinical(valid, "P001")).fevg


def test_negative_spacing_means_its_absolute_value(valid, cfg, tmp_path):
    root = _valid_copy(valid, tmp_path / "data")
    cid = _add_broken_clone(valid, root, "negative_spacing")
    case = build_datasets(root, cfg).cases[cid]
    assert case.spacing[0] == pytest.approx(1.5)


# --------------------------------------------------------------------------- the data folder itself


def _folder_cases(tmp_path: Path, valid: Path) -> dict[str, tuple[Path, str]]:
    empty = tmp_path / "empty"
    empty.mkdir()
    only_text = tmp_path / "only-text"
    only_text.mkdir()
    shutil.copy(valid / "Case P001.txt", only_text / "Case P001.txt")
    a_file = tmp_path / "a-file.nii.gz"
    a_file.write_bytes(b"\x00")
    return {
        "empty folder": (empty, "no cases found"),
        "only clinical files": (only_text, "no cases found"),
        "a file, not a folder": (a_file, "not a folder"),
        "absent": (tmp_path / "absent", "does not exist"),
    }


def test_unusable_data_folder_is_exit_3_and_a_data_error(valid, cfg, tmp_path, capsys):
    for label, (path, message) in _folder_cases(tmp_path, valid).items():
        capsys.readouterr()
        assert main(["check-data", str(path)]) == 3, label
        err = capsys.readouterr().err
        assert err.startswith("attri-ssc check-data: error: ") and str(path) in err, (label, err)
        with pytest.raises(DataError, match=message):
            build_datasets(path, cfg)


def test_cases_one_level_down_are_found(valid, cfg, tmp_path, capsys):
    root = tmp_path / "archive"
    _valid_copy(valid, root / "emidec-dataset")
    assert main(["check-data", str(root)]) == 0
    assert f"{len(VALID_IDS)} usable case(s); 0 error(s)" in capsys.readouterr().out
    assert set(build_datasets(root, cfg).cases) == VALID_IDS
