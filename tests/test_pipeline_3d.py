"""The whole pipeline on tiny 3D phantoms, through the CLI: generate → train (smoke, 3D) →
evaluate → interpret-all → report. Checks that each step writes what the next one reads, that
a two-volume test split skips what it cannot support, and that the judge reads volumes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from attri_ssc.cli import main

#: 8 slices (these phantoms have 6-7) × 32×32 at 4 mm (the judge needs about 4 mm to find a wall),
#: two attributes.
SMOKE_3D = ["data.spatial_dims=3", "model.spatial_dims=3", "data.spacing_mm=4.0", "data.n_slices=8",
            "model.input_size=[8,32,32]", "data.split_fractions=[0.5,0.25,0.25]",
            "data.attributes=[lv_volume,myo_volume]", "train.num_threads=1"]


@pytest.mark.slow
def test_generate_train_evaluate_interpret_report_on_3d_phantoms(tmp_path, capsys):
    data, demo = tmp_path / "data", tmp_path / "demo"
    run = demo / "runs" / "attri_ssc"
    assert main(["generate-phantoms", str(data), "--n-cases", "8", "--seed", "5"]) == 0
    sets = [arg for s in [*SMOKE_3D, f"data.cache_dir={tmp_path / 'cache'}"] for arg in ("--set", s)]
    assert main(["train", "--data", str(data), "--config", "smoke", "--out", str(run), "--no-progress", *sets]) == 0

    # evaluate: two test volumes, so what needs three is skipped with a line, not a traceback
    assert main(["evaluate", str(run), "--no-progress"]) == 0
    assert "skipped mig: needs >= 3 test samples, got 2" in capsys.readouterr().out
    results = json.loads((run / "results.json").read_text())
    assert results["n_samples"] == 2 and results["reconstruction"]["mmd_x100"] is not None
    assert results["skipped"]["mig"] == "needs >= 3 test samples, got 2"
    assert results["skipped"]["ssim"].startswith("needs every spatial extent >= 11")  # 8 slices

    # interpret-all: every figure of a 3D run, edit verification measured on whole volumes
    figures = demo / "figures"
    assert main(["interpret-all", str(run), "--out", str(figures), "--n-images", "2"]) == 0
    index = json.loads((figures / "interpret.json").read_text())
    assert set(index) == {"interpolation", "edits", "verification", "correlations", "samples"}
    assert "test volumes" in index["interpolation"]["caption"]
    for entry in (index["interpolation"], *index["edits"].values(), index["samples"]):
        assert (figures / entry["png"]).read_bytes()[:4] == b"\x89PNG"
    report = json.loads((figures / "verification" / "edit_verification.json").read_text())
    assert report["n_images"] == 2 and report["judged"] == ["lv_volume", "myo_volume", "wall_thickness"]
    assert set(report["results"]["feedback"]) == {"lv_volume", "myo_volume"}
    # the judge's spread of the unedited test volumes: whole volumes in mL (100-210 mL of
    # cavity on these phantoms), thickness in mm
    assert 0 < report["scale"]["lv_volume"] < 100 and 0 < report["scale"]["wall_thickness"] < 5

    # report: renders the saved JSON, naming the skipped metrics
    assert main(["report", str(demo)]) == 0
    markdown = (demo / "report.md").read_text()
    assert "Skipped for the size of the test split: " in markdown and "mig (needs >= 3 test samples, got 2)" in markdown
    assert "![" in markdown and (demo / "report.html").stat().st_size > 10_000
    assert np.isfinite(results["reconstruction"]["psnr_mean"])
