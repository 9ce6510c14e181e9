"""Shared (de)serialisation helpers for the frozen config dataclasses."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping


def dataclass_to_dict(obj: Any) -> dict[str, Any]:
    """A dataclass's fields as a JSON-ready dict (tuples become lists)."""
    return {f.name: (list(v) if isinstance(v := getattr(obj, f.name), tuple) else v)
            for f in dataclasses.fields(obj)}


def unknown_keys(cls: type, data: Mapping[str, Any]) -> list[str]:
    """Keys of ``data`` that are not fields of the dataclass ``cls``, sorted."""
    return sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
