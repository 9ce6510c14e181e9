"""Faults of long runs and degenerate data that kill -9 and NaN tests do not reach (issue 24).

* ``train`` skips unusable cases with a warning that lists them (``--strict`` stops with
  exit 3) and records them in ``RUN/skipped_cases.json`` beside ``split.json``;
* a degenerate case never becomes a NaN: a constant image normalises to finite values,
  a mask that cannot be measured makes its case unusable, not the whole folder;
* a full disk (ENOSPC, simulated) during a checkpoint, cache or log write exits 7 with
  one line and leaves no half-written file; the run resumes once there is room;
* a corrupted preprocessing cache entry is detected (digest, shapes) and rebuilt;
* a resume exactly at a stage boundary starts the next stage (its start hook, optimiser
  groups and freezing) and ends bit-for-bit where an uninterrupted run ends.

Each test's docstring says how it fails without the fix.
"""

from __future__ import annotations

import errno
import json
import logging
import shutil
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from attri_ssc.cli import main
from attri_ssc.data.cache import DIGEST_KEY, arrays_digest, content_key
from attri_ssc.data.config import DataConfig
from attri_ssc.data.datasets import build_datasets
from attri_ssc.data.preprocess import PreprocessParams, preprocess_stack

COMMON = ["train.checkpoint_every=2", "train.log_every=1", "train.num_threads=1"]


def _train_args(data: Path, out: Path, cache: Path, *overrides: str) -> list[str]:
    args = ["train", "--data", str(data), "--config", "smoke", "--out", str(out), "--no-progress",
            "--set", f"data.cache_dir={cache}"]
    for item in (*COMMON, *overrides):
        args += ["--set", item]
    return args


def _main(capsys, *args: str) -> SimpleNamespace:
    capsys.readouterr()
    code = main(list(args))
    out = capsys.readouterr()
    return SimpleNamespace(returncode=code, stdout=out.out, stderr=out.err)


def _error_line(result: SimpleNamespace, code: int) -> str:
    assert result.returncode == code, (result.returncode, result.stderr[-3000:])
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert len(lines) == 1, result.stderr[-3000:]
    return lines[0]


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


