"""Bad inputs give one clear DataError naming the file and the problem (or, with
skip_bad_cases, a logged skip), and check-data lists every problem with exit code 3."""

from __future__ import annotations

import logging
import shutil

import nibabel as nib
import numpy as np
import pytest

from attri_ssc.cli import main
from attri_ssc.data.config import DataConfig
from attri_ssc.data.datasets import build_datasets
from attri_ssc.data.emidec import read_dataset
from attri_ssc.errors import DataError

CFG = DataConfig(field_of_view_mm=96.0, spacing_mm=3.0, split_fractions=(0.6, 0.2, 0.2))


@pytest.fixture
def data(phantom_dir, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(phantom_dir, root)
    return root


def _nifti(root, cid, kind="Contours"):
    return root / f"Case_{cid}" / kind / f"Case_{cid}.nii.gz"


def _rewrite(path, array):
    old = nib.load(path)
    nib.save(nib.Nifti1Image(array, old.affine, old.header), path)


def _expect_error(root, *needles):
    with pytest.raises(DataError) as err:
        build_datasets(root, CFG)
    msg = str(err.value)
    for needle in needles:
        assert needle in msg, (needle, msg)
    return msg


def _expect_skip(root, cid, caplog):
    cfg = DataConfig(**{**CFG.to_dict(), "skip_bad_cases": True})
    with caplog.at_level(logging.WARNING):
        b = build_datasets(root, cfg)
    assert cid not in b.cases and len(b.cases) == 5
    assert any(cid in rec.getMessage() and "skip" in rec.getMessage() for rec in caplog.records)


def test_missing_contours_folder(data, caplog):
    shutil.rmtree(data / "Case_P002" / "Contours")
    _expect_error(data, "P002", "Contours", "missing Contours folder")
    _expect_skip(data, "P002", caplog)


def test_truncated_nifti(data, caplog):
    path = _nifti(data, "N001", "Images")
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    _expect_error(data, "N001", str(path), "truncated")
    _expect_skip(data, "N001", caplog)


def test_image_mask_shape_mismatch(data, caplog):
    path = _nifti(data, "P001")
    mask = np.asarray(nib.load(path).dataobj)
    _rewrite(path, np.ascontiguousarray(mask[:-3]))
    _expect_error(data, "P001", str(path), "differs from image shape")
    _expect_skip(data, "P001", caplog)


def test_unknown_mask_labels(data, caplog):
    path = _nifti(data, "P003")
    mask = np.asarray(nib.load(path).dataobj).copy()
    mask[0, 0, 0] = 7
    _rewrite(path, mask)
    _expect_error(data, "P003", str(path), "unknown label(s) [7]")
    _expect_skip(data, "P003", caplog)


def test_missing_clinical_field(data, caplog):
    path = data / "Case P004.txt"
    text = path.read_bytes().decode("cp1252")
    path.write_bytes("".join(l for l in text.splitlines(True) if not l.startswith("FEVG")).encode("cp1252"))
    _expect_error(data, "P004", "Case P004.txt", "missing clinical field(s): FEVG")
    _expect_skip(data, "P004", caplog)


def test_non_numeric_clinical_field(data):
    path = data / "Case N002.txt"
    text = path.read_bytes().decode("cp1252")
    lines = [("Age : unknown\r\n" if l.startswith("Age") else l) for l in text.splitlines(True)]
    path.write_bytes("".join(lines).encode("cp1252"))
    _expect_error(data, "N002", "Case N002.txt", "'Age' is not a number")


def test_empty_data_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no cases found"):
        read_dataset(tmp_path / "empty")
    with pytest.raises(DataError, match="does not exist"):
        read_dataset(tmp_path / "absent")


def test_duplicate_case_id(data):
    shutil.copy(data / "Case P001.txt", data / "Case_P001.txt")
    _expect_error(data, "duplicate case id P001", "Case P001.txt", "Case_P001.txt")
    shutil.copytree(data / "Case_N001", data / "Case_n001")
    msg = _expect_error(data, "duplicate case id N001", "Case_n001")
    assert "P001" in msg  # both problems reported, not only the first


def test_check_data_lists_every_problem_and_exits_3(data, capsys):
    shutil.rmtree(data / "Case_P002" / "Contours")
    mask_path = _nifti(data, "P003")
    mask = np.asarray(nib.load(mask_path).dataobj).copy()
    mask[1, 1, 0] = 9
    _rewrite(mask_path, mask)
    assert main(["check-data", str(data)]) == 3
    out = capsys.readouterr()
    assert "case P002" in out.out and "missing Contours folder" in out.out
    assert "case P003" in out.out and "unknown label(s) [9]" in out.out and str(mask_path) in out.out
    assert "4 usable case(s)" in out.out
    assert "Traceback" not in out.err and "P002" in out.err and "P003" in out.err


def test_cli_generate_check_and_show(tmp_path, capsys):
    assert main(["generate-phantoms", str(tmp_path / "ph"), "--n-cases", "2", "--seed", "1"]) == 0
    assert main(["phantoms", "--out", str(tmp_path / "ph2"), "--cases", "1"]) == 0
    assert main(["check-data", str(tmp_path / "ph")]) == 0
    assert main(["show-case", str(tmp_path / "ph"), "Case_P001", "--out", str(tmp_path / "c.png")]) == 0
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["show-case", str(tmp_path / "ph"), "X999", "--out", str(tmp_path / "d.png")]) == 3
    assert "no case 'X999'" in capsys.readouterr().err
