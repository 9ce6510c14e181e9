"""Small file helpers: atomic writes and JSON with a stable layout."""

from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

from attri_ssc.errors import StorageError


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Write ``path`` atomically: ``write(tmp)`` fills a temp file in the same folder,
    which is fsynced and renamed over ``path``. On failure nothing is left behind.

    Raises:
        StorageError: the disk (or the quota) is full (ENOSPC, EDQUOT, EFBIG); the temp file
            is removed and ``path`` keeps its previous content, if any (exit code 7).
    """
    path = Path(path)
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        # mkstemp creates 0600 files; give the result the usual permissions (0666 & ~umask).
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        if is_disk_full(exc):
            raise StorageError(disk_full_message(path, exc)) from exc
        raise
    return path


#: errno values that mean "no room to write": full disk, exceeded quota, file too large.
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def is_disk_full(exc: BaseException) -> bool:
    """True for an OSError (or one it was raised from) whose errno means no room to write."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
            return True
        # Libraries with their own I/O (safetensors is Rust) report ENOSPC in the text only.
        if not isinstance(exc, OSError) and ("os error 28" in str(exc) or "No space left on device" in str(exc)):
            return True
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
        seen += 1
    return False


def disk_full_message(path: Path, exc: BaseException) -> str:
    """One line for a failed write of ``path`` for lack of space."""
    return (f"cannot write {path}: no space left on the device (or the quota is exceeded): "
            f"{getattr(exc, 'strerror', None) or exc}; nothing half-written was left and the previous version, "
            "if any, is intact; free space and run the command again (attri-ssc train --resume continues a run)")


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Atomically write ``obj`` as indented JSON."""
    text = json.dumps(obj, indent=2, sort_keys=False, default=_json_default)
    return atomic_write(path, lambda tmp: tmp.write_text(text + "\n", encoding="utf-8"))


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Atomically write a text file."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