def _leftovers(folder: Path) -> list[str]:
    """Temporary or pending files: what a half-finished write leaves."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if p.name.endswith(".tmp") or ".pending." in p.name)


@pytest.fixture(scope="module")
def data(phantom_dir, tmp_path_factory) -> Path:
    """The session phantoms without their extras (read-only)."""
    root = tmp_path_factory.mktemp("faults") / "data"
    shutil.copytree(phantom_dir, root, ignore=shutil.ignore_patterns("phantom_*"))
    return root


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("faults-cache")


@pytest.fixture(scope="module")
def reference(data, cache, tmp_path_factory) -> Path:
    """An uninterrupted smoke run (3 x 6 steps) on ``data``."""
    run = tmp_path_factory.mktemp("faults-ref") / "run"
    assert main(_train_args(data, run, cache)) == 0
    return run


# --------------------------------------------------------------------------- unusable cases in train


@pytest.fixture(scope="module")
def data_with_bad_cases(data, tmp_path_factory) -> Path:
    """``data`` plus P901 (constant image) and P902 (no LV cavity): well-formed, unusable."""
    root = tmp_path_factory.mktemp("faults-bad") / "data"
    shutil.copytree(data, root)
    for cid in ("P901", "P902"):
        shutil.copytree(data / "Case_P001", root / f"Case_{cid}")
        for kind in ("Images", "Contours"):
            (root / f"Case_{cid}" / kind / "Case_P001.nii.gz").rename(root / f"Case_{cid}" / kind / f"Case_{cid}.nii.gz")
        shutil.copy(data / "Case P001.txt", root / f"Case {cid}.txt")
    image = root / "Case_P901" / "Images" / "Case_P901.nii.gz"
    old = nib.load(image)
    nib.save(nib.Nifti1Image(np.full(old.shape, 250.0, np.float32), old.affine, old.header), image)
    mask_path = root / "Case_P902" / "Contours" / "Case_P902.nii.gz"
    old = nib.load(mask_path)
    mask = np.asarray(old.dataobj).copy()
    mask[mask == 1] = 0
    nib.save(nib.Nifti1Image(mask, old.affine, old.header), mask_path)
    return root


def test_train_skips_unusable_cases_lists_them_and_records_them_beside_the_split(
        data_with_bad_cases, cache, reference, tmp_path, capsys):
    """Without the fix ``train`` either trained on both cases silently (the content checks
    did not exist) or, for a parse error, stopped with exit 3; no skipped_cases.json."""
    run = tmp_path / "run"
    result = _main(capsys, *_train_args(data_with_bad_cases, run, cache))
    assert result.returncode == 0, result.stderr[-3000:]
    warning = [line for line in result.stderr.splitlines() if line.startswith("attri-ssc train: warning: ")]
    assert len(warning) == 1 and "2 unusable case(s) were skipped: P901, P902" in warning[0], result.stderr
    assert str(run / "skipped_cases.json") in warning[0]
    record = json.loads((run / "skipped_cases.json").read_text())
    assert set(record["skipped"]) == {"P901", "P902"}
    assert "image is constant (every voxel is 250)" in record["skipped"]["P901"][0]
    assert "mask has no LV cavity (label 1)" in record["skipped"]["P902"][0]
    split = json.loads((run / "split.json").read_text())
    used = {c for ids in split.values() for c in ids}
    assert not used & {"P901", "P902"}
    # The usable cases are exactly the reference's, so the run is the reference run.
    assert split == json.loads((reference / "split.json").read_text())
    a, b = load_file(str(run / "model.safetensors")), load_file(str(reference / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_train_strict_stops_with_exit_3_naming_every_unusable_case(data_with_bad_cases, cache, tmp_path, capsys):
    """Without ``--strict`` (before the fix: no such option) the run would go on."""
    run = tmp_path / "run"
    result = _main(capsys, *_train_args(data_with_bad_cases, run, cache), "--strict")
    line = _error_line(result, 3)
    assert "2 problem(s) in the data" in line, line
    assert "case P901" in result.stderr and "case P902" in result.stderr
    assert not (run / "checkpoints").exists()


def test_a_clean_run_records_that_nothing_was_skipped(reference):
    assert json.loads((reference / "skipped_cases.json").read_text())["skipped"] == {}


# --------------------------------------------------------------------------- no NaN from a degenerate case


@pytest.mark.parametrize("fill", [0.0, 250.0, np.nan])
def test_a_constant_or_empty_image_normalises_to_finite_values(fill):
    """The guard (``span = 1`` when the percentiles coincide) predates issue 24; this pins
    it: 0/0 would otherwise turn a blank series into NaN images."""
    mask = np.zeros((24, 24, 3), np.uint8)
    mask[8:16, 8:16, :] = 2
    mask[10:14, 10:14, :] = 1
    image = np.full(mask.shape, fill, np.float32)
    params = PreprocessParams(spacing_mm=2.0, size=16, percentiles=(1.0, 99.0), center_per_slice=True)
    out = preprocess_stack(image, mask, (1.5, 1.5, 8.0), params)
    assert np.isfinite(out["image"]).all() and (out["image"] == 0).all()


def test_an_unmeasurable_mask_skips_its_case_not_the_folder(data, tmp_path, caplog, monkeypatch):
    """Myocardium filling a slice has no wall thickness (NaN). Without the fix the NaN
    reached ``_make_dataset``, which refused the whole folder even with skip_bad_cases.
    The content check now catches such a mask first; switched off here to reach the guard."""
    from attri_ssc.data import emidec

    root = tmp_path / "data"
    shutil.copytree(data, root)
    path = root / "Case_P002" / "Contours" / "Case_P002.nii.gz"
    old = nib.load(path)
    mask = np.asarray(old.dataobj).copy()
    k = int(np.flatnonzero((mask >= 2).any(axis=(0, 1)))[0])
    mask[:, :, k] = 2
    nib.save(nib.Nifti1Image(mask, old.affine, old.header), path)
    monkeypatch.setattr(emidec, "check_mask_voxels", lambda *a, **k: [])
    cfg = DataConfig(spacing_mm=8.0, field_of_view_mm=128.0, split_fractions=(0.5, 0.25, 0.25),
                     attributes=("lv_area", "myo_area", "wall_thickness"), skip_bad_cases=True)
    with caplog.at_level(logging.WARNING):
        bundle = build_datasets(root, cfg)
    assert "P002" in bundle.skipped and "wall_thickness (slice(s) [" in bundle.skipped["P002"][0]
    assert set(bundle.cases) == {"N001", "N002", "P001", "P003", "P004"}
    for ds in (bundle.train, bundle.val, bundle.test):
        assert torch.isfinite(ds.raw_attributes).all() and torch.isfinite(ds.attributes).all()


# --------------------------------------------------------------------------- a full disk


def _enospc(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_disk_full_during_a_checkpoint_exits_7_leaves_no_partial_file_and_resumes(
        data, cache, reference, tmp_path, capsys, monkeypatch):
    """The second checkpoint's weights write half a file, then the disk is full. Without
    the fix the OSError escaped as a traceback (exit 1); a failed JSON write also left
    ``last.pending.safetensors`` behind."""
    import attri_ssc.checkpoint as ckpt

    real_save = ckpt.save_file
    calls = {"n": 0}

    def save_file(tensors, filename, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            Path(filename).write_bytes(b"\0" * 1000)  # half-written, then no room
            _enospc()
        return real_save(tensors, filename, *args, **kwargs)

    monkeypatch.setattr(ckpt, "save_file", save_file)
    run = tmp_path / "run"
    line = _error_line(_main(capsys, *_train_args(data, run, cache)), 7)
    assert "no space left on the device" in line and "last.pending.safetensors" in line, line
    assert "nothing half-written was left" in line
    assert _leftovers(run) == []
    _, meta = ckpt.load_checkpoint(run / "checkpoints" / "last")  # the first checkpoint, intact
    assert meta["position"]["global_step"] == 2
    monkeypatch.setattr(ckpt, "save_file", real_save)
    assert main(["train", "--data", str(data), "--out", str(run), "--resume", "--no-progress"]) == 0
    a, b = load_file(str(run / "model.safetensors")), load_file(str(reference / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _records(run) == _records(reference)


def test_disk_full_writing_a_checkpoints_json_removes_its_pending_weights(tmp_path, monkeypatch):
    """Without the fix the pending weights stayed (only a TypeError cleaned them up)."""
    import attri_ssc.checkpoint as ckpt
    import attri_ssc.io_utils as io_utils
    from attri_ssc.errors import StorageError

    ckpt.save_checkpoint(tmp_path / "c", {"w": torch.ones(3)}, {"step": 1})
    real = io_utils.atomic_write

    def atomic_write(path, write):
        if str(path).endswith(".pending.json"):
            return real(path, lambda tmp: (tmp.write_text("{"), _enospc()))
        return real(path, write)

    monkeypatch.setattr(ckpt, "write_json", lambda path, obj: atomic_write(path, None))
    with pytest.raises(StorageError, match="no space left"):
        ckpt.save_checkpoint(tmp_path / "c", {"w": torch.zeros(3)}, {"step": 2})
    assert _leftovers(tmp_path) == []
    tensors, meta = ckpt.load_checkpoint(tmp_path / "c")
    assert meta == {"step": 1} and torch.equal(tensors["w"], torch.ones(3))


def test_disk_full_during_a_cache_write_exits_7_and_leaves_no_entry(data, tmp_path, capsys, monkeypatch):
    """Without the fix: a traceback (exit 1)."""
    real = Path.write_bytes

    def write_bytes(self, payload):
        if self.name.endswith(".tmp") and ".npz." in self.name:
            real(self, payload[: len(payload) // 2])
            _enospc()
        return real(self, payload)

    monkeypatch.setattr(Path, "write_bytes", write_bytes)
    cache_dir = tmp_path / "cache"
    line = _error_line(_main(capsys, *_train_args(data, tmp_path / "run", cache_dir)), 7)
    assert "no space left on the device" in line and str(cache_dir) in line, line
    assert list(cache_dir.iterdir()) == []


def test_disk_full_appending_to_the_metrics_log_leaves_whole_lines(tmp_path, monkeypatch):
    """Without the fix half a JSON line stayed in metrics.jsonl, and the next resume
    failed to parse it (a traceback)."""
    import builtins

    from attri_ssc.errors import StorageError
    from attri_ssc.training.trainer import MetricsLog

    log = MetricsLog(tmp_path / "metrics.jsonl", enabled=True)
    log.write({"kind": "step", "global_step": 1})
    real_open = builtins.open

    class HalfWriter:
        def __init__(self, fh):
            self.fh = fh

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

        def tell(self):
            return self.fh.tell()

        def truncate(self, size):
            return self.fh.truncate(size)

        def write(self, data):
            self.fh.write(data[: len(data) // 2])
            self.fh.flush()
            _enospc()

        def flush(self):
            self.fh.flush()

    monkeypatch.setattr(builtins, "open", lambda *a, **k: HalfWriter(real_open(*a, **k)))
    with pytest.raises(StorageError, match="metrics.jsonl"):
        log.write({"kind": "step", "global_step": 2})
    monkeypatch.setattr(builtins, "open", real_open)
    assert _records(tmp_path) == [{"kind": "step", "global_step": 1}]


# --------------------------------------------------------------------------- a corrupted cache entry


def _entry(cache_dir: Path, cid: str) -> Path:
    (entry,) = [p for p in cache_dir.iterdir() if p.name.startswith(f"{cid}-")]
    return entry


def _altered_values(path: Path) -> None:
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["image"] = arrays["image"][::-1].copy()  # plausible, wrong; the old digest is kept
    np.savez(path, **arrays)


def _wrong_shape_with_a_valid_digest(path: Path) -> None:
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files if k != DIGEST_KEY}
    arrays["image"] = arrays["image"][:, :8, :8].copy()
    np.savez(path, **arrays, **{DIGEST_KEY: np.array(arrays_digest(arrays))})


def _truncated(path: Path) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


@pytest.mark.parametrize("damage", [_altered_values, _wrong_shape_with_a_valid_digest, _truncated])
def test_a_corrupted_cache_entry_is_detected_and_rebuilt(data, tmp_path, caplog, damage):
    """Without the fix an altered entry was used as is (its values silently wrong) and an
    entry of the wrong shape crashed or fed wrong images; only a truncated one was rebuilt."""
    cfg = DataConfig(spacing_mm=8.0, field_of_view_mm=128.0, split_fractions=(0.5, 0.25, 0.25),
                     cache_dir=str(tmp_path / "cache"))
    fresh = build_datasets(data, cfg)
    entry = _entry(tmp_path / "cache", "P001")
    good = entry.read_bytes()
    damage(entry)
    assert entry.read_bytes() != good
    with caplog.at_level(logging.WARNING):
        again = build_datasets(data, cfg)
    warnings = [r.getMessage() for r in caplog.records if "corrupt" in r.getMessage()]
    assert len(warnings) == 1 and str(entry) in warnings[0] and "rebuilding it" in warnings[0], warnings
    assert entry.read_bytes() == good  # rebuilt: the same bytes as the first build wrote
    for name in ("train", "val", "test"):
        assert torch.equal(getattr(again, name).images, getattr(fresh, name).images)


def test_the_cache_key_still_follows_the_files(data):
    """A digest inside the entry does not replace the content key: an edited file gives a new key."""
    case = sorted((data / "Case_P001").rglob("*.nii.gz"))
    assert content_key(case, {"a": 1}) != content_key(case[:1], {"a": 1})


# --------------------------------------------------------------------------- resume exactly at a stage boundary


@pytest.mark.parametrize("boundary", [6, 12])
def test_resume_exactly_at_a_stage_boundary_starts_the_next_stage(data, cache, reference, tmp_path, capsys,
                                                                  boundary):
    """``stop_after`` at the last step of stage 1 (6) or 2 (12): the checkpoint is at the
    next stage's step 0 and names it; the resume runs that stage's start hook once (least
    squares W₀, or the support freeze), builds its optimiser groups, and ends bit-for-bit
    where the uninterrupted run does, with the same log. Checked against mutations of the
    trainer (resuming at a boundary as if mid-stage repeats the previous stage's step
    numbering and skips the start hook: the log and weights differ, and the test fails)."""
    run = tmp_path / "run"
    result = _main(capsys, *_train_args(data, run, cache, f"train.stop_after={boundary}"))
    assert result.returncode == 0 and f"stopped at global step {boundary}" in result.stdout, result.stderr
    _, meta = load_checkpoint_meta(run)
    stage = boundary // 6
    assert meta["position"] == {"stage": stage, "step_in_stage": 0, "global_step": boundary}
    assert meta["stage_name"] == f"stage{stage + 1}" and meta["optimizer"] is None
    assert (run / "checkpoints" / f"after_stage{stage}.json").exists()
    assert main(["train", "--data", str(data), "--out", str(run), "--resume", "--no-progress",
                 "--set", "train.stop_after=0"]) == 0
    records = _records(run)
    starts = [r for r in records if r["kind"] == "stage_start"]
    assert [r["stage"] for r in starts] == ["stage1", "stage2", "stage3"]
    if stage == 2:
        assert starts[2]["support"] == [r for r in _records(reference) if r["kind"] == "stage_start"][2]["support"]
    first = [r for r in records if r["kind"] == "step" and r["global_step"] == boundary + 1]
    assert len(first) == 1 and first[0]["stage"] == f"stage{stage + 1}" and first[0]["step"] == 1
    assert records == _records(reference)
    a, b = load_file(str(run / "model.safetensors")), load_file(str(reference / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def load_checkpoint_meta(run: Path):
    from attri_ssc.checkpoint import load_checkpoint

    return load_checkpoint(run / "checkpoints" / "last")


def test_a_resume_whose_stages_changed_is_refused_naming_both(data, cache, tmp_path, capsys):
    """Without the fix the checkpoint's stage index silently meant another stage."""
    run = tmp_path / "run"
    assert _main(capsys, *_train_args(data, run, cache, "train.stop_after=6")).returncode == 0
    line = _error_line(_main(capsys, "train", "--data", str(data), "--out", str(run), "--resume", "--no-progress",
                             "--set", "stages.1.name=warmup"), 5)
    assert "at the start of stage 'stage2' (index 1)" in line and "is 'warmup'" in line, line


def test_a_boundary_checkpoint_lost_between_the_two_saves_is_rewritten_on_resume(data, cache, tmp_path, capsys):
    """A kill between ``last`` and ``after_stage1`` at a boundary left no after_stage1
    (needed by ``--init-from``). Without the fix it stayed missing."""
    run = tmp_path / "run"
    assert _main(capsys, *_train_args(data, run, cache, "train.stop_after=6")).returncode == 0
    after = run / "checkpoints" / "after_stage1"
    expected = load_file(str(after) + ".safetensors")
    for suffix in (".json", ".safetensors"):
        Path(str(after) + suffix).unlink()
    assert main(["train", "--data", str(data), "--out", str(run), "--resume", "--no-progress",
                 "--set", "train.stop_after=8"]) == 0
    restored = load_file(str(after) + ".safetensors")
    assert restored.keys() == expected.keys() and all(torch.equal(restored[k], expected[k]) for k in expected)
