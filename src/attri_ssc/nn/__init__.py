"""Dimension-agnostic building blocks (layers chosen by ``spatial_dims``)."""
