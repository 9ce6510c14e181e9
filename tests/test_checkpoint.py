"""Checkpoint I/O: round trips, integrity checks and clear errors; never pickle."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

import attri_ssc.checkpoint as ckpt
from attri_ssc.checkpoint import (
    FORMAT_VERSION,
    load_checkpoint,
    load_model,
    save_checkpoint,
    save_model,
)
from attri_ssc.errors import CheckpointError
from attri_ssc.models.ssc_vae import SSCVAE


def _tensors() -> dict[str, torch.Tensor]:
    return {
        "a": torch.randn(3, 4),
        "b.int": torch.arange(5, dtype=torch.int64),
        "c.double": torch.randn(2, dtype=torch.float64),
        "view": torch.randn(4, 4)[:, 1],  # non-contiguous
    }


def test_round_trip_and_sidecar(tmp_path):
    tensors = _tensors()
    meta = {"stage": 2, "step": 17, "note": "héllo", "nested": {"lr": 1e-4}}
    json_path = save_checkpoint(tmp_path / "sub" / "ck", tensors, meta)
    st_path = tmp_path / "sub" / "ck.safetensors"
    assert json_path == tmp_path / "sub" / "ck.json" and st_path.is_file()
    record = json.loads(json_path.read_text(encoding="utf-8"))
    assert record["format_version"] == FORMAT_VERSION
    assert record["sha256"] == hashlib.sha256(st_path.read_bytes()).hexdigest()
    loaded, meta2 = load_checkpoint(tmp_path / "sub" / "ck")
    assert meta2 == meta
    assert set(loaded) == set(tensors)
    for k, v in tensors.items():
        assert loaded[k].dtype == v.dtype and torch.equal(loaded[k], v)
    assert not [p.name for p in (tmp_path / "sub").iterdir() if p.name.endswith(".tmp")]


def test_missing_files(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nothing")
    save_checkpoint(tmp_path / "ck", _tensors(), {})
    (tmp_path / "ck.json").unlink()
    with pytest.raises(CheckpointError, match="interrupted"):
        load_checkpoint(tmp_path / "ck")
    save_checkpoint(tmp_path / "ck2", _tensors(), {})
    (tmp_path / "ck2.safetensors").unlink()
    with pytest.raises(CheckpointError, match="ck2.safetensors not found"):
        load_checkpoint(tmp_path / "ck2")


def test_truncated_and_modified_weights(tmp_path):
    save_checkpoint(tmp_path / "ck", _tensors(), {})
    st = tmp_path / "ck.safetensors"
    data = st.read_bytes()
    st.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        load_checkpoint(tmp_path / "ck")
    with pytest.raises(CheckpointError, match="cannot read"):  # the reader catches it too
        load_checkpoint(tmp_path / "ck", verify=False)
    flipped = bytearray(data)
    flipped[-1] ^= 0xFF
    st.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        load_checkpoint(tmp_path / "ck")


def test_unparsable_or_foreign_metadata(tmp_path):
    save_checkpoint(tmp_path / "ck", _tensors(), {})
    js = tmp_path / "ck.json"
    js.write_text("{not json", encoding="utf-8")
    with pytest.raises(CheckpointError, match="cannot parse"):
        load_checkpoint(tmp_path / "ck")
    js.write_text(json.dumps({"hello": 1}), encoding="utf-8")
    with pytest.raises(CheckpointError, match="not an attri-ssc checkpoint"):
        load_checkpoint(tmp_path / "ck")
    js.write_text(json.dumps({"format_version": 99, "sha256": "", "meta": {}}), encoding="utf-8")
    with pytest.raises(CheckpointError, match="format_version=99"):
        load_checkpoint(tmp_path / "ck")


def test_bad_inputs_to_save(tmp_path):
    with pytest.raises(ValueError, match="str to torch.Tensor"):
        save_checkpoint(tmp_path / "ck", {"a": [1, 2]}, {})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="JSON"):
        save_checkpoint(tmp_path / "ck2", {"a": torch.zeros(1)}, {"x": object()})
    assert not (tmp_path / "ck2.json").exists()


@pytest.mark.parametrize("d", [2, 3])
def test_save_load_model_gives_identical_outputs(tmp_path, tiny_config, d):
    model = SSCVAE(tiny_config(d, nonneg_codes=(d == 3)))
    x = torch.rand(2, 1, *model.config.input_shape)
    model.train()
    model(x)  # move BatchNorm running statistics off their defaults
    model.eval()
    with torch.no_grad():
        before = model(x)
    save_model(model, tmp_path / "m", extra_meta={"epoch": 3})
    meta = json.loads((tmp_path / "m.json").read_text())["meta"]
    assert meta["model_family"] == "ssc_vae" and meta["epoch"] == 3
    assert meta["model_config"] == model.config.to_dict()

    torch.manual_seed(123)  # a different init must not matter
    loaded = load_model(tmp_path / "m")
    assert loaded.config == model.config and not loaded.training
    sd, sd2 = model.state_dict(), loaded.state_dict()
    assert sd.keys() == sd2.keys() and all(torch.equal(sd[k], sd2[k]) for k in sd)
    with torch.no_grad():
        after = loaded(x)
    assert torch.equal(before.recon, after.recon)
    assert torch.equal(before.codes, after.codes)


def test_state_dict_mismatch_names_keys(tmp_path, tiny_config):
    model = SSCVAE(tiny_config(2))
    state = model.state_dict()
    meta = {"model_family": "ssc_vae", "model_config": model.config.replace(n_atoms=32).to_dict()}
    save_checkpoint(tmp_path / "shape", state, meta)
    with pytest.raises(CheckpointError, match=r"mis-shaped keys .*sparse_coder\.dictionary\.weight"):
        load_model(tmp_path / "shape")

    meta["model_config"] = model.config.to_dict()
    extra = {**state, "bogus.weight": torch.zeros(1)}
    save_checkpoint(tmp_path / "extra", extra, meta)
    with pytest.raises(CheckpointError, match=r"unexpected keys bogus\.weight"):
        load_model(tmp_path / "extra")

    fewer = {k: v for k, v in state.items() if k != "decoder.out_conv.bias"}
    save_checkpoint(tmp_path / "fewer", fewer, meta)
    with pytest.raises(CheckpointError, match=r"missing keys decoder\.out_conv\.bias"):
        load_model(tmp_path / "fewer")


def test_load_model_rejects_other_families_and_bad_configs(tmp_path, tiny_config):
    model = SSCVAE(tiny_config(2))
    save_checkpoint(tmp_path / "vae", model.state_dict(), {"model_family": "beta_vae"})
    with pytest.raises(CheckpointError, match="beta_vae"):
        load_model(tmp_path / "vae")
    bad = {**model.config.to_dict(), "input_size": 60}
    save_checkpoint(tmp_path / "cfg", model.state_dict(), {"model_family": "ssc_vae", "model_config": bad})
    with pytest.raises(CheckpointError, match="input_size"):
        load_model(tmp_path / "cfg")


def test_checkpoint_module_never_unpickles():
    source = Path(ckpt.__file__).read_text(encoding="utf-8")
    assert "torch.load" not in source and "import pickle" not in source
