"""Label maps, layout detection, the ACDC and manifest readers against phantom ground truth,
and their bad-input messages (each names the file, the line or field, and what was expected)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from attri_ssc.cli import main
from attri_ssc.data.acdc import scan_acdc
from attri_ssc.data.config import DataConfig
from attri_ssc.data.datasets import build_datasets
from attri_ssc.data.labels import ACDC_LABELS, EMIDEC_LABELS, LabelMap
from attri_ssc.data.layouts import detect_layout, open_folder, resolve_data_config, scan_folder
from attri_ssc.data.manifest import scan_manifest
from attri_ssc.data.phantoms import generate_phantoms, load_ground_truth
from attri_ssc.errors import ConfigError, DataError

SHARED = ("lv_volume", "myo_volume", "wall_thickness", "infarct_volume", "lv_area", "fevg", "age", "troponin")


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """The same three DE phantoms (seed 11) in EMIDEC and manifest layout; three ACDC patients."""
    root = tmp_path_factory.mktemp("cohorts")
    out = {}
    for layout, n in (("emidec", 3), ("manifest", 3), ("acdc", 3)):
        out[layout] = root / layout
        generate_phantoms(out[layout], n, seed=11, layout=layout)
    return out


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _all_items(bundle) -> dict[str, np.ndarray]:
    return {c: ds.raw_attributes[i].double().numpy() for ds in (bundle.train, bundle.val, bundle.test)
            for i, c in enumerate(ds.case_ids)}


def _cfg(attributes, **kw) -> DataConfig:
    return DataConfig(spatial_dims=3, spacing_mm=8.0, n_slices=12, attributes=tuple(attributes), **kw)


# ---------------------------------------------------------------------------- label maps
def test_label_map_translates_file_values_to_canonical_codes():
    acdc = np.array([[0, 1, 2, 3]])
    assert ACDC_LABELS.to_canonical(acdc).tolist() == [[0, 5, 2, 1]]  # RV 5, myo 2, cavity 1
    assert EMIDEC_LABELS.to_canonical(np.array([0, 1, 2, 3, 4])).tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(DataError, match=r"case X: /data/m\.nii\.gz: mask has unknown label\(s\) \[4\]; expected .*3 lv_cavity"):
        ACDC_LABELS.to_canonical(np.array([0, 4]), "/data/m.nii.gz", "X")


@pytest.mark.parametrize("raw, needle", [
    ({"lv_cavity": 1, "myocardium": 1}, "myocardium and lv_cavity both use value 1"),
    ({"myocardium": 2}, "data.label_map.lv_cavity is required"),
    ({"lv_cavity": 1, "myocardium": 2, "scar": 3}, r"unknown structure\(s\) \['scar'\]"),
    ({"lv_cavity": -1, "myocardium": 2}, "data.label_map.lv_cavity must be a non-negative integer"),
    ({"lv_cavity": 1, "myocardium": 2, "no_reflow": 4}, "no_reflow is labelled but infarct is not"),
])
def test_bad_label_maps_are_config_errors(raw, needle):
    with pytest.raises(ConfigError, match=needle):
        LabelMap.from_dict(raw)


def test_data_config_round_trips_and_old_configs_read_emidec(folders):
    cfg = DataConfig(attributes=("lv_area",), layout="acdc", label_map=ACDC_LABELS, columns=(("bmi", "kg/m²"),))
    assert DataConfig.from_dict(cfg.to_dict()) == cfg
    old = {k: v for k, v in DataConfig().to_dict().items() if k not in ("layout", "label_map", "columns")}
    resolved = resolve_data_config(DataConfig.from_dict(old), folders["emidec"])
    assert resolved.layout == "emidec" and resolved.label_map == EMIDEC_LABELS
    with pytest.raises(ConfigError, match="data.layout must be one of emidec, acdc, manifest"):
        DataConfig(layout="nifti").validate()
    with pytest.raises(ConfigError, match="unknown attribute 'bmi'"):
        DataConfig(attributes=("bmi",)).validate()
    DataConfig(attributes=("bmi",), columns=(("bmi", "kg/m²"),)).validate()  # a declared column may be supervised


# ---------------------------------------------------------------------------- layouts
def test_layout_detection_and_its_errors(folders, tmp_path):
    for layout, path in folders.items():
        assert detect_layout(path) == layout
    assert detect_layout(folders["manifest"] / "manifest.csv") == "manifest"
    mixed = _copy(folders["emidec"], tmp_path / "mixed")
    shutil.copy(folders["manifest"] / "manifest.csv", mixed / "manifest.csv")
    with pytest.raises(DataError, match=r"looks like several layouts: .*--layout"):
        detect_layout(mixed)
    assert scan_folder(mixed, layout="emidec").layout == "emidec"  # --layout settles it
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no cases found in any layout"):
        detect_layout(tmp_path / "empty")


# ---------------------------------------------------------------------------- attributes
def test_emidec_and_manifest_readers_give_identical_attributes(folders):
    emidec = build_datasets(folders["emidec"], _cfg(SHARED))
    manifest = build_datasets(folders["manifest"], _cfg(SHARED))
    assert manifest.config.layout == "manifest" and emidec.split == manifest.split
    a, b = _all_items(emidec), _all_items(manifest)
    assert a.keys() == b.keys()
    for cid in a:
        np.testing.assert_array_equal(a[cid], b[cid])
    truth = load_ground_truth(folders["manifest"])
    for cid, row in b.items():
        assert row[0] == pytest.approx(truth[cid].attributes["lv_volume"], rel=0.02)
        assert row[1] == pytest.approx(truth[cid].attributes["myo_volume"], rel=0.02)
        assert row[3] == pytest.approx(truth[cid].attributes["infarct_volume"], rel=0.1, abs=0.5)
        assert row[5] == truth[cid].attributes["fevg"] and row[6] == truth[cid].attributes["age"]


def test_label_map_from_the_config_reads_renumbered_masks(folders, tmp_path):
    """The manifest's masks rewritten with other numbers read the same through data.label_map."""
    renum = _copy(folders["manifest"], tmp_path / "renum")
    lut = np.array([0, 7, 5, 6, 9], dtype=np.uint8)
    for path in sorted((renum / "masks").iterdir()):
        img = nib.load(str(path))
        nib.save(nib.Nifti1Image(lut[np.asarray(img.dataobj)], img.affine, img.header), str(path))
    with pytest.raises(DataError, match=r"masks/\w+\.nii\.gz: mask has unknown label\(s\) \[5, (6, )?7"):
        build_datasets(renum, _cfg(SHARED))
    label_map = LabelMap.from_dict({"lv_cavity": 7, "myocardium": 5, "infarct": 6, "no_reflow": 9})
    got = _all_items(build_datasets(renum, _cfg(SHARED, label_map=label_map)))
    want = _all_items(build_datasets(folders["manifest"], _cfg(SHARED)))
    for cid in want:
        np.testing.assert_array_equal(got[cid], want[cid])


