"""The public Python API (``attri_ssc.load_run`` -> ``Run``, ``read_case``, ``read_folder``) on the
session's smoke run, checked against the model's own forward pass, scipy and the edit formulas."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

import attri_ssc
from attri_ssc.errors import CheckpointError, ConfigError


@pytest.fixture(scope="module")
def run(smoke_run):
    return attri_ssc.load_run(smoke_run)


@pytest.fixture(scope="module")
def batch(run):
    """Four held-out images (4, 1, 32, 32)."""
    items = run.test_items()
    assert len(items) >= 4
    return torch.stack([it["image"] for it in items[:4]])


def test_import_is_light_and_exports_the_api():
    code = "import sys, attri_ssc; print('torch' in sys.modules, sorted(attri_ssc.__all__))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.startswith("False")
    for name in ("load_run", "Run", "EditResult", "EditSettings", "read_case", "read_folder"):
        assert name in attri_ssc.__all__ and getattr(attri_ssc, name) is not None


def test_run_facts(run, smoke_run):
    assert isinstance(run, attri_ssc.Run)
    assert run.attribute_names == ("lv_area", "myo_area", "wall_thickness", "infarct_area")
    assert run.spatial_dims == 2 and run.image_shape == (1, 32, 32)
    assert run.attribute_units == {"lv_area": "cm²", "myo_area": "cm²", "wall_thickness": "mm", "infarct_area": "cm²"}
    train = run.data_bundle().train.raw_attributes.double()
    for i, name in enumerate(run.attribute_names):
        lo, hi = run.attribute_ranges[name]
        assert lo == pytest.approx(float(train[:, i].min()), rel=1e-6)
        assert hi == pytest.approx(float(train[:, i].max()), rel=1e-6)
    items = run.test_items()
    split = run.data_bundle().split["test"]
    assert {it["case_id"] for it in items} == set(split)
    assert all(it["image"].shape == (1, 32, 32) and set(it["attributes"]) == set(run.attribute_names) for it in items)


def test_encode_decode_equal_the_models_forward(run, batch):
    with torch.no_grad():
        out = run.model.backbone(batch)
    codes = run.encode(batch)
    assert torch.equal(codes, out.codes)
    assert torch.allclose(run.decode(codes), out.recon, atol=1e-6)
    assert torch.allclose(run.reconstruct(batch), out.recon, atol=1e-6)


def test_numpy_in_numpy_out_and_one_image_is_a_batch_of_one(run, batch):
    x = batch[0].numpy()  # (1, 32, 32)
    recon = run.reconstruct(x)
    assert isinstance(recon, np.ndarray) and recon.dtype == np.float32 and recon.shape == (1, 1, 32, 32)
    np.testing.assert_allclose(recon, run.reconstruct(batch[:1]).numpy(), atol=1e-6)
    assert isinstance(run.encode(x), np.ndarray) and isinstance(run.read_attributes(x), np.ndarray)
    assert isinstance(run.decode(run.encode(x)), np.ndarray)
    edit = run.edit(x, "lv_area", [-1.0, 1.0], rule="shift")
    assert isinstance(edit.images, np.ndarray) and edit.images.shape == (2, 1, 1, 32, 32)
    with pytest.raises(ConfigError, match=r"\(B, 1, 32, 32\)"):
        run.encode(np.zeros((2, 16, 16), dtype=np.float32))


def test_read_attributes_is_the_mapper_through_the_training_calibration(run, batch):
    """Oracle: scipy's least-squares line of the training truth on the mapper's training readings."""
    train = run.data_bundle().train
    with torch.no_grad():
        a_train = run.model.mapper(run.model.backbone(train.images).codes).double().numpy()
        a_test = run.model.mapper(run.model.backbone(batch).codes).double().numpy()
    got = run.read_attributes(batch).double().numpy()
    scaler = run._loaded.scaler
    for m in range(len(run.attribute_names)):
        fit = stats.linregress(a_train[:, m], train.raw_attributes[:, m].double().numpy())
        if fit.slope > 0:
            expected = fit.slope * a_test[:, m] + fit.intercept
        else:  # not read by the model: the attribute scaler's inverse
            span = scaler["maximum"][m] - scaler["minimum"][m]
            expected = a_test[:, m] * span + scaler["minimum"][m]
        np.testing.assert_allclose(got[:, m], expected, rtol=1e-3, atol=1e-3 * max(1.0, np.abs(expected).max()))


def test_shift_edit_follows_its_formula(run, batch):
    """Z'(α) = Z + α (B_high − B_low) / 2 on the edited atoms (conditional prototypes), other atoms untouched."""
    alphas = [-1.0, -0.5, 0.0, 0.5, 1.0]
    result = run.edit(batch, "myo_area", alphas, rule="shift")
    a = run.attribute_index("myo_area")
    protos = run.statistics.conditional_prototypes
    assert result.settings.hold == ["lv_area"]  # what the shift rule regresses out for the myocardium
    z = run.encode(batch)
    step = (protos.high[a] - protos.low[a]) / 2
    atoms = result.atoms
    assert atoms and len(atoms) <= run.config.train.top_k
    for k, alpha in enumerate(alphas):
        expected = z.clone()
        expected[:, atoms] = z[:, atoms] + alpha * step[atoms]
        assert torch.allclose(result.codes[k], expected, atol=1e-5)
    assert torch.allclose(result.images[2], run.reconstruct(batch), atol=1e-6)  # α = 0: the reconstruction
    assert result.readings.shape == (5, 4, 4) and torch.isfinite(result.readings).all()
    np.testing.assert_allclose(result.readings[2].numpy(), run.read_attributes(result.images[2].clamp(0, 1)).numpy(),
                               rtol=1e-5, atol=1e-5)


