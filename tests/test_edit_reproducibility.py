"""Edits and their verification give the same numbers with 1 and 2 CPU threads.

Without a fixed thread count the ``feedback`` rule's Adam search (through the encoder and
LISTA's thresholds) turns last-bit differences of 2-thread convolutions into different steps:
on the 32x32 model below, 0.69 apart after 20 iterations.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from attri_ssc.interpret.editing import AttributeUnits, FeedbackSettings, feedback_steps, select_atoms
from attri_ssc.models.attri_ssc_vae import AttriSSCVAE
from attri_ssc.models.config import preset
from attri_ssc.seeding import fixed_threads


def _with_threads(n: int, fn):
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        return fn()
    finally:
        torch.set_num_threads(previous)


def test_fixed_threads_sets_and_restores_the_count_even_on_error():
    before = torch.get_num_threads()
    outer = 2 if before != 2 else 3
    torch.set_num_threads(outer)
    try:
        with fixed_threads(1):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == outer
        with pytest.raises(RuntimeError, match="boom"):
            with fixed_threads(1):
                raise RuntimeError("boom")
        assert torch.get_num_threads() == outer
        with pytest.raises(ValueError, match="n="):
            with fixed_threads(0):
                pass
    finally:
        torch.set_num_threads(before)


def test_feedback_steps_are_identical_with_one_and_two_threads():
    torch.manual_seed(0)
    model = AttriSSCVAE(preset("tiny", channels=(8, 8, 8), input_size=32, n_atoms=32, latent_channels=16), 4).eval()
    with torch.no_grad():
        model.mapper.weight.copy_(torch.randn_like(model.mapper.weight))
        codes = model.backbone(torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(1))).codes
    selection = select_atoms(model.mapper.effective_weight(), 0, 3)
    units = AttributeUnits(torch.full((4,), 0.5))
    settings = FeedbackSettings(iterations=20)
    one, two = (_with_threads(n, lambda: feedback_steps(model, codes, selection, (1,), units, settings))
                for n in (1, 2))
    assert torch.any(one.up != 0)
    assert torch.equal(one.up, two.up) and torch.equal(one.down, two.down)
    assert torch.equal(one.reread, two.reread)


@pytest.mark.slow
def test_verify_edits_numbers_agree_with_one_and_two_threads(phantom_dir, tmp_path):
    from attri_ssc.cli import main
    from attri_ssc.config import load_config
    from attri_ssc.training.trainer import train

    cfg = load_config("smoke", [f"data.cache_dir={tmp_path / 'cache'}", "train.num_threads=1", "data.spacing_mm=4.0",
                                "model.input_size=32"])
    train(cfg, phantom_dir, tmp_path / "run", progress=False)
    reports = []
    for n in (1, 2):
        out = tmp_path / f"verify{n}"
        argv = ["verify-edits", str(tmp_path / "run"), "--n-images", "2", "--steps", "3", "--variant", "feedback",
                "--out", str(out)]
        assert _with_threads(n, lambda: main(argv)) == 0
        reports.append(json.loads((out / "edit_verification.json").read_text())["results"]["feedback"])
    one, two = reports
    assert one.keys() == two.keys() and one
    for attribute in one:
        for key in ("monotonicity", "leakage", "leakage_all", "target_change_per_unit_alpha_range"):
            a, b = one[attribute][key], two[attribute][key]
            assert (a is None and b is None) or abs(a - b) <= 0.01, (attribute, key, a, b)


def test_rank_edit_rules_orders_by_targets_then_margin():
    from attri_ssc.interpret.edit_rules import edit_rules_markdown, rank_edit_rules

    def res(m, leak):
        return {"monotonicity": m, "leakage": leak}

    report = {"n_images": 4, "alphas": [-1, 0, 1], "top_k": 5, "results": {
        "literal": {"lv_area": res(0.99, 0.30), "myo_area": res(0.97, 0.10), "wall_thickness": res(0.96, 0.05)},
        "feedback": {"lv_area": res(0.97, 0.12), "myo_area": res(0.96, 0.14), "wall_thickness": res(0.99, 0.02),
                     "infarct_area": res(0.10, 0.90)},  # not an annulus edit: left out of the targets
        "shift": {"lv_area": res(0.50, 0.05), "myo_area": res(None, None), "wall_thickness": res(0.9, 0.1)},
        "magnitude": {"lv_area": res(0.90, 0.20), "myo_area": res(0.80, 0.10), "wall_thickness": res(0.95, 0.1)},
    }}
    rows = rank_edit_rules(report)
    # feedback meets both targets on all three; then by worst leakage − worst monotonicity:
    # literal 0.30 − 0.96 = −0.66 before magnitude 0.20 − 0.80 = −0.60
    assert [r["rule"] for r in rows] == ["feedback", "literal", "magnitude", "shift"]
    assert rows[0]["meets_targets"] and not rows[1]["meets_targets"]  # literal leaks 0.30 > 0.15
    assert rows[0]["monotonicity"] == 0.96 and rows[0]["leakage"] == 0.14
    assert rows[0]["attributes"] == ["lv_area", "myo_area", "wall_thickness"]
    assert rows[1]["leakage"] - rows[1]["monotonicity"] == pytest.approx(-0.66)
    assert rows[3]["monotonicity"] is None  # a missing number sorts last
    md = edit_rules_markdown(rows, report)
    assert "| 1 | feedback | 0.960 | 0.140 |" in md and "| 4 | shift | n/a |" in md
