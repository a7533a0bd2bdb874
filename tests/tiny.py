"""Tiny, deterministic, offline stand-ins for chat models: a byte-level BPE tokenizer trained on a
built-in corpus with a hand-written chat template, and random-weight causal LMs of the Llama, Qwen2,
Gemma2, Mistral and Phi-3 families. Nothing here touches the network."""

from __future__ import annotations

import functools

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    Gemma2Config,
    Gemma2ForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Phi3Config,
    Phi3ForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from refusalkit.models.adapter import ModelAdapter, build_adapter

VOCAB_SIZE = 512
DEFAULT_SYSTEM = "You are a tiny test model."

CORPUS = (
    "The quick brown fox jumps over the lazy dog. How do I bake bread at home? "
    "Write a haiku about autumn leaves and the quiet evening. Tell me a joke about a cat. "
    "Explain recursion, step by step, with a simple example in Python. What is two plus two? "
    "The assistant answers the user. The system prompt tells the model how to behave. "
    "You are a helpful assistant. You are a tiny test model. I am sorry, but I cannot help "
    "with that request. Sure, here is a recipe for banana bread with flour, sugar and eggs. "
    "Give me a list of ten fruits: apple, banana, cherry, grape, lemon, mango, orange, peach, "
    "pear and plum. The weather today is sunny with a light breeze from the west. "
    "Please summarise this article about the history of the printing press in Europe. "
    "How can I improve my sleep? Drink less coffee, go to bed at the same time, and read a book. "
    "Translate the sentence into French. Describe the water cycle for a school student. "
    "Instructions: write a short story about a robot who learns to paint the sea. "
    "Why is the sky blue? Because sunlight is scattered by the air. What's the time? "
    "Mathematics, physics, chemistry and biology are sciences; music and art are creative. "
)

_SPECIALS = {
    "chatml": {
        "tokens": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        "bos": None,
        "eos": "<|im_end|>",
        "pad": "<|endoftext|>",
    },
    "llama3": {
        "tokens": [
            "<|begin_of_text|>",
            "<|end_of_text|>",
            "<|start_header_id|>",
            "<|end_header_id|>",
            "<|eot_id|>",
            "<|finetune_right_pad_id|>",
        ],
        "bos": "<|begin_of_text|>",
        "eos": "<|eot_id|>",
        "pad": "<|finetune_right_pad_id|>",
    },
    "gemma": {
        "tokens": ["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>"],
        "bos": "<bos>",
        "eos": "<eos>",
        "pad": "<pad>",
    },
}

# Qwen2.5-style: a default system block is injected when the messages carry none.
CHATML_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>system\\n" + DEFAULT_SYSTEM + "<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if not (message['role'] == 'system' and loop.first) %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

LLAMA3_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
    "{{- message['content'] | trim }}{{- '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{%- endif %}"
)

# Like Gemma's real template: <bos> first, no system role, 'assistant' is called 'model'.
GEMMA_TEMPLATE = (
    "{{ bos_token }}"
    "{% if messages[0]['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}"
    "{% endif %}"
    "{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}"
    "{% if message['role'] == 'assistant' %}{% set role = 'model' %}"
    "{% else %}{% set role = message['role'] %}{% endif %}"
    "{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)

TEMPLATES = {"chatml": CHATML_TEMPLATE, "llama3": LLAMA3_TEMPLATE, "gemma": GEMMA_TEMPLATE}

# For the chatml tokenizer: the answer follows the end-of-turn marker directly, so the only
# post-instruction token is <|im_end|> (P = 1). Kept out of TEMPLATES, whose templates all have
# an assistant header (P >= 3, see tests/test_prompts.py).
ONE_TOKEN_SUFFIX_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' }}"
    "{%- endfor %}"
)

# Mistral-7B-Instruct-v0.1 / Llama-2-style: no system role, and the post-instruction suffix
# " [/INST]" is plain text, tokenized by a sentencepiece-style (Metaspace) tokenizer.
INST_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}"
    "{% endif %}"
    "{% endfor %}"
)


@functools.cache
def _metaspace_backend() -> str:
    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=["<unk>", "<s>", "</s>"],
        # every printable character, so that "[/INST]" splits into pieces as in Mistral's vocab
        initial_alphabet=[chr(c) for c in range(32, 127)] + ["▁"],
        show_progress=False,
    )
    backend.train_from_iterator([CORPUS] * 4, trainer=trainer)
    return backend.to_str()


