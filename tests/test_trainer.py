"""The curriculum trainer end to end on tiny phantoms: stages, resumption, freezing."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from attri_ssc.config import load_config
from attri_ssc.training.trainer import train


@pytest.fixture(scope="module")
def phantom_dir(tmp_path_factory) -> Path:
    from attri_ssc.data.phantoms import generate_phantoms

    root = tmp_path_factory.mktemp("phantoms")
    generate_phantoms(root, n_cases=10, seed=3)
    return root


def _cfg(tmp_path, *extra):
    return load_config("smoke", [f"data.cache_dir={tmp_path / 'cache'}", "train.num_threads=1", *extra])


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model.safetensors"))


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_smoke_run_goes_through_three_stages(phantom_dir, tmp_path):
    run = tmp_path / "run"
    result = train(_cfg(tmp_path), phantom_dir, run, progress=False)
    assert result.completed and result.position.global_step == 18
    for name in ("config.yaml", "model.safetensors", "model.json", "metrics.jsonl", "summary.json",
                 "checkpoints/last.safetensors", "checkpoints/last.json"):
        assert (run / name).exists(), name
    records = _records(run)
    starts = [r for r in records if r["kind"] == "stage_start"]
    assert [r["stage"] for r in starts] == ["stage1", "stage2", "stage3"]
    assert len(starts[2]["support"]["0"]) == 2  # top_k = 2 in the smoke preset
    steps = [r for r in records if r["kind"] == "step"]
    assert all("density" in r and 0.0 <= r["density"] <= 1.0 for r in steps)
    assert {"recon", "latent_fit"} <= set(steps[0])
    assert "ar" in [r for r in steps if r["stage"] == "stage2"][0]
    assert "drift" in [r for r in steps if r["stage"] == "stage3"][-1]
    vals = [r for r in records if r["kind"] == "val"]
    assert len(vals) == 3 and set(vals[-1]["spearman"]) == {"lv_volume", "myo_volume", "wall_thickness",
                                                           "infarct_volume"}


def test_stage3_keeps_entries_outside_the_support_exactly_zero(phantom_dir, tmp_path):
    run = tmp_path / "run"
    train(_cfg(tmp_path), phantom_dir, run, progress=False)
    w = _weights(run)
    weight, support, reference = (w["model.mapper.weight"], w["model.mapper.support"], w["model.mapper.reference"])
    assert torch.all(weight[support == 0] == 0)
    assert torch.all(support.sum(1) == 2)
    # Stage III trained the supported entries (drift from W_stage2 is non-zero but small).
    assert not torch.equal(weight, reference)


def test_interrupted_and_resumed_run_matches_uninterrupted_bit_for_bit(phantom_dir, tmp_path):
    full = tmp_path / "full"
    train(_cfg(tmp_path), phantom_dir, full, progress=False)
    part = tmp_path / "part"
    stopped = train(_cfg(tmp_path, "train.stop_after=9"), phantom_dir, part, progress=False)
    assert not stopped.completed and stopped.position.global_step == 9
    resumed = train(_cfg(tmp_path), phantom_dir, part, resume=True, progress=False)
    assert resumed.completed
    a, b = _weights(full), _weights(part)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_augmented_run_resumes_bit_for_bit_and_differs_from_unaugmented(phantom_dir, tmp_path):
    aug = "train.augment=dihedral"
    full = tmp_path / "full"
    train(_cfg(tmp_path, aug), phantom_dir, full, progress=False)
    part = tmp_path / "part"
    train(_cfg(tmp_path, aug, "train.stop_after=7"), phantom_dir, part, progress=False)
    train(_cfg(tmp_path, aug), phantom_dir, part, resume=True, progress=False)
    plain = tmp_path / "plain"
    train(_cfg(tmp_path, "train.stop_after=7"), phantom_dir, plain, progress=False)
    a, b = _weights(full), _weights(part)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # The option reaches the batches: after 7 steps the weights already differ.
    stopped = load_file(str(plain / "checkpoints" / "last.safetensors"))
    partial = tmp_path / "part7"
    train(_cfg(tmp_path, aug, "train.stop_after=7"), phantom_dir, partial, progress=False)
    augmented = load_file(str(partial / "checkpoints" / "last.safetensors"))
    key = next(k for k in stopped if k.startswith("model.") and stopped[k].is_floating_point())
    assert not torch.equal(stopped[key], augmented[key])


def test_cosine_learning_rate_follows_the_formula_and_resumes_bit_for_bit(phantom_dir, tmp_path):
    import math

    decay = ["stages.0.lr_final=1.0e-4", "stages.1.lr_final=0.0", "train.mapper_lr=2.0e-3"]
    full = tmp_path / "full"
    train(_cfg(tmp_path, *decay), phantom_dir, full, progress=False)
    steps = [r for r in _records(full) if r["kind"] == "step"]
    logged = {(r["stage"], r["step"]): r["lr"] for r in steps}
    mapper = {(r["stage"], r["step"]): r["lr_mapper"] for r in steps if "lr_mapper" in r}
    for stage, lr, final in (("stage1", 1e-3, 1e-4), ("stage2", 4e-4, 0.0)):
        for step in (2, 4, 6):  # the record after step s holds the rate step s used (0-based s - 1)
            scale = (final + (lr - final) * 0.5 * (1 + math.cos(math.pi * (step - 1) / 5))) / lr
            assert logged[(stage, step)] == pytest.approx(lr * scale, rel=1e-12, abs=1e-18)
            if stage == "stage2":  # the mapper's own rate is scaled alike
                assert mapper[(stage, step)] == pytest.approx(2e-3 * scale, rel=1e-12, abs=1e-18)
    assert logged[("stage3", 6)] == pytest.approx(1e-4) and mapper[("stage3", 6)] == pytest.approx(2e-3)
    part = tmp_path / "part"
    train(_cfg(tmp_path, *decay, "train.stop_after=9"), phantom_dir, part, progress=False)
    train(_cfg(tmp_path, *decay), phantom_dir, part, resume=True, progress=False)
    a, b = _weights(full), _weights(part)
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_sparsity_ramp_starts_dense_and_reaches_the_full_term(phantom_dir, tmp_path):
    # Step 1 of a ramp weighs the sparsity term by 0: the same update as sparsity_weight = 0.
    ramped, unweighted = tmp_path / "ramp", tmp_path / "zero"
    train(_cfg(tmp_path, "stages.0.sparsity_ramp=4", "train.stop_after=1", "train.log_every=1"), phantom_dir,
          ramped, progress=False)
    train(_cfg(tmp_path, "model.sparsity_weight=0.0", "train.stop_after=1"), phantom_dir, unweighted, progress=False)
    a = load_file(str(ramped / "checkpoints" / "last.safetensors"))
    b = load_file(str(unweighted / "checkpoints" / "last.safetensors"))
    model_keys = [k for k in a if k.startswith("model.")]
    assert model_keys and all(torch.equal(a[k], b[k]) for k in model_keys)
    plain = tmp_path / "plain"
    train(_cfg(tmp_path, "train.stop_after=1"), phantom_dir, plain, progress=False)
    c = load_file(str(plain / "checkpoints" / "last.safetensors"))
    assert any(not torch.equal(a[k], c[k]) for k in model_keys)  # without the ramp step 1 differs
    # The logged term is the weighted one: 0 at step 1, then growing, unscaled after the ramp.
    full = tmp_path / "full"
    train(_cfg(tmp_path, "stages.0.sparsity_ramp=4", "train.log_every=1"), phantom_dir, full, progress=False)
    terms = {r["step"]: r["latent_sparsity"] for r in _records(full) if r["kind"] == "step" and r["stage"] == "stage1"}
    assert terms[1] == 0.0 and all(terms[s] > 0 for s in range(2, 7))


def test_one_to_one_ablation_binds_each_attribute_to_its_own_atom(phantom_dir, tmp_path):
    run = tmp_path / "run"
    train(_cfg(tmp_path, "train.one_to_one=true"), phantom_dir, run, progress=False)
    support = _weights(run)["model.mapper.support"]
    assert torch.all(support.sum(1) == 1) and torch.all(support.sum(0) <= 1)


@pytest.mark.slow
def test_two_process_torchrun_completes_with_identical_weights(phantom_dir, tmp_path):
    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "attri_ssc", "train", "--data", str(phantom_dir), "--config", "smoke", "--out", str(run),
           "--no-progress", "--set", f"data.cache_dir={tmp_path / 'cache'}", "--set", "train.batch_size=2"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 2
    digests = summary["rank_weight_sha256"]
    assert len(digests) == 2 and digests[0] == digests[1]
    # The digest is that of the saved weights.
    from attri_ssc.training.trainer import weights_digest
    from attri_ssc.runs import load_run

    assert weights_digest(load_run(run).model) == digests[0]


def test_init_from_a_stage_boundary_shares_earlier_stages(phantom_dir, tmp_path):
    base = tmp_path / "base"
    train(_cfg(tmp_path), phantom_dir, base, progress=False)
    assert (base / "checkpoints" / "after_stage2.json").exists()
    fork = tmp_path / "fork"
    result = train(_cfg(tmp_path, "train.one_to_one=true"), phantom_dir, fork, progress=False,
                   init_from=base / "checkpoints" / "after_stage2")
    assert result.completed and result.position.global_step == 18
    stage_starts = [r["stage"] for r in _records(fork) if r["kind"] == "stage_start"]
    assert stage_starts == ["stage3"]
    w_base, w_fork = _weights(base), _weights(fork)
    assert torch.all(w_fork["model.mapper.support"].sum(1) == 1)
    # Stage III started from the same Stage II weights: the reference W is the same up to the support.
    ref_fork = w_fork["model.mapper.reference"]
    assert torch.equal(ref_fork[ref_fork != 0], w_base["model.mapper.reference"][ref_fork != 0])


def test_usage_agreement_support_matches_an_independent_computation(phantom_dir, tmp_path):
    from attri_ssc.checkpoint import load_checkpoint
    from attri_ssc.data.datasets import build_datasets
    from attri_ssc.models.mapper import atom_usage, select_support, usage_agreement
    from attri_ssc.training.families import FAMILIES
    from attri_ssc.training.state import load_model_tensors

    cfg = _cfg(tmp_path, "train.support_rank=usage_agreement")
    run = tmp_path / "run"
    train(cfg, phantom_dir, run, progress=False)
    # Recompute the Stage III support from the Stage II checkpoint with plain tensor code.
    tensors, meta = load_checkpoint(run / "checkpoints" / "after_stage2")
    model = FAMILIES["attri_ssc"].build(cfg, len(meta["attribute_names"]))
    load_model_tensors(model, tensors)
    model.eval()
    bundle = build_datasets(phantom_dir, cfg.data, split=meta["split"])
    with torch.no_grad():
        usage = atom_usage(model.backbone(bundle.train.images).codes)
    score = usage_agreement(model.mapper.weight, usage, bundle.train.attributes)
    expected = select_support(model.mapper.weight, cfg.train.top_k, score=score)
    # on this data the two rankings differ, so the check below tells them apart
    assert not torch.equal(expected, select_support(model.mapper.weight, cfg.train.top_k))
    support = _weights(run)["model.mapper.support"]
    assert torch.equal(support, expected)
    # every kept atom's raw usage rises with its attribute in W's direction, where any can
    w = model.mapper.weight.detach()
    full = [m for m in range(w.shape[0]) if int((score[m] > 0).sum()) >= cfg.train.top_k]
    assert full  # at least one attribute has k atoms that agree
    for m in full:
        assert torch.all(score[m, torch.nonzero(support[m]).flatten()] > 0)


def test_exclusive_support_shares_no_atom_after_stage3(phantom_dir, tmp_path):
    run = tmp_path / "run"
    cfg = _cfg(tmp_path, "train.exclusive_support=true", "train.top_k=3")  # 4 attributes x 3 <= K = 16
    train(cfg, phantom_dir, run, progress=False)
    support = _weights(run)["model.mapper.support"]
    assert support.sum(1).tolist() == [3.0] * support.shape[0]
    assert support.sum(0).max() == 1.0
    # the plain top-3 of the same Stage II weights would share an atom, so the option did something
    from attri_ssc.models.mapper import select_support

    w2 = load_file(str(run / "checkpoints" / "after_stage2.safetensors"))["model.mapper.weight"]
    assert select_support(w2, 3).sum(0).max() > 1


def test_the_split_follows_data_split_seed_not_train_seed(phantom_dir, tmp_path):
    """Replicates that differ in train.seed share their patient split (data.split_seed draws it)."""
    from attri_ssc.data.datasets import build_datasets

    short = ["stages.0.steps=1", "stages.1.steps=1", "stages.2.steps=1"]
    train(_cfg(tmp_path, "train.seed=1", *short), phantom_dir, tmp_path / "seed1", progress=False)
    train(_cfg(tmp_path, "data.split_seed=4", *short), phantom_dir, tmp_path / "split4", progress=False)
    saved = {name: json.loads((tmp_path / name / "split.json").read_text()) for name in ("seed1", "split4")}
    cfg = _cfg(tmp_path).data
    assert saved["seed1"] == build_datasets(phantom_dir, cfg).split
    assert build_datasets(phantom_dir, cfg, seed=1).split != saved["seed1"]  # what train.seed used to draw
    assert saved["split4"] == build_datasets(phantom_dir, cfg, seed=4).split != saved["seed1"]


def test_resume_and_fork_keep_the_checkpoints_split(phantom_dir, tmp_path):
    """A run resumed (or forked with --init-from) continues on the split its checkpoint records,
    even one no seed of the current config draws (runs of releases where train.seed drew it)."""
    import json as _json

    from attri_ssc.checkpoint import load_checkpoint
    from attri_ssc.data.datasets import build_datasets

    run = tmp_path / "run"
    train(_cfg(tmp_path, "train.stop_after=8"), phantom_dir, run, progress=False)
    cfg = _cfg(tmp_path).data
    other = build_datasets(phantom_dir, cfg, seed=7).split
    assert other != build_datasets(phantom_dir, cfg).split
    # rewrite the checkpoint's recorded split as an older release would have drawn it
    meta_path = run / "checkpoints" / "last.json"
    record = _json.loads(meta_path.read_text())
    record["meta"]["split"] = other
    meta_path.write_text(_json.dumps(record))
    result = train(_cfg(tmp_path), phantom_dir, run, resume=True, progress=False)
    assert result.completed
    assert _json.loads((run / "split.json").read_text()) == other
    assert load_checkpoint(run / "model")[1]["split"] == other
