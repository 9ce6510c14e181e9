"""The public Python API: a trained run as an object for notebooks, scripts and the explorer.

::

    import attri_ssc
    run = attri_ssc.load_run("runs/demo/attri_ssc")          # -> attri_ssc.Run
    item = run.test_items()[0]                                # {case_id, slice, image (1, *S), attributes}
    run.read_attributes(item["image"])                        # (1, |A|) physical units
    result = run.edit(item["image"], "lv_area", [-1, 0, 1])   # -> attri_ssc.EditResult

Every method takes torch tensors or numpy arrays, a batch ``(B, 1, *S)`` or one image
``(1, *S)`` (a batch of one), and returns the type it was given (numpy float32 for numpy
input; tensors on the input's device). ``S`` is ``(H, W)`` for 2D runs and
``(slices, H, W)`` for 3D runs, the preprocessed size of the run's data config; images from
disk get there through :func:`read_case` / :func:`read_folder`, the training preprocessing.

One implementation, several faces: the ``attri-ssc edit/interpolate/sample`` commands and the
explorer call these methods, which call the interpretation library (``attri_ssc.interpret``).
What editing and sampling need from the training split lives in the run folder
(``RUN/interpretation.{safetensors,json}``, :mod:`attri_ssc.interpret.statistics`), written by
``attri-ssc train``; runs trained before that need ``load_run(RUN, data=DIR)`` once, which
computes the statistics from the training split and saves them in the run folder.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from attri_ssc.errors import CheckpointError, ConfigError, DataError
from attri_ssc.interpret.edit_references import DEFAULT_RULE

#: The edit rules :meth:`Run.edit` offers (``feedback``, :data:`DEFAULT_RULE`, is the default; see
#: ``interpret/editing.py``).
EDIT_RULES = ("feedback", "shift", "prototype", "magnitude", "literal")
#: :class:`EditSettings`' format version: 2 records the ``feedback`` search's settings.
SETTINGS_VERSION = 2
#: Feedback searches :class:`Run` keeps (per image, attribute, atoms and holds).
FEEDBACK_CACHE_SIZE = 64
#: Codes of input images kept by :meth:`Run.edit` (a slider move re-encodes nothing).
CODES_CACHE_SIZE = 64


# ---------------------------------------------------------------------------- array plumbing
def save_npy(path: str | Path, array: np.ndarray) -> Path:
    """Write ``array`` to ``path`` (.npy, no pickle) atomically."""
    from attri_ssc.io_utils import atomic_write

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.save(fh, np.asarray(array), allow_pickle=False)

    return atomic_write(path, write)


def _as_tensor(x: Any, what: str) -> tuple[Tensor, bool]:
    """(float32 tensor, given as numpy?) of ``x``."""
    if isinstance(x, Tensor):
        return x.float() if x.dtype != torch.float32 else x, False
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), True
    raise ConfigError(f"{what} must be a torch.Tensor or a numpy array, got {type(x).__name__}")


def _back(x: Tensor, as_numpy: bool, like: Tensor | None = None) -> Any:
    """``x`` as float32 numpy (``as_numpy``) or as a tensor on ``like``'s device."""
    x = x.detach()
    if as_numpy:
        return x.cpu().float().numpy()
    return x.to(like.device) if like is not None else x.cpu()


