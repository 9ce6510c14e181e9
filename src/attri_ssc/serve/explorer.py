"""The explorer's state: one run, its gallery, uploaded cases and the edits already computed.

Everything here is synchronous and runs on the :class:`~attri_ssc.serve.worker.ModelWorker`
thread (except :meth:`Explorer.gallery`, which only lists items); the model is only ever
touched through the public API (:class:`attri_ssc.Run`).

A slider move is one call of :meth:`attri_ssc.Run.edit` with that α (saliency when asked): the
``feedback`` rule's per-image step search runs on the first move of an attribute's slider for
an image (the run caches the steps), every later move only edits, decodes and re-reads. The
reconstruction (α = 0, the same under every rule) is computed once per item without any search;
frames already computed are kept in a small LRU cache, so a slider moved back is free.
Interpolation is computed once per pair of items (:data:`INTERPOLATION_FRAMES` frames,
t = 0, 0.05, …, 1, the interpolation slider's positions).
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from attri_ssc.serve import imaging
from attri_ssc.serve.errors import ApiError
from attri_ssc.serve.uploads import UploadError, UploadLimits, check_mask, read_nifti_bytes, write_case

#: Frames of one interpolation (t = 0, 0.05, ..., 1), the interpolation slider's positions.
INTERPOLATION_FRAMES = 21
#: Computed edit frames and interpolations kept (least recently used dropped first).
CACHE_SIZE = 256
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
class Frame:
    """One computed edit of one item: ``image`` and ``saliency`` (1, *S) (saliency None at α = 0),
    ``reading`` (|A|,) the model's re-read, the :class:`attri_ssc.EditSettings` that replay it, and
    the judge's read once asked for."""

    image: np.ndarray
    saliency: np.ndarray | None
    reading: np.ndarray
    settings: Any
    judged: np.ndarray | None = None


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
        self._items_lock = threading.Lock()  # items change on the model thread, are listed on the event loop
        self._frames: OrderedDict[tuple, Frame] = OrderedDict()
        self._interpolations: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._upload_root = Path(tempfile.mkdtemp(prefix="attri-ssc-serve-"))
        self._upload_counter = itertools.count(1)
        self._uploads: OrderedDict[str, list[str]] = OrderedDict()
        self.gallery_note = ""
        self._judge_note: str | None = None
        self._selected: dict[str, str] = {}  # session -> item last selected (background searches follow it)
        self._searched: set[tuple] = set()  # (item, attribute, hold names) whose feedback steps the run has
        self._prefetched: set[tuple] = set()  # (item, attribute, hold) whose search was queued once
        self.search_seconds: list[float] = []  # step searches run ahead of time (prefetch), for the record
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
        """The gallery (safe to call from the event loop while the model thread adds uploads)."""
        with self._items_lock:
            items = list(self.items.values())
        return [self.gallery_entry(item) for item in items]

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
        with self._items_lock:
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
    def _hold_names(self, attribute: int, rule: str, hold: bool | list[str]) -> list[str]:
        """The ``hold`` argument of :meth:`attri_ssc.Run.edit` for the page's toggle: ``True`` holds
        what ``attri-ssc edit`` holds by default for ``feedback`` and ``shift`` (and the same
        conditional prototypes for ``prototype``); ``magnitude`` and ``literal`` hold nothing."""
        from attri_ssc.interpret.editing import feedback_hold, hold_fixed_indices

        names = self.run.attribute_names
        if isinstance(hold, list):
            unknown = [h for h in hold if h not in names]
            if unknown:
                raise ApiError(422, "hold", f"unknown attribute(s) {unknown} in hold; this run supervises "
                                            f"{', '.join(names)}")
            return list(hold)
        if not hold or rule in ("magnitude", "literal"):
            return []
        rows = feedback_hold(names, attribute) if rule == "feedback" else hold_fixed_indices(names).get(attribute, ())
        return [names[o] for o in rows]

    def _remember(self, key: tuple, frame: Frame) -> Frame:
        self._frames[key] = frame
        while len(self._frames) > CACHE_SIZE:
            self._frames.popitem(last=False)
        return frame

    def _reconstruction(self, item: Item, attribute: int) -> Frame:
        """α = 0: the codes are left alone under every rule, so no rule (and no search) is needed."""
        key = (item.id, "reconstruction")
        frame = self._frames.get(key)
        if frame is None:
            name = self.run.attribute_names[attribute]
            result = self.run.edit(item.image, name, [0.0], "magnitude", [], saliency=False, case_id=self._case(item),
                                   slice=item.slice)
            frame = self._remember(key, Frame(_np(result.images)[0, 0], None, _np(result.readings)[0, 0],
                                              result.settings))
        else:
            self._frames.move_to_end(key)
        return frame

    def _case(self, item: Item) -> str | None:
        return item.case_id if item.source == "test" else None

    def _frame(self, item: Item, attribute: int, alpha: float, rule: str, hold: bool | list[str],
               saliency: bool = True) -> Frame:
        """The edit of ``item``'s ``attribute`` at ``alpha`` (cached; with its saliency map if asked)."""
        from attri_ssc.errors import AttriSSCError

        hold_names = self._hold_names(attribute, rule, hold)
        key = (item.id, attribute, rule, tuple(hold_names), round(float(alpha), 6))
        frame = self._frames.get(key)
        if frame is not None and (frame.saliency is not None or not saliency):
            self._frames.move_to_end(key)
            return frame
        name = self.run.attribute_names[attribute]
        try:
            result = self.run.edit(item.image, name, [float(alpha)], rule, hold_names, saliency=saliency,
                                   case_id=self._case(item), slice=item.slice)
        except AttriSSCError as exc:
            text = str(exc)
            field_name = "hold" if "hold" in text else "rule" if "rule" in text else "attribute"
            raise ApiError(422, field_name, text) from None
        if rule == "feedback":
            self._searched.add((item.id, name, tuple(hold_names)))
        return self._remember(key, Frame(_np(result.images)[0, 0],
                                         _np(result.saliency)[0, 0] if saliency else None,
                                         _np(result.readings)[0, 0], result.settings,
                                         judged=frame.judged if frame is not None else None))

    def needs_search(self, item_id: str, attribute_name: str, alpha: float, rule: str, hold: bool | list[str]) -> bool:
        """Whether this edit request will run the ``feedback`` step search (its slider's first move
        for the item): the app queues it behind quick requests (worker module doc). A guess made on
        the event loop; a wrong guess only changes the order of the queue."""
        if rule != "feedback" or alpha == 0.0 or attribute_name not in self.run.attribute_names:
            return False
        try:
            names = self._hold_names(self.run.attribute_names.index(attribute_name), rule, hold)
        except ApiError:
            return False
        return (item_id, attribute_name, tuple(names)) not in self._searched

    def select(self, item_id: str, session: str | None) -> None:
        """Record that ``session`` selected ``item_id`` (called on the event loop as a request arrives)."""
        if session is not None:
            self._selected[session] = item_id
            if len(self._selected) > 10_000:
                self._selected = {session: item_id}

    def prefetch_order(self, item_id: str, attribute_name: str, hold: bool | list[str]) -> list[str]:
        """The attributes whose steps to search ahead of time for ``item_id`` (the selected slider's
        first), leaving out those already queued once (a slider reset queues nothing again)."""
        names = list(self.run.attribute_names)
        order = ([attribute_name] if attribute_name in names else []) + [n for n in names if n != attribute_name]
        hold_key = tuple(hold) if isinstance(hold, list) else bool(hold)
        fresh = [n for n in order if (item_id, n, hold_key) not in self._prefetched]
        self._prefetched.update((item_id, n, hold_key) for n in fresh)
        if len(self._prefetched) > 10_000:
            self._prefetched.clear()
        return fresh

    def prefetch(self, item_id: str, attribute_name: str, hold: bool | list[str], session: str | None) -> bool:
        """Search the ``feedback`` rule's steps of one item and attribute ahead of the first slider move
        (a background job of the model thread; the run caches them, so the move only edits). Skipped
        (False) when the session has selected another item since, or the item is gone.

        The search is :meth:`attri_ssc.Run.edit`'s own (same algorithm, settings and cache key as
        the move's request); the time it took is kept in :attr:`search_seconds`.
        """
        from attri_ssc.errors import AttriSSCError

        if session is not None and self._selected.get(session) != item_id:
            return False
        item = self.items.get(item_id)
        if item is None or attribute_name not in self.run.attribute_names:
            return False
        attribute = self.run.attribute_names.index(attribute_name)
        try:
            hold_names = self._hold_names(attribute, "feedback", hold)
            started = time.perf_counter()
            self.run.edit(item.image, attribute_name, [0.0], "feedback", hold_names, case_id=self._case(item),
                          slice=item.slice)
        except (AttriSSCError, ApiError):  # an attribute without atoms: its slider's request says so
            return False
        self._searched.add((item.id, attribute_name, tuple(hold_names)))
        self.search_seconds.append(time.perf_counter() - started)
        del self.search_seconds[:-1000]
        return True

    def _judge(self, frame: Frame) -> np.ndarray | None:
        if self.judge_note() is not None:
            return None
        if frame.judged is None:
            frame.judged = _np(self.run.judge(frame.image[None].astype(np.float32)))[0]
        return frame.judged

    def edit(self, item_id: str, attribute_name: str, alpha: float, rule: str, hold: bool | list[str],
             slice_request: int | None, saliency: bool = True, judge_requested: bool = True) -> dict[str, Any]:
        """One slider position: images, re-reads before/after, settings (``EditResponse``), and unless
        told otherwise the saliency map and the judge's read (the page leaves both out while a
        slider is dragged and asks for them when it is released)."""
        started = time.perf_counter()
        item = self.item(item_id)
        attribute = self.attribute(attribute_name)
        plane_index = self.slice_index(slice_request)
        hold_names = self._hold_names(attribute, rule, hold)
        before = self._reconstruction(item, attribute)
        after = self._frame(item, attribute, alpha, rule, hold, saliency) if alpha != 0.0 else before
        names = self.run.attribute_names
        original = imaging.to_plane(item.image, plane_index)
        recon = imaging.to_plane(before.image, plane_index)
        edited = imaging.to_plane(after.image, plane_index)
        diff_png, diff_scale = imaging.difference_png(edited, recon)
        sal_png, sal_peak = (imaging.saliency_png(imaging.to_plane(after.saliency, plane_index))
                             if saliency and after.saliency is not None else (None, 0.0))

        def named(values) -> dict[str, float | None]:
            return {n: _none_if_nan(values[k]) for k, n in enumerate(names)}

        judge = None
        if judge_requested:
            judge_before, judge_after = self._judge(before), self._judge(after)
            if judge_before is not None and judge_after is not None:
                judge = {"before": named(judge_before), "after": named(judge_after)}
        settings = (after.settings.to_dict() if alpha != 0.0 else  # α = 0: nothing searched, the rule's settings
                    {**before.settings.to_dict(), "rule": rule, "hold": hold_names, "alphas": [0.0]})
        held = list(settings["hold"])
        return {
            "superseded": False,
            "item": item.id, "attribute": attribute_name, "alpha": float(alpha), "rule": rule,
            "hold": bool(hold), "held": held, "slice": plane_index,
            "images": {
                "original": imaging.data_url(imaging.grey_png(original)),
                "reconstruction": imaging.data_url(imaging.grey_png(recon)),
                "edited": imaging.data_url(imaging.grey_png(edited)),
                "difference": imaging.data_url(diff_png),
                "saliency": imaging.data_url(sal_png) if sal_png is not None else None,
            },
            "scales": {"intensity": list(imaging.INTENSITY_RANGE), "difference": [-diff_scale, diff_scale],
                       "saliency": [0.0, sal_peak]},
            "readings": {"original": named(self._original_reading(item)), "before": named(before.reading),
                         "after": named(after.reading)},
            "judge": judge,
            "judge_note": self.judge_note() or ("the model-free judge measures areas and wall thickness from the "
                                                 "image alone; attributes without a judge bar are not measured"),
            "settings": settings,
            "server_ms": 1000.0 * (time.perf_counter() - started),
        }

    def _original_reading(self, item: Item) -> np.ndarray:
        if item.reading is None:
            item.reading = _np(self.run.read_attributes(item.image))[0]
        return item.reading

    def export(self, item_id: str, attribute_name: str, alpha: float, rule: str, hold: bool | list[str],
               slice_request: int | None) -> tuple[dict[str, Any], np.ndarray | None]:
        """(the :class:`attri_ssc.EditSettings` that replay this edit, the model-ready image of an
        uploaded item or None).

        An uploaded item's settings name its image as ``<item>.image.npy``, the file
        ``POST /api/export/image`` returns: save both in one folder.
        """
        item = self.item(item_id)
        attribute = self.attribute(attribute_name)
        self.slice_index(slice_request)
        frame = self._frame(item, attribute, alpha, rule, hold, saliency=False)
        settings = frame.settings.to_dict()
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
            if not np.any(mask.data == 2):
                raise UploadError("mask", "no voxel is myocardium (label 2); the explorer edits slices with myocardium")
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
            with self._items_lock:
                for item_id in old:
                    self.items.pop(item_id, None)
        return added

    def close(self) -> None:
        shutil.rmtree(self._upload_root, ignore_errors=True)


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
