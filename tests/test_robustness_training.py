"""Robustness of training and checkpoints, exercised as a user meets it: the real
``attri-ssc`` command in a subprocess, on real files (issue 8).

* a ``kill -9`` at a random moment, or at the worst moment of a checkpoint save, then
  ``--resume``: the final weights equal an uninterrupted run's bit for bit, and the last
  complete checkpoint is never damaged;
* a truncated, altered or pickled checkpoint is refused (exit 5) with a clear message, and
  nothing is ever unpickled;
* a real divergence (a huge learning rate) stops with exit 4 naming the stage, step and
  loss terms and keeps the last good checkpoint; ``train.skip_nonfinite=true`` skips and
  logs instead;
* preflight errors (unwritable or non-empty run folder, invalid config values) exit with
  the documented code before any data is read or any file written;
* one subprocess test per documented exit code (0, 2, 3, 4, 5, 130).

Most checks call ``attri_ssc.cli.main`` in this process (the same code path, without
seconds of interpreter start-up each); the kill tests and the exit-code tests use
subprocesses. Tests that train in a subprocess more than once are marked slow.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from attri_ssc.checkpoint import load_checkpoint, sha256_file
from attri_ssc.cli import main

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
CLI_TIMEOUT = 300
# For the kill tests: the smoke preset stretched to 3 x 16 steps with a checkpoint every
# 2 steps, so that a kill lands mid-run and mid-stage. Other tests use the plain smoke
# preset (3 x 6 steps) with a checkpoint every 2 steps.
STEPS = 16
LONG = [f"stages.{i}.steps={STEPS}" for i in range(3)]
COMMON = ["train.checkpoint_every=2", "train.log_every=1", "train.num_threads=1"]


# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory) -> Path:
    from attri_ssc.data.phantoms import generate_phantoms

    root = tmp_path_factory.mktemp("robust-phantoms")
    generate_phantoms(root, n_cases=4, seed=5)
    return root


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("robust-cache")


def _cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "attri_ssc", *args]


def _cli(*args: str) -> subprocess.CompletedProcess:
    """``attri-ssc ARGS`` in a subprocess."""
    return subprocess.run(_cmd(*args), env=ENV, capture_output=True, text=True, timeout=CLI_TIMEOUT)


def _main(capsys, *args: str) -> SimpleNamespace:
    """``attri-ssc ARGS`` in this process (faster): like :func:`_cli`'s result."""
    capsys.readouterr()
    try:
        code = main(list(args))
    except SystemExit as exc:  # argparse usage errors
        code = exc.code
    out = capsys.readouterr()
    return SimpleNamespace(returncode=code, stdout=out.out, stderr=out.err)


def _train_args(data: Path, out: Path, cache: Path, *overrides: str, long: bool = False) -> list[str]:
    args = ["train", "--data", str(data), "--config", "smoke", "--out", str(out), "--no-progress",
            "--set", f"data.cache_dir={cache}"]
    for item in (*COMMON, *(LONG if long else ()), *overrides):
        args += ["--set", item]
    return args


