"""Attribute-preserving augmentation: numpy oracles for the transforms, invariance of the
attributes measured on phantom masks, determinism, and the trainer's use of it."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from attri_ssc.config import TrainConfig
from attri_ssc.data.attributes import measure_mask
from attri_ssc.data.emidec import read_dataset
from attri_ssc.errors import ConfigError
from attri_ssc.training.augment import apply_transform, augment_batch, check_augmentation, draw_transforms

ALL_FLAGS = list(itertools.product([False, True], repeat=3))


def _numpy_transform(x: np.ndarray, flip_rows: bool, flip_cols: bool, transpose: bool) -> np.ndarray:
    if flip_rows:
        x = x[..., ::-1, :]
    if flip_cols:
        x = x[..., :, ::-1]
    if transpose:
        x = np.swapaxes(x, -1, -2)
    return x


@pytest.mark.parametrize("shape", [(1, 6, 6), (2, 3, 5, 5)])
@pytest.mark.parametrize("flags", ALL_FLAGS)
def test_each_transform_equals_numpy_on_2d_and_3d_samples(shape, flags):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    got = apply_transform(x, *flags)
    assert got.is_contiguous()
    np.testing.assert_array_equal(got.numpy(), _numpy_transform(x.numpy(), *flags))


def test_transpose_of_non_square_slices_is_refused():
    with pytest.raises(ValueError, match="square"):
        apply_transform(torch.zeros(1, 4, 6), False, False, True)
    with pytest.raises(ValueError, match="train.augment=flip"):
        check_augmentation("dihedral", (4, 6))
    check_augmentation("flip", (4, 6))
    with pytest.raises(ValueError, match="train.augment must be one of"):
        check_augmentation("rotate", (4, 4))


def test_draws_are_deterministic_and_cover_the_right_group():
    a = draw_transforms(4, "dihedral", seed=0, global_step=7, rank=0)
    assert np.array_equal(a, draw_transforms(4, "dihedral", seed=0, global_step=7, rank=0))
    steps = np.concatenate([draw_transforms(4, "dihedral", 0, g, 0) for g in range(2000)])
    assert not np.array_equal(steps[:4], steps[4:8])
    # All eight symmetries of the square, each about 1/8 of the time.
    codes = steps @ np.array([4, 2, 1])
    freq = np.bincount(codes, minlength=8) / len(codes)
    assert np.all(np.abs(freq - 1 / 8) < 0.03), freq
    flips = np.concatenate([draw_transforms(4, "flip", 0, g, 0) for g in range(500)])
    assert not flips[:, 2].any() and 0.4 < flips[:, :2].mean() < 0.6
    assert not draw_transforms(4, "none", 0, 3, 0).any()
    # Ranks draw independently.
    other = np.concatenate([draw_transforms(4, "dihedral", 0, g, 1) for g in range(50)])
    assert not np.array_equal(steps[:200], other)


def test_batch_images_move_together_and_labels_stay():
    gen = torch.Generator().manual_seed(1)
    batch = {"image": torch.randn(4, 1, 8, 8, generator=gen), "attributes": torch.rand(4, 3, generator=gen),
             "case_id": ["a", "b", "c", "d"]}
    batch["clean"] = batch["image"] * 2
    out = augment_batch(batch, "dihedral", seed=5, global_step=11)
    flags = draw_transforms(4, "dihedral", 5, 11)
    for i in range(4):
        expect = _numpy_transform(batch["image"][i].numpy(), *flags[i])
        np.testing.assert_array_equal(out["image"][i].numpy(), expect)
        np.testing.assert_array_equal(out["clean"][i].numpy(), 2 * expect)
    assert out["attributes"] is batch["attributes"] and out["case_id"] == batch["case_id"]
    assert augment_batch(batch, "none", 5, 11) is batch


def test_supervised_attributes_of_phantom_masks_are_invariant(phantom_dir):
    """The registry's attributes (volumes, scar, wall thickness by distance transforms) of
    every ground-truth phantom mask are unchanged by all eight in-plane symmetries."""
    cases = read_dataset(phantom_dir)
    for case in cases[:3]:
        mask = case.load_mask()  # (X, Y, Z): in-plane axes first
        spacing = (1.5, 1.5, 8.0)  # isotropic in-plane, as after preprocessing
        _, reference = measure_mask(mask, spacing)
        assert reference[:, 0].sum() > 0
        moved = np.moveaxis(mask, -1, 0)  # (Z, X, Y): in-plane axes last
        for flags in ALL_FLAGS:
            transformed = np.moveaxis(_numpy_transform(moved, *flags), 0, -1)
            _, per_slice = measure_mask(np.ascontiguousarray(transformed), spacing)
            np.testing.assert_allclose(per_slice, reference, rtol=1e-12, atol=1e-12, err_msg=str(flags))


def test_config_rejects_an_unknown_augmentation():
    with pytest.raises(ConfigError, match="train.augment"):
        TrainConfig(augment="rotate").validate()