def test_feedback_edit_moves_the_attribute_the_way_asked_on_average(run, batch):
    result = run.edit(batch, "lv_area", [-1.0, 0.0, 1.0])
    assert result.settings.rule == "feedback" and "myo_area" in result.settings.hold
    a = run.attribute_index("lv_area")
    down, base, up = (result.readings[k, :, a] for k in range(3))
    assert float((up - base).mean()) > 0 and float((base - down).mean()) > 0


def test_feedback_search_is_reused_across_alphas(run, batch):
    """A slider that moves α again reuses the image's feedback steps: the same frame either way."""
    grid = run.edit(batch[:2], "myo_area", [-1.0, 0.5, 1.0])
    alone = run.edit(batch[:2], "myo_area", [0.5])
    assert torch.allclose(alone.images[0], grid.images[1], atol=1e-6)
    assert len(run._feedback_cache) >= 1


def test_saliency_is_the_images_change_along_alpha(run, batch):
    """Oracle: |dx̂/dα| by a central finite difference of the decoded shift edit (linear in α)."""
    maps = run.saliency(batch[:2], "lv_area", 0.5, rule="shift")
    assert maps.shape == (2, 1, 32, 32) and bool((maps >= 0).all()) and float(maps.sum()) > 0
    h = 0.01
    around = run.edit(batch[:2], "lv_area", [0.5 - h, 0.5 + h], rule="shift").images.double()
    finite = ((around[1] - around[0]) / (2 * h)).abs()
    err = float((maps.double() - finite).abs().max())
    assert err <= 0.05 * float(finite.max()), err


def test_interpolate_endpoints_are_the_reconstructions(run, batch):
    frames = run.interpolate(batch[0], batch[1], steps=5)
    assert frames.shape == (5, 1, 32, 32)
    recon = run.reconstruct(batch[:2])
    assert torch.allclose(frames[0], recon[0], atol=1e-5) and torch.allclose(frames[-1], recon[1], atol=1e-5)
    # the middle frame decodes the mean of the two codes (Eq. 16)
    z = run.encode(batch[:2])
    assert torch.allclose(frames[2], run.decode(z.mean(0, keepdim=True))[0], atol=1e-5)


def test_sample_shape_range_and_seed(run):
    x = run.sample(6, seed=1)
    assert x.shape == (6, 1, 32, 32) and torch.isfinite(x).all() and float(x.min()) >= 0 and float(x.max()) <= 1
    assert torch.equal(x, run.sample(6, seed=1)) and not torch.equal(x, run.sample(6, seed=2))


def test_unknown_attribute_lists_the_valid_ones(run, batch):
    with pytest.raises(ConfigError, match="this run supervises: lv_area, myo_area, wall_thickness, infarct_area"):
        run.edit(batch, "lv_volume", [1.0])
    with pytest.raises(ConfigError, match="rule must be one of"):
        run.edit(batch, "lv_area", [1.0], rule="nope")
    with pytest.raises(ConfigError, match=r"alphas must be values in \[-1, 1\]"):
        run.edit(batch, "lv_area", [2.0])