@dataclass
class EditSettings:
    """Everything that reproduces one edit (JSON round-trip: :meth:`to_json` / :meth:`from_json`).

    ``attri-ssc edit RUN --settings FILE --out PNG`` replays it; so does :meth:`Run.replay`.

    Attributes:
        attribute: the edited attribute's name.
        alphas: the α values, each in [−1, 1].
        rule: one of :data:`EDIT_RULES`.
        hold: names of the attributes the edit holds (feedback: held at their re-read values;
            shift/prototype: regressed out of the prototypes; empty: none; None: the rule's
            default; :meth:`Run.edit` records the resolved list).
        atoms: the edited atoms (indices into the dictionary).
        run: the run folder (or id) the edit was made with.
        case_id, slice: the edited item (a case of the run's data folder; ``slice`` is the
            slice index of a 2D item, None for 3D or unknown).
        image_path: for an image that is not in the run's data (an uploaded case): a ``.npy``
            file holding the model-ready image (1, *S) (written by :meth:`save`).
        top_k, active_only, exclusive: atom selection and rule options (see :meth:`Run.edit`).
        feedback: the ``feedback`` rule's search settings (the fields of
            :class:`~attri_ssc.interpret.editing.FeedbackSettings`); None for other rules. Records of
            version 1 did not hold them: they replay with the search of that time, which moved atoms
            anywhere (:data:`~attri_ssc.interpret.editing.FEEDBACK_BEFORE_GUARDS`).
        version: format version of this record (2 since ``feedback`` is recorded).
    """

    attribute: str
    alphas: list[float]
    rule: str = DEFAULT_RULE
    hold: list[str] | None = None
    atoms: list[int] = field(default_factory=list)
    run: str = ""
    case_id: str | None = None
    slice: int | None = None
    image_path: str | None = None
    top_k: int | None = None
    active_only: bool = False
    exclusive: bool = False
    feedback: dict[str, Any] | None = None
    version: int = SETTINGS_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "settings") -> "EditSettings":
        """Validate and build; errors name the field and what was expected."""
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a JSON object, got {type(data).__name__}")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown field(s) {unknown}; valid fields: {sorted(known)}")
        for required in ("attribute", "alphas"):
            if required not in data:
                raise ConfigError(f"{source}: missing field {required!r}")
        try:
            alphas = [float(a) for a in data["alphas"]]
        except (TypeError, ValueError):
            raise ConfigError(f"{source}: field 'alphas' must be a list of numbers in [-1, 1], "
                              f"got {data['alphas']!r}") from None
        out = cls(**{**data, "alphas": alphas, "hold": None if data.get("hold") is None else list(data["hold"]),
                     "atoms": [int(j) for j in data.get("atoms") or []]})
        if out.rule not in EDIT_RULES:
            raise ConfigError(f"{source}: field 'rule' must be one of {EDIT_RULES}, got {out.rule!r}")
        if out.feedback is not None:
            out.feedback_settings()  # validates
        return out

    def feedback_settings(self, source: str = "settings"):
        """The :class:`~attri_ssc.interpret.editing.FeedbackSettings` this edit's search used (those
        of the time for a version-1 record without them); None for a rule other than ``feedback``."""
        from attri_ssc.interpret.editing import FEEDBACK_BEFORE_GUARDS, FeedbackSettings

        if self.rule != "feedback":
            return None
        if self.feedback is None:
            return FEEDBACK_BEFORE_GUARDS if self.version < 2 else FeedbackSettings()
        if not isinstance(self.feedback, dict):
            raise ConfigError(f"{source}: field 'feedback' must be an object of FeedbackSettings fields, "
                              f"got {self.feedback!r}")
        known = set(FeedbackSettings.__dataclass_fields__)
        unknown = sorted(set(self.feedback) - known)
        if unknown:
            raise ConfigError(f"{source}: field 'feedback' has unknown key(s) {unknown}; valid: {sorted(known)}")
        try:
            return FeedbackSettings(**self.feedback)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{source}: field 'feedback': {exc}") from None

    @classmethod
    def from_json(cls, text: str, source: str = "settings") -> "EditSettings":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{source}: not valid JSON ({exc})") from None
        return cls.from_dict(data, source)

    def save(self, path: str | Path, image: Any = None) -> Path:
        """Write the settings as JSON (atomically). With ``image`` (1, *S) (an uploaded case, not in
        the run's data), also write it to ``PATH.image.npy`` and record that path."""
        from attri_ssc.io_utils import write_text

        path = Path(path)
        if image is None and not self.case_id and not self.image_path:
            raise ConfigError("these settings name no case_id: pass image= (the edited image (1, *S)) so that "
                              "they can be replayed, or edit an item of the run (run.edit(item, ...))")
        if image is not None:
            x, _ = _as_tensor(image, "image")
            img_path = path.with_suffix(".image.npy")
            save_npy(img_path, x.detach().cpu().numpy())
            self.image_path = str(img_path.resolve())
        write_text(path, self.to_json() + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "EditSettings":
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"settings file not found: {path}")
        return cls.from_json(path.read_text(encoding="utf-8"), str(path))


@dataclass
class EditResult:
    """What :meth:`Run.edit` returns (arrays in the type of the input images).

    Attributes:
        images: (n, B, 1, *S) decoded edits, one per α (α = 0 gives the reconstruction); not clamped.
        codes: (n, B, K, *s) the edited codes Z'(α).
        readings: (n, B, |A|) the model's re-read of every attribute of each edited image
            (decoded, clamped to [0, 1], encoded again and read through the calibrated mapper),
            physical units (:meth:`Run.read_attributes`).
        alphas: (n,) the α values.
        atoms: the edited atoms.
        settings: the :class:`EditSettings` that replay this edit.
        saliency: (n, B, 1, *S) |dx̂/dα| of the edited atoms, when asked for (else None).
    """

    images: Any
    codes: Any
    readings: Any
    alphas: list[float]
    atoms: list[int]
    settings: EditSettings
    saliency: Any = None


@dataclass
class CaseImages:
    """Model-ready images read from disk (:func:`read_case`, :func:`read_folder`).

    Attributes:
        images: (N, 1, *S) float32 in [0, 1], preprocessed as for training.
        attributes: (N, |A|) the run's attributes measured from the mask / clinical file, physical
            units (NaN where unknown: no mask, no clinical file).
        attribute_names: the |A| names.
        case_ids: N case ids; slice_indices: N slice indices (2D) or -1 (3D).
    """

    images: Tensor
    attributes: Tensor
    attribute_names: tuple[str, ...]
    case_ids: list[str]
    slice_indices: list[int]

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def items(self) -> list[dict[str, Any]]:
        """One dict per image, as :meth:`Run.test_items`."""
        return [_item_dict(self.case_ids[i], self.slice_indices[i], self.images[i], self.attributes[i],
                           self.attribute_names) for i in range(len(self))]


def _item_dict(case_id: str, slice_index: int, image: Tensor, attributes: Tensor,
               names: Sequence[str]) -> dict[str, Any]:
    return {"case_id": case_id, "slice": None if int(slice_index) < 0 else int(slice_index), "image": image,
            "attributes": {n: float(attributes[i]) for i, n in enumerate(names)}}


