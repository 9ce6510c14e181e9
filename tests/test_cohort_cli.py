"""A manifest folder and an ACDC folder written by the phantom generator each go through
``check-data``, ``train --config smoke``, ``evaluate`` and ``interpret-all``; the run records
its layout and label map, and the attributes it trained on match the phantoms' ground truth."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from attri_ssc.cli import main
from attri_ssc.data.phantoms import load_ground_truth
from attri_ssc.io_utils import read_json

# 32×32 slices at 4 mm (where the judge of verify-edits can measure), two steps per stage.
FAST = ["data.spacing_mm=4.0", "model.input_size=32", "train.num_threads=1",
        "stages.0.steps=2", "stages.1.steps=2", "stages.2.steps=2"]


def _set(items: list[str]) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


def _run_everything(data: Path, run: Path, extra_sets: list[str], layout_args: list[str]) -> dict:
    assert main(["check-data", str(data), *layout_args]) == 0
    assert main(["train", "--data", str(data), "--config", "smoke", "--out", str(run), "--no-progress",
                 *layout_args, *_set(FAST + extra_sets)]) == 0
    assert main(["evaluate", str(run), "--no-progress", *layout_args]) == 0
    assert main(["interpret-all", str(run), "--out", str(run / "figures"), "--n-images", "2", *layout_args]) == 0
    index = read_json(run / "figures" / "interpret.json")
    assert {"interpolation", "edits", "verification", "correlations", "samples"} <= set(index)
    return read_json(run / "results.json")


def _trained_items(run: Path):
    from attri_ssc.data.datasets import build_datasets
    from attri_ssc.runs import load_run

    loaded = load_run(run)
    bundle = build_datasets(loaded.data_dir, loaded.config.data, split=loaded.split)
    return loaded, bundle


@pytest.mark.slow
def test_manifest_folder_end_to_end(tmp_path, capsys):
    data = tmp_path / "cohort"
    assert main(["generate-phantoms", str(data), "--n-cases", "4", "--seed", "5", "--layout", "manifest"]) == 0
    results = _run_everything(data, tmp_path / "run", [], [])
    assert results["layout"] == "manifest" and sum(results["items_per_group"].values()) == results["n_samples"]
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["data"]
    assert saved["layout"] == "manifest" and saved["label_map"]["infarct"] == 3  # recorded with the run
    loaded, bundle = _trained_items(tmp_path / "run")
    truth = load_ground_truth(data)
    names = list(loaded.attribute_names)  # lv_volume, myo_volume, wall_thickness, infarct_volume
    for ds in (bundle.train, bundle.test):
        for i, (cid, k) in enumerate(zip(ds.case_ids, ds.slice_indices)):
            for j, name in enumerate(("lv_volume", "myo_volume")):
                assert float(ds.raw_attributes[i, names.index(name)]) == pytest.approx(
                    truth[cid].slices[k][name], rel=0.06, abs=0.3)


@pytest.mark.slow
def test_acdc_folder_end_to_end(tmp_path):
    data = tmp_path / "acdc"
    assert main(["generate-phantoms", str(data), "--n-cases", "4", "--seed", "5", "--layout", "acdc"]) == 0
    attrs = "data.attributes=[lv_volume,myo_volume,wall_thickness,fevg]"
    results = _run_everything(data, tmp_path / "run", [attrs], ["--layout", "acdc"])
    assert results["layout"] == "acdc" and set(results["items_per_group"]) <= {"NOR", "MINF"}
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["data"]
    assert saved["layout"] == "acdc" and saved["label_map"] == {"background": 0, "lv_cavity": 3, "myocardium": 2,
                                                                "infarct": None, "no_reflow": None, "rv": 1}
    loaded, bundle = _trained_items(tmp_path / "run")
    truth = load_ground_truth(data)
    fevg = list(loaded.attribute_names).index("fevg")
    lv = list(loaded.attribute_names).index("lv_volume")
    for ds in (bundle.train, bundle.val, bundle.test):
        for i, (cid, k) in enumerate(zip(ds.case_ids, ds.slice_indices)):
            assert float(ds.raw_attributes[i, fevg]) == pytest.approx(truth[cid].attributes["fevg"], abs=1.0)
            assert float(ds.raw_attributes[i, lv]) == pytest.approx(truth[cid].slices[k]["lv_volume"], rel=0.06, abs=0.3)
    for ids in loaded.split.values():  # ED and ES of a patient share a split
        assert {c.replace("_ED", "_ES") for c in ids} == {c.replace("_ED", "_ES") for c in ids if c.endswith("_ES")}
