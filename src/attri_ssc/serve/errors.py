"""Every failure of a request becomes a JSON body ``{"error", "field", "status"}`` with a 4xx status.

* a body that does not parse or does not validate (pydantic): 422, ``field`` the first
  offending location (``alpha``, ``rule``, ``item_b``; ``body`` for JSON that does not parse);
* :class:`ApiError` raised by the handlers (unknown item or attribute, a slice out of range,
  a broken upload): its status and field;
* a body larger than the server accepts: 413 (:class:`BodyLimit`);
* anything else is a bug: 500 with a generic message (and the traceback in the server log);
  the tests send a corpus of malformed requests and require that this never happens.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("attri_ssc.serve")


class ApiError(Exception):
    """A request the server refuses: HTTP ``status``, the request ``field`` at fault, and why."""

    def __init__(self, status: int, field: str, message: str):
        super().__init__(message)
        self.status = status
        self.field = field
        self.message = message


def error_response(status: int, field: str, message: str) -> JSONResponse:
    return JSONResponse({"error": message, "field": field, "status": status}, status_code=status)


def _field(loc: tuple[Any, ...] | list[Any]) -> str:
    """The request field at fault: the top-level name (``hold``, not pydantic's ``hold.bool``)."""
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path"):
        parts = parts[1:]
    return parts[0] if parts else "body"


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers of the module doc on ``app``."""

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request"}
        field = _field(first.get("loc", ()))
        if first.get("type") == "json_invalid":
            field, message = "body", f"the body is not valid JSON ({first.get('msg', '')})"
        elif first.get("type") in ("model_attributes_type", "dict_type") and field == "body":
            message = "the body must be a JSON object"
        elif first.get("type") == "extra_forbidden":
            message = f"unknown field {field!r}"
        else:
            message = f"{field}: {first.get('msg', 'invalid')}"
        more = len(errors) - 1
        if more > 0:
            message += f" (and {more} more problem{'s' if more > 1 else ''})"
        return error_response(422, field, message)

    @app.exception_handler(ApiError)
    async def _api(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.field, exc.message)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        field = "path" if exc.status_code == 404 else "method" if exc.status_code == 405 else "request"
        detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        return error_response(exc.status_code, field, detail)

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return error_response(500, "server", f"internal error ({type(exc).__name__}); see the server log")


class BodyLimit:
    """ASGI middleware: refuse request bodies over ``limit(path)`` bytes with 413, whether or not
    the client declares a Content-Length.

    The body is read here, counted as it arrives (a chunked body too) and handed on whole, so
    the application never sees more than the limit and an oversized body is refused before any
    parser runs.
    """

    def __init__(self, app, limit):
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = int(self.limit(scope["path"]))
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                return await _send_error(send, 400, "content-length", "Content-Length is not a number")
            if size > limit:
                return await _send_error(send, 413, "body", f"the body ({size} bytes) exceeds this endpoint's "
                                                            f"limit of {limit} bytes")
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            body = message.get("body", b"")
            seen += len(body)
            if seen > limit:
                return await _send_error(send, 413, "body", f"the body exceeds this endpoint's limit of {limit} bytes")
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)


async def _send_error(send, status: int, field: str, message: str) -> None:
    body = json.dumps({"error": message, "field": field, "status": status}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
