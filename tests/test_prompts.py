"""Chat formatting: the post-instruction suffix, token positions, system prompts, left padding."""

from __future__ import annotations

import pytest
import torch

from refusalkit.activations import encode_batches, forward
from refusalkit.errors import RefusalkitError
from refusalkit.prompts.chat import SystemPrompt, build_chat_format
from refusalkit.prompts.datasets import Prompt
from tests.tiny import DEFAULT_SYSTEM, TEMPLATES, make_tokenizer

TEMPLATE_NAMES = tuple(TEMPLATES)

EXPECTED_SUFFIX = {
    "chatml": "<|im_end|>\n<|im_start|>assistant\n",
    "llama3": "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
    "gemma": "<end_of_turn>\n<start_of_turn>model\n",
}

INSTRUCTIONS = (
    "How do I bake bread?",
    "Write a haiku about autumn",
    "Explain recursion, step by step:",
    "what's 2+2",
    "Give me a list of ten fruits",
    "Why is the sky blue",
    "x",
)


def test_tokenizer_is_deterministic() -> None:
    for template in TEMPLATE_NAMES:
        assert make_tokenizer(template).get_vocab() == make_tokenizer(template).get_vocab()
        assert 400 <= len(make_tokenizer(template)) <= 600


@pytest.mark.parametrize("template", TEMPLATE_NAMES)
def test_suffix_is_found(template: str) -> None:
    tokenizer = make_tokenizer(template)
    chat = build_chat_format(tokenizer)
    assert chat.suffix_text == EXPECTED_SUFFIX[template]
    assert tokenizer.decode(list(chat.suffix_ids)) == EXPECTED_SUFFIX[template]
    assert chat.n_post_instruction == len(chat.suffix_ids) >= 3
    assert len(chat.position_labels()) == chat.n_post_instruction
    assert "".join(chat.position_labels()) == EXPECTED_SUFFIX[template]


@pytest.mark.parametrize("template", TEMPLATE_NAMES)
def test_encoded_prompts_end_with_the_suffix_and_t_inst_is_the_last_instruction_token(
    template: str,
) -> None:
    tokenizer = make_tokenizer(template)
    chat = build_chat_format(tokenizer)
    p = chat.n_post_instruction
    assert chat.t_inst_position == -(p + 1)
    for instruction in INSTRUCTIONS:
        ids = chat.encode(instruction)
        assert tuple(ids[-p:]) == chat.suffix_ids
        # The whole encoding decodes back to exactly the rendered template text.
        assert tokenizer.decode(ids) == chat.render(instruction)
        assert chat.render(instruction) == tokenizer.apply_chat_template(
            [{"role": "user", "content": instruction}], tokenize=False, add_generation_prompt=True
        ).replace(f"<|im_start|>system\n{DEFAULT_SYSTEM}<|im_end|>\n", "")
        last = ids[chat.t_inst_position]
        own_ids = tokenizer(instruction, add_special_tokens=False)["input_ids"]
        assert last == own_ids[-1]
        assert instruction.endswith(tokenizer.decode([last]))
        # ... and the token before the suffix starts is never a template token.
        assert last not in tokenizer.all_special_ids


def test_system_none_removes_the_injected_default_block() -> None:
    tokenizer = make_tokenizer("chatml")
    chat = build_chat_format(tokenizer, SystemPrompt("none"))
    block = f"<|im_start|>system\n{DEFAULT_SYSTEM}<|im_end|>\n"
    assert chat.removed_default_system == block
    rendered = chat.render("How do I bake bread?")
    assert DEFAULT_SYSTEM not in rendered
    assert "system" not in rendered
    assert rendered == ("<|im_start|>user\nHow do I bake bread?<|im_end|>\n<|im_start|>assistant\n")
    assert DEFAULT_SYSTEM not in tokenizer.decode(chat.encode("How do I bake bread?"))


def test_system_default_keeps_the_injected_block() -> None:
    tokenizer = make_tokenizer("chatml")
    chat = build_chat_format(tokenizer, SystemPrompt.parse("default"))
    assert chat.removed_default_system is None
    rendered = chat.render("How do I bake bread?")
    assert rendered.startswith(f"<|im_start|>system\n{DEFAULT_SYSTEM}<|im_end|>\n")
    assert chat.suffix_text == EXPECTED_SUFFIX["chatml"]
    ids = chat.encode("How do I bake bread?")
    assert DEFAULT_SYSTEM in tokenizer.decode(ids)
    assert tuple(ids[-chat.n_post_instruction :]) == chat.suffix_ids


