"""Edited checkpoints: an intervention written into the weights (``refusalkit export``)."""

from refusalkit.export.weights import (
    Projection,
    ablate_weights,
    add_bias,
    residual_projections,
    untie_embeddings,
)

__all__ = ["Projection", "ablate_weights", "add_bias", "residual_projections", "untie_embeddings"]
