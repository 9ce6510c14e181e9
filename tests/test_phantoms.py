"""Phantom generator: EMIDEC layout and quirks, ground truth, intensities, correlations."""

from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import pytest

from attri_ssc.data import phantoms
from attri_ssc.data.emidec import CLEAN_DIRNAME, GROUND_TRUTH_CSV, GROUND_TRUTH_JSON
from attri_ssc.data.phantoms import INTENSITIES, STORE_SCALE, generate_phantoms, load_ground_truth


def test_layout_and_geometry(phantom_dir):
    truth = load_ground_truth(phantom_dir)
    assert sorted(truth) == ["N001", "N002", "P001", "P002", "P003", "P004"]  # one third normal
    names = sorted(p.name for p in phantom_dir.iterdir())
    assert "Readme.txt" in names and GROUND_TRUTH_JSON in names and GROUND_TRUTH_CSV in names
    for cid, t in truth.items():
        folder = phantom_dir / f"Case_{cid}"
        assert (phantom_dir / f"Case {cid}.txt").is_file()  # with a space
        img = nib.load(folder / "Images" / f"Case_{cid}.nii.gz")
        msk = nib.load(folder / "Contours" / f"Case_{cid}.nii.gz")
        assert (phantom_dir / CLEAN_DIRNAME / f"Case_{cid}.nii.gz").is_file()
        assert sorted(p.name for p in folder.iterdir()) == ["Contours", "Images"]  # layout stays exact
        assert img.shape == msk.shape == t.shape
        sx, sy, sz = img.header.get_zooms()
        assert 1.37 <= sx <= 1.88 and sx == sy and 8.0 <= sz <= 13.0
        assert 5 <= img.shape[2] <= 10 and all(200 <= s <= 260 for s in img.shape[:2])
        labels = np.asarray(msk.dataobj)
        assert set(np.unique(labels)) <= {0, 1, 2, 3, 4}
        if t.label == "N":
            assert labels.max() == 2 and t.attributes["infarct_volume"] == 0
        else:
            assert (labels == 3).any() and t.attributes["infarct_volume"] > 0


def test_clinical_text_quirks(phantom_dir):
    raws = [(phantom_dir / f"Case {cid}.txt").read_bytes() for cid in load_ground_truth(phantom_dir)]
    for raw in raws:
        assert b"Killip Max:" in raw and b"\xa0:" in raw  # cp1252 NBSP before a colon
        with pytest.raises(UnicodeDecodeError):
            raw.decode("utf-8")


def test_ground_truth_files_agree_with_return_value(tmp_path):
    truths = generate_phantoms(tmp_path, 2, seed=5)
    data = json.loads((tmp_path / GROUND_TRUTH_JSON).read_text())
    assert [c["case_id"] for c in data["cases"]] == [t.case_id for t in truths]
    rows = list(csv.DictReader((tmp_path / GROUND_TRUTH_CSV).open()))
    assert [r["case_id"] for r in rows] == [t.case_id for t in truths]
    for row, t in zip(rows, truths):
        assert float(row["lv_volume"]) == pytest.approx(t.attributes["lv_volume"], rel=1e-5)
        # Per-slice volumes sum to the case volume; thickness is the myocardium-weighted mean.
        slices = t.slices
        assert sum(s["lv_volume"] for s in slices) == pytest.approx(t.attributes["lv_volume"])
        w = np.array([s["myo_volume"] for s in slices])
        th = np.array([s["wall_thickness"] for s in slices])
        assert (w * th).sum() / w.sum() == pytest.approx(t.attributes["wall_thickness"])
        # Analytic cavity volume of slice k is pi r_k^2 dz.
        dz = t.spacing[2]
        for s in slices:
            assert s["lv_volume"] == pytest.approx(np.pi * s["cavity_radius_mm"] ** 2 * dz / 1000)


def test_seed_determinism_and_prefix_stability(tmp_path, phantom_dir):
    a = generate_phantoms(tmp_path / "a", 2, seed=123)
    full = load_ground_truth(phantom_dir)  # 6 cases, same seed
    for t in a:
        other = full[t.case_id]
        assert (t.attributes, t.slices, t.factors) == (other.attributes, other.slices, other.factors)
    m1 = np.asarray(nib.load(tmp_path / "a" / "Case_P001" / "Contours" / "Case_P001.nii.gz").dataobj)
    m2 = np.asarray(nib.load(phantom_dir / "Case_P001" / "Contours" / "Case_P001.nii.gz").dataobj)
    np.testing.assert_array_equal(m1, m2)
    b = generate_phantoms(tmp_path / "b", 2, seed=124)
    assert b[0].attributes["lv_volume"] != a[0].attributes["lv_volume"]


