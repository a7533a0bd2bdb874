"""``refusalkit geometry`` (SPEC §9): is refusal one direction on this model?

At one (position, layer) — COSMIC's pick as in ``run``, given with ``--position/--layer``, or a
run directory's (``--from-run``) — each harm category's difference in means against the shared
harmless prompts; their cosines (at that layer and at every layer), clustering order and spectrum;
then what ablating each category direction does to every category's held-out prompts, what
ablating the top-k principal directions does, and whether every point of the cone the directions
span mediates refusal.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from refusalkit.config import RunConfig
from refusalkit.directions import CandidateSet
from refusalkit.errors import RefusalkitError
from refusalkit.evaluation.metrics import wilson_interval
from refusalkit.evaluation.scoring import first_position_kl
from refusalkit.geometry.measure import (
    Refusal,
    ablations,
    first_position,
    mean_at,
    refusal_under,
)
from refusalkit.geometry.spectrum import (
    cluster_order,
    cone_samples,
    cosine_matrix,
    cosines_with,
    orthonormal_top,
    quantiles,
    spectrum,
    two_clusters,
)
from refusalkit.io import read_json, write_json, write_text
from refusalkit.models.adapter import ModelAdapter
from refusalkit.models.loading import ResolvedModel
from refusalkit.progress import track
from refusalkit.prompts.chat import ChatFormat
from refusalkit.prompts.datasets import Prompt, Splits
from refusalkit.report.geometry import render_geometry_markdown
from refusalkit.runs import RunDirectory
from refusalkit.runs.stages import finish, tracked
from refusalkit.selection.refusal_score import refusal_tokens
from refusalkit.workflows.inputs import PromptInputs
from refusalkit.workflows.selectors import selection_stage
from refusalkit.workflows.session import judge_panel, load_model, open_session, start_run


def _by_category(prompts: Sequence[Prompt]) -> dict[str, list[Prompt]]:
    groups: dict[str, list[Prompt]] = {}
    for prompt in prompts:
        groups.setdefault(prompt.category or "uncategorised", []).append(prompt)
    return groups


def _chosen_categories(
    config: RunConfig, train: dict[str, list[Prompt]], test: dict[str, list[Prompt]]
) -> tuple[list[str], dict[str, str]]:
    """The categories studied (sorted), and those skipped with the reason: fewer than
    ``min_per_category`` train prompts, or no test prompt to measure an ablation on."""
    wanted = config.categories or sorted(train)
    unknown = [c for c in wanted if c not in train]
    if unknown:
        raise RefusalkitError(
            f"--categories {unknown} not among the harmful prompts' categories "
            f"({', '.join(sorted(train))})"
        )
    skipped = {}
    for c in wanted:
        n_train, n_test = len(train[c]), len(test.get(c, []))
        if n_train < config.min_per_category or n_test == 0:
            skipped[c] = f"{n_train} train, {n_test} test prompts"
    kept = [c for c in wanted if c not in skipped]
    if len(kept) < 2:
        raise RefusalkitError(
            f"{len(kept)} categories have at least {config.min_per_category} train prompts and a "
            f"test prompt (skipped: {skipped}); the geometry needs two: use more --n-train or "
            "--n-test, a smaller --min-per-category or a prompt file with a category column"
        )
    return sorted(kept), skipped


@dataclass
class Site:
    """Where the directions are read, and what loading it left: the model, the splits, and the
    candidates when COSMIC selected here (their harmless means are this workflow's too)."""

    adapter: ModelAdapter
    chat: ChatFormat
    position: int
    layer: int
    where: str
    splits: dict[str, Splits]
    candidates: CandidateSet | None = None


def _site(
    config: RunConfig, run_dir: RunDirectory, resolved: ResolvedModel, inputs: PromptInputs,
    resuming: bool,
) -> Site:  # fmt: skip
    """The site from the options, a run directory or COSMIC."""
    if (config.position is None) != (config.layer is None):
        raise RefusalkitError("--position and --layer go together: give both or neither")
    if config.position is not None and config.layer is not None:
        adapter, chat, _, _ = load_model(config, run_dir, resolved)
        where = "given (--position/--layer)"
        return Site(adapter, chat, config.position, config.layer, where, inputs.splits)
    if config.from_run:
        path = Path(config.from_run).expanduser() / "selection.json"
        if not path.is_file():
            raise RefusalkitError(f"{path} not found: pass a finished run directory to --from-run")
        record = dict(read_json(path))
        run_model = dict(read_json(path.parent / "config.json")).get("model")
        if run_model != config.model:
            raise RefusalkitError(
                f"--from-run {config.from_run} selected on {run_model}, not on {config.model}: "
                "pass the same --model"
            )
        adapter, chat, _, _ = load_model(config, run_dir, resolved)
        position, layer = int(record["position"]), int(record["layer"])
        return Site(adapter, chat, position, layer, f"from {path}", inputs.splits)
    session = open_session(config, run_dir, resolved, inputs, resuming)
    record = selection_stage(
        session, run_dir, "selection.json", "cosmic", config.steering, resuming
    )
    return Site(
        session.adapter, session.chat, int(record["position"]), int(record["layer"]),
        f"COSMIC-{config.steering.upper()} pick (selection.json)", session.splits,
        session.candidates,
    )  # fmt: skip


def _rates(judged: Sequence[bool], members: Sequence[int]) -> tuple[int, int]:
    return sum(judged[i] for i in members), len(members)


def run_geometry(config: RunConfig, out: Path, *, force: bool = False) -> dict[str, Any]:
    """The whole workflow into ``out``; returns ``geometry.json``'s record."""
    started = time.time()
    run_dir, resolved, inputs, resuming = start_run(config, out, force, "geometry")
    with tracked(run_dir) as stages:
        site = _site(config, run_dir, resolved, inputs, resuming)
        adapter, chat, position, layer, where = (
            site.adapter,
            site.chat,
            site.position,
            site.layer,
            site.where,
        )
        if not -chat.n_post_instruction <= position <= -1 or not 0 <= layer < adapter.n_layers:
            raise RefusalkitError(
                f"position {position}, layer {layer} is not a candidate of this model (positions "
                f"-{chat.n_post_instruction}..-1, layers 0..{adapter.n_layers - 1})"
            )
        harmful, harmless = site.splits["harmful"], site.splits["harmless"]
        train = _by_category(harmful.train)
        categories, skipped = _chosen_categories(config, train, _by_category(harmful.test))
        stages.enter("directions")
        batch = config.batch_size
        # COSMIC's candidates already hold this mean (same prompts, same position, every layer).
        harmless_mean = (
            site.candidates.harmless_means[position]
            if site.candidates is not None
            else mean_at(adapter, chat, harmless.train, position, batch, "geometry: harmless")
        )
        means = torch.stack([
            mean_at(adapter, chat, train[c], position, batch, f"geometry: {c}") for c in categories
        ])  # fmt: skip
        counts = torch.tensor([len(train[c]) for c in categories], dtype=torch.float64)
        directions = means - harmless_mean  # [C, L, d]
        # The global direction: every harmful train prompt of the studied categories at once.
        global_all = (means * counts[:, None, None]).sum(0) / counts.sum() - harmless_mean
        at_layer = directions[:, layer]
        cosines = cosine_matrix(at_layer)
        uncentred = spectrum(at_layer, centred=False)
        centred = spectrum(at_layer, centred=True)

        stages.enter("ablations")
        test = _by_category(
            [p for p in harmful.test if (p.category or "uncategorised") in categories]
        )
        test_prompts = [p for c in categories for p in test.get(c, [])]
        members: dict[str, list[int]] = {}
        for i, prompt in enumerate(test_prompts):
            members.setdefault(prompt.category or "uncategorised", []).append(i)
        if not test_prompts:
            raise RefusalkitError(
                "no harmful test prompts in the studied categories: raise --n-test"
            )
        ids = refusal_tokens(adapter.tokenizer).ids
        judge = judge_panel(config, adapter).substring

        def refusal(directions_to_ablate: torch.Tensor | None, label: str) -> Refusal:
            chosen = [] if directions_to_ablate is None else ablations(directions_to_ablate)
            return refusal_under(
                adapter, chat, test_prompts, chosen, ids, judge,
                tokens=config.judge_tokens, batch_size=batch, label=label,
            )  # fmt: skip

        def mean_odds(values: Sequence[float], rows: Sequence[int]) -> float:
            return sum(values[i] for i in rows) / len(rows) if rows else float("nan")

        baseline = refusal(None, "baseline")
        cross_rate, cross_count, cross_odds = [], [], []
        for k, name in enumerate(categories):
            result = refusal(at_layer[k : k + 1], f"ablating {name}")
            row_counts = [_rates(result.judged, members.get(c, [])) for c in categories]
            cross_count.append([count for count, _ in row_counts])
            cross_rate.append([count / n if n else float("nan") for count, n in row_counts])
            cross_odds.append([mean_odds(result.log_odds, members.get(c, [])) for c in categories])

        harmless_test = harmless.test
        clean_harmless = first_position(adapter, chat, harmless_test, [])

        def subspace_row(basis: torch.Tensor, k: int, label: str) -> dict[str, Any]:
            result = refusal(basis, label)
            changed = first_position(adapter, chat, harmless_test, ablations(basis))
            count = sum(result.judged)
            return {
                "k": k,
                "harmful_refusal_rate": count / len(test_prompts),
                "harmful_refusal_count": count,
                "harmful_refusal_ci95": list(wilson_interval(count, len(test_prompts))),
                "harmful_mean_log_odds": sum(result.log_odds) / len(result.log_odds),
                "harmless_kl": float(first_position_kl(clean_harmless, changed).mean()),
            }

        top = min(config.subspace_k, len(categories))
        subspace = [
            subspace_row(orthonormal_top(uncentred.components, k), k, f"top-{k} subspace")
            for k in range(1, top + 1)
        ]
        global_unit = global_all[layer][None]
        global_row = subspace_row(global_unit, 1, "global direction")

        cone: dict[str, Any] = {"n_samples": config.cone_samples}
        if config.cone_samples:
            units = at_layer / at_layer.norm(dim=-1, keepdim=True)
            weights = cone_samples(len(categories), config.cone_samples, config.seed)
            baseline_odds = sum(baseline.log_odds) / len(baseline.log_odds)
            reductions = []
            for w in track(weights, "geometry: cone samples"):
                combined = (w[:, None] * units).sum(0)[None]
                scores = first_position(adapter, chat, test_prompts, ablations(combined))
                odds = scores.refusal_log_odds(ids)
                reductions.append(baseline_odds - sum(odds) / len(odds))
            global_reduction = baseline_odds - global_row["harmful_mean_log_odds"]
            cone.update(
                log_odds_reduction_quantiles=quantiles(reductions),
                log_odds_reductions=reductions,
                global_direction_reduction=global_reduction,
                share_at_least_half_of_global=sum(r >= 0.5 * global_reduction for r in reductions)
                / len(reductions),
            )

        stages.enter("report")
        n_test = [len(members.get(c, [])) for c in categories]
        record: dict[str, Any] = {
            "model": config.model,
            "position": position,
            "layer": layer,
            "site": where,
            "categories": categories,
            "skipped_categories": skipped,
            "n_train": {c: len(train[c]) for c in categories},
            "n_harmless_train": len(harmless.train),
            "cosine": cosines.tolist(),
            "cluster_order": [categories[i] for i in cluster_order(cosines)],
            "two_clusters": [[categories[i] for i in group] for group in two_clusters(cosines)],
            "cosine_with_global": cosines_with(at_layer, global_all[layer]),
            "cosine_per_layer": [
                cosine_matrix(directions[:, l]).tolist() for l in range(adapter.n_layers)
            ],
            "explained_variance": uncentred.explained,
            "explained_variance_centred": centred.explained,
            "n_components_90": uncentred.n_components_90,
            "n_components_90_centred": centred.n_components_90,
            "participation_ratio": uncentred.participation_ratio,
            "participation_ratio_centred": centred.participation_ratio,
            "component_cosine_with_global": cosines_with(uncentred.components, global_all[layer]),
            "cross_ablation": {
                "refusal_rate": cross_rate,
                "refusal_count": cross_count,
                "n": n_test,
                "mean_log_odds": cross_odds,
                "baseline_mean_log_odds": [
                    mean_odds(baseline.log_odds, members.get(c, [])) for c in categories
                ],
                "baseline_refusal_count": [
                    _rates(baseline.judged, members.get(c, []))[0] for c in categories
                ],
                "judge": "substring",
                "judge_tokens": config.judge_tokens,
            },
            "subspace": subspace,
            "global_direction": global_row,
            "cone": cone,
            "seconds": round(time.time() - started, 1),
        }
        record["cross_ablation"]["summary"] = _diagonal_summary(record["cross_ablation"])
        write_json(run_dir.file("geometry.json"), record)
        write_text(run_dir.file("geometry.md"), render_geometry_markdown(record))
        finish(run_dir, "summary.json", _summary(record))
        return record


def _diagonal_summary(cross: dict[str, Any]) -> dict[str, Any]:
    """Mean log-odds reduction on a category's own prompts (diagonal) vs on the others'."""
    base = cross["baseline_mean_log_odds"]
    odds = cross["mean_log_odds"]
    size = len(base)
    diagonal = [base[i] - odds[i][i] for i in range(size)]
    off = [base[j] - odds[i][j] for i in range(size) for j in range(size) if i != j]
    asymmetry = [
        abs((base[j] - odds[i][j]) - (base[i] - odds[j][i]))
        for i in range(size)
        for j in range(i + 1, size)
    ]
    return {
        "mean_reduction_diagonal": sum(diagonal) / len(diagonal),
        "mean_reduction_off_diagonal": sum(off) / len(off) if off else float("nan"),
        "mean_asymmetry": sum(asymmetry) / len(asymmetry) if asymmetry else float("nan"),
    }


def _summary(record: dict[str, Any]) -> dict[str, Any]:
    cosines = [v for i, row in enumerate(record["cosine"]) for j, v in enumerate(row) if i < j]
    return {
        "schema_version": 1,
        "workflow": "geometry",
        "model": record["model"],
        "position": record["position"],
        "layer": record["layer"],
        "categories": record["categories"],
        "pairwise_cosine_range": [min(cosines), max(cosines)],
        "pairwise_cosine_mean": sum(cosines) / len(cosines),
        "n_components_90": record["n_components_90"],
        "two_clusters": record["two_clusters"],
        "seconds": record["seconds"],
    }