def _one_line_error(proc: subprocess.CompletedProcess, code: int) -> str:
    """The process exited with ``code`` and one ``attri-ssc ...: error:`` line, no traceback."""
    assert proc.returncode == code, (proc.returncode, proc.stdout[-2000:], proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1, proc.stderr[-3000:]
    return errors[0]


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = load_file(str(a)), load_file(str(b))
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not different, different[:10]


def _assert_checkpoint_intact(run: Path) -> dict:
    """``RUN/checkpoints/last`` is complete: its digest matches and every tensor is finite."""
    tensors, meta = load_checkpoint(run / "checkpoints" / "last")  # verifies the sha256
    assert meta["kind"] == "training_state"
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    assert not bad, bad[:10]
    return meta


@pytest.fixture(scope="module")
def reference(phantoms, cache, tmp_path_factory) -> Path:
    """An uninterrupted subprocess run of the stretched smoke config (for the kill tests)."""
    run = tmp_path_factory.mktemp("robust-ref") / "run"
    proc = _cli(*_train_args(phantoms, run, cache, long=True))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run


@pytest.fixture(scope="module")
def finished(phantoms, cache, tmp_path_factory) -> Path:
    """A finished smoke run (model + checkpoint), read-only: copy it before damaging it."""
    run = tmp_path_factory.mktemp("robust-finished") / "run"
    assert main(_train_args(phantoms, run, cache)) == 0
    return run


def _finish_by_resuming(run: Path, data: Path, reference: Path) -> None:
    proc = _cli("train", "--data", str(data), "--out", str(run), "--resume", "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    _assert_same_weights(run / "model.safetensors", reference / "model.safetensors")
    # The log is that of one uninterrupted run: records after the checkpoint were dropped
    # on resume and written again with identical values.
    assert _records(run) == _records(reference)


# --------------------------------------------------------------------------- 1. kill -9 and resume


@pytest.mark.slow
def test_kill_9_at_a_random_step_then_resume_matches_uninterrupted_run(phantoms, cache, reference, tmp_path):
    run = tmp_path / "run"
    target = random.Random().randrange(4, 3 * STEPS - 4)  # random on purpose; printed on failure
    proc = subprocess.Popen(_cmd(*_train_args(phantoms, run, cache, long=True)), env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen = 0
    try:
        while proc.poll() is None and seen < target:
            try:
                steps = [r["global_step"] for r in _records(run) if r["kind"] == "step"]
            except (FileNotFoundError, json.JSONDecodeError):
                steps = []
            seen = max(steps, default=0)
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=CLI_TIMEOUT)
        stderr = proc.stderr.read()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL, f"target step {target}: the run ended before the kill\n{stderr}"
    meta = _assert_checkpoint_intact(run)
    assert 2 <= meta["position"]["global_step"] <= 3 * STEPS, (target, meta["position"])
    _finish_by_resuming(run, phantoms, reference)


# The moments of a checkpoint save where a crash hurts most, injected as a real SIGKILL
# of the training process from inside (os.replace is wrapped): (before or after the
# rename, regex of the renamed file's new name, whether the source is a temp file, which
# save: saves happen at global steps 2, 4, ..., 14, 16 (end of Stage I), 18, ...).
# Each pattern matches one rename per save.
WEIGHTS_TMP = ("before", r"^last(\.pending)?\.safetensors$", True)
KILL_AT = {
    "weights-written-not-renamed": (*WEIGHTS_TMP, 3),
    "weights-renamed-metadata-not-yet": ("after", r"^last\.safetensors$", False, 3),
    "metadata-rename": ("before", r"^last\.json$", False, 3),
    "next-stage-started": (*WEIGHTS_TMP, 9),  # Stage II began after the stage-end checkpoint
}
# The checkpoint a resume then starts from: the old one while the new one is incomplete,
# the new one once it was completely written.
RESUMES_FROM = {"weights-written-not-renamed": 4, "weights-renamed-metadata-not-yet": 6, "metadata-rename": 6,
                "next-stage-started": 16}
INJECT = r"""
import os, re, signal, sys
from pathlib import Path
when, pattern, from_tmp, nth = sys.argv[1], sys.argv[2], sys.argv[3] == "True", int(sys.argv[4])
real_replace, count = os.replace, [0]
def replace(src, dst, *a, **k):
    dst_path = Path(dst)
    hit = (dst_path.parent.name == "checkpoints" and re.match(pattern, dst_path.name) is not None
           and (not from_tmp or str(src).endswith(".tmp")))
    if hit:
        count[0] += 1
    if hit and count[0] == nth and when == "before":
        os.kill(os.getpid(), signal.SIGKILL)
    real_replace(src, dst, *a, **k)
    if hit and count[0] == nth and when == "after":
        os.kill(os.getpid(), signal.SIGKILL)
os.replace = replace
from attri_ssc.cli import main
sys.exit(main(sys.argv[5:]))
"""


@pytest.mark.slow
@pytest.mark.parametrize("moment", sorted(KILL_AT))
def test_kill_9_during_a_checkpoint_save_never_loses_the_run(phantoms, cache, reference, tmp_path, moment):
    run = tmp_path / "run"
    when, pattern, from_tmp, nth = KILL_AT[moment]
    proc = subprocess.run([sys.executable, "-c", INJECT, when, pattern, str(from_tmp), str(nth),
                           *_train_args(phantoms, run, cache, long=True)],
                          env=ENV, capture_output=True, text=True, timeout=CLI_TIMEOUT)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert _assert_checkpoint_intact(run)["position"]["global_step"] == RESUMES_FROM[moment]
    _finish_by_resuming(run, phantoms, reference)


def test_truncated_or_altered_checkpoint_is_detected_with_exit_5(phantoms, finished, tmp_path, capsys):
    weights = finished / "checkpoints" / "last.safetensors"
    cases = {
        "truncated": lambda raw: raw[: len(raw) // 2],
        "altered": lambda raw: raw[:-100] + bytes([raw[-100] ^ 0x01]) + raw[-99:],
    }
    for name, damage in cases.items():
        run = tmp_path / name
        shutil.copytree(finished, run)
        target = run / "checkpoints" / "last.safetensors"
        target.write_bytes(damage(weights.read_bytes()))
        line = _one_line_error(_main(capsys, "train", "--data", str(phantoms), "--out", str(run), "--resume"), 5)
        assert "checksum mismatch" in line and str(target) in line and "truncated or modified" in line, line
    # Unparsable metadata: also exit 5, naming the file.
    run = tmp_path / "bad-json"
    shutil.copytree(finished, run)
    (run / "checkpoints" / "last.json").write_text('{"format_version": 1, "sha256": ')
    line = _one_line_error(_main(capsys, "train", "--data", str(phantoms), "--out", str(run), "--resume"), 5)
    assert "cannot parse checkpoint metadata" in line and "last.json" in line, line
    # The finished model is checked the same way when it is loaded for evaluation.
    run = tmp_path / "bad-model"
    shutil.copytree(finished, run)
    model = run / "model.safetensors"
    model.write_bytes(model.read_bytes()[:-1])
    line = _one_line_error(_main(capsys, "evaluate", str(run), "--no-progress"), 5)
    assert "checksum mismatch" in line and str(model) in line, line


# --------------------------------------------------------------------------- 2. non-finite loss


def test_divergence_stops_with_exit_4_naming_stage_step_and_term_and_keeps_the_checkpoint(
        phantoms, cache, tmp_path, capsys):
    run = tmp_path / "run"
    # A learning rate of 1e30 in Stage II: one Adam step makes the weights ~1e30, and the
    # next forward pass overflows. (YAML 1.1 reads "1e30" as a string; --set accepts it.)
    line = _one_line_error(_main(capsys, *_train_args(phantoms, run, cache, "stages.1.lr=1e30")), 4)
    match = re.search(r"non-finite (?P<terms>[a-z_, ]+) at stage 'stage2' step 2 of 6 \(global step 8\)", line)
    assert match and "recon" in match["terms"].split(", "), line
    assert f"the last good checkpoint is {run / 'checkpoints' / 'last.safetensors'}" in line, line
    assert "--resume" in line and "train.skip_nonfinite=true" in line, line
    # The last good checkpoint is intact and predates the failing step; no final model.
    meta = _assert_checkpoint_intact(run)
    assert meta["position"] == {"stage": 1, "step_in_stage": 0, "global_step": 6}
    assert not (run / "model.safetensors").exists()
    steps = [r for r in _records(run) if r["kind"] == "step"]
    assert steps[-1]["global_step"] == 7 and all(torch.isfinite(torch.tensor(r["total"])) for r in steps)
    # The run is not lost: resume from the good checkpoint with a sane learning rate.
    proc = _main(capsys, "train", "--data", str(phantoms), "--out", str(run), "--resume", "--no-progress",
                 "--set", "stages.1.lr=4.0e-4")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run / "model.safetensors").exists()


def test_skip_nonfinite_skips_and_logs_the_bad_batches(phantoms, cache, tmp_path, capsys):
    run = tmp_path / "run"
    proc = _main(capsys, *_train_args(phantoms, run, cache, "stages.2.lr=1e30", "train.skip_nonfinite=true"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    skipped = [r for r in _records(run) if r["kind"] == "skipped_batch"]
    # Stage III's first step is finite (and throws the weights to ~1e30); every later
    # batch of the stage is non-finite and skipped.
    assert [(r["step"], r["global_step"]) for r in skipped] == [(s, 12 + s) for s in range(2, 7)]
    assert all(r["stage"] == "stage3" and "recon" in r["nonfinite"] for r in skipped)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["skipped_batches"] == len(skipped)
    assert f"{len(skipped)} batch(es) with a non-finite loss or gradient were skipped" in proc.stderr


# --------------------------------------------------------------------------- 3. loading never unpickles


class _Tripwire:
    """Unpickling this creates the folder ``path``: proof that something unpickled."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def _plant_pickle(weights: Path, marker: Path) -> None:
    """Replace ``weights`` by a torch/pickle file and make its JSON digest match it."""
    torch.save({"model.mapper.weight": torch.zeros(2, 2), "payload": _Tripwire(str(marker))}, weights)
    sidecar = weights.with_suffix(".json")
    record = json.loads(sidecar.read_text())
    record["sha256"] = sha256_file(weights)
    sidecar.write_text(json.dumps(record))


def test_a_pickle_in_place_of_a_checkpoint_is_refused_without_unpickling(phantoms, finished, tmp_path, capsys):
    sanity = tmp_path / "sanity"  # the tripwire does fire when something unpickles it
    pickle.loads(pickle.dumps(_Tripwire(str(sanity))))
    assert sanity.is_dir()
    marker = tmp_path / "unpickled"
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    _plant_pickle(run / "model.safetensors", marker)
    line = _one_line_error(_main(capsys, "evaluate", str(run), "--no-progress"), 5)
    assert "cannot read checkpoint weights" in line and "model.safetensors" in line, line
    _plant_pickle(run / "checkpoints" / "last.safetensors", marker)
    line = _one_line_error(_main(capsys, "train", "--data", str(phantoms), "--out", str(run), "--resume"), 5)
    assert "cannot read checkpoint weights" in line and "last.safetensors" in line, line
    assert not marker.exists()


def test_a_checkpoint_whose_config_does_not_match_names_the_keys(phantoms, finished, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    # The JSON's config claims K = 8 atoms; the weights have K = 16 (the digest covers
    # the weights only, so the edit itself is not a checksum error).
    sidecar = run / "model.json"
    record = json.loads(sidecar.read_text())
    assert record["meta"]["config"]["model"]["n_atoms"] == 16
    record["meta"]["config"]["model"]["n_atoms"] = 8
    sidecar.write_text(json.dumps(record))
    line = _one_line_error(_main(capsys, "evaluate", str(run), "--no-progress"), 5)
    assert "does not match" in line and "mis-shaped keys" in line, line
    assert "dictionary.weight: checkpoint (8, 16) vs model (8, 8)" in line, line
    # An invalid saved config is a checkpoint problem too (exit 5, not a usage error).
    record["meta"]["config"]["model"]["n_atoms"] = 1  # invalid (GroupNorm needs a multiple of 4)
    sidecar.write_text(json.dumps(record))
    line = _one_line_error(_main(capsys, "evaluate", str(run), "--no-progress"), 5)
    assert f"{sidecar}: invalid config: model: n_atoms must be divisible" in line, line
    # Resuming with different model settings names the differing keys.
    line = _one_line_error(_main(capsys, "train", "--data", str(phantoms), "--out", str(run), "--resume",
                                "--set", "model.n_atoms=8", "--set", "train.top_k=2"), 5)
    assert "model settings differ" in line and "n_atoms" in line, line


def test_no_code_path_can_unpickle():
    """Static guard: the package never calls an unpickling loader."""
    pattern = re.compile(r"torch\.load\(|pickle\.loads?\(|allow_pickle\s*=\s*True|weights_only\s*=\s*False")
    src = Path(__file__).resolve().parents[1] / "src" / "attri_ssc"
    hits = [f"{p.relative_to(src)}:{i + 1}" for p in sorted(src.rglob("*.py"))
            for i, line in enumerate(p.read_text(encoding="utf-8").splitlines()) if pattern.search(line)]
    assert not hits, hits


# --------------------------------------------------------------------------- 4. preflight errors


def test_unwritable_run_folder_fails_before_training(phantoms, tmp_path, capsys):
    # A path below a regular file cannot be created, even by root.
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    cache_dir = tmp_path / "cache-untouched"
    line = _one_line_error(_main(capsys, "train", "--data", str(phantoms), "--config", "smoke", "--out",
                                str(blocker / "run"), "--set", f"data.cache_dir={cache_dir}"), 2)
    assert "not writable" in line and str(blocker / "run") in line, line
    assert blocker.read_text() == "not a folder" and not cache_dir.exists()


def test_non_empty_run_folder_needs_resume_or_force(phantoms, finished, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    before = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    cache_dir = tmp_path / "cache-untouched"
    line = _one_line_error(_main(capsys, "train", "--data", str(phantoms), "--config", "smoke", "--out", str(run),
                                "--set", f"data.cache_dir={cache_dir}"), 2)
    assert "is not empty" in line and "--resume" in line and "--force" in line, line
    after = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert after == before and not cache_dir.exists()
    line = _one_line_error(_main(capsys, "train", "--data", str(phantoms), "--out", str(run), "--resume", "--force"), 2)
    assert "exclude each other" in line, line


def test_a_split_too_small_for_the_batch_leaves_the_run_folder_empty(phantoms, cache, tmp_path, capsys):
    run = tmp_path / "run"
    line = _one_line_error(_main(capsys, *_train_args(phantoms, run, cache, "train.batch_size=64")), 2)
    assert "too few for batch_size=64" in line, line
    assert not any(run.iterdir())  # so the corrected command needs no --force
    assert _main(capsys, *_train_args(phantoms, run, cache)).returncode == 0


@pytest.mark.parametrize("overrides, needle", [
    (["stages.1.gamma=-1"], "gamma must be >= 0, got -1"),
    (["train.top_k=17"], "train.top_k=17 exceeds the number of atoms K=16"),
    (["data.attributes=[lv_volume,heart_colour]"], "unknown attribute 'heart_colour'"),
    (["model.preset=enormous"], "unknown model preset 'enormous'"),
    (["train.batch_size=four"], "train.batch_size must be an integer, got 'four'"),
    (["stages.0.steps=2.5"], "stages[0].steps must be an integer, got 2.5"),
    (["stages.0.lr=fast"], "stages[0].lr must be a finite number, got 'fast'"),
    (["stages.1.gamma=.nan"], "stages[1].gamma must be a finite number, got nan"),
    (["train.skip_nonfinite=maybe"], "train.skip_nonfinite must be true or false, got 'maybe'"),
    (["train.seed=1.5"], "train.seed must be an integer, got 1.5"),
])
def test_invalid_config_is_refused_before_any_work(phantoms, tmp_path, capsys, overrides, needle):
    out, cache_dir = tmp_path / "run", tmp_path / "cache"
    args = ["train", "--data", str(phantoms), "--config", "smoke", "--out", str(out),
            "--set", f"data.cache_dir={cache_dir}"]
    for item in overrides:
        args += ["--set", item]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert needle in err and err.startswith("attri-ssc train: error: "), err
    assert not out.exists() and not cache_dir.exists()


def test_unknown_preset_is_refused(phantoms, tmp_path, capsys):
    assert main(["train", "--data", str(phantoms), "--config", "no-such-preset", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "unknown preset 'no-such-preset'" in err and "smoke" in err, err
    assert not (tmp_path / "r").exists()


def test_scientific_notation_without_a_dot_is_a_number(tmp_path):
    """YAML 1.1 reads ``1e-4`` as a string; a config must still mean the number."""
    from attri_ssc.config import load_config

    yaml_file = tmp_path / "cfg.yaml"
    yaml_file.write_text("model: {preset: tiny}\ndata: {spacing_mm: 8.0}\ntrain: {top_k: 2}\n"
                         "stages:\n  - {name: s1, steps: 2, lr: 1e-4}\n")
    cfg = load_config(yaml_file, ["stages.0.gamma=5e-1"])
    assert cfg.stages[0].lr == 1e-4 and cfg.stages[0].gamma == 0.5


# --------------------------------------------------------------------------- 6. exit codes


def test_exit_code_0_ok(phantoms):
    proc = _cli("check-data", str(phantoms))
    assert proc.returncode == 0, proc.stderr
    assert "4 usable case(s); 0 error(s)" in proc.stdout


def test_exit_code_2_usage(tmp_path):
    proc = _cli("train", "--out", str(tmp_path / "r"))  # --data missing: an argparse usage error
    assert proc.returncode == 2 and "the following arguments are required: --data" in proc.stderr, proc.stderr
    assert not (tmp_path / "r").exists()


def test_exit_code_2_config(phantoms, tmp_path, capsys):
    line = _one_line_error(_main(capsys, "train", "--data", str(phantoms), "--config", "smoke", "--out",
                                 str(tmp_path / "r"), "--set", "stages.0.lr=0"), 2)
    assert "stage 'stage1': lr must be > 0, got 0" in line, line
    proc = _main(capsys, "no-such-command")
    assert proc.returncode == 2 and "invalid choice: 'no-such-command'" in proc.stderr


def test_exit_code_3_data(phantoms, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(phantoms, data)
    (data / "Case P002.txt").unlink()
    # --strict: by default train skips the unusable case with a warning (tests/test_faults.py).
    proc = _cli("train", "--data", str(data), "--config", "smoke", "--out", str(tmp_path / "r"), "--no-progress",
                "--strict")
    line = _one_line_error(proc, 3)
    assert "1 problem(s) in the data" in line and f"{data / 'Case P002.txt'}: missing clinical file" in proc.stderr
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_exit_code_4_numerical_even_before_any_checkpoint(phantoms, cache, tmp_path):
    run = tmp_path / "run"
    line = _one_line_error(_cli(*_train_args(phantoms, run, cache, "stages.0.lr=1e30")), 4)
    assert "non-finite" in line and "at stage 'stage1' step 2 of 6 (global step 2)" in line, line
    assert "no checkpoint was written yet" in line and "last.safetensors" not in line, line
    assert not (run / "checkpoints" / "last.json").exists()


def test_exit_code_5_checkpoint(phantoms, tmp_path):
    line = _one_line_error(_cli("train", "--data", str(phantoms), "--out", str(tmp_path / "none"), "--resume"), 5)
    assert f"{tmp_path / 'none' / 'checkpoints' / 'last.json'} not found" in line, line


@pytest.mark.slow
def test_exit_code_130_on_interrupt_keeps_a_resumable_run(phantoms, cache, reference, tmp_path):
    run = tmp_path / "run"
    # A process started in the background inherits an ignored SIGINT (then Ctrl-C does
    # nothing); give the child the default disposition, as a terminal would.
    proc = subprocess.Popen(_cmd(*_train_args(phantoms, run, cache, long=True)), env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        while proc.poll() is None and not (run / "checkpoints" / "last.json").exists():
            time.sleep(0.005)
        assert proc.poll() is None, "the run ended before the interrupt"
        proc.send_signal(signal.SIGINT)
    finally:
        proc.wait(timeout=CLI_TIMEOUT)
        stderr = proc.stderr.read()
        proc.stderr.close()
    assert proc.returncode == 130, stderr[-3000:]
    assert "interrupted" in stderr and "Traceback" not in stderr, stderr[-3000:]
    _assert_checkpoint_intact(run)
    _finish_by_resuming(run, phantoms, reference)
