"""`make demo`'s scheduler (scripts/demo.py): a step that waits for a file another step writes."""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _demo():
    spec = importlib.util.spec_from_file_location("demo_script", ROOT / "scripts" / "demo.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


PROGRAM = (sys.executable, "-c")


def _producer(marker: Path, done: Path, linger: float) -> str:
    """Python that writes ``marker``, lingers, then records its end time in ``done``."""
    return (f"import time, pathlib; time.sleep(0.3); pathlib.Path({str(marker)!r}).write_text('x'); "
            f"time.sleep({linger}); pathlib.Path({str(done)!r}).write_text(repr(time.time()))")


def _consumer(started: Path) -> str:
    return f"import time, pathlib; pathlib.Path({str(started)!r}).write_text(repr(time.time()))"


def test_a_step_starts_when_the_file_it_waits_for_appears_before_its_producer_ends(tmp_path):
    demo = _demo()
    marker, done, started = tmp_path / "stage2.json", tmp_path / "done", tmp_path / "started"
    marker.write_text("from an earlier demo")
    os.utime(marker, (time.time() - 3600, time.time() - 3600))  # older than this demo: must not count
    steps = [demo.Step("train", [_producer(marker, done, 3.0)]),
             demo.Step("ablation", [_consumer(started)], waits_for=("train", marker))]
    timings = demo.run_steps(steps, 2, False, tmp_path / "logs", program=PROGRAM)
    assert set(timings) == {"train", "ablation"}
    # the ablation ran beside the producer: it started after the new file, before the producer ended
    assert marker.stat().st_mtime <= float(started.read_text()) < float(done.read_text())


def test_one_job_still_runs_a_waiting_step_after_its_producer(tmp_path):
    demo = _demo()
    marker, done, started = tmp_path / "stage2.json", tmp_path / "done", tmp_path / "started"
    steps = [demo.Step("train", [_producer(marker, done, 0.1)]),
             demo.Step("ablation", [_consumer(started)], waits_for=("train", marker))]
    demo.run_steps(steps, 1, False, tmp_path / "logs", program=PROGRAM)
    assert float(started.read_text()) >= float(done.read_text())


def test_a_producer_that_ends_without_the_file_is_an_error_not_a_hang(tmp_path):
    demo = _demo()
    steps = [demo.Step("train", ["pass"]),
             demo.Step("ablation", ["pass"], waits_for=("train", tmp_path / "never.json"))]
    with pytest.raises(ValueError, match="finished without writing"):
        demo.run_steps(steps, 2, False, tmp_path / "logs", program=PROGRAM)


def test_the_demo_starts_the_ablation_from_the_stage2_checkpoint_file(tmp_path):
    import argparse

    demo = _demo()
    args = argparse.Namespace(quick=True, no_weights=True, cases=30)
    steps = {s.name: s for s in demo.demo_steps(args, tmp_path)}
    ablation = steps["train attri_ssc_one_to_one"]
    producer, path = ablation.waits_for
    assert producer == "train attri_ssc" and ablation.after == ()
    init = Path(ablation.command[ablation.command.index("--init-from") + 1])
    assert path == init.with_suffix(".json") and init.name == "after_stage2"
