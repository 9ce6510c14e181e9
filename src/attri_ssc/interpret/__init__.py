"""Interpreting a trained model: editing (A.5), saliency, interpolation (Eq. 16), sampling,
the model-free judge, edit verification and attribute correlations (Table 3).

This layer sits above ``attri_ssc.evaluation`` (it may use its metrics) and below the faces
(CLI, Python API, explorer); ``evaluation`` never imports it.
"""
