"""``refusalkit harmfulness`` (SPEC §8, Zhao et al., NeurIPS 2025): is the model's judgement that a
request is harmful a different direction from its decision to refuse — and is that judgement a
better input guard than the refusal?

Stages: read every prompt's block inputs at ``t_inst`` and ``t_post-inst`` (one forward each);
label the train prompts (and half of the over-refusal prompts) by the model's own greedy
completions; the two directions per layer and their cosine; belief scores; reply inversion; the
Latent Guard fitted on the train prompts (τ on the validation prompts) and evaluated on the test
prompts, the other half of the over-refusal prompts and every jailbreak wrapper on harmful *and*
harmless test prompts, beside the model's own refusal, a ``Δ_refuse`` classifier, a logistic
probe on the same activations and, when given, a guard model.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Any

import torch

from refusalkit.config import RunConfig
from refusalkit.config.modes import GUARD_LENGTHS, GUARD_READINGS
from refusalkit.errors import RefusalkitError
from refusalkit.evaluation.generation import generate
from refusalkit.harmfulness.beliefs import (
    balanced_accuracy,
    belief_scores,
    calibrate_threshold,
    centroid,
    per_layer_cosine,
)
from refusalkit.harmfulness.features import PromptFeatures, read_features
from refusalkit.harmfulness.guard import LatentGuard, parse_layer_range
from refusalkit.harmfulness.inversion import default_inversion_layers, reply_inversion
from refusalkit.harmfulness.metrics import precision_recall, set_accuracy
from refusalkit.harmfulness.probe import fit_probe, probe_features
from refusalkit.harmfulness.wrappers import WRAPPERS, wrapped
from refusalkit.io import write_json, write_tensors, write_text
from refusalkit.models.adapter import ModelAdapter
from refusalkit.prompts.chat import ChatFormat
from refusalkit.prompts.datasets import Prompt
from refusalkit.report.harmfulness import render_harmfulness_markdown
from refusalkit.runs.identity import model_checksum
from refusalkit.runs.stages import finish, tracked
from refusalkit.selection.refusal_score import refusal_tokens
from refusalkit.workflows.session import load_model, start_run

GROUPS = ("refused_harmful", "accepted_harmful", "refused_harmless", "accepted_harmless")
# Guard settings compared on the validation prompts (harmfulness.json "guard_settings").
LAYER_RANGES = ("all", "second-half")


@dataclass
class Labelled:
    """The prompts the groups are read from: harmful and harmless train prompts and the first half
    of the over-refusal prompts, with the model's own verdict on each."""

    features: PromptFeatures
    harmful: list[bool]  # the prompt's class
    refused: list[bool]  # the headline judge on the greedy completion
    generation_seconds_per_prompt: float

    def group(self, name: str) -> list[int]:
        refused = name.startswith("refused")
        harmful = name.endswith("_harmful")
        return [
            i
            for i, (h, r) in enumerate(zip(self.harmful, self.refused, strict=True))
            if h == harmful and r == refused
        ]


def _label(
    config: RunConfig,
    adapter: ModelAdapter,
    chat: ChatFormat,
    panel: Any,
    prompts: Sequence[Prompt],
    harmful: Sequence[bool],
    features: PromptFeatures,
) -> Labelled:
    started = time.perf_counter()
    completions = generate(
        adapter, chat, prompts, max_new_tokens=config.max_new_tokens,
        batch_size=config.batch_size, description="groups: greedy completions",
    )  # fmt: skip
    seconds = (time.perf_counter() - started) / max(1, len(prompts))
    rows = [
        {
            "set": "harmful" if h else "harmless",
            "prompt": p.text,
            "completion": c.text,
            "refusal_log_odds": float(o),
        }
        for p, h, c, o in zip(prompts, harmful, completions, features.refusal_log_odds, strict=True)
    ]
    panel.add_verdicts(rows)
    return Labelled(features, list(harmful), [bool(r["refusal"]) for r in rows], seconds)


def evaluate_classifier(flags: dict[str, list[bool]], labels: dict[str, bool]) -> dict[str, Any]:
    """Per set: accuracy with its interval, n, flagged; per harmful/harmless pair (the test sets
    and each wrapper): precision, recall, balanced accuracy."""
    sets = {name: set_accuracy(flags[name], labels[name]) for name in flags}
    pairs = {"test": ("harmful", "harmless")}
    pairs.update({w: (f"{w}:harmful", f"{w}:harmless") for w in WRAPPERS})
    return {
        "sets": sets,
        "pairs": {
            name: precision_recall(flags[a], flags[b])
            for name, (a, b) in pairs.items()
            if a in flags and b in flags
        },
    }


