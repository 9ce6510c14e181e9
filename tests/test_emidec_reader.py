"""EMIDEC reader: discovery, id matching, header spacing, attributes vs phantom truth."""

from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np
import pytest

from attri_ssc.data.attributes import IMAGE_ATTRIBUTES, measure_mask, slice_wall_thickness
from attri_ssc.data.emidec import read_dataset, scan_dataset
from attri_ssc.data.phantoms import load_ground_truth

COL = {name: i for i, name in enumerate(IMAGE_ATTRIBUTES)}


def test_reads_every_case_with_header_geometry(phantom_dir):
    truth = load_ground_truth(phantom_dir)
    cases = read_dataset(phantom_dir)
    assert [c.case_id for c in cases] == sorted(truth)
    for c in cases:
        t = truth[c.case_id]
        assert c.label == t.label and c.pathological == (t.label == "P")
        assert c.shape == t.shape
        np.testing.assert_allclose(c.spacing, t.spacing, rtol=1e-6)
        assert c.clean_path is not None and c.clean_path.parent.name == "phantom_clean"
        assert c.clinical.fevg == t.attributes["fevg"] and c.clinical.age == t.attributes["age"]
        assert c.clinical.gap_between_slices == pytest.approx(t.spacing[2])


def test_recovers_ground_truth_volumes_and_thickness(phantom_dir):
    """Case volumes within 2% (infarct/no-reflow: 2% or 0.3 mL, they are thin sectors);
    mean wall thickness within 0.5 mm, per case and per slice."""
    truth = load_ground_truth(phantom_dir)
    for c in read_dataset(phantom_dir):
        t = truth[c.case_id]
        case, per_slice = measure_mask(c.load_mask(), c.spacing)
        for name in ("lv_volume", "myo_volume"):
            assert case[COL[name]] == pytest.approx(t.attributes[name], rel=0.02), (c.case_id, name)
        for name in ("infarct_volume", "no_reflow_volume"):
            assert abs(case[COL[name]] - t.attributes[name]) <= max(0.02 * t.attributes[name], 0.3), (c.case_id, name)
        assert case[COL["scar_presence"]] == t.attributes["scar_presence"]
        assert abs(case[COL["wall_thickness"]] - t.attributes["wall_thickness"]) < 0.5
        truth_thick = np.array([s["wall_thickness"] for s in t.slices])
        assert np.abs(per_slice[:, COL["wall_thickness"]] - truth_thick).max() < 0.5
        # Per-slice volumes add up to the case volume.
        assert per_slice[:, COL["lv_volume"]].sum() == pytest.approx(case[COL["lv_volume"]])
        # In-plane areas (cm²) against the analytic areas of the drawn rings, per slice and in sum.
        for name in ("lv_area", "myo_area"):
            truth_area = np.array([sl[name] for sl in t.slices])
            np.testing.assert_allclose(per_slice[:, COL[name]], truth_area, rtol=0.05, err_msg=f"{c.case_id} {name}")
            assert case[COL[name]] == pytest.approx(t.attributes[name], rel=0.02), (c.case_id, name)
        assert abs(case[COL["infarct_area"]] - t.attributes["infarct_area"]) <= max(0.02 * t.attributes["infarct_area"], 0.03)


def test_volume_uses_header_spacing(tmp_path):
    """Oracle: voxel count × voxel volume from the header, anisotropic in-plane."""
    mask = np.zeros((20, 30, 3), dtype=np.uint8)
    mask[5:10, 5:15, 0] = 1  # 50 voxels
    mask[5:10, 5:15, 1] = 1
    mask[2:4, 2:6, 1] = 3  # 8 voxels
    path = tmp_path / "m.nii.gz"
    img = nib.Nifti1Image(mask, np.diag([1.5, 1.7, 8.0, 1.0]))
    nib.save(img, path)
    loaded = nib.load(path)
    case, per_slice = measure_mask(np.asarray(loaded.dataobj), loaded.header.get_zooms())
    voxel_ml = 1.5 * 1.7 * 8.0 / 1000
    assert case[COL["lv_volume"]] == pytest.approx(100 * voxel_ml)
    assert case[COL["infarct_volume"]] == pytest.approx(8 * voxel_ml)
    assert case[COL["myo_volume"]] == pytest.approx(8 * voxel_ml)
    # Areas: pixel count × in-plane pixel area (cm²), the slice thickness left out.
    pixel_cm2 = 1.5 * 1.7 / 100
    assert case[COL["lv_area"]] == pytest.approx(100 * pixel_cm2)
    assert case[COL["infarct_area"]] == pytest.approx(8 * pixel_cm2)
    np.testing.assert_allclose(per_slice[:, COL["lv_area"]], [50 * pixel_cm2, 50 * pixel_cm2, 0.0])
    np.testing.assert_allclose(per_slice[:, COL["lv_area"]] * 8.0 / 10.0, per_slice[:, COL["lv_volume"]])
    assert per_slice[2].tolist() == [0.0] * len(IMAGE_ATTRIBUTES)


def test_wall_thickness_of_digitised_rings():
    """Distance-transform thickness against the analytic thickness of circular rings."""
    for spacing, r_in, t in ((1.46, 22.0, 8.0), (1.8, 12.0, 5.0), (1.37, 30.0, 11.0)):
        n = 128
        x = (np.arange(n) - 63.7) * spacing
        rad = np.hypot(x[:, None], x[None, :])
        mask = np.zeros((n, n, 1), dtype=np.uint8)
        mask[rad < r_in + t, 0] = 2
        mask[rad < r_in, 0] = 1
        assert slice_wall_thickness(mask, (spacing, spacing))[0] == pytest.approx(t, abs=0.25)


def test_matches_clinical_files_by_id_not_order(phantom_dir, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(phantom_dir, root)
    (root / "Case N001.txt").unlink()  # pairing by sort order would now shift every file
    (root / "notes.txt").write_text("stray file")
    truth = load_ground_truth(phantom_dir)
    cases, problems = scan_dataset(root)
    assert [p.case_id for p in problems] == ["N001"] and "missing clinical file" in problems[0].message
    assert "Case N001.txt" in problems[0].path
    assert len(cases) == 5
    for c in cases:
        assert c.clinical.fevg == truth[c.case_id].attributes["fevg"]
        assert c.clinical_path.name == f"Case {c.case_id}.txt"


def test_finds_cases_one_folder_down(phantom_dir, tmp_path):
    root = tmp_path / "archive"
    shutil.copytree(phantom_dir, root / "emidec-dataset-1.0.1")
    assert len(read_dataset(root)) == 6


def test_check_arrays_passes_on_clean_data(phantom_dir):
    cases, problems = scan_dataset(phantom_dir, check_arrays=True)
    assert len(cases) == 6 and problems == []