def test_acdc_frames_match_ground_truth_and_share_a_split(folders):
    names = ("lv_volume", "myo_volume", "wall_thickness", "fevg", "height", "weight")
    bundle = build_datasets(folders["acdc"], _cfg(names))
    assert bundle.config.layout == "acdc" and bundle.config.label_map == ACDC_LABELS
    truth = load_ground_truth(folders["acdc"])
    items = _all_items(bundle)
    assert sorted(items) == sorted(truth)  # patientNNN_ED and _ES of every patient
    for cid, row in items.items():
        t = truth[cid].attributes
        assert row[0] == pytest.approx(t["lv_volume"], rel=0.02)  # the RV (label 1) is not the cavity
        assert row[1] == pytest.approx(t["myo_volume"], rel=0.02)
        assert row[2] == pytest.approx(t["wall_thickness"], rel=0.05)
        assert row[3] == pytest.approx(t["fevg"], abs=1.0)  # computed from the ED/ES masks
        assert (row[4], row[5]) == (pytest.approx(t["height"]), pytest.approx(t["weight"]))
    for ids in bundle.split.values():
        patients = {c.rsplit("_", 1)[0] for c in ids}
        assert sorted(ids) == sorted(f"{p}_{ph}" for p in patients for ph in ("ED", "ES"))
    for ds in (bundle.train, bundle.val, bundle.test):
        for cid, label in zip(ds.case_ids, ds.labels.tolist()):
            assert label == int(truth[cid].label != "NOR") and bundle.groups[cid] == truth[cid].label


