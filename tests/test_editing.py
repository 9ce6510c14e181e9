"""Attribute editing (A.5): atom selection, robust bounds, both edit rules, saliency, bounds cache."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from attri_ssc.interpret import editing
from attri_ssc.interpret.editing import (AtomBounds, alpha_grid, bounds_from_codes, edit_codes, edit_direction,
                                          prototypes_from_codes, run_atom_bounds, select_atoms)
from attri_ssc.interpret.saliency import directional_saliency, edited_atom_saliency
from attri_ssc.models.ssc_vae import SSCVAE


def _sparse_codes(b: int = 3, k: int = 6, s: int = 4, density: float = 0.4, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(b, k, s, s, generator=g, dtype=torch.float64)
    keep = torch.rand(b, k, s, s, generator=g, dtype=torch.float64) < density
    return z * keep


def _bounds(k: int = 6) -> AtomBounds:
    return AtomBounds(
        percentile=99.0,
        lower=[-1.5 - 0.1 * j for j in range(k)],
        upper=[2.0 + 0.1 * j for j in range(k)],
        pos_magnitude=[3.0 + j for j in range(k)],
        neg_magnitude=[0.5 + j for j in range(k)],
        dominant_sign=[1.0 if j % 2 == 0 else -1.0 for j in range(k)],
        active_fraction=[0.4] * k,
    )


def _prototypes(k: int = 6, s: int = 4):
    """Prototypes of 40 random sparse code maps whose attribute 0 is the mean of atom 1."""
    z = _sparse_codes(b=40, k=k, s=s, seed=5)
    attributes = torch.stack([z[:, 1].mean(dim=(1, 2)), torch.randn(40, dtype=z.dtype)], dim=1)
    return prototypes_from_codes(z, attributes, quantile=0.8)


def test_alpha_grid_is_even_symmetric_with_zero_in_the_centre():
    grid = alpha_grid(9)
    assert torch.allclose(grid, torch.tensor([-1, -0.75, -0.5, -0.25, 0, 0.25, 0.5, 0.75, 1.0]))
    assert grid[4] == 0.0
    for bad in (8, 1, 2):
        with pytest.raises(ValueError, match="steps"):
            alpha_grid(bad)


def test_select_atoms_takes_top_k_by_absolute_weight_and_keeps_signs():
    w = torch.tensor([[0.1, -3.0, 0.0, 2.0, -0.5], [0.0, 0.0, 0.0, 0.0, 1.0]])
    sel = select_atoms(w, 0, 3)
    assert sel.atoms == (1, 3, 4) and sel.signs == (-1.0, 1.0, -1.0) and sel.weights == (-3.0, 2.0, -0.5)
    # zero entries never count, even when k asks for more
    assert select_atoms(w, 1, 3).atoms == (4,)
    with pytest.raises(ValueError, match="attribute"):
        select_atoms(w, 2, 1)


def test_bounds_match_numpy_percentiles():
    z = _sparse_codes(b=20, k=4, density=0.3) * 3.0
    z[:, 3] = 0.0  # a dead atom
    b = bounds_from_codes(z, percentile=95.0)
    flat = z.transpose(0, 1).reshape(4, -1).numpy()
    for j in range(3):
        row = flat[j]
        assert b.lower[j] == pytest.approx(np.percentile(row, 5))
        assert b.upper[j] == pytest.approx(np.percentile(row, 95))
        assert b.pos_magnitude[j] == pytest.approx(np.percentile(row[row > 0], 95))
        assert b.neg_magnitude[j] == pytest.approx(np.percentile(-row[row < 0], 95))
        assert b.dominant_sign[j] == (1.0 if row[row > 0].sum() >= -row[row < 0].sum() else -1.0)
        assert b.active_fraction[j] == pytest.approx(np.mean(row != 0))
    assert b.pos_magnitude[3] == b.neg_magnitude[3] == b.active_fraction[3] == 0.0
    assert AtomBounds.from_dict(b.to_dict()) == b
    with pytest.raises(ValueError, match="percentile"):
        bounds_from_codes(z, percentile=40.0)


@pytest.mark.parametrize("rule", ["prototype", "shift", "magnitude", "literal"])
@pytest.mark.parametrize("active_only", [False, True])
def test_alpha_zero_is_identity_and_other_atoms_are_untouched(rule, active_only):
    z = _sparse_codes()
    sel = select_atoms(torch.tensor([[0.0, 2.0, 0.0, -1.0, 0.0, 0.0]]), 0, 2)
    protos = _prototypes()
    assert torch.equal(edit_codes(z, sel, _bounds(), 0.0, rule, active_only, protos), z)
    for alpha in (-1.0, -0.3, 0.6, 1.0):
        out = edit_codes(z, sel, _bounds(), alpha, rule, active_only, protos)
        others = [j for j in range(6) if j not in sel.atoms]
        assert torch.equal(out[:, others], z[:, others])
        assert not torch.equal(out[:, list(sel.atoms)], z[:, list(sel.atoms)])


def test_magnitude_rule_endpoints_follow_the_sign_rule_on_magnitudes():
    z = _sparse_codes()
    b = _bounds()
    # atom 1: W > 0, dominant sign −1; atom 2: W < 0, dominant sign +1
    sel = select_atoms(torch.tensor([[0.0, 2.0, -1.0, 0.0, 0.0, 0.0]]), 0, 2)
    up = edit_codes(z, sel, b, 1.0, "magnitude")
    down = edit_codes(z, sel, b, -1.0, "magnitude")
    # W > 0 and α = +1: |Z| goes to the bound of its own sign; inactive go to the dominant (−) bound
    z1 = z[:, 1]
    expect_up1 = torch.where(z1 > 0, torch.tensor(b.pos_magnitude[1], dtype=z.dtype),
                             torch.tensor(-b.neg_magnitude[1], dtype=z.dtype))
    assert torch.equal(up[:, 1], expect_up1)
    assert torch.equal(down[:, 1], torch.zeros_like(z1))  # α = −1: toward 0
    # W < 0: reversed; inactive locations take the dominant (+) bound
    z2 = z[:, 2]
    expect_down2 = torch.where(z2 < 0, torch.tensor(-b.neg_magnitude[2], dtype=z.dtype),
                               torch.tensor(b.pos_magnitude[2], dtype=z.dtype))
    assert torch.equal(down[:, 2], expect_down2)
    assert torch.equal(up[:, 2], torch.zeros_like(z2))
    # the usage of a W > 0 atom rises with α, of a W < 0 atom falls (bounds above |Z| here)
    usage = [edit_codes(z, sel, b, a, "magnitude")[:, 1].abs().mean().item() for a in alpha_grid(5)]
    assert all(np.diff(usage) > 0)
    # halfway is the midpoint between Z and the target
    half = edit_codes(z, sel, b, 0.5, "magnitude")
    assert torch.allclose(half[:, 1], 0.5 * z1 + 0.5 * expect_up1)


def test_magnitude_rule_active_only_leaves_inactive_locations_at_zero():
    z = _sparse_codes()
    b = _bounds()
    sel = select_atoms(torch.tensor([[0.0, 2.0, 0.0, 0.0, 0.0, 0.0]]), 0, 1)
    up = edit_codes(z, sel, b, 1.0, "magnitude", active_only=True)
    inactive = z[:, 1] == 0
    assert torch.all(up[:, 1][inactive] == 0)
    active = ~inactive
    assert torch.equal(up[:, 1][active], torch.where(z[:, 1] > 0, 3.0 + 1, -(0.5 + 1)).to(z.dtype)[active])


def test_literal_rule_endpoints_are_the_printed_bounds():
    z = _sparse_codes()
    b = _bounds()
    sel = select_atoms(torch.tensor([[0.0, 2.0, -1.0, 0.0, 0.0, 0.0]]), 0, 2)
    up = edit_codes(z, sel, b, 1.0, "literal")
    down = edit_codes(z, sel, b, -1.0, "literal")
    assert torch.all(up[:, 1] == b.upper[1]) and torch.all(down[:, 1] == b.lower[1])  # sign(α) = sign(W) → max
    assert torch.all(up[:, 2] == b.lower[2]) and torch.all(down[:, 2] == b.upper[2])  # W < 0: reversed
    # the pitfall the default rule fixes: toward a negative Z_min the usage |Z| *rises*
    assert down[:, 1].abs().mean() > z[:, 1].abs().mean()


def test_prototypes_are_mean_code_maps_beyond_the_quantiles():
    z = _sparse_codes(b=50, seed=7)
    attributes = torch.randn(50, 2, dtype=z.dtype)
    protos = prototypes_from_codes(z, attributes, quantile=0.9)
    zn, an = z.numpy(), attributes.numpy()
    for m in range(2):
        hi = an[:, m] >= np.quantile(an[:, m], 0.9)
        lo = an[:, m] <= np.quantile(an[:, m], 0.1)
        np.testing.assert_allclose(protos.high[m].numpy(), zn[hi].mean(0), atol=1e-6)
        np.testing.assert_allclose(protos.low[m].numpy(), zn[lo].mean(0), atol=1e-6)
        assert protos.counts[m].tolist() == [int(hi.sum()), int(lo.sum())]
    with pytest.raises(ValueError, match="quantile"):
        prototypes_from_codes(z, attributes, quantile=0.4)
    with pytest.raises(ValueError, match="same N"):
        prototypes_from_codes(z, attributes[:10])


def test_prototype_rule_endpoints_are_the_prototype_maps():
    z = _sparse_codes()
    protos = _prototypes()
    # W's sign does not matter: α > 0 moves toward the high-attribute maps
    sel = select_atoms(torch.tensor([[0.0, 2.0, -1.0, 0.0, 0.0, 0.0]]), 0, 2)
    up = edit_codes(z, sel, _bounds(), 1.0, "prototype", prototypes=protos)
    down = edit_codes(z, sel, _bounds(), -1.0, "prototype", prototypes=protos)
    for j in sel.atoms:
        assert torch.allclose(up[:, j], protos.high[0, j].to(z.dtype).expand_as(z[:, j]))
        assert torch.allclose(down[:, j], protos.low[0, j].to(z.dtype).expand_as(z[:, j]))
    # attribute 0 is the mean of atom 1, so its high prototype has the larger atom-1 mean
    assert protos.high[0, 1].mean() > protos.low[0, 1].mean()
    half = edit_codes(z, sel, _bounds(), 0.5, "prototype", prototypes=protos)
    assert torch.allclose(half[:, 1], 0.5 * z[:, 1] + 0.5 * protos.high[0, 1].to(z.dtype))
    # active_only: inactive locations stay at zero
    active = edit_codes(z, sel, _bounds(), 1.0, "prototype", active_only=True, prototypes=protos)
    assert torch.all(active[:, 1][z[:, 1] == 0] == 0)
    with pytest.raises(ValueError, match="needs prototypes"):
        edit_codes(z, sel, _bounds(), 1.0, "prototype")


@pytest.mark.parametrize("rule", ["prototype", "shift", "magnitude", "literal"])
def test_edit_direction_is_the_derivative_in_alpha(rule):
    z = _sparse_codes()
    sel = select_atoms(torch.tensor([[0.0, 2.0, -1.0, 0.0, 0.0, 0.0]]), 0, 2)
    p = _prototypes()
    for a0, a1 in ((0.25, 0.75), (-0.75, -0.25)):
        fd = (edit_codes(z, sel, _bounds(), a1, rule, prototypes=p)
              - edit_codes(z, sel, _bounds(), a0, rule, prototypes=p)) / (a1 - a0)
        assert torch.allclose(edit_direction(z, sel, _bounds(), a0, rule, prototypes=p), fd, atol=1e-12)


def test_shift_rule_adds_alpha_times_half_the_prototype_difference():
    z = _sparse_codes()
    protos = _prototypes()
    sel = select_atoms(torch.tensor([[0.0, 2.0, -1.0, 0.0, 0.0, 0.0]]), 0, 2)
    for alpha in (-1.0, -0.5, 0.25, 1.0):
        out = edit_codes(z, sel, _bounds(), alpha, "shift", prototypes=protos)
        for j in range(6):
            expect = z[:, j] + alpha * (protos.high[0, j] - protos.low[0, j]).to(z.dtype) / 2 if j in sel.atoms else z[:, j]
            assert torch.allclose(out[:, j], expect, atol=1e-12), (alpha, j)
    # the step does not depend on the image, so two images keep their difference
    up = edit_codes(z, sel, _bounds(), 1.0, "shift", prototypes=protos)
    assert torch.allclose(up[0] - up[1], z[0] - z[1], atol=1e-12)
    # active_only: inactive locations stay at zero
    active = edit_codes(z, sel, _bounds(), 1.0, "shift", active_only=True, prototypes=protos)
    assert torch.all(active[:, 1][z[:, 1] == 0] == 0)
    with pytest.raises(ValueError, match="needs prototypes"):
        edit_codes(z, sel, _bounds(), 1.0, "shift")


def test_conditional_prototypes_use_the_residual_of_a_least_squares_fit():
    g = torch.Generator().manual_seed(11)
    z = _sparse_codes(b=80, seed=9)
    a1 = torch.randn(80, generator=g, dtype=z.dtype)
    a0 = 0.8 * a1 + 0.3 * torch.randn(80, generator=g, dtype=z.dtype) + 2.0  # correlated with a1
    a2 = torch.randn(80, generator=g, dtype=z.dtype)
    attributes = torch.stack([a0, a1, a2], dim=1)
    protos = prototypes_from_codes(z, attributes, quantile=0.85, condition_on={0: [1], 1: (0, 2)})
    assert protos.conditioned_on == {0: (1,), 1: (0, 2)}
    an, zn = attributes.numpy(), z.numpy()
    for m, others in ((0, [1]), (1, [0, 2]), (2, [])):
        y = an[:, m]
        if others:
            design = np.column_stack([np.ones(80), an[:, others]])
            y = y - design @ np.linalg.lstsq(design, y, rcond=None)[0]
        hi, lo = y >= np.quantile(y, 0.85), y <= np.quantile(y, 0.15)
        np.testing.assert_allclose(protos.high[m].numpy(), zn[hi].mean(0), atol=1e-6)
        np.testing.assert_allclose(protos.low[m].numpy(), zn[lo].mean(0), atol=1e-6)
        assert protos.counts[m].tolist() == [int(hi.sum()), int(lo.sum())]
    # conditioning changes the groups of a correlated attribute
    plain = prototypes_from_codes(z, attributes, quantile=0.85)
    assert not torch.allclose(plain.high[0], protos.high[0])
    assert torch.allclose(plain.high[2], protos.high[2])
    for bad in ({0: [0]}, {0: [5]}, {4: [1]}):
        with pytest.raises(ValueError, match="condition_on"):
            prototypes_from_codes(z, attributes, quantile=0.85, condition_on=bad)


def test_a_constant_attribute_keeps_its_ties_when_conditioned():
    z = _sparse_codes(b=30, seed=4)
    g = torch.Generator().manual_seed(2)
    attributes = torch.stack([torch.full((30,), 0.3, dtype=z.dtype), torch.randn(30, generator=g, dtype=z.dtype)], 1)
    cond = prototypes_from_codes(z, attributes, quantile=0.8, condition_on={0: [1]})
    assert cond.counts[0].tolist() == [30, 30]
    assert torch.equal(cond.high[0], cond.low[0])


def test_hold_fixed_indices_follow_the_attribute_names():
    names = ["wall_thickness", "lv_volume", "infarct_volume", "myo_volume"]
    assert editing.hold_fixed_indices(names) == {0: (1,), 1: (3,), 3: (1,)}
    assert editing.hold_fixed_indices(["lv_volume", "wall_thickness"]) == {1: (0,)}
    # the area forms hold each other fixed; wall thickness holds whichever cavity form is supervised
    assert editing.hold_fixed_indices(["lv_area", "myo_area", "wall_thickness"]) == {0: (1,), 1: (0,), 2: (0,)}


def test_judged_names_follow_the_supervised_form():
    from attri_ssc.interpret.verification import judged_names

    assert judged_names(["lv_area", "myo_area", "wall_thickness", "infarct_area"]) == ("lv_area", "myo_area",
                                                                                       "wall_thickness")
    assert judged_names(["lv_volume", "myo_volume", "infarct_volume"]) == ("lv_volume", "myo_volume", "wall_thickness")
    assert judged_names(["infarct_area"]) == ("lv_area", "myo_area", "wall_thickness")  # the area by default


def _linear_decoder(k: int, s: int, size: int, seed: int = 0):
    """x[b, 0, p] = Σ_{j,l} Z[b, j, l] T[j, l, p] with T zero outside each atom's footprint."""
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(k, s * s, size * size, generator=g, dtype=torch.float64)
    footprint = torch.zeros(k, size * size, dtype=torch.bool)
    for j in range(k):  # atom j reaches only the pixel rows j*2 … j*2+1
        rows = torch.zeros(size, size, dtype=torch.bool)
        rows[2 * j:2 * j + 2] = True
        footprint[j] = rows.flatten()
    t = t * footprint[:, None, :]

    def decode(z: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bjl,jlp->bp", z.flatten(2), t).reshape(z.shape[0], 1, size, size)

    return decode, t, footprint


def test_saliency_equals_the_analytic_jacobian_product_and_is_zero_off_the_footprint():
    k, s, size = 4, 2, 8
    decode, t, footprint = _linear_decoder(k, s, size)
    z = _sparse_codes(b=2, k=k, s=s, density=0.7)
    v = torch.randn_like(z)
    atoms = [1, 2]
    sal = edited_atom_saliency(decode, z, atoms, v)
    oracle = torch.einsum("bjl,jlp->bp", v[:, atoms].flatten(2), t[atoms]).abs().reshape(2, 1, size, size)
    assert torch.allclose(sal, oracle, atol=1e-12)
    assert torch.isfinite(sal).all() and (sal >= 0).all()
    off = ~(footprint[1] | footprint[2]).reshape(size, size)
    assert torch.all(sal[:, 0][:, off] == 0)
    assert sal[:, 0][:, ~off].abs().sum() > 0
    # default direction = the codes themselves (gradient × input)
    gi = edited_atom_saliency(decode, z, atoms)
    assert torch.allclose(gi, torch.einsum("bjl,jlp->bp", z[:, atoms].flatten(2), t[atoms]).abs().reshape(2, 1, size, size))


def test_saliency_of_the_real_decoder_matches_finite_differences(tiny_config):
    bb = SSCVAE(tiny_config()).double().eval()
    z = _sparse_codes(b=2, k=16, s=2, density=0.5)
    v = torch.randn_like(z)
    atoms = [3, 7]
    sal = edited_atom_saliency(bb.decode_codes, z, atoms, v)
    mask = torch.zeros_like(z)
    mask[:, atoms] = 1.0
    eps = 1e-6
    with torch.no_grad():
        fd = (bb.decode_codes(z + eps * v * mask) - bb.decode_codes(z - eps * v * mask)) / (2 * eps)
    assert sal.shape == (2, 1, 16, 16)
    assert torch.isfinite(sal).all() and (sal >= 0).all()
    assert torch.allclose(sal, fd.abs(), atol=1e-6)
    # edited atoms that do not move have no influence: the map is exactly zero
    still = directional_saliency(bb.decode_codes, z, torch.zeros_like(z))
    assert torch.all(still == 0)


def test_bounds_are_cached_in_the_run_folder_and_invalidated_by_new_weights(tmp_path, tiny_config, monkeypatch):
    model = SimpleNamespace(backbone=SSCVAE(tiny_config()).eval())
    (tmp_path / "model.safetensors").write_bytes(b"weights v1")
    run = SimpleNamespace(run_dir=tmp_path, model=model)
    images = torch.rand(5, 1, 16, 16)
    ids = ["A", "A", "B", "C", "C"]
    first = run_atom_bounds(run, images, ids, percentile=99.0)
    assert (tmp_path / editing.BOUNDS_NAME).exists()
    expect = bounds_from_codes(editing.collect_codes(model.backbone, images), 99.0)
    assert first == expect

    def boom(*a, **k):
        raise AssertionError("recomputed despite a valid cache")

    monkeypatch.setattr(editing, "collect_codes", boom)
    assert run_atom_bounds(run, images, ids, percentile=99.0) == first
    (tmp_path / "model.safetensors").write_bytes(b"weights v2")
    with pytest.raises(AssertionError, match="recomputed"):
        run_atom_bounds(run, images, ids, percentile=99.0)


def test_verification_summary_on_synthetic_judged_responses():
    from attri_ssc.interpret.verification import summarise

    alphas = np.array([-1.0, -0.5, 0.0, 0.5, 1.0])
    offsets = np.array([[10.0], [12.0], [8.0]])
    resp = {
        "lv_volume": offsets + 2.0 * alphas,          # slope 2 → 1 in σ units
        "myo_volume": offsets / 2 - 0.5 * alphas,     # slope −0.5 → 0.5
        "wall_thickness": 3.0 + 0.1 * alphas + 0 * offsets,  # slope 0.1 → 0.2
        "predicted": np.tile(alphas, (3, 1)),
    }
    resp["lv_volume"][1, 0] = np.nan  # a judge failure is skipped, not fatal
    scale = {"lv_volume": 2.0, "myo_volume": 1.0, "wall_thickness": 0.5}
    s = summarise(resp, alphas, "lv_volume", scale)
    assert s["monotonicity"] == pytest.approx(1.0) and s["monotonicity_pooled"] == pytest.approx(1.0)
    assert s["leakage_by_attribute"] == pytest.approx({"myo_volume": 0.5, "wall_thickness": 0.2})
    assert s["leakage"] == pytest.approx(0.5) and s["leakage_all"] == pytest.approx(0.5)
    assert s["target_change_per_unit_alpha_range"] == pytest.approx(4.0)
    assert s["judged_valid_fraction"] == pytest.approx(14 / 15)
    # the headline counts only the attribute that should stay put (myo for a cavity edit) …
    resp2 = dict(resp, wall_thickness=3.0 + 1.0 * alphas + 0 * offsets)  # slope 1 → 2 in σ units
    s2 = summarise(resp2, alphas, "lv_volume", scale)
    assert s2["leakage"] == pytest.approx(0.5) and s2["leakage_all"] == pytest.approx(2.0)
    # … and the cavity for a myocardium edit
    m = summarise(resp, alphas, "myo_volume", scale)
    assert m["monotonicity"] == pytest.approx(-1.0)
    assert m["leakage"] == pytest.approx(2.0) and m["leakage_all"] == pytest.approx(2.0)
    assert m["leakage_by_attribute"]["wall_thickness"] == pytest.approx(0.4)
    # an image whose judged value never changes scores ρ = 0
    flat = dict(resp, lv_volume=np.full((3, 5), 9.0))
    assert summarise(flat, alphas, "lv_volume", scale)["monotonicity"] == 0.0
    # leakage is measured onto the judged attributes given, never onto a form of the target itself
    areas = {"lv_area": resp["lv_volume"], "myo_area": resp["myo_volume"], "wall_thickness": resp["wall_thickness"],
             "predicted": resp["predicted"]}
    sa = summarise(areas, alphas, "lv_area", {"lv_area": 2.0, "myo_area": 1.0, "wall_thickness": 0.5})
    assert sa["leakage_by_attribute"] == pytest.approx({"myo_area": 0.5, "wall_thickness": 0.2})


def test_exclusive_selection_drops_atoms_other_attributes_use():
    w = torch.tensor([[3.0, -2.0, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 5.0]])
    assert select_atoms(w, 0, 3).atoms == (0, 1, 2)
    sel = select_atoms(w, 0, 3, exclusive=True)
    assert sel.atoms == (0, 2) and sel.signs == (1.0, 1.0)
    assert select_atoms(w, 1, 2, exclusive=True).atoms == ()


def test_saliency_forward_mode_path_equals_the_functorch_jvp_it_replaced(tiny_config):
    """The saliency runs as forward-mode AD with dual tensors (twice as fast as ``torch.func.jvp`` on
    CPU); the map is the same Jacobian-vector product, in float32 as the explorer computes it."""
    torch.manual_seed(3)
    bb = SSCVAE(tiny_config()).eval()
    z = _sparse_codes(b=3, k=16, s=2, density=0.5).float()
    v = torch.randn_like(z)
    atoms = [2, 5, 11]
    sal = edited_atom_saliency(bb.decode_codes, z, atoms, v)
    mask = torch.zeros_like(z)
    mask[:, atoms] = 1.0
    with torch.enable_grad():
        _, old = torch.func.jvp(bb.decode_codes, (z,), (v * mask,))
    old = old.detach()
    assert sal.dtype == torch.float32 and sal.shape == (3, 1, 16, 16)
    assert old.abs().max() > 0
    assert torch.allclose(sal, old.abs(), rtol=1e-5, atol=1e-6 * float(old.abs().max()))
