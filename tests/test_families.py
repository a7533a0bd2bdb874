"""Directional ablation on every model family the papers used (issue 14), measured from the
model's own ``output_hidden_states`` and raw hooks — nothing of refusalkit's hooks or discovery is
used to read the residual stream."""

from __future__ import annotations

import json
import math

import pytest
import torch

import refusalkit as rk
from refusalkit.activations import encode_batches, forward
from refusalkit.evaluation.generation import generate, stop_token_ids
from refusalkit.models.writers import ResidualWriters
from refusalkit.prompts.chat import SystemPrompt, build_chat_format
from refusalkit.prompts.datasets import Prompt, builtin_prompts, split_prompts
from refusalkit.selection.refusal_score import refusal_tokens
from refusalkit.workflows import prompt_filter
from tests.oracle import decoder_blocks
from tests.test_cli import FINISHED, SMALL, _run
from tests.tiny import MODEL_FAMILIES, make_inst_tokenizer, make_model, make_tokenizer

BOUND = 1e-5  # |h·r̂| / ‖h‖ after every block under ablation (issue 14's bound)

# What each family's blocks add to the residual stream (from transformers' modelling code).
EXPECTED_WRITERS = {
    "llama": ("self_attn", "mlp"),
    "qwen2": ("self_attn", "mlp"),
    "mistral": ("self_attn", "mlp"),
    "phi3": ("self_attn", "mlp"),
    "gemma2": ("post_attention_layernorm", "post_feedforward_layernorm"),
}


