"""attri-ssc: Attri-SSC-VAE, attribute-regularised structured sparse coding VAEs.

Reference implementation of "Attri-SSC-VAE: multi-attribute regularised sparse coding
VAEs for interpretable medical image representation" (the paper lives in the project's
shared folder). The package mirrors the pipeline: ``data`` → ``models`` → ``losses`` →
``training`` → ``evaluation`` → ``reports``, with ``cli`` on top.
"""

__version__ = "0.1.0"
