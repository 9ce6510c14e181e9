"""The explorer's state: one run, its gallery, uploaded cases and the edits already computed.

Everything here is synchronous and runs on the :class:`~attri_ssc.serve.worker.ModelWorker`
thread; the model is only ever touched through the public API (:class:`attri_ssc.Run`).

Slider updates are cheap because an edit is computed once per (item, attribute, rule, hold)
for the whole slider: the first move calls :meth:`attri_ssc.Run.edit` with every α the slider
can take (:data:`ALPHA_GRID`, its step 0.05, so that ``feedback``'s per-image search runs once
for the image and the attribute), with saliency; every later move of that slider reads its
frame from a small LRU cache and only renders PNGs. An α off the grid (a script may send any
α in [−1, 1]) is edited on its own, exactly, through the same call. Interpolation is cached
the same way per pair of items (:data:`INTERPOLATION_FRAMES` frames, t = 0, 0.05, …, 1).
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from attri_ssc.serve import imaging
from attri_ssc.serve.errors import ApiError
from attri_ssc.serve.uploads import UploadError, UploadLimits, check_mask, read_nifti_bytes, write_case

#: The α values of one slider (its step is 0.05); α = 0 (the reconstruction) is the centre.
ALPHA_GRID: tuple[float, ...] = tuple(round(-1.0 + 0.05 * i, 2) for i in range(41))
#: Frames of one interpolation (t = 0, 0.05, ..., 1), the interpolation slider's positions.
INTERPOLATION_FRAMES = 21
#: Computed edits and interpolations kept (least recently used dropped first).
CACHE_SIZE = 48
#: Uploaded cases kept (oldest dropped first, with their gallery items).
MAX_UPLOADS = 16


@dataclass
class Item:
    """One image the page can edit: ``image`` (1, *S) float32 tensor, model-ready."""

    id: str
    case_id: str
    slice: int | None
    source: str
    image: Any
    attributes: dict[str, float | None]
    thumbnail: bytes = b""
    upload: str | None = None
    reading: np.ndarray | None = None  # the model's reading of the image itself (|A|,)


@dataclass
class EditFrames:
    """One slider's edits of one item: the :class:`attri_ssc.EditResult` of every α computed so far."""

    alphas: list[float]
    images: np.ndarray          # (n, 1, *S)
    saliency: np.ndarray | None  # (n, 1, *S)
    readings: np.ndarray        # (n, |A|)
    settings: Any
    judged: dict[int, np.ndarray] = field(default_factory=dict)


def _none_if_nan(v: float) -> float | None:
    v = float(v)
    return v if np.isfinite(v) else None


