"""refusalkit: find, choose, use and audit refusal directions in language models.

The typed Python API mirrors the pipeline (prompts → activations → candidates → selection →
interventions → evaluation); each step is a function returning a dataclass::

    from refusalkit import RunConfig, run
    summary = run(RunConfig(steering="ace"), Path("runs/ace"))

or step by step::

    adapter, _ = load_model("qwen2.5-coder-0.5b-instruct")
    chat = build_chat_format(adapter.tokenizer)
    candidates = compute_candidates(adapter, harmful, harmless, chat.n_post_instruction)
    with applied(adapter, DirectionalAblation(candidates.direction(-2, 17))):
        completions = generate(adapter, chat, prompts)
"""

__version__ = "0.1.0"

from refusalkit.activations import encode_batches, forward
from refusalkit.config import RunConfig
from refusalkit.directions import CandidateSet, compute_candidates
from refusalkit.errors import RefusalkitError
from refusalkit.evaluation import REFUSAL_PHRASES, Rate, SubstringJudge, generate, is_degenerate
from refusalkit.interventions import ActivationAddition, AffineEdit, DirectionalAblation, applied
from refusalkit.models import ArchitectureOverride, ModelAdapter, load_model
from refusalkit.pipeline import run
from refusalkit.prompts import (
    ChatFormat,
    Prompt,
    SystemPrompt,
    build_chat_format,
    builtin_prompts,
    load_prompts,
    split_prompts,
)
from refusalkit.selection import (
    CosmicEngine,
    CosmicSettings,
    SelectionOutcome,
    low_similarity_layers,
)

__all__ = [
    "REFUSAL_PHRASES",
    "ActivationAddition",
    "AffineEdit",
    "ArchitectureOverride",
    "CandidateSet",
    "ChatFormat",
    "CosmicEngine",
    "CosmicSettings",
    "DirectionalAblation",
    "ModelAdapter",
    "Prompt",
    "Rate",
    "RefusalkitError",
    "RunConfig",
    "SelectionOutcome",
    "SubstringJudge",
    "SystemPrompt",
    "applied",
    "build_chat_format",
    "builtin_prompts",
    "compute_candidates",
    "encode_batches",
    "forward",
    "generate",
    "is_degenerate",
    "load_model",
    "load_prompts",
    "low_similarity_layers",
    "run",
    "split_prompts",
]
