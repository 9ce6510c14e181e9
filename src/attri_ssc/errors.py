"""Exceptions the CLI maps onto documented exit codes.

Exit codes (README "Exit codes"):
    0 ok, 1 unexpected internal error, 2 usage or configuration error,
    3 data error, 4 numerical failure during training, 5 checkpoint error,
    6 run folder in use by another process, 7 disk full (or quota exceeded) while writing.
"""

from __future__ import annotations


class AttriSSCError(Exception):
    """Base class: an error we expect and can explain to the user."""

    exit_code = 1


class ConfigError(AttriSSCError, ValueError):
    """A configuration value or command-line option is invalid."""

    exit_code = 2


class DataError(AttriSSCError):
    """Input data is missing, malformed or inconsistent (names the file and the problem)."""

    exit_code = 3


class NumericalError(AttriSSCError):
    """Training produced a non-finite loss or gradient."""

    exit_code = 4


class CheckpointError(AttriSSCError):
    """A checkpoint is missing, corrupted, or does not match the model."""

    exit_code = 5


class RunLockedError(AttriSSCError):
    """Another process is writing into the run folder (its pid is in the message)."""

    exit_code = 6


class StorageError(AttriSSCError):
    """A write failed for lack of space (ENOSPC, EDQUOT); nothing half-written was left."""

    exit_code = 7
