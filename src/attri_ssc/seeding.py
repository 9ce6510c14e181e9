"""Reproducibility: one seeding utility for Python, NumPy and torch, and a fixed thread count."""

from __future__ import annotations

import random
from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch


def set_seed(seed: int, deterministic: bool = False) -> None:
    """Seed every RNG we use; optionally ask torch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


@contextmanager
def fixed_threads(n: int = 1) -> Iterator[None]:
    """Run the body with ``torch.set_num_threads(n)``, restoring the previous count after.

    CPU convolutions and matrix products split their reductions across threads, so their
    results differ in the last bits with the thread count; an iterative search through the
    network (the ``feedback`` edit rule's Adam steps, through LISTA's thresholds) amplifies
    those bits into different answers. A fixed count makes such results the same whatever
    the caller's thread setting (GPU kernels are unaffected).
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got n={n!r}")
    previous = torch.get_num_threads()
    if previous == n:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