def test_scar_attributes_on_a_cohort_without_scar_are_a_config_error(folders):
    with pytest.raises(ConfigError, match="'infarct_volume' needs the 'infarct' structure"):
        build_datasets(folders["acdc"], _cfg(("lv_volume", "infarct_volume")))
    with pytest.raises(DataError, match="attribute 'bmi' .* not available for case.* patient001_ED"):
        build_datasets(folders["acdc"], _cfg(("lv_volume", "bmi"), columns=(("bmi", ""),)))


# ---------------------------------------------------------------------------- bad manifests
def _manifest_copy(folders, tmp_path) -> Path:
    root = tmp_path / "m"
    shutil.copytree(folders["manifest"], root)
    return root


def _cell(line: str, index: int, value: str) -> str:
    cells = line.split(",")
    cells[index] = value
    return ",".join(cells)


def _rewrite(root: Path, edit) -> Path:
    path = root / "manifest.csv"
    lines = path.read_text(encoding="utf-8").splitlines()
    path.write_text("\n".join(edit(lines)) + "\n", encoding="utf-8")
    return path


def _errors(root: Path, **kw) -> list[str]:
    cases, problems = scan_manifest(root, **kw)
    return [str(p) for p in problems if p.severity == "error"]


@pytest.mark.parametrize("edit, needle", [
    (lambda ls: [ls[0].replace("mask,", "")] + [",".join(line.split(",")[:4] + line.split(",")[5:]) for line in ls[1:]],
     r"manifest\.csv:1: missing column 'mask'"),
    (lambda ls: ls[:2] + [ls[2].replace("images/", "imgs/")] + ls[3:],
     r"manifest\.csv:3: column 'image': file not found: .*imgs/"),
    (lambda ls: ls[:1] + [ls[1] + ",42"] + ls[2:], r"manifest\.csv:2: 19 value\(s\) for 18 column\(s\)"),
    (lambda ls: ls[:1] + [_cell(ls[1], 7, "sixty")] + ls[2:],
     r"manifest\.csv:2: column 'age': 'sixty' is not a number .*data\.columns\.age=categorical"),
    (lambda ls: ls[:3] + [_cell(ls[3], 6, "")],
     r"manifest\.csv:4: column 'fevg': empty value \(expected a number\)"),
    (lambda ls: ls + [ls[1]], r"manifest\.csv:5: column 'case_id': duplicate id \w+ \(first on line 2\)"),
    (lambda ls: [ls[0]] + [_cell(line, 2, "yes") for line in ls[1:]],
     r"manifest\.csv:2: column 'pathological': expected 0 or 1, got 'yes'"),
    (lambda ls: [ls[0].replace("troponin", "lv_volume")] + ls[1:],
     r"manifest\.csv:1: column 'lv_volume' is the name of an attribute measured from the masks"),
    (lambda ls: [ls[0].replace("troponin", "trop onin")] + ls[1:], r"column 16 has the name 'trop onin'"),
    (lambda ls: ls[:1], r"manifest\.csv: the manifest lists no cases"),
])
def test_bad_manifest_rows_name_the_line_and_column(folders, tmp_path, edit, needle):
    root = _manifest_copy(folders, tmp_path)
    _rewrite(root, edit)
    errors = _errors(root)
    assert any(re.search(needle, e) for e in errors), errors


def test_manifest_categorical_columns_and_unknown_labels(folders, tmp_path):
    root = _manifest_copy(folders, tmp_path)
    _rewrite(root, lambda ls: [ls[0] + ",nyha"] + [line + f",class {'I' * (i % 3 + 1)}" for i, line in enumerate(ls[1:])])
    assert any("column 'nyha': 'class I' is not a number" in e for e in _errors(root))
    cases, problems = scan_manifest(root, columns={"nyha": "categorical"})
    assert not problems and {c.categorical["nyha"] for c in cases} == {"class I", "class II", "class III"}
    assert all(c.categorical["tobacco"] in {"1", "2", "3"} for c in cases)  # registered categorical: text
    assert _errors(root, columns={"bmi": "kg/m²"}) == [
        f"error: {root / 'manifest.csv'}:1: data.columns declares column 'bmi' (kg/m²), which the manifest lacks"]
    mask = sorted((root / "masks").iterdir())[0]
    img = nib.load(str(mask))
    data = np.asarray(img.dataobj).copy()
    data[0, 0, 0] = 8
    nib.save(nib.Nifti1Image(data, img.affine, img.header), str(mask))
    errors = _errors(root, columns={"nyha": "categorical"}, check_arrays=True)
    assert len(errors) == 1 and str(mask) in errors[0] and "unknown label(s) [8]" in errors[0]


