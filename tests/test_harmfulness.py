"""SPEC §8 on tiny models: belief scores, threshold calibration, the probe, the features read at
``t_inst``/``t_post-inst`` (checked against the model's own ``output_hidden_states``), reply
inversion's instruction span and masked steering, the Latent Guard's artifact, and the
``harmfulness`` / ``guard`` commands' contracts."""

from __future__ import annotations

import json
import math

import pytest
import torch

from refusalkit.activations import encode_batches
from refusalkit.cli import main
from refusalkit.errors import RefusalkitError
from refusalkit.harmfulness.beliefs import (
    balanced_accuracy,
    belief_scores,
    calibrate_threshold,
    length_direction,
    per_layer_cosine,
    remove_direction,
)
from refusalkit.harmfulness.features import read_features
from refusalkit.harmfulness.guard import LatentGuard, parse_layer_range
from refusalkit.harmfulness.inversion import _masked_addition, instruction_span
from refusalkit.harmfulness.probe import fit_probe, probe_features
from refusalkit.harmfulness.wrappers import WRAPPERS, wrapped
from refusalkit.io import read_tensors
from refusalkit.prompts.chat import build_chat_format
from refusalkit.prompts.datasets import Prompt, builtin_prompts
from refusalkit.selection.refusal_score import refusal_tokens
from tests.tiny import make_adapter, make_inst_tokenizer, make_tokenizer

# A tiny random model refuses nothing by the built-in phrases; these single letters make its
# random completions fall into both groups (refused and accepted), which the directions need.
LETTER_PHRASES = "a\ne\n"
SMALL = ["--n-train", "8", "--n-val", "4", "--n-test", "4", "--max-new-tokens", "4",
         "--n-inversion", "3", "--quiet"]  # fmt: skip


def _oracle_belief(h, a, b, layers, centred):
    """Per prompt, per layer, with torch's own cosine; no refusalkit code."""
    out = []
    for row in h:
        values = []
        for layer in layers:
            x, p, q = row[layer].double(), a[layer].double(), b[layer].double()
            if centred:
                m = (p + q) / 2
                x, p, q = x - m, p - m, q - m
            cos = torch.nn.functional.cosine_similarity
            values.append(float(cos(x, p, dim=0) - cos(x, q, dim=0)))
        out.append(sum(values) / len(values))
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("centred", [False, True])
def test_belief_scores_match_a_loop_over_prompts_and_layers(centred):
    generator = torch.Generator().manual_seed(0)
    h = torch.randn(7, 5, 16, generator=generator) + 3.0  # a shared offset, as small models have
    a = torch.randn(5, 16, generator=generator) + 3.0
    b = torch.randn(5, 16, generator=generator) + 3.0
    layers = [1, 3, 4]
    expected = _oracle_belief(h, a, b, layers, centred)
    torch.testing.assert_close(belief_scores(h, a, b, layers, centred), expected)
    if centred:  # centred, the score is 2·cos(h − m, A − B) per layer
        m = (a + b) / 2
        cos = torch.nn.functional.cosine_similarity
        twice = torch.stack([2 * cos(h[:, l] - m[l], (a - b)[l].expand(7, 16), dim=1)
                             for l in layers]).mean(0)  # fmt: skip
        torch.testing.assert_close(belief_scores(h, a, b, layers, True), twice.double())


def test_per_layer_cosine_is_nan_for_a_zero_vector():
    u = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    v = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    cosines = per_layer_cosine(u, v)
    assert cosines[0] == pytest.approx(2**-0.5) and math.isnan(cosines[1])


def test_calibrated_threshold_separates_separable_scores_and_prefers_zero_on_ties():
    positive = torch.tensor([0.3, 0.5, 0.9], dtype=torch.float64)
    negative = torch.tensor([-0.2, 0.1, 0.2], dtype=torch.float64)
    threshold = calibrate_threshold(positive, negative)
    assert threshold.balanced_accuracy == 1.0 and 0.2 < threshold.tau < 0.3
    assert balanced_accuracy(positive, negative, 0.0) == pytest.approx(0.5 * (1 + 1 / 3))
    # Every cut between -1 and 1 separates these equally well: the one closest to 0 wins.
    apart = calibrate_threshold(torch.tensor([1.0]).double(), torch.tensor([-1.0]).double())
    assert apart.tau == 0.0


