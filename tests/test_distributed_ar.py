"""L_AR over the global batch when training on several processes.

Two gloo processes each hold half of a global batch; with the differentiable gather, the
DDP-averaged gradient must equal the one-process gradient of the same loss on the whole batch.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file
from torch import nn

from attri_ssc.losses import attribute_regularization_loss
from attri_ssc.training.distributed import DistInfo, all_gather_with_grad

GLOBAL_BATCH = 6


def _data() -> tuple[torch.Tensor, torch.Tensor, nn.Linear]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(GLOBAL_BATCH, 5, generator=gen, dtype=torch.float64)
    a = torch.rand(GLOBAL_BATCH, 3, generator=gen, dtype=torch.float64)
    torch.manual_seed(1)
    model = nn.Linear(5, 3).double()
    return x, a, model


def _loss(pred: torch.Tensor, gathered: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(total, AR): a per-sample term (mean over the local batch, as L_SSC) plus γ·AR on ``gathered``."""
    ar = 5.0 * attribute_regularization_loss(*gathered, delta=2.0)
    return pred.square().mean() + ar, ar


def _worker(rank: int, world: int, init_file: str, out_file: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        x, a, model = _data()
        ddp = nn.parallel.DistributedDataParallel(model)
        info = DistInfo(rank, world, rank)
        per = GLOBAL_BATCH // world
        x_local, a_local = x[rank * per:(rank + 1) * per], a[rank * per:(rank + 1) * per]
        pred = ddp(x_local)
        loss, ar = _loss(pred, (all_gather_with_grad(pred, info), all_gather_with_grad(a_local, info)))
        loss.backward()
        if rank == 0:
            save_file({"weight": model.weight.grad, "bias": model.bias.grad, "ar": ar.detach().reshape(1)}, out_file)
        dist.barrier()  # no rank leaves while the other still talks to it (gloo aborts otherwise)
    finally:
        dist.destroy_process_group()


def test_gathered_ar_gradient_equals_the_one_process_gradient(tmp_path):
    out_file = str(tmp_path / "grads.safetensors")
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), out_file), nprocs=2, join=True)
    got = load_file(out_file)

    x, a, model = _data()
    pred = model(x)
    loss, ar = _loss(pred, (pred, a))
    loss.backward()
    assert float(got["ar"]) == pytest.approx(float(ar.detach()), rel=1e-12)
    torch.testing.assert_close(got["weight"], model.weight.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(got["bias"], model.bias.grad, rtol=1e-10, atol=1e-12)
    # the per-rank AR (no gather) gives a different gradient: the test can tell them apart
    x0, a0, m0 = _data()
    halves = [m0(x0[i * 3:(i + 1) * 3]) for i in range(2)]
    local = sum(_loss(p, (p, a0[i * 3:(i + 1) * 3]))[0] for i, p in enumerate(halves)) / 2
    local.backward()
    assert not torch.allclose(m0.weight.grad, model.weight.grad, rtol=1e-6, atol=1e-9)


def test_gather_is_the_identity_in_one_process():
    t = torch.randn(4, 3, requires_grad=True)
    assert all_gather_with_grad(t, DistInfo()) is t


def test_ssc_family_loss_terms_use_the_gather():
    """The trainer's gather reaches the AR term (a fake gather that appends a scaled, flipped copy);
    the baselines' counterpart is in test_baselines.py."""
    from attri_ssc.config import load_config
    from attri_ssc.training.families import FAMILIES

    cfg = load_config("smoke", [])
    stage = cfg.stages[1]
    assert stage.train_mapper and stage.gamma > 0
    family = FAMILIES["attri_ssc"]
    torch.manual_seed(0)
    model = family.build(cfg, 2)
    size = cfg.model.input_size if isinstance(cfg.model.input_size, int) else cfg.model.input_size[0]
    batch = {"image": torch.rand(3, 1, *([size] * cfg.model.spatial_dims)),
             "attributes": torch.tensor([[0.1, 0.9], [0.5, 0.2], [0.8, 0.4]])}
    out = model(batch["image"])
    calls = []

    def fake_gather(t: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(t.shape))
        return torch.cat([t, t.flip(0) * 0.5])

    terms = family.loss_terms(model, out, batch, stage, cfg, gather=fake_gather)
    expected = stage.gamma * attribute_regularization_loss(
        fake_gather(out.attributes), fake_gather(batch["attributes"]), delta=cfg.train.delta)
    assert calls[:2] == [(3, 2), (3, 2)]
    assert float(terms["ar"].detach()) == pytest.approx(float(expected.detach()), rel=1e-6)
    plain = family.loss_terms(model, out, batch, stage, cfg)["ar"]
    assert float(plain.detach()) != pytest.approx(float(expected.detach()), rel=1e-3)


def _train_worker(rank: int, world: int, init_file: str, data_dir: str, run_dir: str, cache: str, out_file: str) -> None:
    os.environ.update(WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank))
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    from attri_ssc.config import load_config
    from attri_ssc.training import distributed as dist_utils
    from attri_ssc.training.trainer import train

    shapes: list[int] = []
    original = dist_utils.all_gather_with_grad

    def counting(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
        gathered = original(tensor, info)
        shapes.append(gathered.shape[0])
        return gathered

    dist_utils.all_gather_with_grad = counting
    cfg = load_config("smoke", [f"data.cache_dir={cache}", "train.num_threads=1", "train.batch_size=2"])
    train(cfg, data_dir, run_dir, progress=False)
    if rank == 0:
        mapper_steps = sum(s.steps for s in cfg.stages if s.train_mapper)
        save_file({"gathered_rows": torch.tensor(shapes), "mapper_steps": torch.tensor([mapper_steps])}, out_file)
    if dist.is_initialized():
        dist.destroy_process_group()


def test_trainer_gathers_ar_rows_from_every_rank(phantom_dir, tmp_path):
    """Two processes through the real trainer: every step that trains W gathers â and a (2 × 2 rows)."""
    out_file = str(tmp_path / "calls.safetensors")
    mp.spawn(_train_worker, args=(2, str(tmp_path / "init"), str(phantom_dir), str(tmp_path / "run"),
                                  str(tmp_path / "cache"), out_file), nprocs=2, join=True)
    got = load_file(out_file)
    rows = got["gathered_rows"].tolist()
    assert len(rows) == 2 * int(got["mapper_steps"][0]) > 0  # â and a, once per step of Stages II-III
    assert set(rows) == {4}
