"""Load a model and tokenizer from an embedded name, a local directory, a .gguf file or a hub id."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

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
    # Content identity (refusalkit.runs.identity.model_fingerprint): part of a run's resume key.
    fingerprint: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    revision: str | None = None  # a hub branch, tag or commit (hub models only)


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


def resolve_model_path(spec: str, revision: str | None = None) -> ResolvedModel:
    """Where ``spec``'s files are, and their content identity; ``revision`` pins a hub model."""
    resolved = _locate(spec)
    if revision and resolved.kind != "hub":
        raise RefusalkitError(
            f"--revision applies to hub models; {spec} is a {resolved.kind} model (its files are "
            "fingerprinted by content instead)"
        )
    from refusalkit.runs.identity import model_fingerprint

    identity = model_fingerprint(resolved.kind, resolved.spec, resolved.path, revision)
    return ResolvedModel(resolved.spec, resolved.path, resolved.kind, identity, revision)


@dataclass(frozen=True)
class Placement:
    """Where the weights go: one device, or an accelerate device map (``"auto"`` or a module ->
    device mapping, ``"disk"`` included) with per-device memory limits, for models bigger than
    one GPU. Interventions follow: each hook moves its vectors to the device of the values it
    edits (``ResidualEdit.transform``)."""

    device_map: str | dict[str, Any] | None = None
    max_memory: dict[Any, str] | None = None
    offload_folder: str | None = None

    def from_pretrained_kwargs(self) -> dict[str, Any]:
        if self.device_map is None:
            return {}
        kwargs: dict[str, Any] = {"device_map": self.device_map}
        if self.max_memory:
            kwargs["max_memory"] = self.max_memory
        if self.offload_folder:
            kwargs["offload_folder"] = self.offload_folder
        return kwargs


def _locate(spec: str) -> ResolvedModel:
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
        return ResolvedModel(spec, str(path.resolve()), "directory")
    if path.exists() or spec.startswith((".", "/", "~")) or spec.count("/") != 1:
        known = ", ".join(EMBEDDED_MODELS)
        raise RefusalkitError(
            f"unknown model '{spec}': use an embedded model ({known}), a local model directory, "
            "a .gguf file, or a hub id like org/name"
        )
    return ResolvedModel(spec, spec, "hub")


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


def _load_failure(spec: str, error: Exception) -> RefusalkitError:
    """Loading a model's files fails inside whichever library reads them (safetensors' header
    parser, the config's JSON, the tokenizer, jinja), each with its own exception type; every such
    failure is about the files, so it is one line naming the model. Only these calls into
    transformers are wrapped, not refusalkit's own code."""
    return RefusalkitError(
        f"could not load model '{spec}' ({_first_line(error)}); check that its files are complete "
        "and unmodified (a truncated or garbled weight file fails here), or without network "
        "access use an embedded model or a local directory"
    )


def load_tokenizer(resolved: ResolvedModel, *, trust_remote_code: bool = False) -> Any:
    """The model's tokenizer, left-padded, with a pad token (eos where it has none)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(
            resolved.path, trust_remote_code=trust_remote_code, revision=resolved.revision
        )
    except Exception as error:  # see _load_failure
        raise _load_failure(resolved.spec, error) from error
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def context_length(resolved: ResolvedModel, *, trust_remote_code: bool = False) -> int | None:
    """The model's context window from its config (None if the config names none)."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(resolved.path, trust_remote_code=trust_remote_code)
    except Exception as error:  # see _load_failure
        raise _load_failure(resolved.spec, error) from error
    for name in ("max_position_embeddings", "n_positions", "seq_length", "max_sequence_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def load_resolved(
    spec: str | ResolvedModel,
    *,
    device: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool = False,
    override: ArchitectureOverride | None = None,
    placement: Placement | None = None,
) -> tuple[ModelAdapter, ResolvedModel]:
    """Load weights and tokenizer and discover the architecture; inference mode, eval()."""
    from transformers import AutoModelForCausalLM

    resolved = spec if isinstance(spec, ResolvedModel) else resolve_model_path(spec)
    spec = resolved.spec
    placement = placement or Placement()
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    tokenizer = load_tokenizer(resolved, trust_remote_code=trust_remote_code)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            resolved.path, dtype=torch_dtype, trust_remote_code=trust_remote_code,
            revision=resolved.revision, **placement.from_pretrained_kwargs(),
        )  # fmt: skip
    except Exception as error:  # see _load_failure
        raise _load_failure(spec, error) from error
    if placement.device_map is None:  # a dispatched model stays where accelerate put it
        cast(nn.Module, model).to(torch_device)  # transformers' .to() typing is not nn.Module's
    model.eval()
    model.requires_grad_(False)
    adapter = build_adapter(model, tokenizer, spec, override)
    return adapter, resolved
