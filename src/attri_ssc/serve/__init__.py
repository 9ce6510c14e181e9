"""``attri-ssc serve``: an interactive attribute explorer for a trained run, in the browser.

A FastAPI application (:func:`create_app`) serves one page (HTML, JavaScript and CSS from this
package, nothing from the internet) and the JSON API behind it (documented at ``/docs``). It
sits on the public Python API (:class:`attri_ssc.Run`) and never edits images itself.
Needs the ``serve`` extra: ``pip install 'attri-ssc[serve]'``.
"""

from __future__ import annotations

#: The packages the explorer needs beyond the core (the ``serve`` extra).
SERVE_PACKAGES = ("fastapi", "uvicorn", "multipart")


def missing_packages() -> list[str]:
    """The ``serve`` extra's packages that cannot be imported (empty when all are installed)."""
    import importlib.util

    return [name for name in SERVE_PACKAGES if importlib.util.find_spec(name) is None]


def create_app(*args, **kwargs):
    """See :func:`attri_ssc.serve.app.create_app` (imported lazily: FastAPI is an optional dependency)."""
    from attri_ssc.serve.app import create_app as _create_app

    return _create_app(*args, **kwargs)


__all__ = ["SERVE_PACKAGES", "create_app", "missing_packages"]
