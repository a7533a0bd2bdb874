"""Harmfulness is encoded apart from refusal (Zhao et al., NeurIPS 2025; SPEC §8): the features
read at ``t_inst`` and ``t_post-inst``, belief scores, reply inversion, the Latent Guard and its
logistic-probe baseline, and the jailbreak wrappers of the guard's controls. The workflow that
puts them together is ``refusalkit.workflows.harmfulness``."""

from refusalkit.harmfulness.beliefs import (
    balanced_accuracy,
    belief_scores,
    calibrate_threshold,
    centroid,
    per_layer_cosine,
)
from refusalkit.harmfulness.features import PromptFeatures, read_features
from refusalkit.harmfulness.guard import LatentGuard, parse_layer_range
from refusalkit.harmfulness.inversion import reply_inversion
from refusalkit.harmfulness.probe import fit_probe, probe_features
from refusalkit.harmfulness.wrappers import WRAPPERS, wrapped

__all__ = [
    "WRAPPERS",
    "LatentGuard",
    "PromptFeatures",
    "balanced_accuracy",
    "belief_scores",
    "calibrate_threshold",
    "centroid",
    "fit_probe",
    "parse_layer_range",
    "per_layer_cosine",
    "probe_features",
    "read_features",
    "reply_inversion",
    "wrapped",
]
