"""Load a model and tokenizer from an embedded name, a local directory, a .gguf file or a hub id."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from refusalkit.errors import RefusalkitError
from refusalkit.models.adapter import ArchitectureOverride, ModelAdapter, build_adapter
from refusalkit.models.registry import EMBEDDED_MODELS, prepare_embedded, prepare_gguf_file

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class ResolvedModel:
    """Where the weights were read from, for provenance records."""

    spec: str
    path: str
    kind: str  # "embedded" | "gguf" | "directory" | "hub"


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as error:
        raise RefusalkitError(
            f"invalid device '{device}': use auto, cpu, cuda or cuda:N"
        ) from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise RefusalkitError("--device cuda was requested but no CUDA GPU is available; use cpu")
    return resolved


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        # bf16 halves memory and is fast on GPUs; CPUs without bf16 units are faster in fp32.
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise RefusalkitError(f"invalid dtype '{dtype}': use auto, {', '.join(DTYPES)}")
    return DTYPES[dtype]


def resolve_model_path(spec: str) -> ResolvedModel:
    if spec in EMBEDDED_MODELS:
        return ResolvedModel(spec, str(prepare_embedded(spec)), "embedded")
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise RefusalkitError(f"GGUF file not found: {path}")
        return ResolvedModel(spec, str(prepare_gguf_file(path)), "gguf")
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise RefusalkitError(f"{path} is a directory but has no config.json (not a HF model)")
        return ResolvedModel(spec, str(path), "directory")
    if path.exists() or spec.startswith((".", "/", "~")) or spec.count("/") != 1:
        known = ", ".join(EMBEDDED_MODELS)
        raise RefusalkitError(
            f"unknown model '{spec}': use an embedded model ({known}), a local model directory, "
            "a .gguf file, or a hub id like org/name"
        )
    return ResolvedModel(spec, spec, "hub")


def load_model(
    spec: str | ResolvedModel,
    *,
    device: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool = False,
    override: ArchitectureOverride | None = None,
) -> tuple[ModelAdapter, ResolvedModel]:
    """Load weights and tokenizer and discover the architecture; inference mode, eval()."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    resolved = spec if isinstance(spec, ResolvedModel) else resolve_model_path(spec)
    spec = resolved.spec
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            resolved.path, trust_remote_code=trust_remote_code
        )
        model = AutoModelForCausalLM.from_pretrained(
            resolved.path, dtype=torch_dtype, trust_remote_code=trust_remote_code
        )
    except OSError as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        raise RefusalkitError(
            f"could not load model '{spec}' ({first_line}); without network access use an "
            "embedded model or a local directory"
        ) from error
    model.to(torch_device)
    model.eval()
    model.requires_grad_(False)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    adapter = build_adapter(model, tokenizer, spec, override)
    return adapter, resolved
