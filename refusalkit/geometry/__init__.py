"""Is refusal one direction? (SPEC §9): per-category directions, their angles and spectrum, and
what ablating each (or a subspace, or a point of their cone) does. The workflow is
``refusalkit.workflows.geometry``."""

from refusalkit.geometry.spectrum import (
    Spectrum,
    cluster_order,
    cone_samples,
    cosine_matrix,
    cosines_with,
    orthonormal_top,
    spectrum,
    two_clusters,
)

__all__ = [
    "Spectrum",
    "cluster_order",
    "cone_samples",
    "cosine_matrix",
    "cosines_with",
    "orthonormal_top",
    "spectrum",
    "two_clusters",
]