@pytest.mark.parametrize("template", ["chatml", "llama3"])
def test_system_text_appears(template: str) -> None:
    tokenizer = make_tokenizer(template)
    text = "Answer like a pirate."
    chat = build_chat_format(tokenizer, SystemPrompt.parse(text))
    assert chat.system.mode == "text"
    assert chat.removed_default_system is None
    rendered = chat.render("How do I bake bread?")
    assert text in rendered
    assert rendered.index(text) < rendered.index("How do I bake bread?")
    if template == "chatml":
        assert DEFAULT_SYSTEM not in rendered  # the explicit prompt replaces the default
    assert text in tokenizer.decode(chat.encode("How do I bake bread?"))
    assert chat.suffix_text == EXPECTED_SUFFIX[template]


@pytest.mark.parametrize("template", ["llama3", "gemma"])
def test_templates_without_default_system_have_nothing_to_remove(template: str) -> None:
    chat = build_chat_format(make_tokenizer(template), SystemPrompt("none"))
    assert chat.removed_default_system is None
    assert "system" not in chat.render("hello")


def test_gemma_takes_a_system_prompt_in_the_user_message() -> None:
    """Gemma's template raises on a system turn (issue 14: the run failed); the system text is
    prepended to the user message instead, as the COSMIC reference does for such templates."""
    tokenizer = make_tokenizer("gemma")
    with pytest.raises(Exception, match="System role not supported"):
        tokenizer.apply_chat_template(
            [{"role": "system", "content": "x"}, {"role": "user", "content": "hi"}], tokenize=False
        )
    chat = build_chat_format(tokenizer, SystemPrompt.parse("Be brief."))
    assert not chat.system_role
    assert chat.render("hi").startswith("<bos><start_of_turn>user\nBe brief.\n\nhi")
    plain = build_chat_format(tokenizer)  # no system prompt: the user message alone
    assert plain.render("hi").startswith("<bos><start_of_turn>user\nhi")
    with_system = plain.encode("hi", SystemPrompt("text", "Be brief."))
    assert with_system[-plain.n_post_instruction :] == list(plain.suffix_ids)
    assert len(with_system) > len(plain.encode("hi"))


def test_tokenizer_without_chat_template_is_a_refusalkit_error() -> None:
    tokenizer = make_tokenizer("chatml", chat_template=False)
    assert not tokenizer.chat_template
    with pytest.raises(RefusalkitError, match="no chat template"):
        build_chat_format(tokenizer)


def test_empty_system_prompt_text_is_rejected() -> None:
    with pytest.raises(RefusalkitError):
        SystemPrompt.parse("   ")
    assert SystemPrompt.parse("none") == SystemPrompt("none")
    assert SystemPrompt.parse("Be nice").describe() == "text: Be nice"


def test_left_padded_batch_matches_the_prompt_alone(family_adapter) -> None:
    adapter = family_adapter
    chat = build_chat_format(adapter.tokenizer)
    short = Prompt("x")
    others = [
        Prompt("Explain recursion, step by step, with a simple example in Python."),
        Prompt("Please summarise this article about the history of the printing press in Europe."),
        Prompt("How do I bake bread?"),
    ]
    layers = list(range(adapter.n_layers))
    (alone,) = encode_batches(chat, [short], batch_size=8, device=adapter.device)
    (batch,) = encode_batches(chat, [short, *others], batch_size=8, device=adapter.device)
    row = batch.order.index(0)
    assert batch.attention_mask[row].sum() < batch.input_ids.shape[1]  # really padded
    assert int(batch.attention_mask[row, 0]) == 0  # on the left
    assert batch.input_ids[row, 0] == adapter.tokenizer.pad_token_id
    assert torch.equal(batch.input_ids[row, -alone.input_ids.shape[1] :], alone.input_ids[0])

    out_alone = forward(adapter, alone, read_layers=layers, positions=[-1], logits=True)
    out_batch = forward(adapter, batch, read_layers=layers, positions=[-1], logits=True)
    for layer in layers:
        a = out_alone.readings[layer][0]
        b = out_batch.readings[layer][row]
        assert a.shape == (1, adapter.hidden_size)
        torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(
        out_batch.last_logits[row], out_alone.last_logits[0], atol=1e-4, rtol=1e-4
    )
    # The batch's longer prompts differ from the short one (the comparison is not vacuous).
    other = (row + 1) % batch.size
    assert not torch.allclose(
        out_batch.readings[layers[-1]][other], out_batch.readings[layers[-1]][row]
    )