def test_noise_free_unbiased_image_equals_clean(tmp_path):
    generate_phantoms(tmp_path, 1, seed=3, noise_std=0.0, bias_strength=0.0)
    name = "Case_P001"  # the first case is pathological (N cases are spread evenly)
    img = np.asarray(nib.load(tmp_path / name / "Images" / f"{name}.nii.gz").dataobj).astype(np.float64)
    clean = np.asarray(nib.load(tmp_path / CLEAN_DIRNAME / f"{name}.nii.gz").dataobj).astype(np.float64)
    assert np.abs(img - clean).max() <= 0.5 + 1e-3  # only int16 rounding


def test_intensities_look_like_de_mri(phantom_dir):
    truth = load_ground_truth(phantom_dir)
    for cid, t in truth.items():
        name = f"Case_{cid}"
        clean = np.asarray(nib.load(phantom_dir / CLEAN_DIRNAME / f"{name}.nii.gz").dataobj)
        noisy = np.asarray(nib.load(phantom_dir / name / "Images" / f"{name}.nii.gz").dataobj).astype(np.float32)
        mask = np.asarray(nib.load(phantom_dir / name / "Contours" / f"{name}.nii.gz").dataobj)
        # Interior of each region (away from blurred edges).
        from scipy import ndimage

        def inner(region):
            return ndimage.binary_erosion(region, np.ones((3, 3, 1)))

        blood = clean[inner(mask == 1)].mean()
        myo = clean[inner(mask == 2)].mean()
        body = (mask == 0) & (clean > 3 * INTENSITIES["air"] * STORE_SCALE)  # background minus air
        tissue = np.median(clean[body])
        assert blood > tissue > myo  # bright pool, nulled myocardium
        if t.label == "P":
            inf = mask == 3
            assert clean[inf].mean() > blood  # infarct brighter than blood
        # Noise: residual in the blood pool has the requested std (times bias ~ 1 ± 0.1).
        resid = (noisy - clean)[inner(mask == 1)]
        sigma = t.factors["noise_std"] * STORE_SCALE
        assert 0.7 * sigma < resid.std() < 1.3 * sigma
    assert INTENSITIES["infarct"] > INTENSITIES["lv_blood"] > INTENSITIES["tissue"] > INTENSITIES["myocardium"]


def test_population_statistics_and_correlations():
    """300 drawn cases (geometry and clinic only, no rasterising): realistic medians,
    LV vs myocardial volume r in 0.6-0.75, FEVG falling with infarct size and dilation."""
    rows = []
    for i in range(300):
        label = "N" if i % 3 == 0 else "P"
        rng = np.random.default_rng([7, i])
        draw = phantoms._draw_case(rng, label)
        _, case = phantoms._geometry(draw)
        clin = phantoms._clinical(rng, label, case, draw["factors"], draw["spacing"][2])
        rows.append((case["lv_volume"], case["myo_volume"], case["infarct_fraction"], clin["fevg"],
                     draw["factors"]["dilation"], clin["age"], label == "P"))
    a = np.array(rows, dtype=float)
    assert 90 < np.median(a[:, 0]) < 120  # EMIDEC median LV cavity 105 mL
    assert 85 < np.median(a[:, 1]) < 110  # EMIDEC median myocardium 96.5 mL
    r = np.corrcoef(a[:, 0], a[:, 1])[0, 1]
    assert 0.55 < r < 0.8, r
    assert np.corrcoef(a[:, 3], a[:, 2])[0, 1] < -0.5  # FEVG vs infarct fraction
    assert np.corrcoef(a[:, 3], a[:, 4])[0, 1] < -0.3  # FEVG vs dilation
    assert a[:, 5].min() >= 30 and a[:, 5].max() <= 85
    assert a[a[:, 6] == 0, 3].mean() > a[a[:, 6] == 1, 3].mean() + 5


@pytest.mark.parametrize(
    "kwargs, match",
    [({"n_cases": 0}, "n_cases"), ({"n_cases": 1, "noise_std": -1.0}, "noise_std"),
     ({"n_cases": 1, "normal_fraction": 1.5}, "normal_fraction")],
)
def test_generator_validates_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        generate_phantoms(tmp_path, **kwargs)