def make_inst_tokenizer() -> PreTrainedTokenizerFast:
    """A sentencepiece-style tokenizer (Metaspace ``▁``, BPE, vocab <= 512) with the ``[INST]``
    template: no pad token, as Mistral ships (loading sets pad = eos)."""
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_metaspace_backend()),
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
    )
    tokenizer.chat_template = INST_TEMPLATE
    return tokenizer


# family -> the chat template its real instruct models use
FAMILY_TEMPLATE = {"llama": "llama3", "qwen2": "chatml", "gemma2": "gemma"}
FAMILIES = tuple(FAMILY_TEMPLATE)
# Every family make_model builds (Mistral and Phi-3 without a tiny template of their own yet).
MODEL_FAMILIES = (*FAMILIES, "mistral", "phi3")


@functools.cache
def _trained_backend(template: str) -> str:
    """The trained ``tokenizers`` model as JSON (cached: training is the slow part)."""
    specials = _SPECIALS[template]["tokens"]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=list(specials),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator([CORPUS] * 4, trainer=trainer)
    return backend.to_str()


def make_tokenizer(template: str, *, chat_template: bool = True) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (vocab <= 512) for ``template`` in chatml | llama3 | gemma."""
    if template not in TEMPLATES:
        raise ValueError(f"unknown template {template!r}; use one of {', '.join(TEMPLATES)}")
    spec = _SPECIALS[template]
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_trained_backend(template)),
        bos_token=spec["bos"],
        eos_token=spec["eos"],
        pad_token=spec["pad"],
        additional_special_tokens=[
            t for t in spec["tokens"] if t not in (spec["bos"], spec["eos"], spec["pad"])
        ],
    )
    if chat_template:
        tokenizer.chat_template = TEMPLATES[template]
    return tokenizer


def make_model(
    family: str,
    tie_embeddings: bool,
    n_layers: int = 4,
    vocab_size: int = VOCAB_SIZE,
    pad_token_id: int = 0,
    seed: int = 0,
) -> torch.nn.Module:
    """A random-weight causal LM: hidden 64, 4 heads, 2 kv heads, intermediate 128, float32."""
    common = dict(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=tie_embeddings,
        pad_token_id=pad_token_id,
        bos_token_id=None,
        eos_token_id=None,
        # Larger than the default 0.02 so that blocks move the residual stream noticeably.
        initializer_range=0.2,
    )
    if family == "llama":
        config, cls = LlamaConfig(**common), LlamaForCausalLM
    elif family == "qwen2":
        config, cls = Qwen2Config(**common), Qwen2ForCausalLM
    elif family == "mistral":
        config, cls = MistralConfig(**common), MistralForCausalLM
    elif family == "phi3":  # fused qkv_proj and gate_up_proj
        config, cls = Phi3Config(**common), Phi3ForCausalLM
    elif family == "gemma2":
        # Short sliding window so that the sliding layers really differ from the global ones.
        config = Gemma2Config(**common, head_dim=16, query_pre_attn_scalar=16, sliding_window=6)
        cls = Gemma2ForCausalLM
    else:
        raise ValueError(f"unknown family {family!r}; use one of {', '.join(MODEL_FAMILIES)}")
    config._attn_implementation = "eager" if family == "gemma2" else "sdpa"
    torch.manual_seed(seed)
    model = cls(config).to(torch.float32)
    # Fresh norms scale every coordinate alike (weights 1, or 0 in Gemma's 1 + w form), which
    # would hide bugs that depend on a norm mixing directions; trained models never look like that.
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "norm" in name:
                parameter.add_(0.3 * torch.randn_like(parameter))
    model.eval()
    model.requires_grad_(False)
    return model


def make_adapter(
    family: str, template: str | None = None, tie_embeddings: bool = False, n_layers: int = 4
) -> ModelAdapter:
    """What ``refusalkit.models.loading.load_resolved`` returns, for a tiny model."""
    template = template or FAMILY_TEMPLATE[family]
    tokenizer = make_tokenizer(template)
    tokenizer.padding_side = "left"
    model = make_model(
        family,
        tie_embeddings,
        n_layers=n_layers,
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
    )
    name = f"tiny-{family}-{template}-{'tied' if tie_embeddings else 'untied'}"
    return build_adapter(model, tokenizer, name)