# ---------------------------------------------------------------------------- the run
class Run:
    """A trained Attri-SSC-VAE run (use :func:`load_run`).

    Attributes:
        run_dir: the run folder.
        model: the ``AttriSSCVAE`` in eval mode on ``device``.
        config: the run's :class:`~attri_ssc.config.ExperimentConfig`.
        attribute_names: the supervised attributes, in the mapper's row order.
        spatial_dims: 2 or 3.
        image_shape: (1, *S), what the model takes per image.
        device: the torch device of the model.
    """

    def __init__(self, loaded, data: str | Path | None = None) -> None:
        self._loaded = loaded
        self.run_dir: Path = Path(loaded.run_dir)
        self.model = loaded.model
        self.config = loaded.config
        self.attribute_names: tuple[str, ...] = tuple(loaded.attribute_names)
        self.spatial_dims: int = int(self.config.data.spatial_dims)
        size = int(self.config.data.image_size)
        spatial = (size, size) if self.spatial_dims == 2 else (int(self.config.data.n_slices), size, size)
        self.image_shape: tuple[int, ...] = (1, *spatial)
        self.device = next(self.model.parameters()).device
        self._data_arg = Path(data) if data is not None else None
        self._bundle = None
        self._stats = None
        self._stats_cache: dict[tuple, Any] = {}
        self._feedback_cache: OrderedDict[tuple, Any] = OrderedDict()
        self._codes_cache: OrderedDict[tuple, Tensor] = OrderedDict()
        self._lock = threading.RLock()  # model calls from several threads (the explorer) never interleave

    def __repr__(self) -> str:
        return (f"attri_ssc.Run({str(self.run_dir)!r}, {self.spatial_dims}D, attributes={self.attribute_names}, "
                f"device={self.device})")

    # ------------------------------------------------------------------ facts
    @property
    def attribute_units(self) -> dict[str, str]:
        """name -> physical unit string (e.g. ``"cm²"``, ``"mm"``, ``"mL"``; ``""`` if dimensionless)."""
        from attri_ssc.data.attributes import ATTRIBUTES

        return {n: ATTRIBUTES[n].unit if n in ATTRIBUTES else "" for n in self.attribute_names}

    @property
    def attribute_ranges(self) -> dict[str, tuple[float, float]]:
        """name -> (min, max) over the training items, physical units (from the run's saved scaler)."""
        scaler = self._loaded.scaler or {}
        lo, hi = scaler.get("minimum"), scaler.get("maximum")
        if lo is None or hi is None:
            return dict(self.statistics.ranges)
        return {n: (float(lo[i]), float(hi[i])) for i, n in enumerate(self.attribute_names)}

    @property
    def data_dir(self) -> Path | None:
        """The data folder: ``data=`` of :func:`load_run`, else the one the run was trained on (None if unknown)."""
        if self._data_arg is not None:
            return self._data_arg
        return Path(self._loaded.data_dir) if self._loaded.data_dir else None

    def attribute_index(self, name: str) -> int:
        """Row of ``name`` in the mapper; an unknown name raises :class:`ConfigError` listing the valid ones."""
        if name not in self.attribute_names:
            raise ConfigError(f"unknown attribute {name!r}; this run supervises: {', '.join(self.attribute_names)}")
        return self.attribute_names.index(name)

    # ------------------------------------------------------------------ data
    def data_bundle(self):
        """The run's data on its saved patient split (:class:`~attri_ssc.data.datasets.DataBundle`), read once."""
        with self._lock:
            return self._data_bundle()

    def _data_bundle(self):
        if self._bundle is None:
            from attri_ssc.data.datasets import build_datasets

            folder = self.data_dir
            if folder is None or not folder.exists():
                raise DataError(f"data folder not found: {folder or '(none recorded in the run)'}; "
                                f"pass data=DIR to attri_ssc.load_run (the folder {self.run_dir} was trained on)")
            self._bundle = build_datasets(folder, self.config.data, split=self._loaded.split or None)
        return self._bundle

    def test_items(self, split: str = "test") -> list[dict[str, Any]]:
        """The held-out items: ``[{case_id, slice, image (1, *S) tensor, attributes {name: value}}]``.

        ``slice`` is the slice index (2D) or None (3D); attributes are the ground truth in
        physical units. Needs the data folder (``data=``, or the one the run recorded).
        ``split`` (beyond the BRIEF): ``"val"`` or ``"train"`` for those splits.
        """
        ds = self._split(split)
        return [_item_dict(ds.case_ids[i], ds.slice_indices[i], ds.images[i], ds.raw_attributes[i],
                           self.attribute_names) for i in range(len(ds))]

    def item(self, case_id: str, slice: int | None = None) -> dict[str, Any]:
        """One item of the run's data, from any split (beyond the BRIEF), as in :meth:`test_items`.

        Without ``slice`` (2D): the middle slice that contains myocardium.
        """
        bundle = self.data_bundle()
        for ds in (bundle.train, bundle.val, bundle.test):
            idx = sorted((i for i, c in enumerate(ds.case_ids) if c == case_id), key=lambda i: ds.slice_indices[i])
            if not idx:
                continue
            if slice is None or self.spatial_dims == 3:
                i = idx[len(idx) // 2]
            else:
                valid = [ds.slice_indices[i] for i in idx]
                if int(slice) not in valid:
                    raise ConfigError(f"case {case_id} has no item for slice {slice}; valid slices "
                                      f"(with myocardium): {valid}")
                i = idx[valid.index(int(slice))]
            return _item_dict(ds.case_ids[i], ds.slice_indices[i], ds.images[i], ds.raw_attributes[i],
                              self.attribute_names)
        known = sorted({c for ds in (bundle.train, bundle.val, bundle.test) for c in ds.case_ids})
        raise ConfigError(f"unknown case {case_id!r}; valid cases: {', '.join(known)}")

    def _split(self, name: str):
        bundle = self.data_bundle()
        if name not in ("train", "val", "test"):
            raise ConfigError(f"split must be train, val or test, got {name!r}")
        return getattr(bundle, name)

    # ------------------------------------------------------------------ statistics
    @property
    def statistics(self):
        """The training-split statistics editing and sampling use
        (:class:`~attri_ssc.interpret.statistics.InterpretationStatistics`)."""
        with self._lock:
            if self._stats is None:
                self._stats = self._load_or_compute_statistics()
            return self._stats

    def _load_or_compute_statistics(self):
        from attri_ssc.interpret.statistics import (load_statistics, save_statistics, statistics_key,
                                                    statistics_paths, compute_statistics)

        saved = load_statistics(self.run_dir)
        if saved is not None:
            return saved
        if self._data_arg is None:
            _, json_path = statistics_paths(self.run_dir)
            state = "is missing" if not json_path.exists() else "belongs to other weights"
            recorded = f" (the run was trained on {self._loaded.data_dir})" if self._loaded.data_dir else ""
            raise CheckpointError(
                f"{json_path} {state}: this run was saved without the training-split statistics that editing, "
                f"attribute reading and sampling need; pass the training data folder once, "
                f"attri_ssc.load_run({str(self.run_dir)!r}, data=DIR){recorded}, to compute and save them")
        train = self._split("train")
        stats = compute_statistics(self.model, self.attribute_names, train, statistics_key(self.run_dir, train.case_ids))
        try:
            save_statistics(self.run_dir, stats)  # cached: load_run(RUN) alone suffices from now on
        except OSError:
            pass  # a read-only run folder: use them in memory
        return stats

    def statistics_for(self, percentile: float, quantile: float):
        """Statistics with other bound percentile / prototype quantile than the saved ones
        (computed from the training split, kept in memory; beyond the BRIEF, for the CLI's options)."""
        from attri_ssc.interpret.statistics import compute_statistics, statistics_key

        saved = self.statistics
        if saved.key["percentile"] == float(percentile) and saved.key["quantile"] == float(quantile):
            return saved
        cache_key = (float(percentile), float(quantile))
        if cache_key not in self._stats_cache:
            train = self._split("train")
            key = statistics_key(self.run_dir, train.case_ids, percentile, quantile)
            self._stats_cache[cache_key] = compute_statistics(self.model, self.attribute_names, train, key)
        return self._stats_cache[cache_key]

    # ------------------------------------------------------------------ model calls
    def _images(self, images: Any, what: str = "images") -> tuple[Tensor, bool, Tensor]:
        """(batch (B, 1, *S) on the model's device, numpy?, the tensor given)."""
        x, as_numpy = _as_tensor(images, what)
        if tuple(x.shape) == self.image_shape:
            x = x.unsqueeze(0)
        if x.dim() != len(self.image_shape) + 1 or tuple(x.shape[1:]) != self.image_shape:
            raise ConfigError(f"{what} must be (B, {', '.join(map(str, self.image_shape))}) or one image "
                              f"{self.image_shape} for this {self.spatial_dims}D run, got {tuple(x.shape)}; "
                              f"read images from disk with attri_ssc.read_case")
        if not bool(torch.isfinite(x).all()):
            raise ConfigError(f"{what} contain NaN or infinite values")
        return x.to(self.device), as_numpy, x

    @torch.no_grad()
    def encode(self, images: Any) -> Any:
        """Sparse codes Z of images: (B, 1, *S) -> (B, K, *s), s = S / 2^(levels - 1) (the run's latent size)."""
        with self._lock:
            x, as_numpy, given = self._images(images)
            return _back(self.model.backbone(x).codes, as_numpy, given)

    @torch.no_grad()
    def decode(self, codes: Any) -> Any:
        """Images from codes: (B, K, *s) (or one (K, *s)) -> (B, 1, *S), not clamped."""
        with self._lock:
            z, as_numpy = _as_tensor(codes, "codes")
            k = self.model.backbone.config.n_atoms
            if z.dim() == self.spatial_dims + 1:
                z = z.unsqueeze(0)
            if z.dim() != self.spatial_dims + 2 or z.shape[1] != k:
                raise ConfigError(f"codes must be (B, {k}, *s) with {self.spatial_dims} spatial dims, got {tuple(z.shape)}")
            return _back(self.model.backbone.decode_codes(z.to(self.device)), as_numpy, z)

    @torch.no_grad()
    def reconstruct(self, images: Any) -> Any:
        """The model's reconstruction (its forward pass): (B, 1, *S) -> (B, 1, *S), not clamped."""
        with self._lock:
            x, as_numpy, given = self._images(images)
            return _back(self.model.backbone(x).recon, as_numpy, given)

    def _physical(self, predicted: Tensor) -> Tensor:
        """Mapper readings â (..., |A|) -> physical units: the training calibration where the model
        reads the attribute, else the attribute scaler's inverse (float64, CPU)."""
        from attri_ssc.data.datasets import AttributeScaler

        p = predicted.detach().double().cpu()
        units = self.statistics.units
        calibrated = units.physical(p)
        scaler = AttributeScaler.from_dict(self._loaded.scaler) if self._loaded.scaler else None
        if scaler is not None and scaler.fitted:
            calibrated = torch.where(torch.isfinite(calibrated), calibrated, scaler.inverse_transform(p))
        return calibrated

    @torch.no_grad()
    def read_attributes(self, images: Any) -> Any:
        """The model's reading of every attribute: (B, 1, *S) -> (B, |A|), physical units.

        â = W·(K ũ) of the image's codes, calibrated against the training truth (raw ≈ c·â + d;
        :func:`~attri_ssc.interpret.statistics.calibrate_units`); an attribute the model does not
        read (non-positive slope) is reported through the attribute scaler instead.
        """
        with self._lock:
            x, as_numpy, given = self._images(images)
            pred = self.model.mapper(self.model.backbone(x).codes)
            return _back(self._physical(pred).float(), as_numpy, given)

    def _selection(self, a: int, top_k: int | None, exclusive: bool, atoms: Sequence[int] | None):
        from attri_ssc.interpret.editing import AtomSelection, select_atoms

        weight = self.model.mapper.effective_weight().detach().cpu()
        if atoms:
            k = weight.shape[1]
            bad = [j for j in atoms if not 0 <= int(j) < k]
            if bad:
                raise ConfigError(f"atoms must be in [0, {k}), got {bad}")
            row = weight[a].double()
            return AtomSelection(a, tuple(int(j) for j in atoms), tuple(float(torch.sign(row[int(j)])) for j in atoms),
                                 tuple(float(row[int(j)]) for j in atoms))
        k = self.config.train.top_k if top_k is None else int(top_k)
        if k < 1:
            raise ConfigError(f"top_k must be >= 1, got {k}")
        selection = select_atoms(weight, a, k, exclusive)
        if not selection.atoms:
            raise ConfigError(f"attribute {self.attribute_names[a]!r} has no atom to edit (non-zero in W"
                              f"{', used by no other attribute' if exclusive else ''})")
        return selection

    def _hold(self, a: int, rule: str, hold: Sequence[str] | None, stats) -> tuple[tuple[int, ...], bool]:
        """(held attribute rows, use conditional prototypes?) for ``hold`` (None: the rule's default)."""
        from attri_ssc.interpret.editing import PROTOTYPE_RULES, feedback_hold

        if isinstance(hold, str):
            hold = [hold]
        rows = None if hold is None else tuple(self.attribute_index(n) for n in hold)
        if rows is not None and a in rows:
            raise ConfigError(f"hold names the edited attribute {self.attribute_names[a]!r} itself")
        if rule == "feedback":
            return (feedback_hold(self.attribute_names, a) if rows is None else rows), False
        if rule in PROTOTYPE_RULES:
            conditioned = stats.conditional_prototypes.conditioned_on.get(a, ())
            if rows is None:
                return (conditioned, True) if rule == "shift" else ((), False)
            if not rows:
                return (), False
            if set(rows) != set(conditioned):
                allowed = [self.attribute_names[o] for o in conditioned]
                raise ConfigError(f"rule {rule!r} can hold {allowed or 'nothing'} for "
                                  f"{self.attribute_names[a]!r} (the conditional prototypes), got {list(hold)}")
            return conditioned, True
        if rows:
            raise ConfigError(f"rule {rule!r} holds nothing; hold= needs rule feedback, shift or prototype")
        return (), False

    def edit(self, images: Any, attribute: str, alphas: Sequence[float] | int = 9, rule: str = DEFAULT_RULE,
             hold: Sequence[str] | None = None, *, top_k: int | None = None, atoms: Sequence[int] | None = None,
             active_only: bool = False, exclusive: bool = False, saliency: bool = False,
             percentile: float | None = None, quantile: float | None = None,
             case_id: str | None = None, slice: int | None = None, feedback=None) -> EditResult:
        """Edit one attribute of a batch of images in code space (paper A.5 and our rules).

        Args:
            images: (B, 1, *S) or one image (1, *S); or an item dict of :meth:`test_items` / :meth:`item`
                (beyond the BRIEF: its case id and slice are then recorded in the settings).
            attribute: the attribute's name (one of :attr:`attribute_names`).
            alphas: α values in [−1, 1] (or an odd int n: n evenly spaced values, α = 0 in the centre).
            rule: ``feedback`` (default: per-image steps the model reads as the attribute moving with
                the held ones still), ``shift``, ``prototype``, ``magnitude`` or ``literal``
                (``interpret/editing.py``).
            hold: names of attributes to hold (None: the rule's default, e.g. for ``feedback`` every
                other attribute except the free annulus quantities; ``[]``: none).
        Keyword args (beyond the BRIEF): ``top_k`` atoms (default: the run's train.top_k) or explicit
        ``atoms``; ``active_only``, ``exclusive`` as in ``attri-ssc edit``; ``saliency`` to compute
        |dx̂/dα| maps; ``percentile``/``quantile`` other bound/prototype settings (need the data);
        ``case_id``/``slice`` recorded in the settings; ``feedback`` the ``feedback`` rule's search
        (:class:`~attri_ssc.interpret.editing.FeedbackSettings`; default: its defaults), recorded too.

        Returns:
            :class:`EditResult` with images (n, B, 1, *S), codes (n, B, K, *s), readings (n, B, |A|).
        """
        from attri_ssc.interpret.editing import FeedbackSettings, alpha_grid, edit_sweep

        if feedback is not None and not isinstance(feedback, FeedbackSettings):
            raise ConfigError(f"feedback must be a FeedbackSettings, got {type(feedback).__name__}")
        search = (feedback or FeedbackSettings()) if rule == "feedback" else None
        if isinstance(images, dict) and "image" in images:
            case_id = images.get("case_id") if case_id is None else case_id
            slice = images.get("slice") if slice is None else slice
            images = images["image"]
        if rule not in EDIT_RULES:
            raise ConfigError(f"rule must be one of {EDIT_RULES}, got {rule!r}")
        if isinstance(alphas, int) and not isinstance(alphas, bool):
            try:
                alpha_t = alpha_grid(alphas)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        else:
            alpha_t = torch.as_tensor(np.asarray(alphas, dtype=np.float64).reshape(-1))
        if alpha_t.numel() == 0 or not bool(((alpha_t >= -1) & (alpha_t <= 1)).all()):
            raise ConfigError(f"alphas must be values in [-1, 1], got {alpha_t.tolist()}")
        a = self.attribute_index(attribute)
        with self._lock:
            x, as_numpy, given = self._images(images)
            stats = (self.statistics if percentile is None and quantile is None else
                     self.statistics_for(percentile if percentile is not None else self.statistics.key["percentile"],
                                         quantile if quantile is not None else self.statistics.key["quantile"]))
            selection = self._selection(a, top_k, exclusive, atoms)
            held, conditional = self._hold(a, rule, hold, stats)
            prototypes = stats.conditional_prototypes if conditional else stats.prototypes
            model = self.model.eval()
            image_key = _image_key(x)
            z = self._input_codes(x, image_key)  # (B, K, *s), encoded once per image
            steps = self._feedback_steps(image_key, z, selection, held, stats, search) if search else None
            sweep = edit_sweep(model, x, selection, stats.bounds, alpha_t, rule, active_only, saliency=saliency,
                               prototypes=prototypes, steps=steps, codes=z)  # rows α-major: (n·B, ...)
            with torch.no_grad():
                reread = model.mapper(self._codes_only(sweep.images.to(self.device).clamp(0.0, 1.0)))
        n, b = alpha_t.numel(), x.shape[0]

        def split(t: Tensor) -> Tensor:
            return t.reshape(n, b, *t.shape[1:])

        settings = EditSettings(attribute=attribute, alphas=[float(v) for v in alpha_t.tolist()], rule=rule,
                                hold=[self.attribute_names[o] for o in held], atoms=list(selection.atoms),
                                run=str(self.run_dir), case_id=case_id, slice=slice, top_k=top_k,
                                active_only=active_only, exclusive=exclusive,
                                feedback=None if search is None else asdict(search))
        return EditResult(images=_back(split(sweep.images), as_numpy, given),
                          codes=_back(split(sweep.codes), as_numpy, given),
                          readings=_back(split(self._physical(reread).float()), as_numpy, given),
                          alphas=settings.alphas, atoms=list(selection.atoms), settings=settings,
                          saliency=_back(split(sweep.saliency), as_numpy, given) if saliency else None)

    def _codes_only(self, x: Tensor) -> Tensor:
        """Sparse codes Z of images (B, 1, *S) -> (B, K, *s): the encoder and the sparse coder, without
        the decoder pass of the full forward (the same codes as ``backbone(x).codes``)."""
        backbone = self.model.backbone
        with torch.no_grad():
            return backbone.sparse_code(backbone.encode(x))[0]

    def _input_codes(self, x: Tensor, image_key: tuple) -> Tensor:
        """Codes of the images being edited (B, K, *s), cached per image content (LRU of
        :data:`CODES_CACHE_SIZE`): only α changes while a slider moves."""
        return _cached(self._codes_cache, image_key, CODES_CACHE_SIZE, lambda: self._codes_only(x))

    def _feedback_steps(self, image_key: tuple, z: Tensor, selection, held: tuple[int, ...], stats, search):
        """The ``feedback`` rule's per-image steps (``interpret/editing.py``), searched once per image,
        atoms, holds, statistics and search settings: a slider that moves α again reuses them (LRU of
        :data:`FEEDBACK_CACHE_SIZE`)."""
        from attri_ssc.interpret.editing import feedback_steps

        key = (image_key, selection.attribute, selection.atoms, selection.signs, tuple(held), id(stats), search)
        return _cached(self._feedback_cache, key, FEEDBACK_CACHE_SIZE,
                       lambda: feedback_steps(self.model, z, selection, held, stats.units, search))

    def saliency(self, images: Any, attribute: str, alpha: float = 1.0, rule: str = DEFAULT_RULE,
                 hold: Sequence[str] | None = None, **options) -> Any:
        """Where the edit of ``attribute`` at ``alpha`` changes the image: (B, 1, *S) -> (B, 1, *S), >= 0.

        |J_G(Z') · dZ'/dα| restricted to the edited atoms (``interpret/saliency.py``); the options are
        those of :meth:`edit`.
        """
        result = self.edit(images, attribute, [float(alpha)], rule, hold, saliency=True, **options)
        return result.saliency[0]

    def replay(self, settings: EditSettings | str | Path) -> tuple[EditResult, Tensor]:
        """Redo an exported edit (beyond the BRIEF): (EditResult, the edited image (1, 1, *S)).

        The image is the settings' ``image_path`` (an uploaded case) or its case/slice in the run's data.
        """
        if not isinstance(settings, EditSettings):
            settings = EditSettings.load(settings)
        if settings.image_path:
            path = Path(settings.image_path)
            if not path.is_file():
                raise DataError(f"settings image not found: {path}")
            try:
                image = torch.from_numpy(np.load(path, allow_pickle=False).astype(np.float32))
            except ValueError as exc:
                raise DataError(f"{path}: not a numpy image ({exc})") from None
        elif settings.case_id:
            image = self.item(settings.case_id, settings.slice)["image"]
        else:
            raise ConfigError("settings name neither a case_id nor an image_path")
        result = self.edit(image, settings.attribute, settings.alphas, settings.rule, settings.hold,
                           atoms=settings.atoms or None, top_k=settings.top_k, active_only=settings.active_only,
                           exclusive=settings.exclusive, saliency=True, case_id=settings.case_id,
                           slice=settings.slice, feedback=settings.feedback_settings())
        result.settings.image_path = settings.image_path
        return result, image

    def interpolate(self, image_a: Any, image_b: Any, steps: int = 8) -> Any:
        """Eq. 16 between two images: (1, *S) and (1, *S) -> (steps, 1, *S) decoded frames.

        Frame 0 and frame ``steps − 1`` are the two reconstructions; not clamped.
        """
        from attri_ssc.interpret.interpolation import interpolate

        if not isinstance(steps, int) or steps < 2:
            raise ConfigError(f"steps must be an integer >= 2, got {steps!r}")
        with self._lock:
            xa, as_numpy, given = self._images(image_a, "image_a")
            xb, _, _ = self._images(image_b, "image_b")
            if xa.shape[0] != 1 or xb.shape[0] != 1:
                raise ConfigError(f"interpolate takes one image each, got batches of {xa.shape[0]} and {xb.shape[0]}")
            return _back(interpolate(self.model.backbone, xa[0], xb[0], steps=steps).images, as_numpy, given)

    def sample(self, n: int, seed: int = 0, as_numpy: bool = False) -> Any:
        """``n`` new images from the sparse code prior fitted on the training codes: (n, 1, *S) in [0, 1].

        Tensors on CPU (numpy with ``as_numpy``, beyond the BRIEF). Same ``seed``, same images.
        """
        from attri_ssc.interpret.sampling import decode_samples

        if not isinstance(n, int) or n < 1:
            raise ConfigError(f"n must be an integer >= 1, got {n!r}")
        with self._lock:
            codes = self.statistics.prior.sample(n, seed=int(seed))
            return _back(decode_samples(self.model.backbone, codes), as_numpy)

    def judge(self, images: Any, slice_thickness_mm: float | Sequence[float] | None = None) -> Any:
        """The model-free judge's reading (``interpret/judge.py``): (B, 1, H, W) -> (B, |A|), physical units.

        For 2D phantom-like slices (a bright blood pool at the centre); NaN where the judge cannot
        measure the image or does not measure the attribute (e.g. infarct). Volumes (mL) need
        ``slice_thickness_mm`` (scalar or (B,)), else they are NaN.

        Raises:
            ConfigError: a 3D run, or a run none of whose attributes the judge measures.
        """
        from attri_ssc.interpret.judge import measure_batch

        if self.spatial_dims != 2:
            raise ConfigError("the model-free judge measures 2D slices; this run is 3D")
        judged = {"lv_area", "myo_area", "wall_thickness", "lv_volume", "myo_volume"}
        if not judged & set(self.attribute_names):
            raise ConfigError(f"the judge measures {sorted(judged)}, none of which this run supervises "
                              f"({', '.join(self.attribute_names)})")
        x, as_numpy, given = self._images(images)
        thick = 1.0 if slice_thickness_mm is None else slice_thickness_mm
        got = measure_batch(x.clamp(0, 1).cpu(), float(self.config.data.spacing_mm), thick)
        out = np.full((x.shape[0], len(self.attribute_names)), np.nan)
        for i, name in enumerate(self.attribute_names):
            if name in judged and (slice_thickness_mm is not None or not name.endswith("_volume")):
                out[:, i] = np.where(got["valid"] > 0, got[name], np.nan)
        return _back(torch.from_numpy(out).float(), as_numpy, given)


# ---------------------------------------------------------------------------- entry points
def _image_key(x: Tensor) -> tuple:
    """A cache key for the content of a batch of images (B, 1, *S): (sha256, shape, dtype)."""
    import hashlib

    digest = hashlib.sha256(x.detach().cpu().contiguous().numpy().tobytes()).hexdigest()
    return digest, tuple(x.shape), str(x.dtype)


def load_run(path: str | Path, data: str | Path | None = None, device: str | torch.device = "cpu") -> Run:
    """Load a trained Attri-SSC-VAE run folder as a :class:`Run`.

    Args:
        path: the run folder written by ``attri-ssc train`` (``model.{safetensors,json}``).
        data: the data folder; needed only for runs saved without ``interpretation.*`` (it is then
            computed from the training split and saved in the run folder) and for
            :meth:`Run.test_items` when the folder the run recorded has moved.
        device: torch device for the model (``"cpu"``, ``"cuda"``).

    Raises:
        CheckpointError: no trained model in ``path`` (or a corrupted one).
        ConfigError: a baseline run (the API serves ``attri_ssc`` runs).
    """
    from attri_ssc.runs import load_run as load_loaded_run

    if data is not None and not Path(data).exists():
        raise DataError(f"data folder not found: {data}")
    loaded = load_loaded_run(path, device=device)
    if loaded.family != "attri_ssc":
        raise ConfigError(f"{path} is a {loaded.family!r} run; attri_ssc.load_run serves attri_ssc runs")
    return Run(loaded, data)


def _spatial_items(preps, run: Run) -> CaseImages:
    from attri_ssc.data.datasets import _make_dataset

    ds = _make_dataset(preps, run.config.data, run.attribute_names)
    return CaseImages(ds.images, ds.raw_attributes, run.attribute_names, ds.case_ids, ds.slice_indices)


def _read_case_files(image_path: Path, mask_path: Path | None, run: Run, case_id: str) -> CaseImages:
    """A case that is not a complete EMIDEC case (no clinical file, maybe no mask): image (and mask)
    through the training preprocessing; attributes from the mask, clinical ones NaN."""
    from attri_ssc.data.attributes import ATTRIBUTES, IMAGE_ATTRIBUTES, measure_mask
    from attri_ssc.data.datasets import preprocess_params
    from attri_ssc.data.emidec import check_mask, load_nifti
    from attri_ssc.data.preprocess import pad_slices, preprocess_stack

    image, spacing = load_nifti(image_path, case_id)
    if image.ndim != 3 or len(spacing) < 3:
        raise DataError(f"{image_path}: expected a 3D (X, Y, slices) volume, got shape {image.shape}")
    image = image.astype(np.float32)
    if not np.all(np.isfinite(image)):
        raise DataError(f"{image_path}: image has non-finite values")
    spacing = tuple(float(s) for s in spacing[:3])
    if mask_path is not None:
        from attri_ssc.data.labels import EMIDEC_LABELS

        mask = check_mask(load_nifti(mask_path, case_id)[0], mask_path, case_id, image.shape,
                          run.config.data.label_map or EMIDEC_LABELS)
        case_attrs, slice_attrs = measure_mask(mask, spacing)
    else:
        mask = np.zeros(image.shape, dtype=np.uint8)
        case_attrs, slice_attrs = None, None
    cfg = run.config.data
    out = preprocess_stack(image, mask, spacing, preprocess_params(cfg))

    def row(k: int | None) -> list[float]:
        values = []
        for name in run.attribute_names:
            spec = ATTRIBUTES.get(name)
            if spec is not None and spec.scope == "image" and case_attrs is not None:
                src = case_attrs if k is None else slice_attrs[k]
                values.append(float(src[IMAGE_ATTRIBUTES.index(name)]))
            elif name == "pathological" and case_id[:1] in ("N", "P"):
                values.append(float(case_id[0] == "P"))
            else:
                values.append(float("nan"))
        return values

    if cfg.spatial_dims == 2:
        if slice_attrs is not None:
            keep = np.flatnonzero(slice_attrs[:, IMAGE_ATTRIBUTES.index("myo_volume")] > 0)
        else:
            keep = np.arange(out["image"].shape[0])
        images = torch.from_numpy(np.stack([out["image"][k][None] for k in keep]).astype(np.float32))
        rows, slices = [row(int(k)) for k in keep], [int(k) for k in keep]
    else:
        try:
            images = torch.from_numpy(pad_slices(out["image"], cfg.n_slices)[None, None].astype(np.float32))
        except ValueError:
            raise DataError(f"{image_path}: {out['image'].shape[0]} slices, more than data.n_slices={cfg.n_slices}") from None
        rows, slices = [row(None)], [-1]
    return CaseImages(images, torch.tensor(rows, dtype=torch.float32).reshape(len(rows), len(run.attribute_names)),
                      run.attribute_names, [case_id] * len(rows), slices)


def read_case(path: str | Path, run: Run, mask: str | Path | None = None) -> CaseImages:
    """Read one case from disk as model-ready images (the training preprocessing of ``run``).

    Args:
        path: an EMIDEC case folder (``Case_P012`` with ``Images/`` and ``Contours/``; the clinical
            file ``Case P012.txt`` beside it is used when present) or a NIfTI image (X, Y, slices).
        run: the :class:`Run` whose data config (spacing, size, intensity scaling, 2D/3D) applies.
        mask: (beyond the BRIEF) the labels NIfTI of a bare image; without it the slices are centred
            on the field of view and image attributes are NaN.

    Returns:
        :class:`CaseImages`: images (N, 1, *S): a 2D run's slices with myocardium (every slice when
        there is no mask), a 3D run's one padded volume; attributes (N, |A|) physical units.
    """
    from attri_ssc.data.datasets import preprocess_params, prepare_case
    from attri_ssc.data.emidec import discover, inspect_case

    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such case folder or image")
    if path.is_file():
        name = path.name.split(".")[0]
        case_id = name.removeprefix("Case_") or name
        return _read_case_files(path, Path(mask) if mask is not None else None, run, case_id)
    if not path.name.startswith("Case_"):
        raise DataError(f"{path}: expected an EMIDEC case folder named Case_<id> (with Images/ and Contours/) "
                        f"or a NIfTI file")
    case_id = path.name.removeprefix("Case_").upper()
    files, _ = discover(path.parent)
    found = [f for f in files if f.case_id == case_id and Path(f.folder).resolve() == path.resolve()]
    if found and found[0].image_path is not None:
        case, problems = inspect_case(found[0])
        if case is not None:
            prep = prepare_case(case, preprocess_params(run.config.data), run.config.data.cache_dir)
            return _spatial_items([prep], run)
        f = found[0]
        errors = [str(p) for p in problems if p.severity == "error"]
        if errors:
            raise DataError(f"{path}: " + "; ".join(errors))
        return _read_case_files(Path(f.image_path), Path(f.mask_path) if f.mask_path else None, run, case_id)
    raise DataError(f"{path}: no image found (expected {path / 'Images' / (path.name + '.nii.gz')})")


LAYOUTS = ("emidec", "acdc", "manifest")


def read_folder(path: str | Path, run: Run, layout: str | None = None) -> CaseImages:
    """Read every usable case of a data folder as model-ready images (the training preprocessing).

    Args:
        path: a data folder in EMIDEC layout (``Case_<id>/Images``, ``Case_<id>/Contours``,
            ``Case <id>.txt``), ACDC layout (``patientNNN/Info.cfg`` with ED/ES frames) or a
            manifest (``manifest.csv``, or the CSV file itself); see docs/your-cohort.md.
        run: the :class:`Run` whose data config applies (its label map when ``layout`` is the
            run's own, else the layout's standard map).
        layout: ``"emidec"``, ``"acdc"`` or ``"manifest"`` (None: detected from the folder).

    Returns:
        :class:`CaseImages` of all cases, sorted by case id (2D: one entry per slice with myocardium).
    """
    from attri_ssc.data.datasets import preprocess_params, prepare_case
    from attri_ssc.data.layouts import detect_layout, open_folder

    if layout is not None and layout not in LAYOUTS:
        raise ConfigError(f"unknown layout {layout!r}; choose from: {', '.join(LAYOUTS)}")
    layout = layout or detect_layout(path)
    cfg = run.config.data
    label_map = cfg.label_map if layout == (cfg.layout or "emidec") else None
    params = preprocess_params(cfg)
    cases = open_folder(path, layout, label_map, cfg.column_kinds, cfg.skip_bad_cases)
    preps = [prepare_case(case, params, cfg.cache_dir) for case in cases]
    if not preps:
        raise DataError(f"{path}: no usable cases")
    return _spatial_items(preps, run)


__all__ = ["CaseImages", "DEFAULT_RULE", "EDIT_RULES", "EditResult", "EditSettings", "LAYOUTS", "Run", "load_run",
           "read_case", "read_folder"]


def _cached(cache: OrderedDict, key: Any, size: int, compute: Callable[[], Any]) -> Any:
    """``cache[key]``, computed by ``compute()`` on a miss; ``cache`` keeps the ``size`` most
    recently used entries."""
    value = cache.get(key)
    if value is None:
        value = cache[key] = compute()
        while len(cache) > size:
            cache.popitem(last=False)
    else:
        cache.move_to_end(key)
    return value
