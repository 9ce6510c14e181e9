"""The FastAPI application of ``attri-ssc serve``: the page, its static files and the JSON API.

Routes (all documented at ``/docs``, the OpenAPI page):

* ``GET /`` the page; ``GET /static/*`` its script and style sheet (from the package: no CDN);
* ``GET /api/info`` the run: attributes with units and training ranges, rules, 2D/3D, limits;
* ``GET /api/items`` the gallery (held-out items and uploads) with thumbnails;
* ``POST /api/edit`` one slider position (:class:`~attri_ssc.serve.schemas.EditRequest`);
* ``POST /api/interpolate`` one position of the interpolation slider;
* ``POST /api/upload`` a NIfTI case (multipart fields ``image`` and optional ``mask``);
* ``POST /api/export`` the :class:`attri_ssc.EditSettings` of an edit (``attri-ssc edit --settings``);
  ``POST /api/export/image`` the model-ready image of an uploaded item (``.npy``).

Every model call runs on one worker thread (:mod:`attri_ssc.serve.worker`), never on the
event loop; errors are JSON with the field at fault (:mod:`attri_ssc.serve.errors`).
"""

from __future__ import annotations

import io
import logging
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any, Callable

import numpy as np
from fastapi import FastAPI, File, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

from attri_ssc.serve.errors import ApiError, BodyLimit, install_error_handlers
from attri_ssc.serve.explorer import Explorer
from attri_ssc.serve.schemas import (EditRequest, EditResponse, ErrorBody, InterpolateRequest, InterpolateResponse,
                                     RunInfo, UploadResponse)
from attri_ssc.serve.uploads import UploadError, UploadLimits
from attri_ssc.serve.worker import ModelWorker, Superseded

log = logging.getLogger("attri_ssc.serve")

#: Request bodies of the JSON endpoints are small; only the upload takes files.
JSON_BODY_LIMIT = 64 * 1024
ERRORS = {code: {"model": ErrorBody} for code in (404, 413, 422)}


def static_dir():
    return resources.files("attri_ssc.serve") / "static"


