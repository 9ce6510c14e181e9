"""Label maps: which value of a cohort's mask files is which cardiac structure.

Cohorts number their structures differently (EMIDEC: 1 LV cavity, 2 myocardium,
3 infarct, 4 no-reflow; ACDC: 1 RV, 2 myocardium, 3 LV cavity). A :class:`LabelMap`
names the file value of each structure (``None``: the cohort does not label it). The
readers translate every mask once, when it is read, into the package's *canonical*
codes (:data:`CANONICAL`), so preprocessing and attribute derivation never see a
cohort's own numbering:

====================  =========
structure             canonical
====================  =========
background            0
lv_cavity             1
myocardium (normal)   2
infarct               3
no_reflow             4
rv (RV cavity)        5
====================  =========

Myocardium for the attributes is 2 ∪ 3 ∪ 4 (infarct and no-reflow are myocardium), the
scar is 3 ∪ 4. A file value that the map does not name is an error naming the file.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from attri_ssc.errors import ConfigError, DataError

#: Canonical code of each structure (what :meth:`LabelMap.to_canonical` returns).
CANONICAL: dict[str, int] = {
    "background": 0,
    "lv_cavity": 1,
    "myocardium": 2,
    "infarct": 3,
    "no_reflow": 4,
    "rv": 5,
}
STRUCTURES: tuple[str, ...] = tuple(CANONICAL)
#: Structures every label map must name (the attributes need a cavity and a wall).
REQUIRED_STRUCTURES: tuple[str, ...] = ("lv_cavity", "myocardium")


@dataclass(frozen=True)
class LabelMap:
    """File value of each structure in a cohort's masks (``None``: not labelled).

    Attributes:
        background: value of everything else (default 0).
        lv_cavity: LV blood pool.
        myocardium: normal (remote) LV myocardium.
        infarct: infarcted myocardium (scar), or None for cohorts without scar.
        no_reflow: microvascular obstruction inside the infarct, or None.
        rv: RV cavity, or None. Read but not used by the attributes.

    The defaults are EMIDEC's (0 background, 1 cavity, 2 myocardium, 3 infarct, 4
    no-reflow, no RV).
    """

    background: int | None = 0
    lv_cavity: int | None = 1
    myocardium: int | None = 2
    infarct: int | None = 3
    no_reflow: int | None = 4
    rv: int | None = None

    def validate(self) -> "LabelMap":
        """Raise :class:`ConfigError` naming the first bad entry."""
        seen: dict[int, str] = {}
        for name in STRUCTURES:
            value = getattr(self, name)
            if value is None:
                if name in REQUIRED_STRUCTURES:
                    raise ConfigError(f"data.label_map.{name} is required (the attributes need it)")
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"data.label_map.{name} must be a non-negative integer or null, got {value!r}")
            if value in seen:
                raise ConfigError(f"data.label_map: {name} and {seen[value]} both use value {value}")
            seen[value] = name
        if self.no_reflow is not None and self.infarct is None:
            raise ConfigError("data.label_map: no_reflow is labelled but infarct is not (no-reflow lies inside a scar)")
        return self

    def has(self, structure: str) -> bool:
        """Whether the cohort labels ``structure`` (one of :data:`STRUCTURES`)."""
        return getattr(self, structure) is not None

    @property
    def values(self) -> dict[int, str]:
        """File value → structure name, for the labelled structures."""
        return {getattr(self, n): n for n in STRUCTURES if getattr(self, n) is not None}

    def describe(self) -> str:
        """'0 background, 1 lv_cavity, ...' in file-value order."""
        return ", ".join(f"{v} {n}" for v, n in sorted(self.values.items()))

    def to_canonical(self, data: np.ndarray, path: str | Path = "", case_id: str = "") -> np.ndarray:
        """Translate a mask of file values into canonical codes.

        Args:
            data: integer-valued labels of any shape (already checked to be integers).
            path, case_id: named in the error.

        Returns:
            uint8 array of the same shape with :data:`CANONICAL` codes.

        Raises:
            DataError: a value the map does not name (the message names the file, the
                values found and the map).
        """
        arr = np.asarray(data)
        present = {int(v) for v in np.unique(arr)}
        known = self.values
        unknown = sorted(present - set(known))
        if unknown:
            who = f"case {case_id}: " if case_id else ""
            raise DataError(
                f"{who}{path}: mask has unknown label(s) {unknown}; expected (data.label_map) "
                f"{self.describe()}"
            )
        lut = np.zeros(max(present | set(known)) + 1, dtype=np.uint8)
        for value, name in known.items():
            lut[value] = CANONICAL[name]
        return lut[arr.astype(np.int64)]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "LabelMap":
        """Build and validate; unknown structure names are a :class:`ConfigError`."""
        if isinstance(raw, LabelMap):
            return raw.validate()
        if not isinstance(raw, Mapping):
            raise ConfigError(f"data.label_map must be a mapping of structure: value, got {raw!r}")
        unknown = sorted(set(raw) - set(STRUCTURES))
        if unknown:
            raise ConfigError(f"data.label_map: unknown structure(s) {unknown}; known: {', '.join(STRUCTURES)}")
        # A partial map names only what differs from "not labelled": unnamed structures are
        # absent, except the background, which stays 0 unless given.
        full = {name: None for name in STRUCTURES}
        full["background"] = 0
        full.update(raw)
        return cls(**full).validate()


#: EMIDEC's labels (the default).
EMIDEC_LABELS = LabelMap()
#: ACDC's labels: 1 RV cavity, 2 myocardium, 3 LV cavity; no scar.
ACDC_LABELS = LabelMap(background=0, lv_cavity=3, myocardium=2, infarct=None, no_reflow=None, rv=1)
#: The standard map of each layout, used when ``data.label_map`` is not given.
LAYOUT_LABELS: dict[str, LabelMap] = {"emidec": EMIDEC_LABELS, "acdc": ACDC_LABELS, "manifest": EMIDEC_LABELS}


__all__ = [
    "ACDC_LABELS",
    "CANONICAL",
    "EMIDEC_LABELS",
    "LAYOUT_LABELS",
    "LabelMap",
    "REQUIRED_STRUCTURES",
    "STRUCTURES",
]
