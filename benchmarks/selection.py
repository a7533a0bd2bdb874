"""COSMIC selection: the straightforward oracle beside the fast engine, same model, same prompts.

    .venv/bin/python benchmarks/selection.py [--model NAME] [--n-train N] [--n-val N]
        [--steering lce,ace] [--l-low-layers 12,14] [--device auto] [--dtype auto]
        [--variants] [--out FILE.json]
    .venv/bin/python benchmarks/selection.py --random-weights --shape qwen2.5-7b --device cuda

For each steering family it times, in one process and one after the other:

* the oracle (``tests/oracle.py``, imported from the repository root; it needs no pytest): its own
  full forwards over the train prompts for ``L_low`` (the reference code's redundant pass), then
  S_comply, S_refuse and KL of every candidate, three full forwards each with logits at every
  position, then SPEC §3's filters;
* the fast engine (``refusalkit.selection.engine.CosmicEngine``), which takes ``L_low`` from the
  candidates' train means.

The candidate directions are computed once, untimed, and shared. ``same_selection`` is true iff
both pick the same candidate and every score the engine reports (S_comply, S_refuse, and KL where
it computed one) is within the stated tolerance of the oracle's. Counts that do not depend on the
machine come with the times: prompt-forwards (one prompt through some blocks), block-forwards
(prompts × decoder blocks run; a full prompt-forward is L), token-blocks (token positions ×
blocks, padding included) and an estimate of GFLOP (2 × parameters × tokens for blocks and for the
vocabulary projection; attention scores left out). ``--variants`` also runs the engine with each
of its newer shortcuts switched off in turn, to show what each one buys.

Defaults are sized for about ten minutes in all on a 2-core CPU with the embedded model (the
oracle's 3·P·L full forwards per steering family are most of it): 2 validation prompts per class
(the pipeline uses 16) and 32 train prompts per class (128). ``--n-val 4`` or ``16`` shows the
same comparison closer to the pipeline's size (see benchmarks/README.md).

``--random-weights --shape SHAPE`` builds a randomly initialised Qwen2 model of that shape from a
config (no download): ``qwen2.5-7b`` (28 layers, d=3584) for GPU timing, ``tiny`` for tests. Its
tokenizer is the embedded model's (Qwen2.5 tokenizer; ``--tokenizer`` takes another directory),
or for ``tiny`` the tiny offline test tokenizer.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch

REPOSITORY = Path(__file__).resolve().parent.parent
if str(REPOSITORY) not in sys.path:  # runnable as a plain script from any directory
    sys.path.insert(0, str(REPOSITORY))

from refusalkit.activations import EncodedBatch, encode_batches, forward  # noqa: E402
from refusalkit.directions import CandidateSet, compute_candidates  # noqa: E402
from refusalkit.models.adapter import ModelAdapter, build_adapter  # noqa: E402
from refusalkit.models.loading import load_resolved, resolve_device, resolve_dtype  # noqa: E402
from refusalkit.progress import set_enabled  # noqa: E402
from refusalkit.prompts.chat import build_chat_format  # noqa: E402
from refusalkit.prompts.datasets import builtin_prompts, split_prompts  # noqa: E402
from refusalkit.selection.cosmic import (  # noqa: E402
    CosmicSettings,
    SelectionOutcome,
    low_similarity_layers,
)
from refusalkit.selection.engine import CosmicEngine, EngineOptions, WorkCounter  # noqa: E402
from tests.oracle import (  # noqa: E402
    OracleScores,
    cosmic_oracle_pick,
    cosmic_oracle_scores,
    l_low_oracle,
)

T = TypeVar("T")

EMBEDDED_DEFAULT = "qwen2.5-coder-0.5b-instruct"

# Randomly initialised Qwen2 shapes (from the published configs; nothing is downloaded).
SHAPES: dict[str, dict[str, Any]] = {
    "tiny": dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=6, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=512, tie_word_embeddings=False,
    ),
    "qwen2.5-0.5b": dict(
        hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
        num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True,
    ),
    "qwen2.5-7b": dict(
        hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
        num_key_value_heads=4, vocab_size=152064, tie_word_embeddings=False,
    ),
}  # fmt: skip

# The engine's newer shortcuts, each switched off alone, and all together (the engine as it was
# before candidate batching, packing and the sparse last block).
VARIANTS: dict[str, EngineOptions] = {
    "no candidate batching": EngineOptions(tokens_per_forward=0),
    "no packing": EngineOptions(pack_prompts=False),
    "no sparse last block": EngineOptions(sparse_last_block=False),
    "none of the three": EngineOptions(
        tokens_per_forward=0, pack_prompts=False, sparse_last_block=False
    ),
}


@dataclass(frozen=True)
class Tolerance:
    """How close the engine's reported scores must be to the oracle's."""

    score: float  # absolute, on S_comply and S_refuse (cosines)
    kl: float  # absolute + relative (times the oracle's KL)

    @staticmethod
    def for_dtype(dtype: torch.dtype) -> Tolerance:
        # float32: different batch shapes change summation order only (seen: ~1e-7).
        return Tolerance(1e-4, 1e-4) if dtype == torch.float32 else Tolerance(2e-2, 5e-2)


@dataclass
class Setup:
    adapter: ModelAdapter
    description: dict[str, Any]
    harmful_train: list[EncodedBatch]
    harmless_train: list[EncodedBatch]
    harmful_val: list[EncodedBatch]
    harmless_val: list[EncodedBatch]


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=EMBEDDED_DEFAULT)
    parser.add_argument("--n-train", type=int, default=32, help="train prompts per class")
    parser.add_argument("--n-val", type=int, default=2, help="validation prompts per class")
    parser.add_argument("--steering", default="lce,ace", help="comma-separated: lce, ace")
    parser.add_argument("--l-low-layers", default=None, help="force L_low, e.g. 12,14")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kl-threshold", type=float, default=0.1)
    parser.add_argument("--variants", action="store_true", help="time each shortcut switched off")
    parser.add_argument("--random-weights", action="store_true")
    parser.add_argument("--shape", default="qwen2.5-7b", choices=sorted(SHAPES))
    parser.add_argument("--tokenizer", default=None, help="tokenizer directory (random weights)")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    args.steering = [s.strip() for s in args.steering.split(",") if s.strip()]
    if not args.steering or set(args.steering) - {"lce", "ace"}:
        parser.error("--steering takes lce, ace or lce,ace")
    if args.l_low_layers is not None:
        args.l_low_layers = tuple(int(x) for x in args.l_low_layers.split(","))
    return args


def timed(function: Callable[[], T]) -> tuple[T, float]:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    started = time.perf_counter()
    value = function()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return value, time.perf_counter() - started


# -- model and prompts ----------------------------------------------------------------------


def _tokenizer(args: argparse.Namespace) -> Any:
    if args.shape == "tiny" and args.tokenizer is None:
        from tests.tiny import make_tokenizer

        return make_tokenizer("chatml")
    from transformers import AutoTokenizer

    from refusalkit.models.registry import prepare_embedded

    return AutoTokenizer.from_pretrained(args.tokenizer or prepare_embedded(EMBEDDED_DEFAULT))


def random_model(args: argparse.Namespace) -> tuple[ModelAdapter, dict[str, Any]]:
    """A randomly initialised Qwen2 causal LM of ``args.shape``, built on the target device."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    tokenizer = _tokenizer(args)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    shape = dict(SHAPES[args.shape])
    shape["vocab_size"] = max(shape["vocab_size"], len(tokenizer))
    config = Qwen2Config(
        **shape, max_position_embeddings=32768, rope_theta=1e6, rms_norm_eps=1e-6,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=None, eos_token_id=None,
    )  # fmt: skip
    config._attn_implementation = "sdpa"
    torch.manual_seed(args.seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # build the weights in the target dtype directly
    try:
        with torch.device(device):
            model = Qwen2ForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    model.eval()
    model.requires_grad_(False)
    name = f"random-{args.shape}"
    description = {"name": name, "random_weights": True, "shape": shape, "dtype": str(dtype)}
    return build_adapter(model, tokenizer, name), description


def build_setup(args: argparse.Namespace) -> Setup:
    if args.random_weights:
        adapter, description = random_model(args)
    else:
        adapter, resolved = load_resolved(args.model, device=args.device, dtype=args.dtype)
        description = {"name": args.model, "path": resolved.path, "dtype": str(adapter.dtype)}
    description.update(
        n_layers=adapter.n_layers, hidden_size=adapter.hidden_size, device=str(adapter.device)
    )
    chat = build_chat_format(adapter.tokenizer)
    batches = {}
    for label in ("harmful", "harmless"):
        prompts, _ = builtin_prompts(label)
        splits = split_prompts(prompts, args.n_train, args.n_val, 1, args.seed, label)
        for split in ("train", "val"):
            prompts = getattr(splits, split)
            batches[label, split] = encode_batches(chat, prompts, args.batch_size, adapter.device)
    description["n_positions"] = chat.n_post_instruction
    return Setup(
        adapter, description, batches["harmful", "train"], batches["harmless", "train"],
        batches["harmful", "val"], batches["harmless", "val"],
    )  # fmt: skip


# -- counting ----------------------------------------------------------------------------------


def _tokens(batches: Sequence[EncodedBatch]) -> int:
    return sum(int(b.input_ids.numel()) for b in batches)


def _prompts(batches: Sequence[EncodedBatch]) -> int:
    return sum(b.size for b in batches)


def parameter_counts(adapter: ModelAdapter) -> tuple[int, int]:
    """(parameters of one decoder block, parameters of the vocabulary projection)."""
    block = sum(p.numel() for p in adapter.layers[0].parameters())
    head = adapter.model.get_output_embeddings()
    return block, int(head.weight.numel()) if head is not None else 0


def gflop(adapter: ModelAdapter, token_blocks: int, logit_tokens: int) -> float:
    block, head = parameter_counts(adapter)
    return 2.0 * (token_blocks * block + logit_tokens * head) / 1e9


def oracle_work(setup: Setup, scores: OracleScores, l_low_computed: bool) -> dict[str, Any]:
    """What the oracle ran: full forwards (every block, logits at every position)."""
    n_layers = setup.adapter.n_layers
    n_candidates = scores.s_comply.numel()
    harmful, harmless = _tokens(setup.harmful_val), _tokens(setup.harmless_val)
    tokens = (harmful + harmless) + n_candidates * (harmful + 2 * harmless)
    prompts = scores.prompt_forwards
    if l_low_computed:
        tokens += _tokens(setup.harmful_train) + _tokens(setup.harmless_train)
        prompts += _prompts(setup.harmful_train) + _prompts(setup.harmless_train)
    return {
        "prompt_forwards": prompts,
        "block_forwards": prompts * n_layers,
        "token_blocks": tokens * n_layers,
        "gflop": gflop(setup.adapter, tokens * n_layers, tokens),
    }


def engine_work(adapter: ModelAdapter, work: WorkCounter) -> dict[str, Any]:
    return {
        "prompt_forwards": work.prompt_forwards,
        "block_forwards": work.block_forwards,
        "token_blocks": work.token_blocks,
        "model_calls": work.forwards,
        "gflop": gflop(adapter, work.token_blocks, work.logit_tokens),
        "block_forwards_per_kind": dict(work.per_kind),
    }


# -- comparison --------------------------------------------------------------------------------


def differences(outcome: SelectionOutcome, scores: OracleScores) -> dict[str, float]:
    """Largest |engine − oracle| over every score the engine reports."""
    score, kl, kl_relative = 0.0, 0.0, 0.0
    for record in outcome.records:
        p, l = record.position, record.layer
        for mine, theirs in (
            (record.s_comply, scores.s_comply),
            (record.s_refuse, scores.s_refuse),
        ):
            if not math.isnan(mine):
                score = max(score, abs(mine - float(theirs[p, l])))
        if not math.isnan(record.kl):
            reference = float(scores.kl[p, l])
            kl = max(kl, abs(record.kl - reference))
            kl_relative = max(kl_relative, abs(record.kl - reference) / max(abs(reference), 1e-12))
    return {"score": score, "kl": kl, "kl_relative": kl_relative}


def agrees(
    outcome: SelectionOutcome, scores: OracleScores, pick: tuple[int, int], tolerance: Tolerance
) -> bool:
    if (outcome.selected.position, outcome.selected.layer) != pick:
        return False
    for record in outcome.records:
        p, l = record.position, record.layer
        for mine, theirs in (
            (record.s_comply, scores.s_comply),
            (record.s_refuse, scores.s_refuse),
        ):
            if not math.isnan(mine) and abs(mine - float(theirs[p, l])) > tolerance.score:
                return False
        if not math.isnan(record.kl):
            reference = float(scores.kl[p, l])
            if abs(record.kl - reference) > tolerance.kl * (1 + abs(reference)):
                return False
    return True


def run_engine(
    setup: Setup, candidates: CandidateSet, settings: CosmicSettings, options: EngineOptions
) -> tuple[SelectionOutcome, CosmicEngine, float]:
    def select() -> tuple[SelectionOutcome, CosmicEngine]:
        # L_low from the candidates' train means: no forward of its own.
        layers = low_similarity_layers(
            candidates.harmful_means[-1], candidates.harmless_means[-1], settings
        )
        engine = CosmicEngine(
            setup.adapter, candidates, layers, settings,
            setup.harmful_val, setup.harmless_val, options,
        )  # fmt: skip
        return engine.run(), engine

    (outcome, engine), seconds = timed(select)
    return outcome, engine, seconds


def run_oracle(
    setup: Setup, candidates: CandidateSet, settings: CosmicSettings
) -> tuple[OracleScores, tuple[int, ...], float, float]:
    """The oracle's scores, its L_low, its total seconds and the seconds of its L_low pass."""

    def l_low() -> tuple[int, ...]:
        if settings.l_low_layers:
            return tuple(sorted(settings.l_low_layers))
        layers, _ = l_low_oracle(
            setup.adapter, setup.harmful_train, setup.harmless_train,
            fraction=settings.l_low_fraction, second_half=settings.l_low_second_half,
        )  # fmt: skip
        return layers

    layers, l_low_seconds = timed(l_low)
    scores, scoring_seconds = timed(
        lambda: cosmic_oracle_scores(
            setup.adapter,
            candidates,
            layers,
            setup.harmful_val,
            setup.harmless_val,
            steering=settings.steering,
            aggregation=settings.aggregation,
        )
    )
    return scores, layers, l_low_seconds + scoring_seconds, l_low_seconds


def compare_steering(
    setup: Setup, candidates: CandidateSet, steering: str, args: argparse.Namespace
) -> dict[str, Any]:
    settings = CosmicSettings(
        steering=steering, l_low_layers=args.l_low_layers, kl_threshold=args.kl_threshold
    )
    tolerance = Tolerance.for_dtype(setup.adapter.dtype)
    outcome, engine, fast_seconds = run_engine(setup, candidates, settings, EngineOptions())
    scores, l_low, oracle_seconds, l_low_seconds = run_oracle(setup, candidates, settings)
    pick = cosmic_oracle_pick(
        scores, prune_layer_fraction=settings.prune_layer_fraction, kl_threshold=args.kl_threshold
    )
    oracle = oracle_work(setup, scores, l_low_computed=not args.l_low_layers)
    fast = engine_work(setup.adapter, engine.work)
    result: dict[str, Any] = {
        "oracle_seconds": round(oracle_seconds, 3),
        "fast_seconds": round(fast_seconds, 3),
        "speedup": round(oracle_seconds / fast_seconds, 2),
        "oracle_prompt_forwards": oracle["prompt_forwards"],
        "fast_prompt_forwards": fast["prompt_forwards"],
        "oracle_block_forwards": oracle["block_forwards"],
        "fast_block_forwards": fast["block_forwards"],
        "same_selection": agrees(outcome, scores, pick, tolerance),
        "oracle_pick": list(pick),
        "fast_pick": [outcome.selected.position, outcome.selected.layer],
        "fast_pick_scores": outcome.selected.as_dict(),
        "l_low": list(l_low),
        "same_l_low": list(l_low) == engine.l_low,
        "max_difference": differences(outcome, scores),
        "tolerance": asdict(tolerance),
        "oracle_l_low_seconds": round(l_low_seconds, 3),
        "speedup_without_l_low": round((oracle_seconds - l_low_seconds) / fast_seconds, 2),
        "oracle_work": oracle,
        "fast_work": fast,
        "fast_layout": engine.forwards.layout_note,
        "fast_kl_evaluated": sum(not math.isnan(r.kl) for r in outcome.records),
    }
    if args.variants:
        result["variants"] = run_variants(setup, candidates, settings, scores, pick, tolerance)
    return result


def run_variants(
    setup: Setup,
    candidates: CandidateSet,
    settings: CosmicSettings,
    scores: OracleScores,
    pick: tuple[int, int],
    tolerance: Tolerance,
) -> dict[str, Any]:
    rows = {}
    for name, options in VARIANTS.items():
        outcome, engine, seconds = run_engine(setup, candidates, settings, options)
        work = engine_work(setup.adapter, engine.work)
        rows[name] = {
            "seconds": round(seconds, 3),
            "same_selection": agrees(outcome, scores, pick, tolerance),
            "token_blocks": work["token_blocks"],
            "model_calls": work["model_calls"],
            "gflop": round(work["gflop"], 1),
            "layout": engine.forwards.layout_note,
        }
    return rows


def warm_up(setup: Setup) -> None:
    """One untimed forward, so thread pools and allocators are warm for whichever runs first."""
    forward(setup.adapter, setup.harmless_val[0], logits=True)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    set_enabled(not args.quiet)
    torch.manual_seed(args.seed)
    setup = build_setup(args)
    candidates, candidate_seconds = timed(
        lambda: compute_candidates(
            setup.adapter,
            setup.harmful_train,
            setup.harmless_train,
            setup.description["n_positions"],
        )
    )
    warm_up(setup)
    report: dict[str, Any] = {
        "benchmark": "selection",
        "model": setup.description,
        "config": {
            "n_train": args.n_train, "n_val": args.n_val, "batch_size": args.batch_size,
            "seed": args.seed, "l_low_layers": args.l_low_layers,
            "kl_threshold": args.kl_threshold, "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
        },
        "candidate_seconds": round(candidate_seconds, 3),
        "results": {},
    }  # fmt: skip
    for steering in args.steering:
        report["results"][steering] = compare_steering(setup, candidates, steering, args)
    report["same_selection"] = all(r["same_selection"] for r in report["results"].values())
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return report


if __name__ == "__main__":
    main()
