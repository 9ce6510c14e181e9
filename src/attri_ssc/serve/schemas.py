"""The JSON API's request and response bodies (pydantic models; FastAPI documents them at /docs).

Requests forbid unknown fields and bound every number, so a malformed body is answered 422
with the offending field named (see :mod:`attri_ssc.serve.errors`). What depends on the run
(attribute names, item ids, slice counts) is checked by the handlers against the loaded run.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool

#: Item ids are the server's: ``CASE`` (3D), ``CASE:SLICE`` (2D) or ``upload-N[:SLICE]``.
ItemId = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.\-]+(:[0-9]{1,6})?$")
#: Attribute names to hold, as a list.
HoldNames = Annotated[list[Annotated[str, Field(min_length=1, max_length=64)]], Field(max_length=32)]
#: The rules ``attri-ssc edit`` offers.
Rule = Literal["feedback", "prototype", "shift", "magnitude", "literal"]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class EditRequest(_Request):
    """Edit one attribute of one item by α (the position of that attribute's slider)."""

    item: str = ItemId
    attribute: str = Field(min_length=1, max_length=64, description="a supervised attribute of the run")
    alpha: float = Field(ge=-1.0, le=1.0, allow_inf_nan=False,
                         description="edit strength in [-1, 1]; 0 is the reconstruction")
    rule: Rule = Field("feedback", description="the edit rule, as `attri-ssc edit --rule`")
    hold: StrictBool | HoldNames = Field(True,
                                   description="true: hold the other attributes as `attri-ssc edit` does (feedback: "
                                               "their re-read values; shift/prototype: conditional prototypes); "
                                               "false: hold none; or the names to hold")
    slice: int | None = Field(None, ge=0, le=4096, description="3D runs: the slice to show (default: the middle)")
    saliency: StrictBool = Field(True, description="also compute the saliency map of the edit (the page asks "
                                                   "for it when a slider is released, not while it is dragged)")
    judge: StrictBool = Field(True, description="also the model-free judge's read of the reconstruction and the "
                                                "edit (phantom-like 2D runs; likewise on release)")
    session: str | None = Field(None, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$",
                                description="client session: with seq, a queued edit superseded by a newer one "
                                            "of the same session is skipped")
    seq: int | None = Field(None, ge=0, le=2**53)


class InterpolateRequest(_Request):
    """Eq. 16 between two items' codes, at position t of the interpolation slider."""

    item_a: str = ItemId
    item_b: str = ItemId
    t: float = Field(ge=0.0, le=1.0, allow_inf_nan=False, description="0 is item_a, 1 is item_b")
    slice: int | None = Field(None, ge=0, le=4096)


class ErrorBody(BaseModel):
    """Every error: ``field`` names the part of the request at fault (``body`` for the body as a whole)."""

    error: str
    field: str
    status: int


class AttributeInfo(BaseModel):
    name: str
    unit: str
    low: float
    high: float


class RunInfo(BaseModel):
    run: str
    spatial_dims: int
    image_shape: list[int]
    slices: int | None
    attributes: list[AttributeInfo]
    rules: list[str]
    default_rule: str
    judge: bool
    limits: dict[str, int]


class GalleryItem(BaseModel):
    id: str
    case_id: str
    slice: int | None
    source: Literal["test", "upload"]
    attributes: dict[str, float | None]
    thumbnail: str


class EditImages(BaseModel):
    original: str
    reconstruction: str
    edited: str
    difference: str
    saliency: str | None


class EditResponse(BaseModel):
    superseded: bool = False
    item: str | None = None
    attribute: str | None = None
    alpha: float | None = None
    rule: str | None = None
    hold: bool | None = None
    held: list[str] | None = None
    slice: int | None = None
    images: EditImages | None = None
    scales: dict[str, list[float]] | None = None
    readings: dict[str, dict[str, float | None]] | None = None
    judge: dict[str, dict[str, float | None]] | None = None
    judge_note: str | None = None
    settings: dict | None = None
    server_ms: float | None = None


class InterpolateResponse(BaseModel):
    item_a: str
    item_b: str
    t: float
    frame: int
    frames: int
    image: str
    server_ms: float


class UploadResponse(BaseModel):
    items: list[GalleryItem]
