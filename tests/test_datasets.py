"""Datasets, preprocessing, cache, splits, scaler and DataConfig."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from attri_ssc.data.attributes import IMAGE_ATTRIBUTES, measure_mask
from attri_ssc.data.config import DataConfig
from attri_ssc.data.datasets import AttributeScaler, build_datasets
from attri_ssc.data.emidec import EmidecCase, read_dataset
from attri_ssc.data.phantoms import load_ground_truth
from attri_ssc.data.preprocess import PreprocessParams, preprocess_stack
from attri_ssc.data.splits import split_counts, stratified_split
from attri_ssc.errors import ConfigError, DataError

ALL = {"train", "val", "test"}


@pytest.fixture(scope="module")
def bundle2d(phantom_dir, tmp_path_factory):
    cfg = DataConfig(attributes=("lv_volume", "myo_volume", "wall_thickness", "infarct_volume", "fevg"),
                     cache_dir=str(tmp_path_factory.mktemp("cache")), split_fractions=(0.5, 0.25, 0.25))
    return build_datasets(phantom_dir, cfg)


def test_items_follow_the_contract(bundle2d):
    b = bundle2d
    assert b.attribute_names == ("lv_volume", "myo_volume", "wall_thickness", "infarct_volume", "fevg")
    assert b.image_shape == (1, 64, 64)
    for ds in (b.train, b.val, b.test):
        assert len(ds) > 0
        item = ds[0]
        assert set(item) == {"image", "clean", "attributes", "raw_attributes", "label", "case_id", "slice_index"}
        assert item["image"].dtype == torch.float32 and item["image"].shape == (1, 64, 64)
        assert item["clean"].shape == (1, 64, 64) and item["clean"].dtype == torch.float32
        assert item["attributes"].shape == (5,) and item["raw_attributes"].dtype == torch.float32
        assert item["label"].dtype == torch.int64 and int(item["label"]) == int(item["case_id"][0] == "P")
        assert isinstance(item["slice_index"], int) and item["slice_index"] >= 0
        assert float(ds.images.min()) >= 0.0 and float(ds.images.max()) <= 1.0


def test_2d_attributes_are_per_slice_and_clinical_per_case(bundle2d, phantom_dir):
    truth = load_ground_truth(phantom_dir)
    cases = {c.case_id: c for c in read_dataset(phantom_dir)}
    ds = bundle2d.train
    by_case: dict[str, float] = {}
    for i in range(len(ds)):
        item = ds[i]
        cid, k = item["case_id"], item["slice_index"]
        case_attrs, per_slice = measure_mask(cases[cid].load_mask(), cases[cid].spacing)
        expected = [per_slice[k, IMAGE_ATTRIBUTES.index(n)] for n in ("lv_volume", "myo_volume", "wall_thickness", "infarct_volume")]
        np.testing.assert_allclose(item["raw_attributes"][:4].numpy(), expected, rtol=1e-5)
        assert float(item["raw_attributes"][4]) == truth[cid].attributes["fevg"]
        by_case[cid] = by_case.get(cid, 0.0) + float(item["raw_attributes"][0])
    for cid, total in by_case.items():  # every phantom slice has myocardium
        assert total == pytest.approx(truth[cid].attributes["lv_volume"], rel=0.02)


def test_split_is_by_patient_and_scaler_fitted_on_train_only(bundle2d):
    b = bundle2d
    ids = {name: set(v) for name, v in b.split.items()}
    assert not (ids["train"] & ids["val"]) and not (ids["train"] & ids["test"]) and not (ids["val"] & ids["test"])
    assert set(b.train.case_ids) == ids["train"] and set(b.test.case_ids) == ids["test"]
    raw = b.train.raw_attributes.double().numpy()
    np.testing.assert_allclose(b.scaler.minimum, raw.min(0), rtol=1e-6)
    np.testing.assert_allclose(b.scaler.maximum, raw.max(0), rtol=1e-6)
    scaled = b.train.attributes.numpy()
    varying = raw.max(0) > raw.min(0)
    np.testing.assert_allclose(scaled.min(0)[varying], 0.0, atol=1e-6)
    np.testing.assert_allclose(scaled.max(0)[varying], 1.0, atol=1e-6)
    expect_val = (b.val.raw_attributes.double().numpy() - b.scaler.minimum) / np.where(varying, raw.max(0) - raw.min(0), 1)
    np.testing.assert_allclose(b.val.attributes.numpy(), expect_val, rtol=1e-5, atol=1e-6)


def test_preprocessing_keeps_physical_scale_and_centres_the_cavity(phantom_dir):
    case = read_dataset(phantom_dir)[0]
    mask = case.load_mask()
    out = preprocess_stack(case.load_image(), mask, case.spacing, PreprocessParams(2.0, 64, (1.0, 99.0), True))
    area_px = case.spacing[0] * case.spacing[1]
    for k in range(mask.shape[2]):
        cav_src = (mask[:, :, k] == 1).sum() * area_px
        cav_out = (out["mask"][k] == 1).sum() * 4.0
        assert cav_out == pytest.approx(cav_src, rel=0.06)
        centroid = np.argwhere(out["mask"][k] == 1).mean(axis=0)
        np.testing.assert_allclose(centroid, [31.5, 31.5], atol=1.0)
    # The mapping sends the 1st/99th percentiles to 0/1.
    img = out["image"]
    assert np.percentile(img, 1) == pytest.approx(0.0, abs=0.02) and np.percentile(img, 99) == pytest.approx(1.0, abs=0.02)


def test_3d_items(phantom_dir):
    cfg = DataConfig(spatial_dims=3, n_slices=12, field_of_view_mm=96.0, spacing_mm=3.0)
    b = build_datasets(phantom_dir, cfg, seed=1)
    item = b.train[0]
    assert item["image"].shape == (1, 12, 32, 32) and item["slice_index"] == -1
    truth = load_ground_truth(phantom_dir)[item["case_id"]]
    assert float(item["raw_attributes"][0]) == pytest.approx(truth.attributes["lv_volume"], rel=0.02)
    n = truth.shape[2]
    before = (12 - n) // 2
    assert float(item["image"][0, :before].abs().max()) == 0.0  # zero padding, centred
    assert float(item["image"][0, before].max()) > 0.5
    assert len(b.train) + len(b.val) + len(b.test) == 6


def test_cache_avoids_reading_nifti(phantom_dir, tmp_path, monkeypatch):
    cfg = DataConfig(cache_dir=str(tmp_path / "cache"), field_of_view_mm=96.0, spacing_mm=3.0)
    first = build_datasets(phantom_dir, cfg)
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 6

    def boom(*_args, **_kwargs):
        raise AssertionError("NIfTI voxels read despite the cache")

    # The voxel reader of a cache miss (prepare_case checks and preprocesses what it reads).
    monkeypatch.setattr("attri_ssc.data.datasets.load_nifti", boom)
    second = build_datasets(phantom_dir, cfg)
    assert torch.equal(first.train.images, second.train.images)
    assert torch.equal(first.train.raw_attributes, second.train.raw_attributes)
    # Other parameters → other keys → a recompute (which now fails loudly).
    with pytest.raises(AssertionError, match="despite the cache"):
        build_datasets(phantom_dir, DataConfig(cache_dir=str(tmp_path / "cache"), field_of_view_mm=99.0, spacing_mm=3.0))


def test_stratified_split_properties():
    labels = {f"N{i:03d}": "N" for i in range(33)} | {f"P{i:03d}": "P" for i in range(67)}
    s1 = stratified_split(labels, (0.7, 0.15, 0.15), seed=3)
    s2 = stratified_split(dict(reversed(list(labels.items()))), (0.7, 0.15, 0.15), seed=3)
    assert s1 == s2  # stable for a seed, independent of input order
    assert stratified_split(labels, (0.7, 0.15, 0.15), seed=4) != s1
    ids = [c for part in s1.values() for c in part]
    assert sorted(ids) == sorted(labels) and len(ids) == len(set(ids))  # each patient once
    assert (len(s1["train"]), len(s1["val"]), len(s1["test"])) == (70, 15, 15)
    for part in ("val", "test"):
        n_norm = sum(c.startswith("N") for c in s1[part])
        assert n_norm in (4, 5, 6)  # 15 × 33% = 5
    assert split_counts(4, (0.7, 0.15, 0.15)) == (2, 1, 1)
    assert split_counts(2, (0.7, 0.15, 0.15)) == (2, 0, 0)


def test_scaler_round_trip():
    values = np.array([[1.0, 10.0, 5.0], [3.0, 30.0, 5.0], [2.0, 20.0, 5.0]])
    sc = AttributeScaler(("a", "b", "c")).fit(values)
    scaled = sc.transform(values)
    np.testing.assert_allclose(scaled[:, 0], [0.0, 1.0, 0.5])
    np.testing.assert_allclose(scaled[:, 2], 0.0)  # constant attribute
    back = AttributeScaler.from_dict(json.loads(json.dumps(sc.to_dict())))
    np.testing.assert_allclose(back.inverse_transform(back.transform(values)), values)
    t = torch.tensor(values, dtype=torch.float32)
    torch.testing.assert_close(sc.transform(t), torch.tensor(scaled, dtype=torch.float32))
    with pytest.raises(RuntimeError):
        AttributeScaler(("a",)).transform(values[:, :1])


def test_data_config_validation_and_round_trip():
    cfg = DataConfig(attributes=("lv_volume", "fevg"), spatial_dims=3)
    assert DataConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert DataConfig().image_size == 64
    with pytest.raises(ConfigError, match="unknown attribute 'lv_vol'"):
        DataConfig(attributes=("lv_vol",)).validate()
    with pytest.raises(ConfigError, match="categorical"):
        DataConfig(attributes=("tobacco",)).validate()
    with pytest.raises(ConfigError, match="spatial_dims"):
        DataConfig(spatial_dims=4).validate()
    with pytest.raises(ConfigError, match="split_fractions"):
        DataConfig(split_fractions=(0.5, 0.2, 0.2)).validate()
    with pytest.raises(ConfigError, match="intensity_percentiles"):
        DataConfig(intensity_percentiles=(99.0, 1.0)).validate()
    with pytest.raises(ConfigError, match="unknown data config key"):
        DataConfig.from_dict({"spacing": 2.0})


def test_a_saved_split_is_reused_exactly_and_checked(bundle2d, phantom_dir):
    """A run's split.json rebuilds the same bundle whatever the seed; a split that does not name
    exactly the folder's usable cases is refused, naming the cases."""
    cfg = bundle2d.config
    other_seed = build_datasets(phantom_dir, cfg, seed=5)
    assert other_seed.split != bundle2d.split  # 6 cases: another seed draws another split
    again = build_datasets(phantom_dir, cfg, seed=5, split=bundle2d.split)
    assert again.split == bundle2d.split
    assert again.test.case_ids == bundle2d.test.case_ids
    np.testing.assert_array_equal(again.train.raw_attributes.numpy(), bundle2d.train.raw_attributes.numpy())
    broken = {k: list(v) for k, v in bundle2d.split.items()}
    moved = broken["test"].pop()
    with pytest.raises(DataError, match=moved):
        build_datasets(phantom_dir, cfg, split=broken)
    with pytest.raises(DataError, match="NOPE"):
        build_datasets(phantom_dir, cfg, split={**bundle2d.split, "val": [*bundle2d.split["val"], "NOPE"]})