def create_app(run, limits: UploadLimits = UploadLimits(), gallery_limit: int = 200,
               on_ready: Callable[[], None] | None = None) -> FastAPI:
    """The explorer app for ``run`` (an :class:`attri_ssc.Run`).

    The gallery is read on the model thread while the app starts; ``on_ready`` is called when
    it is done (``attri-ssc serve`` prints its address then).
    """
    worker = ModelWorker()
    holder: dict[str, Explorer] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        holder["explorer"] = await worker.run(Explorer, run, limits, gallery_limit)
        app.state.explorer = holder["explorer"]
        if on_ready is not None:
            on_ready()
        yield
        holder["explorer"].close()
        worker.shutdown()

    app = FastAPI(title="Attri-SSC explorer", lifespan=lifespan,
                  description="Edit the clinical attributes of cardiac images with a trained Attri-SSC-VAE run. "
                              "Every error is a JSON body {error, field, status}.")
    app.state.worker = worker
    install_error_handlers(app)
    upload_limit = 2 * limits.max_bytes + 64 * 1024  # image + mask + multipart overhead
    app.add_middleware(BodyLimit, limit=lambda path: upload_limit if path.rstrip("/") == "/api/upload"
                       else JSON_BODY_LIMIT)
    app.mount("/static", StaticFiles(directory=str(static_dir())), name="static")

    def explorer() -> Explorer:
        return holder["explorer"]

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(str(static_dir() / "index.html"), media_type="text/html")

    @app.get("/api/info", response_model=RunInfo)
    async def info() -> dict[str, Any]:
        """The run: attributes (unit, training range), rules, 2D/3D, upload limits."""
        return await worker.run(explorer().info)

    @app.get("/api/items")
    async def items() -> dict[str, Any]:
        """The gallery: held-out items of the run's data and uploaded ones, with PNG thumbnails."""
        ex = explorer()  # answered on the event loop, never behind model work
        return {"items": ex.gallery(), "note": ex.gallery_note}

    @app.post("/api/edit", response_model=EditResponse, responses=ERRORS)
    async def edit(request: EditRequest) -> dict[str, Any]:
        """One slider position: the original, reconstruction, edited image, difference and saliency
        (PNG data URLs on one shared intensity scale), the model's re-read of every attribute before
        (α = 0) and after, the judge's read where it applies, and the settings that replay the edit.

        The first move of a slider computes every position of it (for ``feedback``, one step
        search per image and attribute); later moves are read from a cache. With ``session`` and
        ``seq``, a request superseded by a newer one of the same session before it reached the model
        is answered ``{"superseded": true}``.
        """
        worker.supersede(request.session, request.seq)
        if request.alpha == 0.0 and request.rule == "feedback":
            # an image selected (or a slider reset): search its sliders' steps in the background,
            # behind every request, so the first move usually finds them done (worker module doc)
            ex = explorer()
            ex.select(request.item, request.session)
            for name in ex.prefetch_order(request.item, request.attribute, request.hold):
                worker.background(ex.prefetch, request.item, name, request.hold, request.session)
        slow = explorer().needs_search(request.item, request.attribute, request.alpha, request.rule, request.hold)
        try:
            return await worker.run(explorer().edit, request.item, request.attribute, request.alpha, request.rule,
                                    request.hold, request.slice, request.saliency, request.judge,
                                    session=request.session, seq=request.seq,
                                    priority=worker.SEARCH if slow else worker.REQUEST)
        except Superseded:
            return {"superseded": True}

    @app.post("/api/interpolate", response_model=InterpolateResponse, responses=ERRORS)
    async def interpolate(request: InterpolateRequest) -> dict[str, Any]:
        """Eq. 16 between two items at t (the nearest of 21 frames, computed once per pair)."""
        return await worker.run(explorer().interpolate, request.item_a, request.item_b, request.t, request.slice)

    @app.post("/api/upload", response_model=UploadResponse, responses=ERRORS)
    async def upload(image: UploadFile = File(..., description="NIfTI image (.nii or .nii.gz), X × Y × slices"),
                     mask: UploadFile | None = File(None, description="optional NIfTI labels of the image")
                     ) -> dict[str, Any]:
        """Add a case to the gallery: checked in memory (size in bytes and voxels, header, values), then
        preprocessed as the run's training data. 2D runs add one item per slice (with myocardium when
        a mask is given)."""
        image_bytes = await _read_capped(image, "image", limits.max_bytes)
        mask_bytes = await _read_capped(mask, "mask", limits.max_bytes) if mask is not None else None
        try:
            added = await worker.run(explorer().add_upload, image_bytes, mask_bytes or None)
        except UploadError as exc:
            raise ApiError(exc.status, exc.field, exc.message) from None
        return {"items": [explorer().gallery_entry(item) for item in added]}

    @app.post("/api/export", responses=ERRORS)
    async def export(request: EditRequest) -> dict[str, Any]:
        """The :class:`attri_ssc.EditSettings` (JSON) of this edit; ``attri-ssc edit RUN --settings FILE``
        replays it. For an uploaded item, ``image_path`` names the ``.npy`` that
        ``POST /api/export/image`` returns (save both in one folder)."""
        settings, _ = await worker.run(explorer().export, request.item, request.attribute, request.alpha,
                                       request.rule, request.hold, request.slice)
        return settings

    @app.post("/api/export/image", responses=ERRORS, response_class=Response)
    async def export_image(request: EditRequest) -> Response:
        """The model-ready image (1, *S) of an uploaded item as a ``.npy`` file (gallery items: 422)."""
        _, image = await worker.run(explorer().export, request.item, request.attribute, request.alpha,
                                    request.rule, request.hold, request.slice)
        if image is None:
            raise ApiError(422, "item", "a gallery item's image is in the run's data; only uploads export one")
        buffer = io.BytesIO()
        np.save(buffer, image, allow_pickle=False)
        return Response(buffer.getvalue(), media_type="application/octet-stream")

    return app


async def _read_capped(upload: UploadFile, field: str, limit: int) -> bytes:
    chunks, seen = [], 0
    while True:
        chunk = await upload.read(1 << 20)
        if not chunk:
            break
        seen += len(chunk)
        if seen > limit:
            raise ApiError(413, field, f"the file exceeds the upload limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