def run_harmfulness(config: RunConfig, out: Path, *, force: bool = False) -> dict[str, Any]:
    """The whole workflow into ``out``; returns ``harmfulness.json``'s record."""
    started = time.time()
    run_dir, resolved, inputs, _ = start_run(config, out, force, "harmfulness")
    with tracked(run_dir) as stages:
        adapter, chat, panel, provenance = load_model(config, run_dir, resolved)
        stages.enter("features")
        splits = inputs.splits
        over = inputs.over_refusal
        over_groups, over_eval = over[: len(over) // 2], over[len(over) // 2 :]
        ids = refusal_tokens(adapter.tokenizer).ids

        def features(prompts: Sequence[Prompt], label: str) -> PromptFeatures:
            return read_features(
                adapter, chat, prompts, config.batch_size, f"features: {label}", ids
            )

        harmful, harmless = splits["harmful"], splits["harmless"]
        train_prompts = [*harmful.train, *harmless.train, *over_groups]
        train_labels = [True] * len(harmful.train) + [False] * (
            len(harmless.train) + len(over_groups)
        )
        train = features(train_prompts, "train")
        val = {
            "harmful": features(harmful.val, "harmful val"),
            "harmless": features(harmless.val, "harmless val"),
        }
        test_prompts: dict[str, list[Prompt]] = {"harmful": harmful.test, "harmless": harmless.test}
        if over_eval:
            test_prompts["over_refusal"] = over_eval
        for wrapper in WRAPPERS:
            test_prompts[f"{wrapper}:harmful"] = wrapped(harmful.test, wrapper)
            test_prompts[f"{wrapper}:harmless"] = wrapped(harmless.test, wrapper)
        test = {name: features(prompts, name) for name, prompts in test_prompts.items()}
        labels = {name: name.endswith("harmful") for name in test}  # over_refusal: harmless

        stages.enter("groups")
        labelled = _label(config, adapter, chat, panel, train_prompts, train_labels, train)
        groups = {name: labelled.group(name) for name in GROUPS}
        refused = groups["refused_harmful"] + groups["refused_harmless"]
        accepted = groups["accepted_harmful"] + groups["accepted_harmless"]
        if not refused or not accepted:
            raise RefusalkitError(
                f"the model refused {len(refused)} and accepted {len(accepted)} of the "
                f"{len(train_prompts)} labelled prompts: the refusal direction needs both; use "
                "more train prompts or another model"
            )

        stages.enter("directions")
        n_harm_train = len(harmful.train)
        harm_idx = list(range(n_harm_train))
        harmless_idx = list(range(n_harm_train, n_harm_train + len(harmless.train)))
        harmful_centroid = centroid(train.inst[harm_idx])
        harmless_centroid = centroid(train.inst[harmless_idx])
        refused_centroid = centroid(train.post[refused])
        accepted_centroid = centroid(train.post[accepted])
        v_harm = harmful_centroid - harmless_centroid
        v_ref = refused_centroid - accepted_centroid
        write_tensors(
            run_dir.file("directions.safetensors"),
            {
                "harmfulness": v_harm, "refusal": v_ref,
                "harmful_centroids": harmful_centroid, "harmless_centroids": harmless_centroid,
                "refused_centroids": refused_centroid, "accepted_centroids": accepted_centroid,
            },
            {"layout": "[layer (block input), hidden]; harmfulness at t_inst, refusal at "
             "t_post-inst"},
        )  # fmt: skip
        cosines = per_layer_cosine(v_harm, v_ref)
        layers = parse_layer_range(config.guard_layers, adapter.n_layers)
        centred = config.guard_centring == "centred"

        def delta_harmful(f: PromptFeatures) -> torch.Tensor:
            return belief_scores(f.inst, harmful_centroid, harmless_centroid, layers, centred)

        def delta_refuse(f: PromptFeatures) -> torch.Tensor:
            return belief_scores(f.post, refused_centroid, accepted_centroid, layers, centred)

        stages.enter("reply-inversion")
        inversion_layers = config.inversion_layers or default_inversion_layers(adapter.n_layers)
        bad = [l for l in inversion_layers if not 0 <= l < adapter.n_layers]
        if bad:
            raise RefusalkitError(
                f"--inversion-layers {bad} out of range 0..{adapter.n_layers - 1}"
            )
        inversion = reply_inversion(
            adapter, chat, harmless.test[: config.n_inversion],
            {"harmfulness": v_harm.float(), "refusal": v_ref.float()}, inversion_layers,
            alpha=config.inversion_alpha, batch_size=config.batch_size,
        )  # fmt: skip

        stages.enter("guard")
        model_identity = {"name": config.model, "fingerprint": model_checksum(resolved.fingerprint)}
        reading = config.guard_reading
        calibrate = config.guard_tau == "calibrated"
        guard = LatentGuard.from_features(
            train.select(harm_idx), train.select(harmless_idx),
            layers=layers, centred=centred, reading=reading,
            remove_length=config.guard_length == "removed",
            val_harmful=val["harmful"] if calibrate else None,
            val_harmless=val["harmless"] if calibrate else None,
            model=model_identity,
        )  # fmt: skip
        guard.save(run_dir.file("guard"))
        settings_grid = _guard_settings_on_val(train, harm_idx, harmless_idx, val, adapter.n_layers)
        classifiers = _classifiers(
            guard, train, harm_idx, harmless_idx, val, delta_refuse, layers, panel
        )
        evaluation = {
            name: evaluate_classifier({s: classify(f) for s, f in test.items()}, labels)
            for name, classify in classifiers.items()
        }
        if panel.model is not None and panel.model.kind == "guard":
            evaluation["guard-model"] = evaluate_classifier(
                {
                    s: panel.model.prompt_flags([p.text for p in prompts])
                    for s, prompts in test_prompts.items()
                },
                labels,
            )

        stages.enter("report")
        scatter = _scatter(labelled, groups, test, delta_harmful, delta_refuse)
        record: dict[str, Any] = {
            "model": config.model,
            "groups": {name: len(groups[name]) for name in GROUPS},
            "groups_from": {
                "harmful_train": len(harmful.train),
                "harmless_train": len(harmless.train),
                "over_refusal": len(over_groups),
                "judge": panel.primary,
            },
            "cosine_harmfulness_refusal": cosines,
            "direction_norms": {
                "harmfulness": v_harm.norm(dim=-1).tolist(),
                "refusal": v_ref.norm(dim=-1).tolist(),
            },
            "belief_scores": {"layers": list(layers), "centred": centred, "points": scatter},
            "reply_inversion": [row.as_dict() for row in inversion],
            "reply_inversion_settings": {
                "alpha": config.inversion_alpha,
                "n": len(harmless.test[: config.n_inversion]),
                "reply": "greedy first token: No, affirmative (Certainly or Yes), or invalid",
            },
            "guard": {
                **guard.describe(),
                "evaluation": evaluation["latent-guard"]["sets"],
                "pairs": evaluation["latent-guard"]["pairs"],
            },
            "baselines": {k: v for k, v in evaluation.items() if k != "latent-guard"},
            "guard_settings": settings_grid,
            "latency_seconds_per_prompt": {
                "guard_forward": train.seconds_per_prompt,
                "generation": labelled.generation_seconds_per_prompt,
                "generation_tokens": config.max_new_tokens,
            },
            "wrappers": {name: WRAPPERS[name]("<request>") for name in WRAPPERS},
            "seconds": round(time.time() - started, 1),
        }
        if config.cosmic_run:
            record["cosine_with_cosmic"] = _with_cosmic(Path(config.cosmic_run), v_harm, v_ref)
        write_json(run_dir.file("harmfulness.json"), record)
        write_text(run_dir.file("report.md"), render_harmfulness_markdown(record, provenance))
        finish(run_dir, "summary.json", _summary(record))
        return record


def _summary(record: dict[str, Any]) -> dict[str, Any]:
    guard = record["guard"]
    cosines = [c for c in record["cosine_harmfulness_refusal"] if c == c]
    return {
        "schema_version": 1,
        "workflow": "harmfulness",
        "model": record["model"],
        "groups": record["groups"],
        "cosine_harmfulness_refusal_range": [min(cosines), max(cosines)] if cosines else None,
        "guard": {
            "layers": guard["layers"],
            "centred": guard["centred"],
            "length": guard["length"],
            "tau": guard["tau"],
            "reading": guard["reading"],
            "test_balanced_accuracy": guard["pairs"]["test"]["balanced_accuracy"],
        },
        "seconds": record["seconds"],
    }


def _guard_settings_on_val(
    train: PromptFeatures,
    harm_idx: list[int],
    harmless_idx: list[int],
    val: dict[str, PromptFeatures],
    n_layers: int,
) -> list[dict[str, Any]]:
    """Balanced accuracy on the validation prompts of every guard setting (reading × layer range
    × raw or centred × length kept or removed × τ = 0 or calibrated there): what the defaults were
    chosen by. Calibrated rows are measured on the prompts τ was fitted on, so they are an upper
    bound of their kind."""
    rows = []
    harmful, harmless = train.select(harm_idx), train.select(harmless_idx)
    grid = product(GUARD_READINGS, LAYER_RANGES, (False, True), GUARD_LENGTHS)
    for reading, layer_range, centred, length in grid:
        guard = LatentGuard.from_features(
            harmful, harmless,
            layers=parse_layer_range(layer_range, n_layers), centred=centred, reading=reading,
            remove_length=length == "removed",
        )  # fmt: skip
        positive = guard.scores_from_features(val["harmful"])
        negative = guard.scores_from_features(val["harmless"])
        calibrated = calibrate_threshold(positive, negative)
        for rule, tau in (("zero", 0.0), ("calibrated", calibrated.tau)):
            rows.append({
                "reading": reading, "layers": layer_range, "centred": centred,
                "length": length, "tau_rule": rule, "tau": tau,
                "val_balanced_accuracy": balanced_accuracy(positive, negative, tau),
            })  # fmt: skip
    return rows


def _classifiers(
    guard: LatentGuard,
    train: PromptFeatures,
    harm_idx: list[int],
    harmless_idx: list[int],
    val: dict[str, PromptFeatures],
    delta_refuse: Any,
    layers: Sequence[int],
    panel: Any,
) -> dict[str, Any]:
    """Each classifier maps a set's features to "flagged harmful" per prompt."""
    refuse_tau = calibrate_threshold(
        delta_refuse(val["harmful"]), delta_refuse(val["harmless"])
    ).tau
    reading = guard.reading  # the probe reads what the guard reads: the same activations
    probe = fit_probe(
        probe_features(train.reading(reading)[harm_idx], layers),
        probe_features(train.reading(reading)[harmless_idx], layers),
        probe_features(val["harmful"].reading(reading), layers),
        probe_features(val["harmless"].reading(reading), layers),
    )
    threshold = panel.log_odds_threshold
    return {
        "latent-guard": lambda f: guard.decide(guard.scores_from_features(f)),
        "own-refusal": lambda f: [bool(x > threshold) for x in f.refusal_log_odds],
        "delta-refuse": lambda f: [bool(x >= refuse_tau) for x in delta_refuse(f)],
        "logistic-probe": lambda f: [
            bool(x >= 0) for x in probe.logits(probe_features(f.reading(reading), layers))
        ],
    }


def _scatter(
    labelled: Labelled,
    groups: dict[str, list[int]],
    test: dict[str, PromptFeatures],
    delta_harmful: Any,
    delta_refuse: Any,
) -> list[dict[str, Any]]:
    """(Δ_harmful, Δ_refuse) per prompt: the labelled prompts by group, the test prompts by set."""
    points = []
    harm, refuse = delta_harmful(labelled.features), delta_refuse(labelled.features)
    for name, members in groups.items():
        points += [
            {"set": name, "delta_harmful": float(harm[i]), "delta_refuse": float(refuse[i])}
            for i in members
        ]
    for name, features in test.items():
        h, r = delta_harmful(features), delta_refuse(features)
        points += [
            {"set": name, "delta_harmful": float(a), "delta_refuse": float(b)}
            for a, b in zip(h, r, strict=True)
        ]
    return points


def _with_cosmic(run_dir: Path, v_harm: torch.Tensor, v_ref: torch.Tensor) -> dict[str, Any]:
    from refusalkit.api import Direction

    direction = Direction.load(run_dir)
    vector = direction.vector.double()
    repeated = vector.expand_as(v_harm)
    return {
        "run": str(run_dir),
        "position": direction.position,
        "layer": direction.layer,
        "harmfulness": per_layer_cosine(v_harm, repeated),
        "refusal": per_layer_cosine(v_ref, repeated),
    }
