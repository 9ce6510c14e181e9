"""Data configuration: which geometry, which attributes, which split.

``DataConfig`` is a frozen dataclass; ``validate()`` raises :class:`ConfigError` naming
the field and value; ``to_dict``/``from_dict`` round-trip through JSON/YAML.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from attri_ssc.dataclass_io import dataclass_to_dict, unknown_keys
from attri_ssc.errors import ConfigError

#: What a bare DataConfig supervises (volumes, which suit 3D items); the 2D presets name the
#: in-plane areas instead (see :mod:`attri_ssc.data.attributes`).
DEFAULT_ATTRIBUTES: tuple[str, ...] = ("lv_volume", "myo_volume", "wall_thickness", "infarct_volume")


@dataclass(frozen=True)
class DataConfig:
    """How a folder in EMIDEC layout becomes tensors.

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

    def __post_init__(self) -> None:
        # Accept lists (from YAML/JSON) but store tuples so the config stays hashable.
        for name in ("attributes", "split_fractions", "intensity_percentiles"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))

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
        try:
            check_supervised(self.attributes)
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
        """JSON-safe dict (tuples become lists)."""
        return dataclass_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DataConfig":
        """Inverse of :meth:`to_dict`; unknown keys are a :class:`ConfigError`."""
        unknown = unknown_keys(cls, data)
        if unknown:
            known = sorted(f.name for f in dataclasses.fields(cls))
            raise ConfigError(f"unknown data config key(s): {', '.join(unknown)}; known: {', '.join(known)}")
        return cls(**data).validate()


__all__ = ["DEFAULT_ATTRIBUTES", "DataConfig"]
