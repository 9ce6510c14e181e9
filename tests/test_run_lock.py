"""One run folder, one writer (issue 24, item 3): real processes contend for ``RUN/.lock``.

Without the lock a second ``attri-ssc train --out RUN --resume`` started while the first
trained, "finished" the first one's checkpoint save in progress and died with
``FileNotFoundError ... last.pending.json -> last.json`` (the issue's report); here it
refuses at once with exit 6 naming the holder's pid, as do ``evaluate`` and the commands
writing into the run. A ``kill -9`` of the holder releases the lock (the OS drops it), so
the stale ``.lock`` file left behind never blocks the resume.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from attri_ssc.errors import RunLockedError
from attri_ssc.run_lock import LOCK_NAME, lock_if_inside, run_lock

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
TIMEOUT = 300

HOLDER = """
import sys, time
from attri_ssc.run_lock import run_lock
with run_lock(sys.argv[1], command="holder for the test"):
    print("locked", flush=True)
    time.sleep(600)
"""


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "attri_ssc", *args], env=ENV, capture_output=True, text=True,
                          timeout=TIMEOUT)


def _holder(run: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(run)], env=ENV, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def _kill9(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=TIMEOUT)
    if proc.stdout:
        proc.stdout.close()


@pytest.mark.slow
def test_a_second_writer_refuses_while_training_and_a_kill_9_never_blocks_the_resume(phantom_dir, tmp_path):
    run, cache = tmp_path / "run", tmp_path / "cache"
    steps = [f"stages.{i}.steps=400" for i in range(3)]
    train = ["train", "--data", str(phantom_dir), "--config", "smoke", "--out", str(run), "--no-progress"]
    sets = [x for item in [f"data.cache_dir={cache}", "train.checkpoint_every=1", "train.num_threads=1", *steps]
            for x in ("--set", item)]
    first = subprocess.Popen([sys.executable, "-m", "attri_ssc", *train, *sets], env=ENV,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + TIMEOUT
        while not (run / "checkpoints" / "last.json").exists():
            assert first.poll() is None, first.stderr.read()[-3000:]
            assert time.monotonic() < deadline
            time.sleep(0.05)
        record = json.loads((run / LOCK_NAME).read_text())
        assert record["pid"] == first.pid and "train" in record["command"]

        started = time.monotonic()
        second = _cli("train", "--data", str(phantom_dir), "--out", str(run), "--resume", "--no-progress")
        assert second.returncode == 6, second.stderr[-3000:]
        assert "Traceback" not in second.stderr
        assert f"is in use by pid {first.pid} (attri-ssc train" in second.stderr, second.stderr
        evaluate = _cli("evaluate", str(run))
        assert evaluate.returncode == 6 and f"pid {first.pid}" in evaluate.stderr, evaluate.stderr
        assert first.poll() is None, "the holder must still be training"
        assert time.monotonic() - started < TIMEOUT
        # A reader writing elsewhere is never blocked.
        with lock_if_inside(run, tmp_path / "figures" / "edit.png"):
            pass
    finally:
        if first.poll() is None:
            first.send_signal(signal.SIGKILL)
        first.wait(timeout=TIMEOUT)
        first.stderr.close()
    assert first.returncode == -signal.SIGKILL
    assert (run / LOCK_NAME).exists()  # stale: the killed holder's record is still in it
    position = json.loads((run / "checkpoints" / "last.json").read_text())["meta"]["position"]
    stop = position["global_step"] + 2  # two more steps show the resume works; the run has 1200
    resumed = _cli("train", "--data", str(phantom_dir), "--out", str(run), "--resume", "--no-progress",
                   "--set", f"train.stop_after={stop}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"stopped at global step {stop}" in resumed.stdout
    assert not (run / LOCK_NAME).exists()  # a normal exit removes the file


def test_the_holder_is_named_and_a_kill_9_releases_at_once(tmp_path):
    run = tmp_path / "run"
    holder = _holder(run)
    try:
        with pytest.raises(RunLockedError, match=f"in use by pid {holder.pid} \\(holder for the test, since "):
            with run_lock(run):
                pass
    finally:
        _kill9(holder)
    with run_lock(run, command="after the kill"):
        assert json.loads((run / LOCK_NAME).read_text())["command"] == "after the kill"


def test_the_lock_is_reentrant_within_a_process(tmp_path):
    """``interpret-all`` runs ``verify-edits`` in-process on the same run."""
    run = tmp_path / "run"
    with run_lock(run):
        with run_lock(run):
            with lock_if_inside(run, run / "figures"):
                pass
        assert (run / LOCK_NAME).exists()
    assert not (run / LOCK_NAME).exists()


def test_other_torchrun_ranks_do_not_contend(tmp_path, monkeypatch):
    run = tmp_path / "run"
    holder = _holder(run)
    try:
        monkeypatch.setenv("RANK", "1")
        with run_lock(run):  # rank 1 of the job whose rank 0 holds the lock
            pass
        monkeypatch.setenv("RANK", "0")
        with pytest.raises(RunLockedError):
            with run_lock(run):
                pass
    finally:
        _kill9(holder)


def test_a_stale_lock_file_does_not_make_the_run_folder_non_empty(tmp_path):
    from attri_ssc.training.trainer import prepare_run_dir

    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_NAME).write_text(json.dumps({"pid": 999999, "command": "killed long ago"}))
    with run_lock(run):
        prepare_run_dir(run, resume=False, force=False)


def test_a_command_writing_elsewhere_takes_no_lock(tmp_path):
    run = tmp_path / "run"
    holder = _holder(run)
    try:
        with lock_if_inside(run, tmp_path / "elsewhere"):
            pass
        with pytest.raises(RunLockedError):
            with lock_if_inside(run, run / "figures"):
                pass
    finally:
        _kill9(holder)
