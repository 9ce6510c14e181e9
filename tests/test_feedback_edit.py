"""The ``feedback`` edit rule: per-image steps that the model, re-encoding the edit, reads as asked."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from attri_ssc.interpret.editing import (AttributeUnits, FeedbackSettings, alpha_grid, bounds_from_codes, edit_codes,
                                          edit_direction, edit_sweep, edit_targets, feedback_hold, feedback_steps,
                                          select_atoms, smooth_images)
from attri_ssc.models.attri_ssc_vae import AttriSSCVAE
from attri_ssc.models.config import preset

NAMES = ["lv_area", "myo_area", "wall_thickness", "infarct_area"]


def test_feedback_holds_every_other_attribute_but_the_annulus_partners_the_geometry_frees():
    assert feedback_hold(NAMES, 0) == (1, 3)  # cavity: myocardium and infarct, not wall thickness
    assert feedback_hold(NAMES, 1) == (0, 3)  # myocardium: cavity and infarct
    assert feedback_hold(NAMES, 2) == (0, 3)  # wall thickness: cavity and infarct
    assert feedback_hold(NAMES, 3) == (0, 1, 2)  # infarct: the whole annulus
    vol = ["lv_volume", "myo_volume", "infarct_volume", "lv_area"]
    assert feedback_hold(vol, 0) == (1, 2)  # its own area form is not held against it


@pytest.fixture(scope="module")
def model_and_codes():
    torch.manual_seed(0)
    model = AttriSSCVAE(preset("tiny", spatial_dims=2), len(NAMES)).double().eval()
    with torch.no_grad():
        model.mapper.weight.copy_(torch.randn_like(model.mapper.weight))
    images = torch.rand(3, 1, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        codes = model.backbone(images).codes
    return model, codes


def _reread(model, codes, blur_px: float = 0.0):
    """decode → (scipy's Gaussian smoothing) → encode → mapper, independently of the search's code."""
    with torch.no_grad():
        images = model.backbone.decode_codes(codes).clamp(0, 1)
        if blur_px:
            smoothed = [ndimage.gaussian_filter(im[0].numpy(), blur_px, mode="nearest") for im in images]
            images = torch.from_numpy(np.stack(smoothed)[:, None])
        return model.mapper(model.backbone(images).codes)


def test_feedback_steps_touch_only_the_edited_atoms_and_read_as_the_goal(model_and_codes):
    model, codes = model_and_codes
    sel = select_atoms(model.mapper.effective_weight(), 0, 3)
    sd = torch.full((len(NAMES),), 0.5, dtype=torch.float64)
    # every location free: the random tiny model's active locations cannot raise every image's reading
    settings = FeedbackSettings(goal_sd=0.5, iterations=150, lr=0.05, code_weight=0.0, active_only=False)
    steps = feedback_steps(model, codes, sel, (), AttributeUnits(sd), settings)
    others = [j for j in range(codes.shape[1]) if j not in sel.atoms]
    for step in (steps.up, steps.down):
        assert step.shape == codes.shape
        assert torch.all(step[:, others] == 0) and torch.any(step[:, list(sel.atoms)] != 0)
    assert all(p.grad is None for p in model.parameters())  # the search trains nothing
    blur = settings.blur_px
    base = _reread(model, codes, blur)
    up, down = _reread(model, codes + steps.up, blur), _reread(model, codes + steps.down, blur)
    # the recorded re-read is what an independent decode → smooth → encode → mapper pass gives
    assert torch.allclose(steps.reread[:, 0], (up[:, 0] - base[:, 0]) / sd[0], atol=1e-9)
    assert torch.allclose(steps.reread[:, 1], (down[:, 0] - base[:, 0]) / sd[0], atol=1e-9)
    # every reading moves the asked way, on average most of the way to ±goal_sd
    assert torch.all(steps.reread[:, 0] > 0) and torch.all(steps.reread[:, 1] < 0)
    assert steps.reread[:, 0].mean() > 0.3 and steps.reread[:, 1].mean() < -0.3


def test_held_attributes_move_less_when_the_feedback_search_holds_them(model_and_codes):
    model, codes = model_and_codes
    sel = select_atoms(model.mapper.effective_weight(), 0, 3)
    sd = torch.full((len(NAMES),), 0.5, dtype=torch.float64)
    settings = FeedbackSettings(goal_sd=0.5, iterations=150, lr=0.05, code_weight=0.0)
    hold = feedback_hold(NAMES, 0)
    base = _reread(model, codes, settings.blur_px)

    def held_change(h):
        steps = feedback_steps(model, codes, sel, h, AttributeUnits(sd), settings)
        moved = [(_reread(model, codes + s, settings.blur_px)[:, list(hold)] - base[:, list(hold)]).abs().mean()
                 for s in
                 (steps.up, steps.down)]
        return sum(moved)

    assert held_change(hold) < 0.5 * held_change(())


def test_feedback_edit_is_z_plus_abs_alpha_times_the_signed_step(model_and_codes):
    model, codes = model_and_codes
    sel = select_atoms(model.mapper.effective_weight(), 1, 2)
    sd = torch.ones(len(NAMES), dtype=torch.float64)
    steps = feedback_steps(model, codes, sel, feedback_hold(NAMES, 1), AttributeUnits(sd),
                           FeedbackSettings(iterations=5))
    bounds = bounds_from_codes(codes)
    assert torch.equal(edit_codes(codes, sel, bounds, 0.0, "feedback", feedback=steps), codes)
    assert torch.allclose(edit_codes(codes, sel, bounds, 1.0, "feedback", feedback=steps), codes + steps.up)
    assert torch.allclose(edit_codes(codes, sel, bounds, -0.5, "feedback", feedback=steps), codes + 0.5 * steps.down)
    # A.5's form with the per-image target B = Z + Δ
    target, moving = edit_targets(codes, sel, bounds, -1.0, "feedback", feedback=steps)
    assert torch.allclose((target - codes) * moving, steps.down)
    assert torch.allclose(edit_direction(codes, sel, bounds, -0.25, "feedback", feedback=steps), -steps.down)
    with pytest.raises(ValueError, match="feedback_steps"):
        edit_codes(codes, sel, bounds, 1.0, "feedback")
    with pytest.raises(ValueError, match="feedback steps are"):
        edit_codes(codes[:2], sel, bounds, 1.0, "feedback", feedback=steps)


def test_feedback_sweep_decodes_the_steps_and_has_saliency(model_and_codes):
    model, codes = model_and_codes
    sel = select_atoms(model.mapper.effective_weight(), 0, 2)
    sd = torch.ones(len(NAMES), dtype=torch.float64)
    image = model.backbone.decode_codes(codes[:1]).detach().clamp(0, 1)
    sweep = edit_sweep(model, image, sel, bounds_from_codes(codes), alpha_grid(3), "feedback",
                       feedback=(feedback_hold(NAMES, 0), AttributeUnits(sd), FeedbackSettings(iterations=5)))
    with torch.no_grad():
        recon = model.backbone.decode_codes(model.backbone(image).codes)
    assert torch.allclose(sweep.images[1:2], recon)
    assert sweep.saliency is not None and torch.isfinite(sweep.saliency).all() and (sweep.saliency >= 0).all()
    with pytest.raises(ValueError, match="needs"):
        edit_sweep(model, image, sel, bounds_from_codes(codes), alpha_grid(3), "feedback")


def test_the_goal_is_capped_at_a_fraction_of_the_current_physical_value(model_and_codes):
    model, codes = model_and_codes
    sel = select_atoms(model.mapper.effective_weight(), 0, 3)
    sd = torch.full((len(NAMES),), 0.5, dtype=torch.float64)
    base = _reread(model, codes, FeedbackSettings().blur_px)
    # put the physical zero just below the first image's reading: its goal shrinks to 10 % of that gap
    zero = torch.zeros(len(NAMES), dtype=torch.float64)
    zero[0] = base[0, 0] - 0.5
    settings = FeedbackSettings(goal_sd=1.0, max_relative=0.1, iterations=150, lr=0.05, code_weight=0.0)
    capped = feedback_steps(model, codes[:1], sel, (), AttributeUnits(sd, zero), settings)
    assert capped.reread[0, 0] == pytest.approx(0.1, abs=0.03)  # 0.1 · 0.5 / sd, not goal_sd = 1
    free = feedback_steps(model, codes[:1], sel, (), AttributeUnits(sd), settings)
    assert free.reread[0, 0] > 0.5


def test_steps_move_an_atom_only_where_it_is_active_unless_told_otherwise(model_and_codes):
    model, codes = model_and_codes
    sel = select_atoms(model.mapper.effective_weight(), 0, 3)
    atoms = list(sel.atoms)
    sparse = codes.clone()
    sparse[:, atoms, ::2] = 0.0  # half of each edited atom's locations inactive
    assert torch.any(sparse[:, atoms] != 0)
    sd = torch.full((len(NAMES),), 0.5, dtype=torch.float64)
    settings = FeedbackSettings(goal_sd=0.5, iterations=20, code_weight=0.0)
    steps = feedback_steps(model, sparse, sel, (), AttributeUnits(sd), settings)
    inactive = sparse[:, atoms] == 0
    for step in (steps.up, steps.down):
        assert torch.all(step[:, atoms][inactive] == 0) and torch.any(step[:, atoms][~inactive] != 0)
    anywhere = feedback_steps(model, sparse, sel, (), AttributeUnits(sd),
                              FeedbackSettings(goal_sd=0.5, iterations=20, code_weight=0.0, active_only=False))
    assert torch.any(anywhere.up[:, atoms][inactive] != 0)


def test_a_smoothed_search_records_the_reading_of_the_smoothed_edit(model_and_codes):
    model, codes = model_and_codes
    sel = select_atoms(model.mapper.effective_weight(), 0, 3)
    sd = torch.full((len(NAMES),), 0.5, dtype=torch.float64)
    steps = feedback_steps(model, codes, sel, (), AttributeUnits(sd), FeedbackSettings(iterations=10, blur_px=1.0))
    base, up = _reread(model, codes, 1.0), _reread(model, codes + steps.up, 1.0)
    assert torch.allclose(steps.reread[:, 0], (up[:, 0] - base[:, 0]) / sd[0], atol=1e-9)
    assert not torch.allclose(steps.reread[:, 0], (_reread(model, codes + steps.up)[:, 0] - _reread(model, codes)[:, 0])
                              / sd[0], atol=1e-6)


@pytest.mark.parametrize("shape", [(2, 1, 17, 13), (1, 2, 6, 9, 8)])
@pytest.mark.parametrize("sigma", [0.7, 1.0, 2.3])
def test_smoothing_is_scipys_gaussian_filter(shape, sigma):
    x = torch.rand(*shape, dtype=torch.float64)
    ours = smooth_images(x, sigma).numpy()
    ref = np.stack([[ndimage.gaussian_filter(c.numpy(), sigma, mode="nearest") for c in item] for item in x])
    assert np.allclose(ours, ref, atol=1e-12)
    assert smooth_images(x, 0.0) is x


def test_feedback_settings_and_units_are_validated():
    for bad in ({"goal_sd": 0.0}, {"iterations": 0}, {"lr": -1.0}, {"code_weight": -0.1}, {"image_weight": -1.0},
                {"max_relative": 0.0}, {"blur_px": -0.5}):
        with pytest.raises(ValueError):
            FeedbackSettings(**bad)
    with pytest.raises(ValueError, match="positive spreads"):
        AttributeUnits(torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="shape of sd"):
        AttributeUnits(torch.ones(2), torch.zeros(3))


def test_attribute_units_calibrate_the_mappers_reading_against_the_training_truth():
    from types import SimpleNamespace

    from attri_ssc.interpret.edit_references import attribute_units

    g = torch.Generator().manual_seed(3)
    raw = torch.rand(50, 3, generator=g, dtype=torch.float64) * 10
    codes = torch.zeros(50, 3, 1, 1)

    class Reader(torch.nn.Module):
        """A model whose mapper reads â = 2·raw + 1 (attribute 0), a noisy 0.5·raw (1), and −raw (2)."""

        def __init__(self):
            super().__init__()
            self.dummy = torch.nn.Parameter(torch.zeros(()))
            self.mapper = lambda z: torch.stack([2 * raw[:, 0] + 1, 0.5 * raw[:, 1] + 0.01 * torch.sin(raw[:, 2]),
                                                 -raw[:, 2]], dim=1)

    run = SimpleNamespace(model=Reader())
    bundle = SimpleNamespace(train=SimpleNamespace(raw_attributes=raw, images=None))
    units = attribute_units(run, bundle, codes=codes)
    sd = raw.std(0, unbiased=False)
    assert units.sd[0] == pytest.approx(2 * float(sd[0]), rel=1e-5)  # one training spread of raw, in â units
    assert units.zero[0] == pytest.approx(1.0, abs=1e-5)  # â reads 1 where the attribute is 0
    # the calibrated reading of â is the attribute itself for an exact linear reader
    reading = torch.stack([2 * raw[:, 0] + 1, 0.5 * raw[:, 1], -raw[:, 2]], dim=1)
    assert torch.allclose(units.physical(reading)[:, 0], raw[:, 0], atol=1e-4)
    assert torch.isnan(units.physical(reading)[:, 2]).all()
    assert units.sd[1] == pytest.approx(0.5 * float(sd[1]), rel=1e-2)
    # a reading that falls as the attribute grows is not calibrated: â's own spread, no physical zero
    assert units.sd[2] == pytest.approx(float(sd[2]), rel=1e-5) and torch.isnan(units.zero[2])
