"""TensorBoard logging of a training run (``--set train.tensorboard=true``; the ``tensorboard`` extra).

Written under ``RUN/tensorboard/`` (``tensorboard --logdir RUN``), on rank 0 only:

* ``train/<term>``: every loss term and the total, at each logged step (``train.log_every``);
* ``train/density``, ``train/live_atoms``: the code density and the atoms used in the batch;
* ``train/lr`` (and ``train/lr_<group>``), ``train/grad_norm``;
* ``val/psnr``, ``val/loss_<term>``, ``val/density``, ``val/spearman_<attribute>``: each validation;
* ``val/reconstructions``: a grid of up to 8 validation images (top row) over their
  reconstructions (bottom row), clamped to [0, 1]; a 3D run shows each volume's middle slice.

The x axis is the global step, as ``metrics.jsonl``'s ``global_step``. A resumed run continues
the same event files' curves (TensorBoard's ``purge_step`` drops what lay after the checkpoint).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor

from attri_ssc.errors import ConfigError

TENSORBOARD_DIRNAME = "tensorboard"
#: Images in the reconstruction grid.
GRID_IMAGES = 8


def require_tensorboard() -> None:
    """Raise :class:`ConfigError` naming the extra when the ``tensorboard`` package is missing."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise ConfigError("train.tensorboard=true needs the tensorboard package: "
                          "pip install 'attri-ssc[tensorboard]' (or pip install tensorboard)") from None


class TensorBoardLog:
    """Scalars and image grids of one training run (module doc); a no-op when not ``enabled``.

    Args:
        run_dir: the run folder (events go to ``run_dir/tensorboard``).
        enabled: log at all (``train.tensorboard`` and rank 0).
        purge_step: on resume, the global step to continue from (later events are dropped).
    """

    def __init__(self, run_dir: str | Path, enabled: bool, purge_step: int | None = None) -> None:
        self.writer = None
        if enabled:
            require_tensorboard()
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(Path(run_dir) / TENSORBOARD_DIRNAME), purge_step=purge_step)

    def step(self, global_step: int, record: Mapping[str, Any]) -> None:
        """One logged training step: ``record`` maps loss terms, ``total``, ``density``, ``live_atoms``,
        ``lr*`` and ``grad_norm`` to numbers."""
        if self.writer is None:
            return
        for key, value in record.items():
            if isinstance(value, (int, float)):
                self.writer.add_scalar(f"train/{key}", float(value), global_step)

    def validation(self, global_step: int, result: Mapping[str, Any]) -> None:
        """One validation: PSNR, mean loss terms, density and Spearman ρ per attribute."""
        if self.writer is None:
            return
        for key, value in result.items():
            if key == "spearman" and isinstance(value, Mapping):
                for name, rho in value.items():
                    if rho is not None:
                        self.writer.add_scalar(f"val/spearman_{name}", float(rho), global_step)
            elif isinstance(value, (int, float)):
                self.writer.add_scalar(f"val/{key}", float(value), global_step)

    def reconstructions(self, global_step: int, images: Tensor, recon: Tensor) -> None:
        """A grid of inputs (top row) over reconstructions (bottom row).

        Args:
            images, recon: (N, 1, *S) with S = (H, W) or (D, H, W) (the middle slice is shown).
        """
        if self.writer is None or images.shape[0] == 0:
            return
        self.writer.add_image("val/reconstructions", reconstruction_grid(images, recon), global_step,
                              dataformats="CHW")

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def reconstruction_grid(images: Tensor, recon: Tensor, n: int = GRID_IMAGES) -> Tensor:
    """(1, 2·H, n·W) grid image in [0, 1]: the first ``n`` inputs over their reconstructions.

    Args:
        images, recon: (N, 1, *S); for 3D (N, 1, D, H, W) the middle slice of each volume.
    """
    x, y = images[:n].detach().float().cpu(), recon[:n].detach().float().cpu()
    if x.dim() == 5:
        x, y = x[:, :, x.shape[2] // 2], y[:, :, y.shape[2] // 2]
    top = torch.cat(list(x[:, 0]), dim=1)  # (H, n·W)
    bottom = torch.cat(list(y[:, 0]), dim=1)
    return torch.cat([top, bottom], dim=0).clamp(0.0, 1.0).unsqueeze(0)


__all__ = ["GRID_IMAGES", "TENSORBOARD_DIRNAME", "TensorBoardLog", "reconstruction_grid", "require_tensorboard"]