# ---------------------------------------------------------------------------- bad ACDC folders
def _acdc_copy(folders, tmp_path) -> Path:
    return _copy(folders["acdc"], tmp_path / "a")


def _set_info(root: Path, patient: str, **fields) -> Path:
    path = root / patient / "Info.cfg"
    info = dict(line.split(": ", 1) for line in path.read_text().splitlines())
    for key, value in fields.items():
        if value is None:
            info.pop(key)
        else:
            info[key] = str(value)
    path.write_text("".join(f"{k}: {v}\n" for k, v in info.items()))
    return path


@pytest.mark.parametrize("fields, needle", [
    ({"ES": None}, "missing field 'ES'"),
    ({"ES": 1}, "fields 'ED' and 'ES' name the same frame (1); they must differ"),
    ({"Height": "tall"}, "field 'Height' must be a number (cm), got 'tall'"),
    ({"Group": "ABC"}, "field 'Group' must be one of NOR, MINF, DCM, HCM, RV, got 'ABC'"),
    ({"ED": "1.5"}, "field 'ED' must be a positive integer, got '1.5'"),
    ({"NbFrame": 5, "ES": 7}, "field 'ES' = 7 exceeds 'NbFrame' = 5"),
])
def test_bad_info_cfg_names_the_file_and_field(folders, tmp_path, fields, needle):
    root = _acdc_copy(folders, tmp_path)
    info = _set_info(root, "patient002", **fields)
    cases, problems = scan_acdc(root)
    assert [str(p) for p in problems] == [f"error: case patient002: {info}: {needle}"]
    assert {c.patient_id for c in cases} == {"patient001", "patient003"}  # the others stay usable


def test_acdc_missing_frame_swapped_phases_and_unknown_labels(folders, tmp_path):
    root = _acdc_copy(folders, tmp_path)
    gt = root / "patient001" / "patient001_frame01_gt.nii.gz"
    gt.unlink()
    es = int(dict(line.split(": ") for line in (root / "patient002" / "Info.cfg").read_text().splitlines())["ES"])
    info = _set_info(root, "patient002", ED=es, ES=1)  # ED and ES swapped
    bad = root / "patient003" / "patient003_frame01_gt.nii.gz"
    img = nib.load(str(bad))
    data = np.asarray(img.dataobj).copy()
    data[0, 0, 0] = 4
    nib.save(nib.Nifti1Image(data, img.affine, img.header), str(bad))
    cases, problems = scan_acdc(root, check_arrays=True)
    text = "\n".join(str(p) for p in problems)
    assert f"case patient001_ED: {gt}: mask file not found" in text
    assert f"case patient002: {info}: ES frame 1 has an LV cavity of" in text and "swapped" in text
    assert f"case patient003_ED: {bad}: mask has unknown label(s) [4]" in text
    assert cases == []
    with pytest.raises(DataError, match="3 problem"):
        open_folder(root, check_arrays=True)


# ---------------------------------------------------------------------------- commands
def test_check_data_and_show_case_take_every_layout(folders, tmp_path, capsys):
    for layout, path in folders.items():
        assert main(["check-data", str(path)]) == 0
        assert f"{layout} layout" in capsys.readouterr().out
    assert main(["show-case", str(folders["acdc"]), "patient002_ES", "--out", str(tmp_path / "c.png")]) == 0
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    # forcing the wrong layout finds nothing usable; a wrong label map names the mask values
    assert main(["check-data", str(folders["acdc"]), "--layout", "manifest"]) == 3
    assert "no manifest.csv found" in capsys.readouterr().out
    assert main(["check-data", str(folders["acdc"]), "--set", "data.label_map={lv_cavity: 1, myocardium: 2}"]) == 3
    assert "unknown label(s) [3]" in capsys.readouterr().out