class Explorer:
    """State and operations of ``attri-ssc serve`` for one :class:`attri_ssc.Run` (module doc).

    Args:
        run: the loaded run.
        limits: caps on uploaded files.
        gallery_limit: at most this many held-out items in the gallery.
    """

    def __init__(self, run, limits: UploadLimits = UploadLimits(), gallery_limit: int = 200):
        self.run = run
        self.limits = limits
        self.items: dict[str, Item] = {}
        self._edits: OrderedDict[tuple, EditFrames] = OrderedDict()
        self._interpolations: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._upload_root = Path(tempfile.mkdtemp(prefix="attri-ssc-serve-"))
        self._upload_counter = itertools.count(1)
        self._uploads: OrderedDict[str, list[str]] = OrderedDict()
        self.gallery_note = ""
        self._judge_note: str | None = None
        self._load_gallery(gallery_limit)

    # ------------------------------------------------------------------ facts
    def info(self) -> dict[str, Any]:
        from attri_ssc.api import DEFAULT_RULE, EDIT_RULES

        units, ranges = self.run.attribute_units, self.run.attribute_ranges
        shape = list(self.run.image_shape)
        return {
            "run": str(self.run.run_dir),
            "spatial_dims": int(self.run.spatial_dims),
            "image_shape": shape,
            "slices": shape[1] if self.run.spatial_dims == 3 else None,
            "attributes": [{"name": n, "unit": units.get(n, ""), "low": float(ranges[n][0]),
                            "high": float(ranges[n][1])} for n in self.run.attribute_names],
            "rules": list(EDIT_RULES),
            "default_rule": DEFAULT_RULE,
            "judge": self.judge_note() is None,
            "limits": {"max_upload_bytes": self.limits.max_bytes, "max_upload_voxels": self.limits.max_voxels},
        }

    def gallery(self) -> list[dict[str, Any]]:
        return [self.gallery_entry(item) for item in self.items.values()]

    def gallery_entry(self, item: Item) -> dict[str, Any]:
        return {"id": item.id, "case_id": item.case_id, "slice": item.slice, "source": item.source,
                "attributes": item.attributes, "thumbnail": imaging.data_url(item.thumbnail)}

    def _load_gallery(self, limit: int) -> None:
        from attri_ssc.errors import AttriSSCError

        try:
            entries = self.run.test_items()
        except AttriSSCError as exc:  # no data folder: the page still takes uploads
            self.gallery_note = f"no held-out images ({exc}); upload a case"
            return
        for entry in entries[:limit]:
            self._add_item(entry, "test")

    def _add_item(self, entry: dict[str, Any], source: str, upload: str | None = None, prefix: str = "") -> Item:
        case_id = str(entry["case_id"])
        slice_index = entry.get("slice")
        base = prefix or case_id
        item_id = base if slice_index is None else f"{base}:{int(slice_index)}"
        image = entry["image"]
        attrs = {k: _none_if_nan(v) for k, v in (entry.get("attributes") or {}).items()}
        item = Item(item_id, case_id, None if slice_index is None else int(slice_index), source, image, attrs,
                    upload=upload)
        item.thumbnail = imaging.grey_png(imaging.to_plane(image))
        self.items[item_id] = item
        return item

    def item(self, item_id: str, field_name: str = "item") -> Item:
        try:
            return self.items[item_id]
        except KeyError:
            raise ApiError(404, field_name, f"unknown item {item_id!r}; GET api/items lists the "
                                            f"{len(self.items)} items") from None

    def attribute(self, name: str) -> int:
        if name not in self.run.attribute_names:
            raise ApiError(422, "attribute", f"unknown attribute {name!r}; this run supervises "
                                             f"{', '.join(self.run.attribute_names)}")
        return self.run.attribute_names.index(name)

    def slice_index(self, requested: int | None) -> int | None:
        if self.run.spatial_dims != 3:
            if requested is not None:
                raise ApiError(422, "slice", "slice applies to 3D runs only; this run is 2D (send null)")
            return None
        depth = int(self.run.image_shape[1])
        if requested is None:
            return depth // 2
        if not 0 <= requested < depth:
            raise ApiError(422, "slice", f"slice must be in [0, {depth - 1}], got {requested}")
        return int(requested)

    def judge_note(self) -> str | None:
        """None when the model-free judge can read this run's images, else why not."""
        if self._judge_note is None:
            from attri_ssc.errors import AttriSSCError

            try:
                self.run.judge(np.zeros((1, *self.run.image_shape), dtype=np.float32))
                self._judge_note = ""
            except AttriSSCError as exc:
                self._judge_note = f"no model-free judge for this run: {exc}"
        return self._judge_note or None

    # ------------------------------------------------------------------ editing
    def _hold_names(self, attribute: int, rule: str, hold: bool | list[str]) -> list[str] | None:
        """The ``hold`` argument of :meth:`attri_ssc.Run.edit` for the page's toggle."""
        names = self.run.attribute_names
        if isinstance(hold, list):
            unknown = [h for h in hold if h not in names]
            if unknown:
                raise ApiError(422, "hold", f"unknown attribute(s) {unknown} in hold; this run supervises "
                                            f"{', '.join(names)}")
            return list(hold)
        if not hold:
            return []
        if rule in ("feedback", "shift"):
            return None  # the rule's own default: what `attri-ssc edit` holds
        if rule == "prototype":
            from attri_ssc.interpret.editing import hold_fixed_indices

            return [names[o] for o in hold_fixed_indices(names).get(attribute, ())]
        return []  # magnitude and literal hold nothing

    def _frames(self, item: Item, attribute: int, alpha: float, rule: str, hold: bool | list[str],
                saliency: bool, reconstruction_only: bool = True) -> tuple[EditFrames, int]:
        """The edit frames holding ``alpha`` (computing the slider's whole grid on a first move).

        α = 0 shows the reconstruction, the same under every rule: unless ``reconstruction_only``
        is False (export, which needs the rule's settings), it is computed without the rule's search.
        """
        from attri_ssc.errors import AttriSSCError

        hold_names = self._hold_names(attribute, rule, hold)
        key = (item.id, attribute, rule, None if hold_names is None else tuple(hold_names), saliency)
        frames = self._edits.get(key)
        on_grid = any(abs(alpha - a) < 1e-9 for a in ALPHA_GRID)
        if frames is not None:
            self._edits.move_to_end(key)
            for i, a in enumerate(frames.alphas):
                if abs(a - alpha) < 1e-9:
                    return frames, i
        name = self.run.attribute_names[attribute]
        case = dict(case_id=item.case_id if item.source == "test" else None, slice=item.slice)
        if alpha == 0.0 and reconstruction_only:
            # α = 0 leaves the codes alone under every rule: the reconstruction, without a step search
            zero_key = (item.id, attribute, "reconstruction")
            frames = self._edits.get(zero_key)
            if frames is None:
                result = self.run.edit(item.image, name, [0.0], "magnitude", [], saliency=False, **case)
                frames = EditFrames([0.0], _np(result.images)[:, 0], None, _np(result.readings)[:, 0],
                                    result.settings)
                frames.settings.rule = rule
                frames.settings.hold = list(hold_names) if hold_names is not None else []
                self._remember(zero_key, frames)
            return frames, 0
        alphas = list(ALPHA_GRID) if on_grid else [0.0, float(alpha)]
        try:
            result = self.run.edit(item.image, name, alphas, rule, hold_names, saliency=saliency, **case)
        except AttriSSCError as exc:
            field_name = "hold" if "hold" in str(exc) else "rule" if "rule" in str(exc) else "attribute"
            raise ApiError(422, field_name, str(exc)) from None
        new = EditFrames(alphas=[float(a) for a in result.alphas], images=_np(result.images)[:, 0],
                         saliency=None if result.saliency is None else _np(result.saliency)[:, 0],
                         readings=_np(result.readings)[:, 0], settings=result.settings)
        if on_grid:
            self._remember(key, new)
        index = min(range(len(new.alphas)), key=lambda i: abs(new.alphas[i] - alpha))
        return new, index

    def _remember(self, key: tuple, frames: EditFrames) -> None:
        self._edits[key] = frames
        while len(self._edits) > CACHE_SIZE:
            self._edits.popitem(last=False)

    def _judge(self, frames: EditFrames, index: int) -> np.ndarray | None:
        if self.judge_note() is not None:
            return None
        if index not in frames.judged:
            frames.judged[index] = _np(self.run.judge(frames.images[index][None].astype(np.float32)))[0]
        return frames.judged[index]

    def edit(self, item_id: str, attribute_name: str, alpha: float, rule: str, hold: bool | list[str],
             slice_request: int | None, saliency: bool = True) -> dict[str, Any]:
        """One slider position: images, re-reads before/after, judge, settings (``EditResponse``)."""
        started = time.perf_counter()
        item = self.item(item_id)
        attribute = self.attribute(attribute_name)
        plane_index = self.slice_index(slice_request)
        frames, i = self._frames(item, attribute, float(alpha), rule, hold, saliency)
        zero = min(range(len(frames.alphas)), key=lambda j: abs(frames.alphas[j]))
        names = self.run.attribute_names
        original = imaging.to_plane(item.image, plane_index)
        recon = imaging.to_plane(frames.images[zero], plane_index)
        edited = imaging.to_plane(frames.images[i], plane_index)
        diff_png, diff_scale = imaging.difference_png(edited, recon)
        sal_png, sal_peak = (imaging.saliency_png(imaging.to_plane(frames.saliency[i], plane_index))
                             if frames.saliency is not None else (None, 0.0))
        original_reading = self._original_reading(item)

        def named(values) -> dict[str, float | None]:
            return {n: _none_if_nan(values[k]) for k, n in enumerate(names)}

        judge = None
        judge_before, judge_after = self._judge(frames, zero), self._judge(frames, i)
        if judge_before is not None and judge_after is not None:
            judge = {"before": named(judge_before), "after": named(judge_after)}
        settings = frames.settings.to_dict()
        settings["alphas"] = [float(frames.alphas[i])]
        return {
            "superseded": False,
            "item": item.id, "attribute": attribute_name, "alpha": float(frames.alphas[i]), "rule": rule,
            "hold": bool(hold), "held": list(frames.settings.hold), "slice": plane_index,
            "images": {
                "original": imaging.data_url(imaging.grey_png(original)),
                "reconstruction": imaging.data_url(imaging.grey_png(recon)),
                "edited": imaging.data_url(imaging.grey_png(edited)),
                "difference": imaging.data_url(diff_png),
                "saliency": imaging.data_url(sal_png) if sal_png is not None else None,
            },
            "scales": {"intensity": list(imaging.INTENSITY_RANGE), "difference": [-diff_scale, diff_scale],
                       "saliency": [0.0, sal_peak]},
            "readings": {"original": named(original_reading), "before": named(frames.readings[zero]),
                         "after": named(frames.readings[i])},
            "judge": judge,
            "judge_note": self.judge_note() or ("the judge reads what it measures (areas, wall thickness); "
                                                 "other attributes show no judge bar"),
            "settings": settings,
            "server_ms": 1000.0 * (time.perf_counter() - started),
        }

    def _original_reading(self, item: Item) -> np.ndarray:
        if item.reading is None:
            item.reading = _np(self.run.read_attributes(item.image))[0]
        return item.reading

    def export(self, item_id: str, attribute_name: str, alpha: float, rule: str, hold: bool | list[str],
               slice_request: int | None) -> tuple[dict[str, Any], np.ndarray | None]:
        """(the settings that replay this edit, the model-ready image for an uploaded item else None)."""
        item = self.item(item_id)
        attribute = self.attribute(attribute_name)
        self.slice_index(slice_request)
        frames, i = self._frames(item, attribute, float(alpha), rule, hold, True, reconstruction_only=False)
        settings = frames.settings.to_dict()
        settings["alphas"] = [float(frames.alphas[i])]
        image = None
        if item.source == "upload":
            image = _np(item.image).astype(np.float32)
            settings["case_id"] = None
            settings["image_path"] = f"{item.id.replace(':', '_')}.image.npy"
        return settings, image

    # ------------------------------------------------------------------ interpolation
    def interpolate(self, item_a: str, item_b: str, t: float, slice_request: int | None) -> dict[str, Any]:
        started = time.perf_counter()
        a, b = self.item(item_a, "item_a"), self.item(item_b, "item_b")
        plane_index = self.slice_index(slice_request)
        key = (a.id, b.id)
        frames = self._interpolations.get(key)
        if frames is None:
            frames = _np(self.run.interpolate(a.image, b.image, steps=INTERPOLATION_FRAMES))
            self._interpolations[key] = frames
            while len(self._interpolations) > CACHE_SIZE:
                self._interpolations.popitem(last=False)
        else:
            self._interpolations.move_to_end(key)
        frame = int(round(float(t) * (INTERPOLATION_FRAMES - 1)))
        plane = imaging.to_plane(frames[frame], plane_index)
        return {"item_a": a.id, "item_b": b.id, "t": frame / (INTERPOLATION_FRAMES - 1), "frame": frame,
                "frames": INTERPOLATION_FRAMES, "image": imaging.data_url(imaging.grey_png(plane)),
                "server_ms": 1000.0 * (time.perf_counter() - started)}

    # ------------------------------------------------------------------ uploads
    def add_upload(self, image_bytes: bytes, mask_bytes: bytes | None) -> list[Item]:
        """Check an uploaded case, preprocess it as the run's training data, add its items to the gallery."""
        from attri_ssc.api import read_case
        from attri_ssc.errors import AttriSSCError

        image = read_nifti_bytes(image_bytes, "image", self.limits)
        mask = read_nifti_bytes(mask_bytes, "mask", self.limits) if mask_bytes else None
        if mask is not None:
            check_mask(mask, image)
        upload_id = f"upload-{next(self._upload_counter)}"
        folder = self._upload_root / upload_id
        try:
            case = write_case(folder, upload_id.replace("-", ""), image, mask)
            try:
                images = read_case(case / "Images" / f"{case.name}.nii.gz", run=self.run,
                                   mask=(case / "Contours" / f"{case.name}.nii.gz") if mask is not None else None)
            except AttriSSCError as exc:
                raise UploadError("mask" if mask is not None and "mask" in str(exc).lower() else "image",
                                  str(exc).replace(str(folder), upload_id)) from None
            except (ValueError, IndexError) as exc:  # the preprocessing cannot use this volume
                raise UploadError("image", f"cannot be preprocessed as this run's data ({exc})") from None
            if len(images) == 0:
                raise UploadError("mask", "no slice of the mask contains myocardium")
            added = [self._add_item(entry, "upload", upload=upload_id, prefix=upload_id)
                     for entry in images.items()]
            for it in added:
                it.case_id = upload_id
        finally:
            shutil.rmtree(folder, ignore_errors=True)  # the images live in memory from here on
        self._uploads[upload_id] = [it.id for it in added]
        while len(self._uploads) > MAX_UPLOADS:
            _, old = self._uploads.popitem(last=False)
            for item_id in old:
                self.items.pop(item_id, None)
        return added

    def close(self) -> None:
        shutil.rmtree(self._upload_root, ignore_errors=True)


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