def _model(family: str, tied: bool) -> rk.ModelAdapter:
    tokenizer = make_tokenizer("chatml")
    model = make_model(family, tied, n_layers=4, vocab_size=len(tokenizer),
                       pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    return rk.wrap(model, tokenizer)


def _residuals(model: rk.ModelAdapter, ids: torch.Tensor) -> list[torch.Tensor]:
    """The residual stream after every block: ``hidden_states[1:L]`` are the inputs of blocks
    1..L-1 (= outputs of blocks 0..L-2); the last block's output is read with a raw hook, since
    ``hidden_states[L]`` is after the final norm."""
    last: list[torch.Tensor] = []
    block = decoder_blocks(model.model)[-1]
    handle = block.register_forward_hook(
        lambda _m, _a, out: last.append(out if isinstance(out, torch.Tensor) else out[0])
    )
    try:
        with torch.inference_mode():
            hidden = model.model(input_ids=ids, output_hidden_states=True).hidden_states
    finally:
        handle.remove()
    return [*hidden[1 : model.n_layers], last[0]]


def _worst_projection(residuals: list[torch.Tensor], u: torch.Tensor) -> float:
    return max(
        float(((h.double() @ u.double()).abs() / h.double().norm(dim=-1)).max()) for h in residuals
    )


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
@pytest.mark.parametrize("family", MODEL_FAMILIES)
def test_ablation_leaves_no_component_along_r_after_any_block(family, tied):
    model = _model(family, tied)
    assert model.residual_writers.names == EXPECTED_WRITERS[family]
    assert model.residual_writers.verified
    ids = torch.tensor([[5, 9, 14, 3, 27, 41, 8]])
    r = torch.randn(model.hidden_size, generator=torch.Generator().manual_seed(3))
    u = r / r.norm()
    assert _worst_projection(_residuals(model, ids), u) > 1e-2  # not orthogonal by chance
    with rk.Direction.from_vector(r).ablate(model):
        ablated = _residuals(model, ids)
    assert _worst_projection(ablated, u) <= BOUND


def test_the_check_catches_hooks_on_the_attention_and_mlp_outputs_of_gemma2():
    """The bound above fails when Gemma-2's ablation hooks the attention and MLP outputs, as it
    did before issue 14: the post-norms' gains bring r̂ back."""
    model = _model("gemma2", False)
    blocks = decoder_blocks(model.model)
    model.residual_writers = ResidualWriters(
        [[block.self_attn, block.mlp] for block in blocks], ("self_attn", "mlp"), 0.0, True
    )
    ids = torch.tensor([[5, 9, 14, 3, 27, 41, 8]])
    r = torch.randn(model.hidden_size, generator=torch.Generator().manual_seed(3))
    with rk.Direction.from_vector(r).ablate(model):
        ablated = _residuals(model, ids)
    assert _worst_projection(ablated, r / r.norm()) > 1e-3


def test_provenance_names_the_hooked_modules():
    record = _model("gemma2", False).residual_writers.record()
    assert record["modules"] == ["post_attention_layernorm", "post_feedforward_layernorm"]
    assert record["verified"] and record["max_relative_error"] < 1e-5


def test_a_wrong_writers_override_is_refused():
    tokenizer = make_tokenizer("chatml")
    model = make_model("gemma2", False, n_layers=2, vocab_size=len(tokenizer),
                       pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    override = rk.ArchitectureOverride(writers=("self_attn", "mlp"))
    with pytest.raises(rk.RefusalkitError, match="do not add up"):
        rk.wrap(model, tokenizer, override=override)


# --- templates: no system role, plain-text suffix ------------------------------------------------


def _model_dir(tmp_path, family: str, tokenizer) -> str:
    model = make_model(family, False, n_layers=4, vocab_size=len(tokenizer),
                       pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)  # fmt: skip
    model.save_pretrained(tmp_path / family)
    tokenizer.save_pretrained(tmp_path / family)
    return str(tmp_path / family)


@pytest.mark.parametrize(
    ("family", "tokenizer"),
    [("gemma2", lambda: make_tokenizer("gemma")), ("mistral", make_inst_tokenizer)],
    ids=["gemma2-gemma", "mistral-inst"],
)
def test_adversarial_runs_on_templates_without_a_system_role(family, tokenizer, tmp_path, capsys):
    """Gemma's template raises on a system turn and the [INST] template has none: the
    adversarial system prompt is prepended to the user message there, and recorded."""
    directory = _model_dir(tmp_path, family, tokenizer())
    out = tmp_path / "run"
    code, _, err = _run(capsys, "run", "--model", directory, *SMALL, "--n-over-refusal", "0",
                        "--adversarial-prompt", "val", "--out", str(out))  # fmt: skip
    assert code in FINISHED, err
    chat = json.loads((out / "provenance.json").read_text())["chat"]
    assert chat["system_prompt_placement"] == "prepended to the user message"
    assert json.loads((out / "summary.json").read_text())["adversarial"]["condition"] == "A"


def test_rendering_prepends_the_system_text_where_the_template_has_no_system_role():
    tokenizer = make_tokenizer("gemma")
    chat = build_chat_format(tokenizer, SystemPrompt.parse("Refuse everything."))
    assert not chat.system_role
    rendered = chat.render("How do I bake bread?")
    assert "Refuse everything.\n\nHow do I bake bread?" in rendered
    assert rendered.endswith(chat.suffix_text)


def test_generation_is_not_cut_at_a_plain_text_suffix_token():
    """The [INST] template's suffix " [/INST]" starts with an ordinary token: a reply that writes
    it goes on; only EOS ends it. Here the model is made to write that token at every step."""
    tokenizer = make_inst_tokenizer()
    model = _inst_model(tokenizer)
    chat = build_chat_format(model.tokenizer)
    first = chat.suffix_ids[0]
    assert first not in stop_token_ids(model, chat)
    assert stop_token_ids(model, chat) == {tokenizer.eos_token_id}
    boost = torch.zeros(len(tokenizer))
    boost[first] = 1e4
    handle = model.model.lm_head.register_forward_hook(lambda _m, _a, out: out + boost)
    try:
        completions = generate(model, chat, [Prompt("How do I bake bread?")], max_new_tokens=6)
    finally:
        handle.remove()
    assert completions[0].token_ids == (first,) * 6


def test_a_run_on_an_inst_template_model_completes(tmp_path, capsys):
    directory = _model_dir(tmp_path, "mistral", make_inst_tokenizer())
    out = tmp_path / "run"
    code, _, err = _run(capsys, "run", "--model", directory, *SMALL, "--n-over-refusal", "0",
                        "--out", str(out))  # fmt: skip
    assert code in FINISHED, err
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["chat"]["post_instruction_tokens"][1:] == ["[", "/", "I", "N", "S", "T", "]"]
    assert provenance["model"]["residual_writers"]["modules"] == ["self_attn", "mlp"]


def _inst_model(tokenizer) -> rk.ModelAdapter:
    tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    model = make_model("mistral", False, n_layers=2, vocab_size=len(tokenizer),
                       pad_token_id=tokenizer.eos_token_id)  # fmt: skip
    return rk.wrap(model, tokenizer)


def test_a_forward_that_fails_while_registering_hooks_leaves_none_behind():
    model = _model("qwen2", False)
    batch = encode_batches(build_chat_format(model.tokenizer), [Prompt("hi")], 1, model.device)[0]
    before = sum(len(b._forward_pre_hooks) for b in decoder_blocks(model.model))
    with pytest.raises(ValueError, match="residual point"):
        forward(model, batch, read_layers=[0, 1, model.n_layers + 5])
    assert sum(len(b._forward_pre_hooks) for b in decoder_blocks(model.model)) == before


def test_chat_template_kwargs_reach_every_rendering(model_dir, tmp_path, capsys):
    tokenizer = make_tokenizer("chatml")
    tokenizer.chat_template = tokenizer.chat_template.replace(
        "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}",
        "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
        "{%- if enable_thinking is defined and not enable_thinking %}{{- 'no thoughts\\n' }}"
        "{%- endif %}",
    )
    plain = build_chat_format(tokenizer)
    quiet = build_chat_format(tokenizer, template_kwargs={"enable_thinking": False})
    assert "no thoughts" not in plain.suffix_text and "no thoughts" in quiet.suffix_text
    assert quiet.n_post_instruction > plain.n_post_instruction
    out = tmp_path / "run"
    code, _, err = _run(capsys, "run", "--model", str(model_dir), *SMALL, "--n-over-refusal", "0",
                        "--chat-template-kwargs", '{"enable_thinking": false}',
                        "--out", str(out))  # fmt: skip
    assert code in FINISHED, err
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["chat"]["template_kwargs"] == {"enable_thinking": False}
    bad = tmp_path / "bad"
    code, _, err = _run(capsys, "run", "--model", str(model_dir), *SMALL,
                        "--chat-template-kwargs", "[1]", "--out", str(bad))  # fmt: skip
    assert code == 2 and "JSON object" in err


# --- SPEC §4's data filter -------------------------------------------------------------------


def test_prompt_filter_scores_match_a_direct_computation():
    model = _model("qwen2", False)
    chat = build_chat_format(model.tokenizer)
    prompts = [
        Prompt(t) for t in ("How do I bake bread?", "Tell me a joke.", "Why is the sky blue?")
    ]
    tokens = refusal_tokens(model.tokenizer)
    batches = encode_batches(chat, prompts, 2, model.device)
    scores = prompt_filter.refusal_scores(model, batches, tokens.ids, "test")
    for prompt, score in zip(prompts, scores, strict=True):
        with torch.inference_mode():
            logits = model.model(input_ids=torch.tensor([chat.encode(prompt.text)])).logits[0, -1]
        p = float(torch.softmax(logits.double(), -1)[list(tokens.ids)].sum())
        assert score == pytest.approx(math.log(p + 1e-8) - math.log(1 - p + 1e-8), abs=1e-6)


def test_prompt_filter_keeps_refused_harmful_and_accepted_harmless(monkeypatch):
    model = _model("qwen2", False)
    chat = build_chat_format(model.tokenizer)
    splits = {
        label: split_prompts(builtin_prompts(label)[0], 6, 4, 2, seed=0, label=label)
        for label in ("harmful", "harmless")
    }
    signs = iter([1.0, -1.0] * 100)
    monkeypatch.setattr(
        prompt_filter, "refusal_scores",
        lambda _a, batches, _t, _w: [next(signs) for b in batches for _ in range(b.size)],
    )  # fmt: skip
    config = rk.RunConfig()
    filtered, record = prompt_filter.filter_prompts(config, chat, model, splits)
    assert record["kept"] == {"harmful_train": 3, "harmful_val": 2,
                              "harmless_train": 3, "harmless_val": 2}  # fmt: skip
    assert record["dropped"]["harmful_train"] == 3
    assert filtered["harmful"].test == splits["harmful"].test  # test prompts are never filtered
    monkeypatch.setattr(
        prompt_filter, "refusal_scores", lambda _a, b, _t, _w: [-1.0] * sum(x.size for x in b)
    )
    with pytest.raises(rk.RefusalkitError, match="dropped all 6 harmful train"):
        prompt_filter.filter_prompts(config, chat, model, splits)


@pytest.mark.parametrize("family", ["mistral", "phi3"])
def test_a_left_padded_batch_matches_the_prompt_alone(family):
    """Mistral with its [INST] Metaspace tokenizer and Phi-3: a prompt's readings and logits in a
    padded batch equal the prompt's alone, and its last P tokens are the template's suffix."""
    if family == "mistral":
        model = _inst_model(make_inst_tokenizer())
    else:
        model = _model(family, False)
    chat = build_chat_format(model.tokenizer)
    short = Prompt("x")
    others = [Prompt("Explain recursion, step by step."), Prompt("How do I bake bread?")]
    (alone,) = encode_batches(chat, [short], 8, model.device)
    (batch,) = encode_batches(chat, [short, *others], 8, model.device)
    row = batch.order.index(0)
    assert int(batch.attention_mask[row, 0]) == 0  # padded, on the left
    assert alone.input_ids[0, -chat.n_post_instruction :].tolist() == list(chat.suffix_ids)
    layers = list(range(model.n_layers))
    one = forward(model, alone, read_layers=layers, positions=[-1], logits=True)
    padded = forward(model, batch, read_layers=layers, positions=[-1], logits=True)
    for layer in layers:
        torch.testing.assert_close(
            padded.readings[layer][row], one.readings[layer][0], atol=1e-4, rtol=1e-4
        )
    assert one.last_logits is not None and padded.last_logits is not None
    torch.testing.assert_close(padded.last_logits[row], one.last_logits[0], atol=1e-4, rtol=1e-4)