def test_statistics_from_the_run_folder_equal_those_computed_from_the_data(run, smoke_run, phantom_dir, batch, tmp_path):
    assert (smoke_run / "interpretation.safetensors").is_file() and (smoke_run / "interpretation.json").is_file()
    old = tmp_path / "old_run"
    shutil.copytree(smoke_run, old)
    for f in old.glob("interpretation.*"):
        f.unlink()
    bare = attri_ssc.load_run(old)
    assert torch.equal(bare.encode(batch), run.encode(batch))  # what needs no statistics works
    with pytest.raises(CheckpointError, match=r"interpretation\.json is missing.*data=DIR"):
        bare.read_attributes(batch)
    computed = attri_ssc.load_run(old, data=phantom_dir)
    assert torch.allclose(computed.read_attributes(batch), run.read_attributes(batch), atol=1e-5)
    a, b = computed.edit(batch, "lv_area", [-1.0, 1.0], rule="shift"), run.edit(batch, "lv_area", [-1.0, 1.0], rule="shift")
    assert torch.allclose(a.images, b.images, atol=1e-5)
    assert torch.allclose(computed.sample(4, seed=3), run.sample(4, seed=3), atol=1e-5)
    assert (old / "interpretation.json").is_file()  # cached: the folder alone suffices now
    assert torch.allclose(attri_ssc.load_run(old).sample(4, seed=3), run.sample(4, seed=3), atol=1e-5)


def test_read_case_and_read_folder_match_the_training_preprocessing(run, phantom_dir):
    bundle = run.data_bundle()
    case = bundle.test.case_ids[0]
    got = attri_ssc.read_case(Path(phantom_dir) / f"Case_{case}", run=run)
    idx = [i for i, c in enumerate(bundle.test.case_ids) if c == case]
    assert got.case_ids == [case] * len(idx) and got.slice_indices == [bundle.test.slice_indices[i] for i in idx]
    assert torch.equal(got.images, bundle.test.images[idx])
    assert torch.allclose(got.attributes, bundle.test.raw_attributes[idx])
    assert torch.allclose(run.encode(got.images), run.encode(bundle.test.images[idx]))
    # a bare NIfTI image with its mask (an upload) goes through the same preprocessing
    folder = Path(phantom_dir) / f"Case_{case}"
    bare = attri_ssc.read_case(folder / "Images" / f"Case_{case}.nii.gz", run=run,
                               mask=folder / "Contours" / f"Case_{case}.nii.gz")
    assert torch.allclose(bare.images, got.images, atol=1e-6)
    image_attrs = [run.attribute_index(n) for n in ("lv_area", "myo_area", "infarct_area")]
    assert torch.allclose(bare.attributes[:, image_attrs], got.attributes[:, image_attrs])
    # without a mask: every slice, centred on the field of view; image attributes unknown
    import nibabel as nib

    n_slices = nib.load(str(folder / "Images" / f"Case_{case}.nii.gz")).shape[2]
    unmasked = attri_ssc.read_case(folder / "Images" / f"Case_{case}.nii.gz", run=run)
    assert unmasked.images.shape == (n_slices, 1, 32, 32) and torch.isnan(unmasked.attributes).all()
    assert float(unmasked.images.min()) >= 0 and float(unmasked.images.max()) <= 1
    everything = attri_ssc.read_folder(phantom_dir, run=run)
    assert len(everything) == len(bundle.train) + len(bundle.val) + len(bundle.test)
    assert everything.items()[0]["image"].shape == (1, 32, 32)
    with pytest.raises(ConfigError, match="unknown layout"):
        attri_ssc.read_folder(phantom_dir, run=run, layout="nope")


