"""Model loading, the embedded-model registry and the architecture adapter."""

from refusalkit.models.adapter import ArchitectureOverride, ModelAdapter, build_adapter
from refusalkit.models.loading import ResolvedModel, load_resolved
from refusalkit.models.registry import DEFAULT_MODEL, EMBEDDED_MODELS, prepare_embedded

__all__ = [
    "DEFAULT_MODEL",
    "EMBEDDED_MODELS",
    "ArchitectureOverride",
    "ModelAdapter",
    "ResolvedModel",
    "build_adapter",
    "load_resolved",
    "prepare_embedded",
]