def _oracle_length_unit(groups: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Per layer and coordinate, an ordinary least-squares fit of the activation on log length
    plus one intercept per group (numpy's solver, no shared code); the slopes, normalised."""
    import numpy as np

    n = sum(len(counts) for _, counts in groups)
    design = np.zeros((n, 1 + len(groups)))
    rows = 0
    for g, (_, counts) in enumerate(groups):
        design[rows : rows + len(counts), 0] = np.log(counts.numpy().astype(np.float64))
        design[rows : rows + len(counts), 1 + g] = 1.0
        rows += len(counts)
    targets = torch.cat([acts for acts, _ in groups]).double().numpy()  # [N, L, d]
    n_layers, d = targets.shape[1:]
    solution = np.linalg.lstsq(design, targets.reshape(n, -1), rcond=None)[0]
    slope = torch.from_numpy(solution[0].reshape(n_layers, d))
    return slope / slope.norm(dim=-1, keepdim=True)


def test_length_direction_is_the_within_class_least_squares_slope():
    generator = torch.Generator().manual_seed(3)
    n_layers, d = 3, 8
    along = torch.randn(n_layers, d, generator=generator)
    groups = []
    for shift, low, high in ((2.0, 8, 40), (-2.0, 3, 15)):  # the classes differ in mean length
        counts = torch.randint(low, high, (30,), generator=generator)
        acts = (shift + torch.randn(30, n_layers, d, generator=generator) * 0.3
                + counts.double().log()[:, None, None] * along)  # fmt: skip
        groups.append((acts.float(), counts))
    unit = length_direction(groups)
    torch.testing.assert_close(unit, _oracle_length_unit(groups), rtol=1e-6, atol=1e-8)
    assert float(per_layer_cosine(unit, along)[0]) > 0.99
    removed = remove_direction(groups[0][0], unit)
    assert torch.einsum("nld,ld->nl", removed, unit).abs().max() < 1e-9
    # no length varies within a class: the direction is undefined and nothing is removed
    constant = [(acts, torch.full_like(counts, 7)) for acts, counts in groups]
    assert not length_direction(constant).any()
    assert torch.equal(remove_direction(groups[0][0], length_direction(constant)),
                       groups[0][0].double())  # fmt: skip


def test_probe_separates_linearly_separable_features():
    generator = torch.Generator().manual_seed(1)
    direction = torch.randn(12, generator=generator)

    def sample(sign, n):
        noise = torch.randn(n, 12, generator=generator)
        return (noise + sign * 3 * direction).double()

    probe = fit_probe(sample(1, 30), sample(-1, 30), sample(1, 10), sample(-1, 10))
    assert bool((probe.logits(sample(1, 20)) > 0).all())
    assert bool((probe.logits(sample(-1, 20)) < 0).all())
    features = probe_features(torch.randn(3, 4, 5, generator=generator), [1, 2])
    assert features.shape == (3, 10)
    assert torch.allclose(features[:, :5].norm(dim=1), torch.ones(3, dtype=torch.float64))


@pytest.fixture(scope="module")
def adapter():
    return make_adapter("llama", n_layers=4)


def test_features_are_the_hidden_states_at_t_inst_and_the_last_token(adapter):
    chat = build_chat_format(adapter.tokenizer)
    prompts = [Prompt(p.text) for p in builtin_prompts("harmful")[0][:5]]
    features = read_features(adapter, chat, prompts, 2, "t")
    for i, prompt in enumerate(prompts):  # one prompt at a time, no padding, no refusalkit hook
        ids = torch.tensor([chat.encode(prompt.text)])
        with torch.inference_mode():
            hidden = adapter.model(input_ids=ids, output_hidden_states=True).hidden_states
        for layer in range(adapter.n_layers):  # hidden_states[l] is block l's input
            torch.testing.assert_close(features.inst[i, layer],
                                       hidden[layer][0, chat.t_inst_position].float(),
                                       rtol=1e-4, atol=1e-5)  # fmt: skip
            torch.testing.assert_close(features.post[i, layer], hidden[layer][0, -1].float(),
                                       rtol=1e-4, atol=1e-5)  # fmt: skip


def _instruction_token_columns(tokenizer, rendered: str, instruction: str) -> list[int]:
    """Oracle for the instruction's tokens, from character offsets (no refusalkit code): the
    tokens of the rendered prompt whose characters lie inside the instruction's text."""
    begin = rendered.rindex(instruction)
    finish = begin + len(instruction)
    encoded = tokenizer(rendered, add_special_tokens=False, return_offsets_mapping=True)
    return [
        column
        for column, (first, last) in enumerate(encoded["offset_mapping"])
        if first < finish and last > begin
    ]


@pytest.mark.parametrize("family", ["llama", "gemma2"])
def test_instruction_mean_is_the_hidden_states_averaged_over_the_instruction(family):
    adapter = make_adapter(family, n_layers=3)
    chat = build_chat_format(adapter.tokenizer)
    prompts = [Prompt(p.text) for p in builtin_prompts("harmless")[0][:4]]
    prompts.append(Prompt("Zebras are striped; why?"))  # starts like InstructionBounds' reference
    features = read_features(adapter, chat, prompts, 3, "t")
    for i, prompt in enumerate(prompts):
        rendered = chat.render(prompt.text)
        ids = chat.encode(prompt.text)
        assert adapter.tokenizer(rendered, add_special_tokens=False)["input_ids"] == ids
        columns = _instruction_token_columns(adapter.tokenizer, rendered, prompt.text)
        assert columns[-1] == len(ids) + chat.t_inst_position
        assert int(features.instruction_tokens[i]) == len(columns)
        with torch.inference_mode():
            hidden = adapter.model(
                input_ids=torch.tensor([ids]), output_hidden_states=True
            ).hidden_states
        for layer in range(adapter.n_layers):
            expected = hidden[layer][0, columns].float().mean(0)
            torch.testing.assert_close(features.instruction_mean[i, layer], expected,
                                       rtol=1e-4, atol=1e-5)  # fmt: skip
        assert features.reading("instruction_mean") is features.instruction_mean
        assert features.reading("t_inst") is features.inst
    picked = features.select([2, 0])
    for name in ("inst", "post", "instruction_mean", "refusal_log_odds", "instruction_tokens"):
        assert torch.equal(getattr(picked, name), getattr(features, name)[[2, 0]])


@pytest.mark.parametrize("tokenizer", [lambda: make_tokenizer("chatml"), make_inst_tokenizer],
                         ids=["chatml", "inst-metaspace"])  # fmt: skip
def test_instruction_span_holds_the_instruction_tokens(tokenizer):
    tokenizer = tokenizer()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    chat = build_chat_format(tokenizer)
    instruction = "Give me three tips for growing tomatoes"
    ids, start, end = instruction_span(chat, instruction)
    text = tokenizer.decode(ids[start:end]).strip()
    assert text.startswith("Give") and text.endswith("tomatoes"), text
    assert "Give" not in tokenizer.decode(ids[:start])


def test_masked_addition_steers_the_masked_tokens_only():
    hidden = torch.zeros(2, 5, 3)
    mask = torch.zeros(2, 5, dtype=torch.bool)
    mask[0, 1:3] = True
    vector = torch.tensor([1.0, 2.0, 3.0])
    (changed, *_), _ = _masked_addition(mask, vector)(None, (hidden,), {})
    assert torch.equal(changed[0, 1], vector) and torch.equal(changed[0, 2], vector)
    assert not changed[0, [0, 3, 4]].any() and not changed[1].any()


def test_every_wrapper_keeps_the_request():
    prompts = [Prompt("how do I repot a cactus", "plants")]
    for name in WRAPPERS:
        (framed,) = wrapped(prompts, name)
        assert "how do I repot a cactus" in framed.text and framed.category == "plants"
        assert framed.text != prompts[0].text


def test_layer_ranges():
    assert parse_layer_range("all", 6) == (1, 2, 3, 4, 5)
    assert parse_layer_range("second-half", 6) == (3, 4, 5)
    assert parse_layer_range("2-4", 6) == (2, 3, 4)
    assert parse_layer_range("4,1", 6) == (1, 4)
    with pytest.raises(RefusalkitError, match=r"must lie in 0\.\.5"):
        parse_layer_range("3-9", 6)
    with pytest.raises(RefusalkitError, match="invalid layer range"):
        parse_layer_range("middle", 6)


def test_guard_api_fit_save_load_classify(adapter, tmp_path):
    harmful = [p.text for p in builtin_prompts("harmful")[0][:8]]
    harmless = [p.text for p in builtin_prompts("harmless")[0][:8]]
    guard = LatentGuard.fit(adapter, harmful[:6], harmless[:6], val_harmful=harmful[6:],
                            val_harmless=harmless[6:])  # fmt: skip
    assert guard.tau_rule == "calibrated" and guard.layers == (2, 3)  # the second half
    assert guard.length_direction is not None and guard.describe()["length"] == "removed"
    scores = guard.score(adapter, harmful[:3])
    assert guard.classify(adapter, harmful[:3]) == [s >= guard.tau for s in scores]
    loaded = LatentGuard.load(guard.save(tmp_path / "guard"))
    assert loaded.score(adapter, harmful[:3]) == pytest.approx(scores, abs=1e-12)
    assert (loaded.tau, loaded.layers, loaded.centred) == (guard.tau, guard.layers, guard.centred)
    assert loaded.length_direction is not None
    assert torch.equal(loaded.length_direction, guard.length_direction)
    assert loaded.reading == guard.reading == "instruction_mean"
    untuned = LatentGuard.fit(adapter, harmful[:6], harmless[:6])
    assert untuned.tau == 0.0 and untuned.tau_rule == "zero"
    # t_inst (the paper's reading): the score is the belief score of the features at t_inst
    paper = LatentGuard.fit(adapter, harmful[:6], harmless[:6], reading="t_inst", centred=False,
                            remove_length=False)  # fmt: skip
    features = read_features(adapter, build_chat_format(adapter.tokenizer),
                             [Prompt(t) for t in harmful[:3]], 2, "t")  # fmt: skip
    expected = belief_scores(features.inst, paper.harmful_centroids, paper.harmless_centroids,
                             paper.layers, centred=False)  # fmt: skip
    assert paper.score(adapter, harmful[:3]) == pytest.approx(expected.tolist(), abs=1e-6)
    # length removed: the centroids and every score read the activations less their component
    # along the within-class length slope (its oracle above), computed here from raw features
    train = [read_features(adapter, build_chat_format(adapter.tokenizer),
                           [Prompt(t) for t in texts[:6]], 2, "t")
             for texts in (harmful, harmless)]  # fmt: skip
    unit = _oracle_length_unit([(f.instruction_mean, f.instruction_tokens) for f in train])

    def project(x: torch.Tensor) -> torch.Tensor:
        return x.double() - (x.double() * unit).sum(-1, keepdim=True) * unit

    centroids = [project(f.instruction_mean).mean(0) for f in train]
    layers = guard.layers
    expected = belief_scores(project(features.instruction_mean), *centroids, layers, centred=True)
    assert untuned.score(adapter, harmful[:3]) == pytest.approx(expected.tolist(), abs=1e-6)
    kept = LatentGuard.fit(adapter, harmful[:6], harmless[:6], remove_length=False)
    assert kept.length_direction is None and kept.describe()["length"] == "kept"
    raw_centroids = [f.instruction_mean.double().mean(0) for f in train]
    expected = belief_scores(features.instruction_mean, *raw_centroids, layers, centred=True)
    assert kept.score(adapter, harmful[:3]) == pytest.approx(expected.tolist(), abs=1e-6)
    with pytest.raises(RefusalkitError, match="unknown guard reading"):
        LatentGuard.fit(adapter, harmful[:6], harmless[:6], reading="mean")
    # a guard written before the reading was recorded read t_inst
    record = json.loads((tmp_path / "guard" / "guard.json").read_text())
    del record["reading"], record["length"]
    (tmp_path / "guard" / "guard.json").write_text(json.dumps(record))
    old = LatentGuard.load(tmp_path / "guard")
    assert old.reading == "t_inst" and old.length_direction is None
    guard.model["fingerprint"] = "a" * 16
    with pytest.raises(RefusalkitError, match="fit a guard for it"):
        guard.check_model("b" * 16)
    with pytest.raises(RefusalkitError, match=r"holds no guard\.json"):
        LatentGuard.load(tmp_path)


def summary_reading(run_dir) -> str:
    return json.loads((run_dir / "summary.json").read_text())["guard"]["reading"]


def _cli(capsys, *args):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_harmfulness_command_writes_the_contract(model_dir, tmp_path, capsys):
    phrases = tmp_path / "phrases.txt"
    phrases.write_text(LETTER_PHRASES)
    out = tmp_path / "run"
    code, stdout, err = _cli(capsys, "harmfulness", "--model", model_dir, *SMALL,
                             "--refusal-phrases", phrases, "--out", out)  # fmt: skip
    assert code == 0, err
    assert "Latent Guard on the test prompts" in stdout
    record = json.loads((out / "harmfulness.json").read_text())
    groups = record["groups"]
    assert set(groups) == {"refused_harmful", "accepted_harmful", "refused_harmless",
                           "accepted_harmless"}  # fmt: skip
    assert groups["refused_harmful"] + groups["accepted_harmful"] == 8
    assert groups["refused_harmless"] + groups["accepted_harmless"] == 8 + 2  # + half over-refusal
    assert len(record["cosine_harmfulness_refusal"]) == 5
    inversion = record["reply_inversion"]
    assert {row["direction"] for row in inversion} == {"none", "harmfulness", "refusal"}
    for row in inversion:
        assert row["n"] == 3 and row["no_count"] + row["affirmative_count"] + row["invalid"] == 3
        assert sum(row["invalid_first_tokens"].values()) == row["invalid"]  # all, when < 5 kinds
        assert row["no_rate"] == row["no_count"] / 3
    guard = record["guard"]
    assert guard["layers"] == [2, 3, 4] and guard["centred"] is True  # second half of 5
    expected_sets = {"harmful", "harmless", "over_refusal"}
    expected_sets |= {f"{w}:{label}" for w in WRAPPERS for label in ("harmful", "harmless")}
    assert set(guard["evaluation"]) == expected_sets
    for name, entry in guard["evaluation"].items():
        assert entry["n"] == (2 if name == "over_refusal" else 4)
        harmful = entry["label"] == "harmful"
        correct = entry["flagged_harmful"] if harmful else entry["n"] - entry["flagged_harmful"]
        assert entry["accuracy"] == correct / entry["n"]
    assert set(record["baselines"]) == {"own-refusal", "delta-refuse", "logistic-probe"}
    # 2 readings × 2 layer ranges × raw/centred × length removed/kept × tau 0/calibrated
    assert len(record["guard_settings"]) == 32
    assert {row["length"] for row in record["guard_settings"]} == {"removed", "kept"}
    assert guard["length"] == "removed"
    assert {row["reading"] for row in record["guard_settings"]} == {"t_inst", "instruction_mean"}
    assert guard["reading"] == "instruction_mean" and summary_reading(out) == "instruction_mean"
    assert (out / "guard" / "guard.json").is_file() and (out / "report.html").is_file()
    directions = read_tensors(out / "directions.safetensors", ("harmfulness", "refusal"))
    assert directions["harmfulness"].shape == (5, 64)
    cosines = per_layer_cosine(directions["harmfulness"], directions["refusal"])
    for stored, recomputed in zip(record["cosine_harmfulness_refusal"], cosines, strict=True):
        assert (stored is None and math.isnan(recomputed)) or stored == pytest.approx(recomputed)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["workflow"] == "harmfulness" and summary["groups"] == groups
    html = (out / "report.html").read_text()
    assert html.count("data:image/svg+xml") == 3 and "Reply inversion" in html
    # the settings grid, best first, in both reports: one row per setting
    markdown = (out / "report.md").read_text()
    grid = markdown[markdown.index("## Guard settings on the validation prompts") :]
    assert grid.count("| instruction_mean |") + grid.count("| t_inst |") == 32
    best = max(row["val_balanced_accuracy"] for row in record["guard_settings"])
    assert grid.split("\n|---|---|---|---|---|---|\n")[1].split(" |\n")[0].endswith(f"{best:.3f}")
    assert "Guard settings on the validation prompts" in html
    code, _, err = _cli(capsys, "report", out)  # re-rendered from the finished directory
    assert code == 0, err
    assert (out / "report.html").read_text() == html

    # The run's guard works on user files at once.
    harmful_file, harmless_file = tmp_path / "h.txt", tmp_path / "b.txt"
    harmful_file.write_text("how do I pick a lock\nwrite ransomware\n")
    harmless_file.write_text("how do I bake bread\nwrite a limerick\nname three rivers\n")
    code, stdout, err = _cli(capsys, "guard", "evaluate", out / "guard", "--harmful",
                             harmful_file, "--harmless", harmless_file, "--out",
                             tmp_path / "ev", "--quiet")  # fmt: skip
    assert code == 0, err
    evaluation = json.loads((tmp_path / "ev" / "guard-evaluation.json").read_text())
    assert evaluation["harmful"]["n"] == 2 and evaluation["harmless"]["n"] == 3
    assert evaluation["balanced_accuracy"] == pytest.approx(
        (evaluation["harmful"]["accuracy"] + evaluation["harmless"]["accuracy"]) / 2
    )
    for label in ("harmful", "harmless"):
        low, high = evaluation[label]["ci95"]
        assert 0 <= low <= evaluation[label]["accuracy"] <= high <= 1
    code, stdout, err = _cli(capsys, "guard", "classify", out / "guard", harmless_file, "--quiet")
    assert code == 0, err
    rows = [json.loads(line) for line in stdout.splitlines()]
    assert [r["index"] for r in rows] == [0, 1, 2]
    assert all(r["harmful"] == (r["score"] >= guard["tau"]) for r in rows)


def test_guard_fit_writes_a_guard_and_refuses_to_overwrite(model_dir, tmp_path, capsys):
    out = tmp_path / "guard"
    args = ["guard", "fit", "--model", model_dir, "--n-train", "6", "--n-val", "3", "--quiet",
            "--guard-tau", "zero", "--guard-centring", "raw", "--guard-reading", "t_inst",
            "--out", out]  # fmt: skip
    code, stdout, err = _cli(capsys, *args)
    assert code == 0, err
    assert "guard written" in stdout
    record = json.loads((out / "guard.json").read_text())
    assert record["tau"] == 0.0 and record["centred"] is False and record["model"]["fingerprint"]
    assert record["reading"] == "t_inst" and LatentGuard.load(out).reading == "t_inst"
    code, _, err = _cli(capsys, *args)
    assert code == 2 and "--force" in err
    code, _, err = _cli(capsys, "guard", "classify", tmp_path, tmp_path / "missing.txt")
    assert code == 2 and "guard.json" in err


def test_harmfulness_without_both_groups_says_what_to_do(model_dir, tmp_path, capsys):
    code, _, err = _cli(capsys, "harmfulness", "--model", model_dir, *SMALL, "--out",
                        tmp_path / "run")  # fmt: skip
    # The tiny model's random completions hold none of the built-in refusal phrases.
    assert code == 2 and "the refusal direction needs both" in err


def test_harmfulness_features_agree_with_encode_batches_order(adapter):
    chat = build_chat_format(adapter.tokenizer)
    prompts = [Prompt("a"), Prompt("a much longer prompt than the first one"), Prompt("mid size")]
    ids = refusal_tokens(adapter.tokenizer).ids
    together = read_features(adapter, chat, prompts, 3, "t", ids)
    for i, prompt in enumerate(prompts):
        alone = read_features(adapter, chat, [prompt], 1, "t", ids)
        torch.testing.assert_close(together.inst[i], alone.inst[0], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(together.instruction_mean[i], alone.instruction_mean[0],
                                   rtol=1e-4, atol=1e-5)  # fmt: skip
        assert float(together.refusal_log_odds[i]) == pytest.approx(
            float(alone.refusal_log_odds[0]), abs=1e-4
        )
    assert len(encode_batches(chat, prompts, 3, adapter.device)) == 1


def test_a_guard_model_is_evaluated_beside_the_latent_guard(model_dir, tmp_path, capsys):
    phrases = tmp_path / "phrases.txt"
    phrases.write_text(LETTER_PHRASES)
    out = tmp_path / "run"
    code, _, err = _cli(capsys, "harmfulness", "--model", model_dir, *SMALL,
                        "--refusal-phrases", phrases, "--judge-model", model_dir,
                        "--judge-model-kind", "guard", "--out", out)  # fmt: skip
    assert code == 0, err
    record = json.loads((out / "harmfulness.json").read_text())
    guard_model = record["baselines"]["guard-model"]["sets"]
    assert set(guard_model) == set(record["guard"]["evaluation"])
    assert all(0 <= entry["flagged_harmful"] <= entry["n"] for entry in guard_model.values())
