"""Data configuration: which geometry, which attributes, which split.

``DataConfig`` is a frozen dataclass; ``validate()`` raises :class:`ConfigError` naming
the field and value; ``to_dict``/``from_dict`` round-trip through JSON/YAML.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from attri_ssc.data.labels import LabelMap
from attri_ssc.dataclass_io import dataclass_to_dict, unknown_keys
from attri_ssc.errors import ConfigError

#: Folder layouts a reader exists for (:mod:`attri_ssc.data.layouts`).
LAYOUTS: tuple[str, ...] = ("emidec", "acdc", "manifest")

#: What a bare DataConfig supervises (volumes, which suit 3D items); the 2D presets name the
#: in-plane areas instead (see :mod:`attri_ssc.data.attributes`).
DEFAULT_ATTRIBUTES: tuple[str, ...] = ("lv_volume", "myo_volume", "wall_thickness", "infarct_volume")


@dataclass(frozen=True)
class DataConfig:
    """How a data folder (EMIDEC, ACDC or manifest layout) becomes tensors.

    Attributes:
        spatial_dims: 2 (one item per short-axis slice containing myocardium) or 3
            (one item per case, slices padded to ``n_slices``).
        spacing_mm: in-plane target spacing after resampling (mm), > 0. Default 2.0.
        field_of_view_mm: side of the square in-plane field of view cropped around the
            LV cavity centroid (mm). Default 128 → 64×64 pixels at 2 mm.
        n_slices: 3D only: slices are zero-padded (centred) to this count; a case with
            more slices is an error. Default 16.
        attributes: supervised attribute names from
            :data:`attri_ssc.data.attributes.ATTRIBUTES` (ordered; no duplicates).
        split_fractions: (train, val, test) fractions of patients, summing to 1.
        split_seed: seed of the patient-level stratified split.
        cache_dir: folder of the on-disk preprocessing cache; ``None`` disables it.
        intensity_percentiles: (low, high) percentiles mapped to 0 and 1.
        skip_bad_cases: skip (and log) unusable cases instead of raising ``DataError``.
        layout: 'emidec', 'acdc' or 'manifest'; ``None`` detects it from the folder
            (:func:`attri_ssc.data.layouts.detect_layout`). ``train`` records the layout
            it used, so evaluate/interpret read the folder the same way.
        label_map: which mask value is which structure (:class:`LabelMap`); ``None`` is
            the layout's standard map (EMIDEC's for emidec and manifest, ACDC's for
            acdc). ``train`` records the map it used; configs saved before label maps
            existed load with ``None`` and so read EMIDEC folders as before.
        columns: manifest columns declared by name → unit (e.g. ``{bmi: kg/m²}``) or
            ``categorical`` (values kept as text: strata and reports, never supervised).
            A declared numeric column may be supervised; registered attributes (age,
            fevg, height, ...) need no declaration.
    """

    spatial_dims: int = 2
    spacing_mm: float = 2.0
    field_of_view_mm: float = 128.0
    n_slices: int = 16
    attributes: tuple[str, ...] = DEFAULT_ATTRIBUTES
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    split_seed: int = 0
    cache_dir: str | None = None
    intensity_percentiles: tuple[float, float] = (1.0, 99.0)
    skip_bad_cases: bool = False
    layout: str | None = None
    label_map: LabelMap | None = None
    columns: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        # Accept lists (from YAML/JSON) but store tuples so the config stays hashable.
        for name in ("attributes", "split_fractions", "intensity_percentiles"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        if isinstance(self.label_map, dict):
            object.__setattr__(self, "label_map", LabelMap.from_dict(self.label_map))
        if isinstance(self.columns, dict):
            object.__setattr__(self, "columns", tuple((str(k), str(v)) for k, v in self.columns.items()))
        elif isinstance(self.columns, list):
            object.__setattr__(self, "columns", tuple(tuple(c) for c in self.columns))

    @property
    def column_kinds(self) -> dict[str, str]:
        """Declared manifest columns: name → unit or 'categorical'."""
        return dict(self.columns)

    @property
    def image_size(self) -> int:
        """In-plane side length in pixels: round(field_of_view_mm / spacing_mm)."""
        return int(round(self.field_of_view_mm / self.spacing_mm))

    def validate(self) -> "DataConfig":
        """Check every field; raise :class:`ConfigError` naming the first bad one."""
        from attri_ssc.data.attributes import check_supervised

        if self.spatial_dims not in (2, 3):
            raise ConfigError(f"data.spatial_dims must be 2 or 3, got {self.spatial_dims!r}")
        if not (isinstance(self.spacing_mm, (int, float)) and self.spacing_mm > 0):
            raise ConfigError(f"data.spacing_mm must be > 0, got {self.spacing_mm!r}")
        if not (isinstance(self.field_of_view_mm, (int, float)) and self.field_of_view_mm > 0):
            raise ConfigError(f"data.field_of_view_mm must be > 0, got {self.field_of_view_mm!r}")
        if self.image_size < 8:
            raise ConfigError(
                f"data.field_of_view_mm / data.spacing_mm gives {self.image_size} pixels; need >= 8"
            )
        if not (isinstance(self.n_slices, int) and self.n_slices >= 1):
            raise ConfigError(f"data.n_slices must be a positive integer, got {self.n_slices!r}")
        if not isinstance(self.attributes, tuple) or not all(isinstance(a, str) for a in self.attributes):
            raise ConfigError(f"data.attributes must be a list of names, got {self.attributes!r}")
        if self.layout is not None and self.layout not in LAYOUTS:
            raise ConfigError(f"data.layout must be one of {', '.join(LAYOUTS)} or null, got {self.layout!r}")
        if self.label_map is not None:
            if not isinstance(self.label_map, LabelMap):
                raise ConfigError(f"data.label_map must be a mapping of structure: value, got {self.label_map!r}")
            self.label_map.validate()
        for item in self.columns:
            if (not isinstance(item, tuple) or len(item) != 2 or not all(isinstance(x, str) for x in item)
                    or not item[0].isidentifier()):
                raise ConfigError(f"data.columns must map column names to a unit or 'categorical', got {item!r}")
        try:
            check_supervised(self.attributes, self.column_kinds)
        except ValueError as exc:
            raise ConfigError(f"data.attributes: {exc}") from None
        fr = self.split_fractions
        if len(fr) != 3 or any((not isinstance(f, (int, float))) or f < 0 for f in fr):
            raise ConfigError(f"data.split_fractions must be three non-negative numbers, got {fr!r}")
        if abs(sum(fr) - 1.0) > 1e-6 or fr[0] <= 0:
            raise ConfigError(f"data.split_fractions must sum to 1 with train > 0, got {fr!r}")
        if not isinstance(self.split_seed, int):
            raise ConfigError(f"data.split_seed must be an integer, got {self.split_seed!r}")
        lo_hi = self.intensity_percentiles
        if len(lo_hi) != 2 or not (0.0 <= lo_hi[0] < lo_hi[1] <= 100.0):
            raise ConfigError(
                f"data.intensity_percentiles must be (low, high) with 0 <= low < high <= 100, got {lo_hi!r}"
            )
        if self.cache_dir is not None and not isinstance(self.cache_dir, str):
            raise ConfigError(f"data.cache_dir must be a path string or null, got {self.cache_dir!r}")
        if not isinstance(self.skip_bad_cases, bool):
            raise ConfigError(f"data.skip_bad_cases must be true or false, got {self.skip_bad_cases!r}")
        return self

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (tuples become lists; the label map and columns become mappings)."""
        out = dataclass_to_dict(self)
        out["label_map"] = None if self.label_map is None else self.label_map.to_dict()
        out["columns"] = self.column_kinds
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DataConfig":
        """Inverse of :meth:`to_dict`; unknown keys are a :class:`ConfigError`."""
        unknown = unknown_keys(cls, data)
        if unknown:
            known = sorted(f.name for f in dataclasses.fields(cls))
            raise ConfigError(f"unknown data config key(s): {', '.join(unknown)}; known: {', '.join(known)}")
        return cls(**data).validate()


__all__ = ["DEFAULT_ATTRIBUTES", "DataConfig", "LAYOUTS"]
