"""attri-ssc: Attri-SSC-VAE, attribute-regularised structured sparse coding VAEs.

Reference implementation of "Attri-SSC-VAE: multi-attribute regularised sparse coding
VAEs for interpretable medical image representation" (the paper lives in the project's
shared folder). The package mirrors the pipeline: ``data`` → ``models`` → ``losses`` →
``training`` → ``evaluation`` → ``interpret`` → ``reports``, with the faces ``cli``, ``api``
and ``serve`` on top.

The public Python API (:mod:`attri_ssc.api`)::

    import attri_ssc
    run = attri_ssc.load_run("runs/demo/attri_ssc")
    run.read_attributes(run.test_items()[0]["image"])

``import attri_ssc`` stays light: the API's names are imported (with torch) on first use.
"""

__version__ = "0.1.0"

__all__ = ["CaseImages", "EditResult", "EditSettings", "Run", "load_run", "read_case", "read_folder"]


def __getattr__(name: str):
    if name in __all__:
        from attri_ssc import api

        return getattr(api, name)
    raise AttributeError(f"module 'attri_ssc' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
