"""``attri-ssc interpolate | edit | correlations | verify-edits | sample`` on a smoke run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from attri_ssc.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def smoke_run(phantom_dir, tmp_path_factory) -> Path:
    from attri_ssc.config import load_config
    from attri_ssc.training.trainer import train

    root = tmp_path_factory.mktemp("interpret")
    # 32×32 at 4 mm (not the preset's 16×16 at 8 mm), where the judge can measure slices
    cfg = load_config("smoke", [f"data.cache_dir={root / 'cache'}", "train.num_threads=1", "data.spacing_mm=4.0",
                                "model.input_size=32"])
    train(cfg, phantom_dir, root / "run", progress=False)
    return root / "run"


def _png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 1000


def _bundle(run: Path):
    from attri_ssc.data.datasets import build_datasets
    from attri_ssc.runs import load_run

    loaded = load_run(run)
    return loaded, build_datasets(loaded.data_dir, loaded.config.data, split=loaded.split)


def test_interpolate_and_edit_write_pngs_and_cache_bounds(smoke_run, tmp_path, capsys):
    _, b = _bundle(smoke_run)
    case_a, case_b = b.test.case_ids[0], b.train.case_ids[0]
    assert main(["interpolate", str(smoke_run), case_a, case_b, "--steps", "4", "--out", str(tmp_path / "i.png")]) == 0
    _png(tmp_path / "i.png")
    slice_b = b.train.slice_indices[0]
    for rule, extra in (("shift", []), ("shift", ["--no-hold-fixed"]), ("prototype", []), ("magnitude", []),
                        ("literal", []), ("feedback", [])):
        out = tmp_path / f"e_{rule}{len(extra)}.png"
        assert main(["edit", str(smoke_run), f"{case_b}:{slice_b}", "--attribute", "lv_volume", "--rule", rule,
                     "--steps", "5", "--out", str(out), *extra]) == 0
        _png(out)
    capsys.readouterr()
    # the default rule: feedback, holding the partner attribute and the infarct (named in the output)
    assert main(["edit", str(smoke_run), f"{case_b}:{slice_b}", "--attribute", "myo_volume", "--steps", "3",
                 "--out", str(tmp_path / "default.png")]) == 0
    printed = capsys.readouterr().out
    assert "rule feedback, holding lv_volume, infarct_volume fixed)" in printed
    assert main(["edit", str(smoke_run), f"{case_b}:{slice_b}", "--attribute", "infarct_volume", "--steps", "3",
                 "--out", str(tmp_path / "infarct.png")]) == 0
    # an infarct edit holds the whole annulus
    assert "rule feedback, holding lv_volume, myo_volume, wall_thickness fixed)" in capsys.readouterr().out
    # the hold-fixed shift rule names what its prototypes hold
    assert main(["edit", str(smoke_run), f"{case_b}:{slice_b}", "--attribute", "myo_volume", "--steps", "3",
                 "--rule", "shift", "--out", str(tmp_path / "shift.png")]) == 0
    assert "rule shift, holding lv_volume fixed)" in capsys.readouterr().out
    # the feedback search's settings: a setting other than the default is applied and named in the output
    assert main(["edit", str(smoke_run), f"{case_b}:{slice_b}", "--attribute", "lv_volume", "--steps", "3",
                 "--search", "active_only=false", "--search", "iterations=4", "--out", str(tmp_path / "s.png")]) == 0
    _png(tmp_path / "s.png")
    assert "search iterations=4, active_only=False)" in capsys.readouterr().out
    assert main(["edit", str(smoke_run), f"{case_b}:{slice_b}", "--attribute", "lv_volume", "--rule", "shift",
                 "--search", "iterations=5", "--out", str(tmp_path / "x.png")]) == 2
    assert "--search sets the feedback rule's search" in capsys.readouterr().err
    # the run predates its interpretation statistics: the first edit computed and saved them in the run folder
    stats = json.loads((smoke_run / "interpretation.json").read_text())["meta"]
    assert stats["bounds"]["percentile"] == 99.0 and len(stats["bounds"]["lower"]) == 16


def test_correlations_report_pearson_of_the_held_out_ground_truth(smoke_run, tmp_path):
    assert main(["correlations", str(smoke_run), "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "correlations.json").read_text())
    _png(tmp_path / "w_heatmap.png")
    assert "| lv_volume vs myo_volume |" in (tmp_path / "correlations.md").read_text()
    loaded, b = _bundle(smoke_run)
    raw = b.test.raw_attributes.double().numpy()
    names = list(loaded.attribute_names)
    pair = res["pairs"][0]
    ref = stats.pearsonr(raw[:, names.index(pair["a"])], raw[:, names.index(pair["b"])])
    assert pair["r_sample"] == pytest.approx(ref.statistic, abs=1e-6)
    assert pair["p_sample"] == pytest.approx(ref.pvalue, rel=1e-4)
    assert res["n_items"] == len(b.test)
    # the atoms per attribute are the non-zero entries of W, which has top_k = 2 per row
    assert all(len(v) <= 2 for v in res["atoms"].values())


def test_compare_edit_rules_verifies_every_rule_and_ranks_them(smoke_run, tmp_path):
    assert main(["compare-edit-rules", str(smoke_run), "--n-images", "2", "--steps", "3", "--out", str(tmp_path)]) == 0
    rep = json.loads((tmp_path / "edit_verification.json").read_text())
    assert set(rep["results"]) == {"feedback", "shift+conditional", "shift", "prototype+conditional", "prototype",
                                   "prototype+active_only", "magnitude", "magnitude+active_only",
                                   "magnitude+exclusive", "literal"}
    assert rep["prototype_quantile"] == 0.9
    assert rep["feedback"]["holds"]["lv_volume"] == ["myo_volume", "infarct_volume"]
    assert set(rep["prototype_counts"]) == {"lv_volume", "myo_volume", "wall_thickness", "infarct_volume"}
    assert rep["conditional_prototypes_hold_fixed"] == {"lv_volume": ["myo_volume"], "myo_volume": ["lv_volume"],
                                                        "wall_thickness": ["lv_volume"]}
    assert set(rep["conditional_prototype_counts"]) == set(rep["prototype_counts"])
    assert rep["n_images"] == 2 and rep["alphas"] == [-1.0, 0.0, 1.0]
    for per_attr in rep["results"].values():
        assert set(per_attr) == {"lv_volume", "myo_volume", "wall_thickness"}
        for r in per_attr.values():
            assert {"monotonicity", "leakage", "leakage_all", "leakage_by_attribute"} <= set(r)
    # the model's own â follows α under the magnitude rule for an attribute with positive weights
    md = (tmp_path / "edit_verification.md").read_text()
    assert "| magnitude | lv_volume |" in md and "| literal | myo_volume |" in md
    assert "| prototype | wall_thickness |" in md and "| shift+conditional | myo_volume |" in md
    # the ranking holds every rule once, each row's worst numbers taken from the verification report
    ranking = json.loads((tmp_path / "edit_rules.json").read_text())["ranking"]
    assert sorted(r["rule"] for r in ranking) == sorted(rep["results"])
    for row in ranking:
        per = rep["results"][row["rule"]]
        if row["monotonicity"] is not None:
            assert row["monotonicity"] == min(r["monotonicity"] for r in per.values())
            assert row["leakage"] == max(r["leakage"] for r in per.values())
    assert "| 1 |" in (tmp_path / "edit_rules.md").read_text()


def test_verify_edits_verifies_the_default_rule_unless_told(smoke_run, tmp_path):
    assert main(["verify-edits", str(smoke_run), "--n-images", "2", "--steps", "3", "--out", str(tmp_path)]) == 0
    rep = json.loads((tmp_path / "edit_verification.json").read_text())
    assert list(rep["results"]) == ["feedback"]
    assert "monotonicity (lv_volume, myo_volume) >= 0.95" in (tmp_path / "edit_verification.md").read_text()


def test_verify_edits_runs_only_the_variants_asked_for(smoke_run, tmp_path, capsys):
    assert main(["verify-edits", str(smoke_run), "--n-images", "2", "--steps", "3", "--variant", "feedback",
                 "--variant", "literal", "--out", str(tmp_path)]) == 0
    rep = json.loads((tmp_path / "edit_verification.json").read_text())
    assert list(rep["results"]) == ["feedback", "literal"]
    assert main(["verify-edits", str(smoke_run), "--variant", "nope", "--out", str(tmp_path / "x")]) == 2
    assert "unknown --variant nope; choose from: feedback, shift+conditional" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_verify_edits_takes_the_feedback_search_settings(smoke_run, tmp_path, capsys):
    base = ["verify-edits", str(smoke_run), "--n-images", "2", "--steps", "3"]
    assert main(base + ["--search", "active_only=false", "--search", "iterations=3", "--search", "blur_px=0.5",
                        "--out", str(tmp_path / "a")]) == 0
    rep = json.loads((tmp_path / "a" / "edit_verification.json").read_text())
    assert (rep["feedback"]["active_only"], rep["feedback"]["iterations"], rep["feedback"]["blur_px"]) == (False, 3, 0.5)
    for bad, said in (("steps=3", "KEY one of"), ("iterations=2.5", "iterations takes int"),
                      ("active_only=maybe", "active_only takes bool"), ("blur_px=-1", "blur_px must be >= 0")):
        assert main(base + ["--search", bad, "--out", str(tmp_path / "x")]) == 2
        assert said in capsys.readouterr().err, bad
    assert not (tmp_path / "x").exists()


def test_verification_beside_interpret_all_reaches_the_report(smoke_run, tmp_path):
    """``make demo``'s split: interpret-all --no-verification and verify-edits into DIR/verification;
    the report shows the verification table from that JSON."""
    demo = tmp_path / "demo"
    figures = demo / "figures"
    assert main(["interpret-all", str(smoke_run), "--out", str(figures), "--no-verification", "--n-images", "4"]) == 0
    index = json.loads((figures / "interpret.json").read_text())
    assert "verification" not in index and not (figures / "verification").exists()
    assert main(["verify-edits", str(smoke_run), "--out", str(figures / "verification"), "--n-images", "4"]) == 0
    saved = json.loads((figures / "verification" / "edit_verification.json").read_text())
    assert main(["report", str(demo)]) == 0
    markdown = (demo / "report.md").read_text()
    assert "Are the edits real? Independent judge" in markdown
    mono = saved["results"]["feedback"]["lv_volume"]["monotonicity"]
    assert f"{mono:.3f}"[:4] in markdown  # the table's number is the JSON's


def test_interpretation_and_evaluation_use_the_runs_saved_split(smoke_run, tmp_path):
    """Commands that load a run rebuild the split it recorded, not a fresh draw from its config."""
    import shutil

    from attri_ssc.runs import load_run_and_data
    from attri_ssc.data.datasets import build_datasets
    from attri_ssc.evaluation.evaluate import evaluate_run

    copy = tmp_path / "run"
    shutil.copytree(smoke_run, copy)
    loaded, bundle = _bundle(copy)
    drawn = build_datasets(loaded.data_dir, loaded.config.data).split
    swapped = {"train": drawn["train"], "val": drawn["test"], "test": drawn["val"]}
    assert swapped != drawn
    record = json.loads((copy / "model.json").read_text())
    record["meta"]["split"] = swapped
    (copy / "model.json").write_text(json.dumps(record))
    _, rebuilt = load_run_and_data(copy, None)
    assert rebuilt.split == swapped and sorted(set(rebuilt.test.case_ids)) == swapped["test"]
    results = evaluate_run(copy, progress=False)
    assert results["n_samples"] == len(build_datasets(loaded.data_dir, loaded.config.data, split=swapped).test)


def test_verify_edits_judges_the_area_form_a_run_supervises(phantom_dir, tmp_path):
    """A run supervising in-plane areas is judged on areas: an area edit's leakage is measured
    onto the other area and the wall thickness, never onto the volume of the same structure."""
    from attri_ssc.config import load_config
    from attri_ssc.training.trainer import train

    cfg = load_config("smoke", [f"data.cache_dir={tmp_path / 'cache'}", "train.num_threads=1", "data.spacing_mm=4.0",
                                "model.input_size=32", "data.attributes.0=lv_area", "data.attributes.1=myo_area",
                                "data.attributes.3=infarct_area", "stages.0.steps=4", "stages.1.steps=3",
                                "stages.2.steps=3"])
    train(cfg, phantom_dir, tmp_path / "run", progress=False)
    out = tmp_path / "verify"
    assert main(["verify-edits", str(tmp_path / "run"), "--n-images", "2", "--steps", "3", "--out", str(out)]) == 0
    rep = json.loads((out / "edit_verification.json").read_text())
    assert rep["judged"] == ["lv_area", "myo_area", "wall_thickness"]
    assert rep["conditional_prototypes_hold_fixed"] == {"lv_area": ["myo_area"], "myo_area": ["lv_area"],
                                                        "wall_thickness": ["lv_area"]}
    assert rep["headline_leakage_onto"]["myo_area"] == ["lv_area"]
    for per_attr in rep["results"].values():
        assert set(per_attr) == {"lv_area", "myo_area", "wall_thickness"}
        for r in per_attr.values():
            assert set(r["leakage_by_attribute"]) <= {"lv_area", "myo_area", "wall_thickness"}
    assert "monotonicity (lv_area, myo_area)" in (out / "edit_verification.md").read_text()


def test_sample_writes_grid_and_metrics(smoke_run, tmp_path):
    out = tmp_path / "s.png"
    assert main(["sample", str(smoke_run), "-n", "4", "--out", str(out)]) == 0
    _png(out)
    m = json.loads(out.with_suffix(".json").read_text())
    assert np.isfinite(m["mmd_x100"]) and isinstance(m["fid"], str) and m["prior"]["kind"] == "pca_gmm_sparsified"


@pytest.mark.parametrize("argv, needle", [
    (["edit", "{run}", "NOPE", "--attribute", "lv_volume"], "valid cases:"),
    (["edit", "{run}", "{case}", "--attribute", "nope"], "this run supervises: lv_volume"),
    (["edit", "{run}", "{case}:99", "--attribute", "lv_volume"], "valid slices"),
    (["edit", "{run}", "{case}", "--attribute", "lv_volume", "--steps", "4"], "odd"),
    (["edit", "{run}", "{case}", "--attribute", "lv_volume", "--quantile", "0.3"], "--quantile must be in (0.5, 1)"),
    (["interpolate", "{run}", "{case}", "NOPE"], "unknown case 'NOPE'"),
])
def test_bad_arguments_exit_2_with_a_clear_message(smoke_run, tmp_path, capsys, argv, needle):
    _, b = _bundle(smoke_run)
    args = [a.format(run=smoke_run, case=b.train.case_ids[0]) for a in argv] + ["--out", str(tmp_path / "x.png")]
    assert main(args) == 2
    assert needle in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_diagnose_usage_matches_independent_readers(smoke_run, tmp_path, capsys):
    """``attri-ssc diagnose usage`` (was scripts/probes/usage_readout.py): its ridge row is
    scikit-learn's Ridge on K·ũ, its W row the model's own â, its in-plane row scipy's ρ."""
    import torch
    from sklearn.linear_model import Ridge

    from attri_ssc.interpret.diagnose import usage_features

    out = tmp_path / "usage.json"
    assert main(["diagnose", "usage", str(smoke_run), "--checkpoint", "after_stage1", "--checkpoint", "final",
                 "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| model | reader | lv_volume | myo_volume | wall_thickness | infarct_volume |" in printed
    res = json.loads(out.read_text())
    rows = {(r["model"], r["reader"]): r["rho"] for r in res["rows"]}
    assert ("after_stage1", "W (model)") not in rows and ("after_stage1", "ridge") in rows
    assert ("final", "judge on reconstructions, one thickness") in rows  # a 2D run: the judge's ceiling

    loaded, b = _bundle(smoke_run)
    f_train, f_test = usage_features(loaded.model, b.train.images), usage_features(loaded.model, b.test.images)
    y_train, y_test = b.train.attributes.double().numpy(), b.test.attributes.double().numpy()
    ridge = Ridge(alpha=1e-3 * len(f_train), fit_intercept=False, solver="cholesky").fit(f_train, y_train)
    pred = ridge.predict(f_test)
    with torch.no_grad():
        a_hat = loaded.model(b.test.images).attributes.double().numpy()
    raw = b.test.raw_attributes.double().numpy()
    thickness = np.array([float(b.cases[c].spacing[2]) for c in b.test.case_ids])
    for m in range(y_test.shape[1]):
        expect_ridge = stats.spearmanr(pred[:, m], y_test[:, m])[0]
        np.testing.assert_allclose(rows[("final", "ridge")][m], expect_ridge, atol=1e-6)
        np.testing.assert_allclose(rows[("final", "W (model)")][m], stats.spearmanr(a_hat[:, m], y_test[:, m])[0],
                                   atol=1e-6)
        expect_plane = stats.spearmanr(raw[:, m] / thickness, raw[:, m])[0]
        got = rows[("–", "in-plane truth (volume / slice thickness)")][m]
        if res["attributes"][m].endswith("_volume"):
            np.testing.assert_allclose(got, expect_plane, atol=1e-9)
        else:
            assert got is None


def test_diagnose_usage_names_a_missing_checkpoint(smoke_run, capsys):
    assert main(["diagnose", "usage", str(smoke_run), "--checkpoint", "after_stage9"]) == 5
    assert "after_stage9.json: no such checkpoint" in capsys.readouterr().err


def test_verify_edits_in_worker_processes_gives_the_same_report(smoke_run, tmp_path, capsys):
    base = ["verify-edits", str(smoke_run), "--n-images", "3", "--steps", "3", "--search", "iterations=5"]
    assert main(base + ["--out", str(tmp_path / "one")]) == 0
    assert main(base + ["--jobs", "3", "--out", str(tmp_path / "three")]) == 0
    one = json.loads((tmp_path / "one" / "edit_verification.json").read_text())
    three = json.loads((tmp_path / "three" / "edit_verification.json").read_text())
    assert len(one["results"]["feedback"]) == 3
    one.pop("run"), three.pop("run")
    assert json.dumps(one) == json.dumps(three)  # every number, and the order of every key
    assert main(base + ["--jobs", "0", "--out", str(tmp_path / "x")]) == 2
    assert "--jobs must be >= 1" in capsys.readouterr().err


def test_reports_of_different_images_do_not_merge():
    from attri_ssc.interpret.verification import merge_verifications

    part = {"n_images": 3, "results": {"feedback": {"lv_area": {}}}, "atom_effects": {"lv_area": {}}, "feedback": None}
    other = {**part, "n_images": 4, "results": {"feedback": {"myo_area": {}}}, "atom_effects": {"myo_area": {}}}
    with pytest.raises(ValueError, match="n_images"):
        merge_verifications([part, other])
    merged = merge_verifications([part, {**other, "n_images": 3}])
    assert list(merged["results"]["feedback"]) == ["lv_area", "myo_area"] and list(merged["atom_effects"]) == [
        "lv_area", "myo_area"]
    with pytest.raises(ValueError, match="no reports"):
        merge_verifications([])
