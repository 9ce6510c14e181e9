"""Torch datasets of preprocessed cases, preloaded in memory.

:func:`build_datasets` reads a data folder in any layout (EMIDEC, ACDC, manifest; see
:mod:`attri_ssc.data.layouts`), preprocesses every case (through the on-disk cache when
``DataConfig.cache_dir`` is set), splits patients (a patient's samples, e.g. an ACDC
patient's ED and ES frames, always share a split), fits the attribute scaler on the
training split only, and returns a :class:`DataBundle`.

Items are dicts:

* ``image``: float32 (1, *S) in [0, 1]; S = (H, W) in 2D, (n_slices, H, W) in 3D.
* ``clean``: float32 (1, *S), the noise-free image (phantoms); present in every item of
  a dataset whose cases all have one, absent from every item otherwise.
* ``attributes``: float32 (A,) min-max scaled by the bundle's scaler (train split).
* ``raw_attributes``: float32 (A,) in physical units.
* ``label``: int64, 0 normal (N; ACDC NOR) / 1 pathological (P; ACDC MINF, DCM, HCM, RV).
* ``case_id``: str; ``slice_index``: int, the slice's index in the case's stack (2D),
  -1 for a 3D item.

2D mode has one item per short-axis slice that contains myocardium. Its image
attributes (lv_volume, myo_volume, infarct_volume, no_reflow_volume, infarct_fraction,
scar_presence, wall_thickness, lv_area, myo_area, infarct_area) are the slice's own (a
"volume" is the slice's area times its thickness, so a case's slice volumes sum to its
volume; the 2D presets supervise the areas, which a slice shows); clinical attributes (fevg,
age, ...) and ``pathological`` are the case's. 3D mode has one item per case with case
attributes; slices are zero-padded (centred) to ``n_slices``.

``fevg`` of a patient with an ED and an ES sample (ACDC; a manifest with a ``frame``
column) and no ``fevg`` value of its own is computed, 100 (EDV - ESV) / EDV, from the LV
cavity volumes of the two masks, and carried by both samples.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from attri_ssc.data.attributes import ATTRIBUTES, IMAGE_ATTRIBUTES, NEEDS_STRUCTURE, check_supervised, measure_mask
from attri_ssc.data.cache import cached, content_key
from attri_ssc.data.config import DataConfig
from attri_ssc.data.emidec import EmidecCase
from attri_ssc.data.labels import EMIDEC_LABELS
from attri_ssc.data.layouts import open_with_config, resolve_data_config
from attri_ssc.data.preprocess import PreprocessParams, pad_slices, preprocess_stack
from attri_ssc.data.splits import stratified_split
from attri_ssc.errors import ConfigError, DataError

log = logging.getLogger(__name__)


class AttributeScaler:
    """Per-attribute min-max scaling to [0, 1], fitted on training values.

    A constant attribute (max == min) maps to 0. Values outside the fitted range map
    outside [0, 1] (not clipped), so val/test items keep their order.
    """

    def __init__(self, names: Sequence[str], minimum: Sequence[float] | None = None, maximum: Sequence[float] | None = None):
        self.names = tuple(names)
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"names must be distinct, got {self.names}")
        self.minimum = None if minimum is None else np.asarray(minimum, dtype=np.float64)
        self.maximum = None if maximum is None else np.asarray(maximum, dtype=np.float64)
        for arr, label in ((self.minimum, "minimum"), (self.maximum, "maximum")):
            if arr is not None and arr.shape != (len(self.names),):
                raise ValueError(f"{label} must have {len(self.names)} entries, got shape {arr.shape}")

    @property
    def fitted(self) -> bool:
        return self.minimum is not None and self.maximum is not None

    def fit(self, values: np.ndarray | torch.Tensor) -> "AttributeScaler":
        """Fit on (N, A) raw values; returns self."""
        v = np.asarray(values, dtype=np.float64)
        if v.ndim != 2 or v.shape[1] != len(self.names) or v.shape[0] == 0:
            raise ValueError(f"values must be (N>0, {len(self.names)}), got shape {v.shape}")
        if not np.all(np.isfinite(v)):
            raise ValueError("values must be finite")
        self.minimum, self.maximum = v.min(axis=0), v.max(axis=0)
        return self

    def _span(self) -> np.ndarray:
        span = self.maximum - self.minimum
        return np.where(span > 0, span, 1.0)

    def transform(self, values: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """(..., A) raw → scaled; returns the input's type (tensor keeps dtype/device)."""
        if not self.fitted:
            raise RuntimeError("AttributeScaler.transform called before fit")
        if isinstance(values, torch.Tensor):
            lo = torch.as_tensor(self.minimum, dtype=values.dtype, device=values.device)
            span = torch.as_tensor(self._span(), dtype=values.dtype, device=values.device)
            return (values - lo) / span
        v = np.asarray(values, dtype=np.float64)
        return (v - self.minimum) / self._span()

    def inverse_transform(self, values: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """(..., A) scaled → raw."""
        if not self.fitted:
            raise RuntimeError("AttributeScaler.inverse_transform called before fit")
        if isinstance(values, torch.Tensor):
            lo = torch.as_tensor(self.minimum, dtype=values.dtype, device=values.device)
            span = torch.as_tensor(self._span(), dtype=values.dtype, device=values.device)
            return values * span + lo
        return np.asarray(values, dtype=np.float64) * self._span() + self.minimum

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        return {
            "names": list(self.names),
            "minimum": None if self.minimum is None else [float(x) for x in self.minimum],
            "maximum": None if self.maximum is None else [float(x) for x in self.maximum],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AttributeScaler":
        return cls(d["names"], d.get("minimum"), d.get("maximum"))

    def __repr__(self) -> str:
        return f"AttributeScaler(names={self.names}, fitted={self.fitted})"


class CardiacDataset(Dataset):
    """Preloaded items (see module doc); all tensors live in memory.

    Args:
        images: (N, 1, *S) float32.
        raw_attributes: (N, A) float32, physical units.
        labels: (N,) int64.
        case_ids: N case ids.
        slice_indices: N ints (-1 in 3D).
        attribute_names: A names.
        scaler: fitted :class:`AttributeScaler` (may be set later with :meth:`set_scaler`).
        clean: (N, 1, *S) float32 or None.
    """

    def __init__(
        self,
        images: torch.Tensor,
        raw_attributes: torch.Tensor,
        labels: torch.Tensor,
        case_ids: Sequence[str],
        slice_indices: Sequence[int],
        attribute_names: Sequence[str],
        scaler: AttributeScaler | None = None,
        clean: torch.Tensor | None = None,
    ):
        n = images.shape[0]
        if raw_attributes.shape != (n, len(attribute_names)):
            raise ValueError(f"raw_attributes must be ({n}, {len(attribute_names)}), got {tuple(raw_attributes.shape)}")
        if labels.shape != (n,) or len(case_ids) != n or len(slice_indices) != n:
            raise ValueError("labels, case_ids and slice_indices must have one entry per image")
        if clean is not None and clean.shape != images.shape:
            raise ValueError(f"clean must match images {tuple(images.shape)}, got {tuple(clean.shape)}")
        self.images = images
        self.clean = clean
        self.raw_attributes = raw_attributes
        self.labels = labels
        self.case_ids = list(case_ids)
        self.slice_indices = [int(s) for s in slice_indices]
        self.attribute_names = tuple(attribute_names)
        self.attributes = torch.zeros_like(raw_attributes)
        if scaler is not None:
            self.set_scaler(scaler)

    def set_scaler(self, scaler: AttributeScaler) -> None:
        """Recompute the scaled attributes with ``scaler``."""
        if tuple(scaler.names) != self.attribute_names:
            raise ValueError(f"scaler names {scaler.names} differ from {self.attribute_names}")
        self.attributes = scaler.transform(self.raw_attributes.double()).float() if len(self) else self.raw_attributes.clone()

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int) -> dict[str, Any]:
        item: dict[str, Any] = {
            "image": self.images[index],
            "attributes": self.attributes[index],
            "raw_attributes": self.raw_attributes[index],
            "label": self.labels[index],
            "case_id": self.case_ids[index],
            "slice_index": self.slice_indices[index],
        }
        if self.clean is not None:
            item["clean"] = self.clean[index]
        return item


@dataclass
class PreparedCase:
    """One case after preprocessing (arrays (Z, H, W), slice axis first)."""

    case: EmidecCase  # or any reader's case (attri_ssc.data.cohort)
    image: np.ndarray
    mask: np.ndarray
    clean: np.ndarray | None
    case_attributes: np.ndarray  # (len(IMAGE_ATTRIBUTES),)
    slice_attributes: np.ndarray  # (Z, len(IMAGE_ATTRIBUTES))


@dataclass
class DataBundle:
    """What :func:`build_datasets` returns.

    Attributes:
        train, val, test: :class:`CardiacDataset` s (val/test may be empty).
        scaler: fitted on ``train`` only.
        attribute_names: the supervised attributes, in column order.
        split: {'train', 'val', 'test'} → sorted case (sample) ids.
        config: the validated :class:`DataConfig`, with ``layout`` and ``label_map`` resolved.
        image_shape: (1, *S) of every item's image.
        cases: case id → the reader's case.
        groups: case id → categorical group (EMIDEC N/P, ACDC pathology group, manifest
            ``group``): the split's strata, for reports.
        layout: the layout the folder was read in.
    """

    train: CardiacDataset
    val: CardiacDataset
    test: CardiacDataset
    scaler: AttributeScaler
    attribute_names: tuple[str, ...]
    split: dict[str, list[str]]
    config: DataConfig | None = None
    image_shape: tuple[int, ...] = ()
    cases: dict[str, EmidecCase] = field(default_factory=dict, repr=False)
    groups: dict[str, str] = field(default_factory=dict)
    layout: str = "emidec"


def preprocess_params(cfg: DataConfig) -> PreprocessParams:
    return PreprocessParams(
        spacing_mm=float(cfg.spacing_mm),
        size=cfg.image_size,
        percentiles=(float(cfg.intensity_percentiles[0]), float(cfg.intensity_percentiles[1])),
        center_per_slice=cfg.spatial_dims == 2,
    )


def prepare_case(case: EmidecCase, params: PreprocessParams, cache_dir: str | Path | None = None) -> PreparedCase:
    """Load, measure and preprocess one case (through the cache when given).

    Raises:
        DataError: unreadable/truncated files, bad labels, shape mismatches.
    """

    def compute() -> dict[str, np.ndarray]:
        image = case.load_image()
        mask = case.load_mask()
        clean = case.load_clean()
        if not np.all(np.isfinite(image)):
            raise DataError(f"case {case.case_id}: {case.image_path}: image has non-finite values")
        case_attrs, slice_attrs = measure_mask(mask, case.spacing)
        out = preprocess_stack(image, mask, case.spacing, params, clean)
        out["case_attributes"] = case_attrs
        out["slice_attributes"] = slice_attrs
        return out

    extra = {}
    label_map = getattr(case, "label_map", None)
    if label_map is not None and label_map != EMIDEC_LABELS:
        extra["label_map"] = label_map.to_dict()  # EMIDEC's map keeps the keys of caches made before label maps
    key = content_key(
        [case.image_path, case.mask_path, case.clean_path],
        {"params": params.to_dict(), "image_attributes": list(IMAGE_ATTRIBUTES), **extra},
    )
    arrays = cached(cache_dir, case.case_id, key, compute)
    return PreparedCase(
        case=case,
        image=arrays["image"],
        mask=arrays["mask"],
        clean=arrays.get("clean"),
        case_attributes=arrays["case_attributes"],
        slice_attributes=arrays["slice_attributes"],
    )


def _attribute_row(prep: PreparedCase, names: Sequence[str], slice_index: int | None,
                   clinical: Mapping[str, float]) -> list[float]:
    row = []
    for name in names:
        if name in IMAGE_ATTRIBUTES:
            col = IMAGE_ATTRIBUTES.index(name)
            src = prep.case_attributes if slice_index is None else prep.slice_attributes[slice_index]
            row.append(float(src[col]))
        else:
            row.append(float(clinical[name]))
    return row


def case_level_values(preps: Sequence[PreparedCase]) -> dict[str, dict[str, float]]:
    """case id → its case-level attribute values: the reader's, plus ``fevg`` computed from the
    LV cavity volumes of a patient's ED and ES samples when the reader gives none."""
    lv = IMAGE_ATTRIBUTES.index("lv_volume")
    out = {p.case.case_id: dict(p.case.clinical_values()) for p in preps}
    frames: dict[str, dict[str, PreparedCase]] = {}
    for p in preps:
        if getattr(p.case, "frame", ""):
            frames.setdefault(p.case.patient_id, {})[p.case.frame] = p
    for pid, pair in frames.items():
        if set(pair) != {"ED", "ES"}:
            continue
        edv, esv = float(pair["ED"].case_attributes[lv]), float(pair["ES"].case_attributes[lv])
        if edv <= 0:
            continue
        for p in pair.values():
            out[p.case.case_id].setdefault("fevg", 100.0 * (edv - esv) / edv)
    return out


def check_structures(cfg: DataConfig) -> None:
    """A :class:`ConfigError` when a supervised attribute needs a structure (the scar) that
    ``cfg.label_map`` does not label."""
    label_map = cfg.label_map
    for name in cfg.attributes:
        need = NEEDS_STRUCTURE.get(name)
        if need is not None and label_map is not None and not label_map.has(need):
            raise ConfigError(f"data.attributes: {name!r} needs the {need!r} structure, which this cohort's label map "
                              f"does not label ({label_map.describe()}); choose attributes without scar "
                              "(e.g. the acdc-2d preset) or set data.label_map")


def check_available(preps: Sequence[PreparedCase], cfg: DataConfig, values: Mapping[str, Mapping[str, float]],
                    data_dir: str | Path) -> None:
    """Every supervised attribute can be had for every case, else a :class:`DataError` naming
    the attribute, the cases (at most five) and where the attribute would come from."""
    check_structures(cfg)
    for name in cfg.attributes:
        if name in IMAGE_ATTRIBUTES:
            continue
        lacking = [p.case.case_id for p in preps if name not in values[p.case.case_id]]
        if lacking:
            hint = ("fevg is read from EMIDEC clinical files or a manifest column, or computed from a patient's "
                    "ED and ES frames" if name == "fevg" else f"a manifest column named {name!r}")
            raise DataError(f"{data_dir}: attribute {name!r} (data.attributes) is not available for case(s) "
                            f"{', '.join(lacking[:5])}{' ...' if len(lacking) > 5 else ''}; it comes from {hint}")


def _make_dataset(preps: list[PreparedCase], cfg: DataConfig, names: tuple[str, ...],
                  values: Mapping[str, Mapping[str, float]] | None = None) -> CardiacDataset:
    if values is None:
        values = case_level_values(preps)
    images, cleans, rows, labels, ids, slices = [], [], [], [], [], []
    for prep in preps:
        if cfg.spatial_dims == 2:
            has_myo = prep.slice_attributes[:, IMAGE_ATTRIBUTES.index("myo_volume")] > 0
            for k in np.flatnonzero(has_myo):
                images.append(prep.image[k][None])
                cleans.append(None if prep.clean is None else prep.clean[k][None])
                rows.append(_attribute_row(prep, names, int(k), values[prep.case.case_id]))
                labels.append(int(prep.case.pathological))
                ids.append(prep.case.case_id)
                slices.append(int(k))
        else:
            try:
                images.append(pad_slices(prep.image, cfg.n_slices)[None])
                cleans.append(None if prep.clean is None else pad_slices(prep.clean, cfg.n_slices)[None])
            except ValueError:
                raise DataError(
                    f"case {prep.case.case_id}: {prep.case.image_path}: {prep.image.shape[0]} slices, "
                    f"more than data.n_slices={cfg.n_slices}"
                ) from None
            rows.append(_attribute_row(prep, names, None, values[prep.case.case_id]))
            labels.append(int(prep.case.pathological))
            ids.append(prep.case.case_id)
            slices.append(-1)
    size = cfg.image_size
    spatial = (size, size) if cfg.spatial_dims == 2 else (cfg.n_slices, size, size)
    img_t = torch.from_numpy(np.stack(images).astype(np.float32)) if images else torch.zeros((0, 1, *spatial))
    clean_t = None
    if images and all(c is not None for c in cleans):
        clean_t = torch.from_numpy(np.stack(cleans).astype(np.float32))
    raw = np.asarray(rows, dtype=np.float64).reshape(len(rows), len(names))
    if not np.all(np.isfinite(raw)):
        bad = sorted({ids[i] for i in np.flatnonzero(~np.isfinite(raw).all(axis=1))})
        raise DataError(f"non-finite attribute values in case(s) {', '.join(bad)}")
    return CardiacDataset(
        images=img_t,
        raw_attributes=torch.from_numpy(raw.astype(np.float32)),
        labels=torch.tensor(labels, dtype=torch.int64),
        case_ids=ids,
        slice_indices=slices,
        attribute_names=names,
        clean=clean_t,
    )


def build_datasets(data_dir: str | Path, cfg: DataConfig, seed: int | None = None,
                   split: Mapping[str, Sequence[str]] | None = None) -> DataBundle:
    """Read, preprocess, split and scale a data folder (EMIDEC, ACDC or manifest layout).

    Args:
        data_dir: data folder (real or phantom), or a manifest CSV.
        cfg: data configuration (validated here); ``layout``/``label_map`` None are
            resolved (detected / the layout's standard map) and returned in the bundle's config.
        seed: split seed; None uses ``cfg.split_seed``.
        split: a saved patient split ({'train', 'val', 'test'} → case ids, e.g. a run's
            ``split.json``) to use instead of drawing one; it must name exactly the usable cases.

    Returns:
        :class:`DataBundle`; the scaler is fitted on the training items only.

    Raises:
        ConfigError: invalid ``cfg``.
        DataError: unusable data (all problems listed), unless ``cfg.skip_bad_cases``.
    """
    if not isinstance(cfg, DataConfig):
        raise ConfigError(f"cfg must be a DataConfig, got {type(cfg).__name__}")
    cfg.validate()
    cfg = resolve_data_config(cfg, data_dir)
    check_structures(cfg)
    names = tuple(cfg.attributes)
    check_supervised(names, cfg.column_kinds)
    params = preprocess_params(cfg)
    cases = open_with_config(data_dir, cfg)
    preps: list[PreparedCase] = []
    for case in cases:
        try:
            preps.append(prepare_case(case, params, cfg.cache_dir))
        except DataError as exc:
            if not cfg.skip_bad_cases:
                raise
            log.warning("skipping case %s: %s", case.case_id, exc)
    if cfg.spatial_dims == 3:
        too_long = [p for p in preps if p.image.shape[0] > cfg.n_slices]
        if too_long and cfg.skip_bad_cases:
            for p in too_long:
                log.warning("skipping case %s: %d slices > data.n_slices=%d", p.case.case_id, p.image.shape[0], cfg.n_slices)
            preps = [p for p in preps if p.image.shape[0] <= cfg.n_slices]
    if not preps:
        raise DataError(f"{data_dir}: no usable cases")
    values = case_level_values(preps)
    check_available(preps, cfg, values, data_dir)
    samples: dict[str, list[str]] = {}
    for p in preps:
        samples.setdefault(p.case.patient_id, []).append(p.case.case_id)
    if split is None:
        by_patient = stratified_split(
            {p.case.patient_id: p.case.group for p in preps},
            tuple(cfg.split_fractions),  # type: ignore[arg-type]
            cfg.split_seed if seed is None else int(seed),
        )
        split = {name: sorted(c for pid in pids for c in samples[pid]) for name, pids in by_patient.items()}
    else:
        split = {name: sorted(split.get(name, [])) for name in ("train", "val", "test")}
        named = [c for ids in split.values() for c in ids]
        usable = {p.case.case_id for p in preps}
        if len(named) != len(set(named)) or set(named) != usable:
            missing, unknown = sorted(usable - set(named)), sorted(set(named) - usable)
            raise DataError(f"{data_dir}: the saved split does not match the data folder's usable cases "
                            f"(not in the split: {missing[:5]}; not usable or absent here: {unknown[:5]}; "
                            f"or a case listed twice)")
        where = {c: name for name, ids in split.items() for c in ids}
        for pid, ids in samples.items():
            if len({where[c] for c in ids}) > 1:
                raise DataError(f"{data_dir}: the saved split puts the samples of patient {pid} "
                                f"({', '.join(sorted(ids))}) in different splits")
    by_id = {p.case.case_id: p for p in preps}
    datasets = {name: _make_dataset([by_id[c] for c in ids], cfg, names, values) for name, ids in split.items()}
    if len(datasets["train"]) == 0:
        raise DataError(f"{data_dir}: the training split has no items")
    scaler = AttributeScaler(names).fit(datasets["train"].raw_attributes.double().numpy())
    for ds in datasets.values():
        ds.set_scaler(scaler)
    return DataBundle(
        train=datasets["train"],
        val=datasets["val"],
        test=datasets["test"],
        scaler=scaler,
        attribute_names=names,
        split=split,
        config=cfg,
        image_shape=tuple(datasets["train"].images.shape[1:]),
        cases={p.case.case_id: p.case for p in preps},
        groups={p.case.case_id: p.case.group for p in preps},
        layout=str(cfg.layout),
    )


__all__ = ["AttributeScaler", "CardiacDataset", "DataBundle", "PreparedCase", "build_datasets", "case_level_values",
           "check_available", "check_structures", "prepare_case", "preprocess_params"]
