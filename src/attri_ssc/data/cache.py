"""On-disk cache of preprocessed cases.

A case's entry is one ``.npz`` (``allow_pickle=False`` on load) named
``<case_id>-<key>.npz``, where ``key`` is a SHA-256 over the bytes of the case's image,
mask and clean files, the preprocessing parameters, and :data:`CACHE_VERSION`: editing a
file or a parameter gives a new key, so stale entries are never read. Entries are
written to a temporary file and renamed (atomic); a full disk raises
:class:`~attri_ssc.errors.StorageError` and leaves no partial entry.

An entry carries the SHA-256 of its arrays (names, dtypes, shapes, bytes) under
:data:`DIGEST_KEY`; on read the digest is checked, and so are the shapes (``validate``),
so an entry that is unreadable, truncated, altered or of the wrong shape is reported
with a warning and rebuilt, never used.
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
CACHE_VERSION = 2  # 2: entries carry a digest; content checks before caching

#: Name of the digest entry inside a cached .npz.
DIGEST_KEY = "__sha256__"


class CorruptEntry(ValueError):
    """A cache entry that must not be used (digest or shape mismatch)."""


def arrays_digest(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 hex digest of named arrays: names, dtypes, shapes and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


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
    """Atomically write ``arrays`` and their digest as an uncompressed .npz (no object arrays)."""
    for name, a in arrays.items():
        if np.asarray(a).dtype == object:
            raise ValueError(f"array {name!r} has dtype object, which would need pickle")
    buf = io.BytesIO()
    np.savez(buf, **arrays, **{DIGEST_KEY: np.array(arrays_digest(arrays))})
    data = buf.getvalue()
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    """Read an .npz written by :func:`save_arrays` (never unpickles) and check its digest.

    Raises:
        CorruptEntry: the digest is missing or does not match the arrays.
        OSError, ValueError, zipfile.BadZipFile: the file is unreadable or truncated.
    """
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    stored = arrays.pop(DIGEST_KEY, None)
    if stored is None:
        raise CorruptEntry("no digest")
    if str(stored) != arrays_digest(arrays):
        raise CorruptEntry("digest mismatch: the arrays were altered")
    return arrays


def cached(
    cache_dir: str | Path | None, case_id: str, key: str, compute: Callable[[], dict[str, np.ndarray]],
    validate: Callable[[dict[str, np.ndarray]], None] | None = None,
) -> dict[str, np.ndarray]:
    """Return the cached arrays for (case_id, key), computing and storing them if absent.

    ``cache_dir=None`` disables the cache (always computes). ``validate(arrays)`` raises
    ``ValueError`` for arrays of the wrong keys or shapes. A corrupt, truncated or invalid
    entry is logged as a warning and rebuilt.
    """
    if cache_dir is None:
        return compute()
    path = Path(cache_dir) / f"{case_id}-{key[:32]}.npz"
    if path.is_file():
        try:
            arrays = load_arrays(path)
            if validate is not None:
                validate(arrays)
            return arrays
        except Exception as exc:  # corrupt, truncated or altered entry: rebuild it
            log.warning("cache entry %s of case %s is corrupt (%s: %s); rebuilding it", path, case_id,
                        type(exc).__name__, exc)
    arrays = compute()
    save_arrays(path, arrays)
    return arrays


__all__ = ["CACHE_VERSION", "CorruptEntry", "DIGEST_KEY", "arrays_digest", "cached", "content_key", "load_arrays",
           "save_arrays"]