def test_edit_settings_round_trip_and_replay_through_the_cli(run, smoke_run, tmp_path):
    from attri_ssc.cli import main

    item = run.test_items()[1]
    result = run.edit(item, "myo_area", [-1.0, 0.0, 1.0])  # an item: its case and slice go into the settings
    settings = result.settings
    assert (settings.case_id, settings.slice) == (item["case_id"], item["slice"])
    assert torch.equal(result.images, run.edit(item["image"], "myo_area", [-1.0, 0.0, 1.0]).images)
    with pytest.raises(ConfigError, match="pass image="):
        run.edit(item["image"], "lv_area", [1.0], rule="shift").settings.save(tmp_path / "nowhere.json")
    assert attri_ssc.EditSettings.from_json(settings.to_json()) == settings
    path = settings.save(tmp_path / "edit.json")
    out = tmp_path / "replay.png"
    assert main(["edit", str(smoke_run), "--settings", str(path), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    np.testing.assert_allclose(np.load(out.with_suffix(".npy")), result.images[:, 0].numpy(), atol=1e-5)
    # an uploaded image travels with its settings
    upload = attri_ssc.EditSettings(attribute="lv_area", alphas=[0.5], rule="shift", run=str(smoke_run))
    path2 = upload.save(tmp_path / "upload.json", image=item["image"].numpy())
    assert main(["edit", str(smoke_run), "--settings", str(path2), "--out", str(tmp_path / "u.png")]) == 0
    expected = run.edit(item["image"], "lv_area", [0.5], rule="shift").images[:, 0]
    np.testing.assert_allclose(np.load(tmp_path / "u.npy"), expected.numpy(), atol=1e-5)
    bad = tmp_path / "bad.json"
    bad.write_text('{"attribute": "lv_area", "alphas": [1], "colour": 3}')
    with pytest.raises(ConfigError, match="unknown field"):
        attri_ssc.EditSettings.load(bad)


def test_judge_reads_the_ground_truth_of_phantom_slices(run):
    """Oracle: the phantoms' mask-measured attributes (rank agreement, scipy), NaN where the judge does not measure."""
    items = run.test_items() + run.test_items("val")
    x = torch.stack([it["image"] for it in items])
    judged = run.judge(x).numpy()
    assert judged.shape == (len(items), 4)
    for name in ("lv_area", "myo_area"):
        col = run.attribute_index(name)
        truth = [it["attributes"][name] for it in items]
        assert stats.spearmanr(judged[:, col], truth).statistic > 0.8, name
    assert np.isnan(judged[:, run.attribute_index("infarct_area")]).all()
    assert isinstance(run.judge(x[0].numpy()), np.ndarray)


def test_literal_edit_with_other_percentile_reaches_the_training_percentiles(run, batch):
    """A.5 as printed at α = ±1: each edited atom becomes the p-th (or (100 − p)-th) percentile of its
    training codes; numpy's percentile of the encoded training split is the oracle (p = 95, not the saved 99)."""
    result = run.edit(batch[:2], "lv_area", [-1.0, 1.0], rule="literal", hold=[], percentile=95.0)
    train_codes = run.encode(run.data_bundle().train.images).double().numpy()
    weight = run.model.mapper.effective_weight().detach()[run.attribute_index("lv_area")]
    for j in result.atoms:
        values = train_codes[:, j].ravel()
        upper, lower = np.percentile(values, 95.0), np.percentile(values, 5.0)
        up, down = (upper, lower) if float(weight[j]) > 0 else (lower, upper)
        np.testing.assert_allclose(result.codes[1][:, j].numpy(), up, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(result.codes[0][:, j].numpy(), down, rtol=1e-5, atol=1e-6)


def test_train_command_warns_when_the_statistics_cannot_be_computed(smoke_run, phantom_dir, tmp_path, monkeypatch,
                                                                   capsys):
    from attri_ssc.commands.train import save_interpretation_statistics
    from attri_ssc.interpret import statistics

    run_dir = tmp_path / "run"
    shutil.copytree(smoke_run, run_dir)
    for f in run_dir.glob("interpretation.*"):
        f.unlink()

    def too_small(*args, **kwargs):
        raise ValueError("codes must be (N >= 2, K, *spatial)")

    monkeypatch.setattr(statistics, "compute_statistics", too_small)
    save_interpretation_statistics(run_dir, phantom_dir)  # training succeeded: a warning, not a failure
    err = capsys.readouterr().err
    assert "warning: the model is saved, but not the statistics" in err and "N >= 2" in err
    assert not (run_dir / "interpretation.json").exists()


def test_feedback_settings_are_recorded_and_a_version_1_record_replays_the_search_of_its_time(run):
    from attri_ssc.interpret.editing import FEEDBACK_BEFORE_GUARDS, FeedbackSettings

    item = run.test_items()[0]
    result = run.edit(item, "lv_area", [-1.0, 1.0])
    assert result.settings.version == 2 and FeedbackSettings(**result.settings.feedback) == FeedbackSettings()
    replayed, _ = run.replay(attri_ssc.EditSettings.from_json(result.settings.to_json()))
    assert torch.equal(replayed.images, result.images)
    # a record written before the search's settings were: replayed with the search of that time (atoms anywhere)
    old = attri_ssc.EditSettings.from_dict({k: v for k, v in result.settings.to_dict().items()
                                            if k not in ("feedback", "version")} | {"version": 1})
    assert old.feedback_settings() == FEEDBACK_BEFORE_GUARDS
    then, _ = run.replay(old)
    assert torch.equal(then.images, run.edit(item, "lv_area", [-1.0, 1.0], feedback=FEEDBACK_BEFORE_GUARDS).images)
    assert not torch.equal(then.images, result.images)
    assert then.settings.feedback == {**result.settings.feedback, "active_only": False}
    assert run.edit(item, "lv_area", [1.0], rule="shift").settings.feedback is None
    for bad, match in (({"blur_px": -1.0}, "blur_px"), ({"steps": 3}, "unknown key")):
        with pytest.raises(ConfigError, match=match):
            attri_ssc.EditSettings.from_dict({"attribute": "lv_area", "alphas": [1.0], "feedback": bad})
