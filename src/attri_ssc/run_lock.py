"""One run folder, one writer: an advisory lock on ``RUN/.lock``.

A command that writes into a run folder (``train``, ``evaluate``, ``interpret-all``,
``verify-edits`` and the others whose output lies inside the run) holds
``fcntl.flock(RUN/.lock, LOCK_EX)`` for its whole life. A second writer refuses at once
with :class:`~attri_ssc.errors.RunLockedError` (exit 6), naming the holder's pid and
command line, which the holder writes into the lock file. Commands that only read a run
(``show-case``, the explorer, :func:`attri_ssc.runs.load_run`) never take the lock and are
never blocked.

The operating system releases the lock when the holder exits in any way, ``kill -9``
included, so a stale ``.lock`` left by a killed process never blocks a resume: the file's
existence means nothing, only the lock on it does. A normal exit removes the file (it is
unlinked while still locked, and a taker checks that the file it locked is still the one
at the path, so two processes can never both hold it).

Under ``torchrun`` the lock belongs to the job: rank 0 (``RANK``) takes it, the other
ranks do not contend. Within one process the lock is re-entrant (``interpret-all`` runs
``verify-edits`` in-process on the same run).

Advisory locks are only as good as the file system: on local disks they are reliable;
on some network file systems (older NFS, SMB mounts, some FUSE file systems) ``flock``
may be emulated per client or ignored, and two machines may then both "hold" the lock.
Do not start two writers on one run folder from different machines.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from attri_ssc.errors import ConfigError, RunLockedError

LOCK_NAME = ".lock"

# Locks this process holds: resolved run folder -> (fd, depth).
_held: dict[str, list[int]] = {}


def _holder_text(fd: int) -> str:
    """The holder's record as a phrase, e.g. 'pid 1234 (attri-ssc train ..., since 12:00:01 UTC)'."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        record = json.loads(os.read(fd, 1 << 16).decode("utf-8") or "{}")
    except (OSError, ValueError, UnicodeDecodeError):
        record = {}
    if not record.get("pid"):
        return "another process (its pid is not recorded yet)"
    host = f" on {record['host']}" if record.get("host") and record["host"] != socket.gethostname() else ""
    since = f", since {record['since']}" if record.get("since") else ""
    return f"pid {record['pid']}{host} ({record.get('command', '?')}{since})"


def _is_main_rank() -> bool:
    try:
        return int(os.environ.get("RANK", "0")) == 0
    except ValueError:
        return True


@contextmanager
def run_lock(run_dir: str | os.PathLike, command: str | None = None, create: bool = True) -> Iterator[None]:
    """Hold the run folder's writer lock for the ``with`` block.

    Args:
        run_dir: the run folder.
        command: what to record for a refused second writer (default: this command line).
        create: create ``run_dir`` when missing; when False and it is missing, nothing is
            locked (there is nothing to protect; the caller reports the missing folder).

    Raises:
        RunLockedError: another process holds the lock (exit 6); the message names its pid.
        ConfigError: the folder cannot be created or the lock file cannot be written.
    """
    run_dir = Path(run_dir)
    if not _is_main_rank() or (not create and not run_dir.is_dir()):
        yield
        return
    key = str(run_dir.resolve())
    if key in _held:  # re-entrant within this process
        _held[key][1] += 1
        try:
            yield
        finally:
            _held[key][1] -= 1
        return
    fd = _acquire(run_dir, command)
    _held[key] = [fd, 1]
    try:
        yield
    finally:
        del _held[key]
        _release(run_dir, fd)


def _acquire(run_dir: Path, command: str | None) -> int:
    path = run_dir / LOCK_NAME
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"run folder {run_dir} is not writable: {exc.strerror or exc}") from exc
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise ConfigError(f"run folder {run_dir} is not writable: cannot create {path} "
                              f"({exc.strerror or exc})") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise ConfigError(f"cannot lock run folder {run_dir}: {exc.strerror or exc} (advisory locks may "
                                  "be unsupported on this file system)") from exc
            holder = _holder_text(fd)
            os.close(fd)
            raise RunLockedError(
                f"run folder {run_dir} is in use by {holder}; wait for it to finish or stop it "
                f"(the lock {path} is released when that process exits, even if killed)") from None
        # The previous holder may have unlinked the file between our open and our flock:
        # then we locked an orphan; try again on the file now at the path.
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    record = {"pid": os.getpid(), "host": socket.gethostname(),
              "command": command or " ".join(["attri-ssc", *sys.argv[1:]]),
              "since": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode("utf-8"), 0)
    except OSError:
        pass  # the lock holds without the record; a refused writer then says "pid not recorded"
    return fd


def _release(run_dir: Path, fd: int) -> None:
    try:
        (run_dir / LOCK_NAME).unlink(missing_ok=True)  # still locked: no one can take the old file
    except OSError:
        pass
    finally:
        os.close(fd)  # releases the flock


@contextmanager
def lock_if_inside(run_dir: str | os.PathLike, out: str | os.PathLike) -> Iterator[None]:
    """:func:`run_lock` on ``run_dir`` when ``out`` lies inside it (a command writing its
    results into the run); no lock when the output goes elsewhere (a reader of the run)."""
    run = Path(run_dir).resolve()
    target = Path(out).resolve()
    if target == run or run in target.parents:
        with run_lock(run_dir, create=False):
            yield
    else:
        yield


__all__ = ["LOCK_NAME", "lock_if_inside", "run_lock"]
