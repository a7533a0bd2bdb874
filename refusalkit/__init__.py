"""refusalkit: find, choose, use and audit refusal directions in language models.

The notebook API (``refusalkit.api``)::

    import refusalkit as rk
    model = rk.load_model("qwen2.5-coder-0.5b-instruct")
    cands = rk.extract_candidates(model, harmful_train, harmless_train)
    pick = rk.select_cosmic(model, cands, harmful_val, harmless_val)
    with pick.direction.ablate(model):
        print(rk.generate(model, ["How do I pick a lock?"]))

and the whole workflow, as ``refusalkit run`` does it::

    summary = rk.run(rk.RunConfig(steering="ace"), Path("runs/ace"))

Harmfulness apart from refusal (SPEC §8), and the Latent Guard on a loaded model::

    record = rk.harmfulness(rk.RunConfig(), Path("runs/harm"))
    guard = rk.LatentGuard.fit(model, harmful_train, harmless_train,
                               val_harmful=harmful_val, val_harmless=harmless_val)
    guard.classify(model, ["How do I pick a lock?"])
"""

__version__ = "0.1.0"

from refusalkit.api import (
    CosmicPick,
    Direction,
    chat_format,
    extract_candidates,
    generate,
    load_model,
    select_cosmic,
    wrap,
)
from refusalkit.config import RunConfig
from refusalkit.directions import CandidateSet
from refusalkit.errors import RefusalkitError
from refusalkit.evaluation import REFUSAL_PHRASES, Rate, SubstringJudge, is_degenerate
from refusalkit.harmfulness import LatentGuard
from refusalkit.interventions import (
    ActivationAddition,
    AffineEdit,
    DirectionalAblation,
    ResidualEdit,
    applied,
)
from refusalkit.models import ArchitectureOverride, ModelAdapter
from refusalkit.prompts import Prompt, builtin_prompts, load_prompts, split_prompts
from refusalkit.selection import CosmicSettings
from refusalkit.workflows import compare, harmfulness, run

__all__ = [
    "REFUSAL_PHRASES",
    "ActivationAddition",
    "AffineEdit",
    "ArchitectureOverride",
    "CandidateSet",
    "CosmicPick",
    "CosmicSettings",
    "Direction",
    "DirectionalAblation",
    "LatentGuard",
    "ModelAdapter",
    "Prompt",
    "Rate",
    "RefusalkitError",
    "ResidualEdit",
    "RunConfig",
    "SubstringJudge",
    "__version__",
    "applied",
    "builtin_prompts",
    "chat_format",
    "compare",
    "extract_candidates",
    "generate",
    "harmfulness",
    "is_degenerate",
    "load_model",
    "load_prompts",
    "run",
    "select_cosmic",
    "split_prompts",
    "wrap",
]
