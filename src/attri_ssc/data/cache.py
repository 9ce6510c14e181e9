"""On-disk cache of preprocessed cases.

A case's entry is one ``.npz`` (``allow_pickle=False`` on load) named
``<case_id>-<key>.npz``, where ``key`` is a SHA-256 over the bytes of the case's image,
mask and clean files, the preprocessing parameters, and :data:`CACHE_VERSION`: editing a
file or a parameter gives a new key, so stale entries are never read. Entries are
written to a temporary file and renamed (atomic). An unreadable entry is recomputed.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from pathlib import Path
from typing import Callable

import numpy as np

from attri_ssc.io_utils import atomic_write

log = logging.getLogger(__name__)

#: Bump when the preprocessing or the measured attributes change meaning.
CACHE_VERSION = 1


def content_key(paths: list[Path | None], params: dict) -> str:
    """SHA-256 hex digest of the files' bytes (None entries count as absent) and params."""
    h = hashlib.sha256()
    h.update(f"attri-ssc-cache-v{CACHE_VERSION}".encode())
    for p in paths:
        if p is None:
            h.update(b"\x00absent")
            continue
        h.update(b"\x01")
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    h.update(json.dumps(params, sort_keys=True).encode())
    return h.hexdigest()


def save_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Atomically write ``arrays`` as an uncompressed .npz (no object arrays allowed)."""
    for name, a in arrays.items():
        if np.asarray(a).dtype == object:
            raise ValueError(f"array {name!r} has dtype object, which would need pickle")
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    data = buf.getvalue()
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    """Read an .npz written by :func:`save_arrays` (never unpickles)."""
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def cached(
    cache_dir: str | Path | None, case_id: str, key: str, compute: Callable[[], dict[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """Return the cached arrays for (case_id, key), computing and storing them if absent.

    ``cache_dir=None`` disables the cache (always computes).
    """
    if cache_dir is None:
        return compute()
    path = Path(cache_dir) / f"{case_id}-{key[:32]}.npz"
    if path.is_file():
        try:
            return load_arrays(path)
        except Exception as exc:  # corrupt or truncated entry: recompute it
            log.warning("cache entry %s unreadable (%s); recomputing", path, exc)
    arrays = compute()
    save_arrays(path, arrays)
    return arrays


__all__ = ["CACHE_VERSION", "cached", "content_key", "load_arrays", "save_arrays"]
