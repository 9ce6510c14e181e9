"""Interpreting a trained model: editing (A.5), saliency, interpolation (Eq. 16), sampling,
the model-free judge (slices and volumes), edit verification, attribute correlations
(Table 3) and diagnostics (the usage readout).

This layer sits above ``attri_ssc.evaluation`` (it may use its metrics) and below
``attri_ssc.reports`` and the faces (CLI, Python API, explorer); ``evaluation`` never imports
it (docs/architecture.md, tests/test_layering.py).
"""
