"""Model-free judge: recovers phantom ground truth from unedited preprocessed slices and volumes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from scipy.stats import spearmanr

from attri_ssc.data.config import DataConfig
from attri_ssc.data.datasets import build_datasets
from attri_ssc.data.phantoms import load_ground_truth
from attri_ssc.interpret.judge import measure_batch, measure_slice, measure_volume


def _ring_image(r_in_px: float, wall_px: float, size: int = 64, blood: float = 0.8, myo: float = 0.05,
                tissue: float = 0.4) -> np.ndarray:
    c = (size - 1) / 2
    yy, xx = np.mgrid[0:size, 0:size]
    # 4× supersampled partial-volume ring, then a slight blur (as after resampling).
    sub = np.linspace(-0.375, 0.375, 4)
    img = np.zeros((size, size))
    for dy in sub:
        for dx in sub:
            r = np.hypot(yy + dy - c, xx + dx - c)
            img += np.where(r < r_in_px, blood, np.where(r < r_in_px + wall_px, myo, tissue))
    return ndimage.gaussian_filter(img / 16, 0.5)


def test_exact_ring_oracle():
    spacing, r_in, wall = 2.0, 10.0, 4.0
    m = measure_slice(_ring_image(r_in, wall)[None], spacing, slice_thickness_mm=10.0)
    assert m.valid
    assert m.cavity_area_mm2 == pytest.approx(np.pi * (r_in * spacing) ** 2, rel=0.03)
    assert m.myo_area_mm2 == pytest.approx(np.pi * ((r_in + wall) ** 2 - r_in**2) * spacing**2, rel=0.05)
    assert m.wall_thickness == pytest.approx(wall * spacing, abs=0.3)
    assert m.lv_volume == pytest.approx(m.cavity_area_mm2 * 10.0 / 1000.0)
    assert m.lv_area == pytest.approx(np.pi * (r_in * spacing) ** 2 / 100.0, rel=0.03)  # cm²
    assert m.myo_area == pytest.approx(np.pi * ((r_in + wall) ** 2 - r_in**2) * spacing**2 / 100.0, rel=0.05)


def test_monotone_in_radius_and_thickness():
    cav = [measure_slice(_ring_image(r, 4.0), 2.0).cavity_area_mm2 for r in (6, 8, 10, 12, 14)]
    thick = [measure_slice(_ring_image(10.0, w), 2.0).wall_thickness for w in (2.5, 3.5, 4.5, 5.5)]
    assert np.all(np.diff(cav) > 0) and np.all(np.diff(thick) > 0)


def test_invalid_without_a_blood_pool():
    assert not measure_slice(np.full((1, 32, 32), 0.3), 2.0).valid
    with pytest.raises(ValueError, match="spacing_mm"):
        measure_slice(np.zeros((32, 32)), 0.0)
    with pytest.raises(ValueError, match="shape"):
        measure_slice(np.zeros((2, 32, 32)), 2.0)


def test_recovers_phantom_ground_truth(phantom_dir):
    """Every myocardial slice of the 6 session phantoms (44 slices, 64×64 at 2 mm,
    noise 0.04). Bars: Spearman ρ ≥ 0.9 for each quantity; mean |relative error| of
    cavity and myocardial volume ≤ 8%; mean |thickness error| ≤ 0.6 mm. Measured when
    written: ρ 0.999 / 0.975 / 0.924, mean |error| 0.32 mL / 0.45 mL / 0.27 mm (on 737
    slices of 100 phantoms: ρ 0.999 / 0.986 / 0.934, 0.31 mL / 0.51 mL / 0.32 mm)."""
    truth = load_ground_truth(phantom_dir)
    b = build_datasets(phantom_dir, DataConfig(split_fractions=(1.0, 0.0, 0.0)))
    ds = b.train
    dz = torch.tensor([b.cases[c].spacing[2] for c in ds.case_ids])
    got = measure_batch(ds.images, 2.0, dz)
    assert got["valid"].all()
    assert len(ds) >= 30
    for name, rel_bar, abs_bar in (("lv_volume", 0.08, None), ("myo_volume", 0.08, None), ("lv_area", 0.08, None),
                                   ("myo_area", 0.08, None), ("wall_thickness", None, 0.6)):
        true = np.array([truth[c].slices[k][name] for c, k in zip(ds.case_ids, ds.slice_indices)])
        rho = spearmanr(got[name], true)[0]
        assert rho >= 0.9, (name, rho)
        if rel_bar is not None:
            assert np.mean(np.abs(got[name] / true - 1)) <= rel_bar, name
        else:
            assert np.mean(np.abs(got[name] - true)) <= abs_bar, name


# --- volumes (3D runs) ---------------------------------------------------------------------------


def test_volume_of_exact_rings_is_the_sum_of_its_slices():
    """A stack of rings (radii growing base to apex reversed, walls varying) between zero
    padding: the judged volumes are Σ π r² · dz, the thickness the area-weighted mean."""
    spacing, dz = 2.0, 8.0
    radii, walls = (6.0, 9.0, 11.0, 12.0, 10.0), (3.0, 3.5, 4.0, 4.5, 5.0)
    blank = np.zeros((64, 64))
    volume = np.stack([blank, blank] + [_ring_image(r, w) for r, w in zip(radii, walls)] + [blank])[None]
    m = measure_volume(volume, spacing, slice_thickness_mm=dz)
    cav = [np.pi * (r * spacing) ** 2 for r in radii]  # mm²
    myo = [np.pi * ((r + w) ** 2 - r**2) * spacing**2 for r, w in zip(radii, walls)]
    assert m.valid
    assert m.lv_volume == pytest.approx(sum(cav) * dz / 1000.0, rel=0.03)  # mL
    assert m.myo_volume == pytest.approx(sum(myo) * dz / 1000.0, rel=0.05)
    assert m.lv_area == pytest.approx(sum(cav) / 100.0, rel=0.03)  # cm²
    expected_thickness = sum(w * spacing * a for w, a in zip(walls, myo)) / sum(myo)
    assert m.wall_thickness == pytest.approx(expected_thickness, abs=0.3)
    # the batch form dispatches on the shape: (B, 1, D, H, W)
    batch = measure_batch(torch.from_numpy(np.stack([volume, volume[:, ::-1]])).float(), spacing, dz)
    assert batch["lv_volume"][0] == pytest.approx(m.lv_volume, rel=1e-5)
    assert batch["lv_volume"][1] == pytest.approx(m.lv_volume, rel=1e-5)  # slice order does not matter


def test_volume_without_a_heart_is_invalid():
    assert not measure_volume(np.zeros((1, 4, 32, 32)), 2.0, 8.0).valid
    with pytest.raises(ValueError, match="volume must be"):
        measure_volume(np.zeros((32, 32)), 2.0)
    with pytest.raises(ValueError, match="B, 1, D, H, W"):
        measure_batch(np.zeros((2, 2, 32, 32)), 2.0)


def test_recovers_phantom_ground_truth_from_volumes(phantom_dir):
    """The 6 session phantoms as 3D items (16 slices × 64×64 at 2 mm): whole-volume cavity and
    myocardial volumes (mL) and the myocardium-weighted wall thickness (mm), against the
    dataset's ground truth from the masks. Bars: mean |relative error| ≤ 6 % for the volumes
    and areas, mean |error| ≤ 0.6 mm for the thickness. Measured when written: 2.1 % / 4.2 %
    (cavity / myocardium volume and area), 0.26 mm."""
    names = ("lv_volume", "myo_volume", "wall_thickness", "lv_area", "myo_area")
    b = build_datasets(phantom_dir, DataConfig(spatial_dims=3, split_fractions=(1.0, 0.0, 0.0), attributes=names))
    ds = b.train
    assert tuple(ds.images.shape[1:]) == (1, 16, 64, 64)
    dz = np.array([b.cases[c].spacing[2] for c in ds.case_ids])
    got = measure_batch(ds.images, 2.0, dz)
    assert got["valid"].all()
    truth = ds.raw_attributes.double().numpy()
    for m, name in enumerate(names):
        if name == "wall_thickness":
            assert np.mean(np.abs(got[name] - truth[:, m])) <= 0.6
        else:
            assert np.mean(np.abs(got[name] / truth[:, m] - 1)) <= 0.06, name
