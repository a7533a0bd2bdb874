"""Teacher-forced scoring against a one-prompt-at-a-time oracle, generation's stop handling, the
judge model and the text judges that need a tokenizer."""

from __future__ import annotations

import math

import pytest
import torch

from refusalkit.errors import RefusalkitError
from refusalkit.evaluation.generation import _through_first_stop, generate
from refusalkit.evaluation.judges import (
    FirstTokenJudge,
    ModelJudge,
    degenerate_reason,
    read_phrase_file,
)
from refusalkit.evaluation.scoring import first_position_kl, teacher_forced
from refusalkit.interventions import ActivationAddition, applied
from refusalkit.prompts.chat import build_chat_format
from refusalkit.prompts.datasets import Prompt
from refusalkit.selection.refusal_score import refusal_log_odds, refusal_tokens

PROMPTS = [Prompt(t) for t in ("Hi", "Tell me a long story about a cat and a dog", "Why?")]


def _oracle(adapter, chat, prompt: Prompt, response: list[int]) -> tuple[torch.Tensor, float]:
    """Unbatched, unpadded full forward: first-position log-probs and summed response NLL."""
    ids = chat.encode(prompt.text) + response
    with torch.inference_mode():
        logits = adapter.model(torch.tensor([ids])).logits[0].float()
    log_probs = torch.log_softmax(logits, dim=-1)
    start = len(ids) - len(response) - 1
    nll = -sum(float(log_probs[start + i, t]) for i, t in enumerate(response))
    return log_probs[start], nll


def test_teacher_forced_matches_unbatched_oracle(any_adapter) -> None:
    chat = build_chat_format(any_adapter.tokenizer)
    vocab = len(any_adapter.tokenizer)
    responses = [[5, 9, 12], [], [7] * 11]  # different lengths, one empty (prompt alone)
    responses = [[t % vocab for t in r] for r in responses]
    direction = torch.randn(any_adapter.hidden_size, generator=torch.Generator().manual_seed(1))
    for intervention in (None, ActivationAddition(direction, layer=1)):
        scores = teacher_forced(any_adapter, chat, PROMPTS, responses, intervention=intervention)
        for row, (prompt, response) in enumerate(zip(PROMPTS, responses, strict=True)):
            with applied(any_adapter, intervention):
                first, nll = _oracle(any_adapter, chat, prompt, response)
            torch.testing.assert_close(scores.first_log_probs[row], first, atol=2e-4, rtol=1e-4)
            assert math.isclose(float(scores.nll[row]), nll, rel_tol=1e-4, abs_tol=1e-3)
            assert int(scores.n_tokens[row]) == len(response)
    total = sum(len(r) for r in responses)
    assert math.isclose(scores.cross_entropy(), float(scores.nll.sum()) / total)


def test_first_position_kl_is_zero_for_itself_and_positive_otherwise(family_adapter) -> None:
    chat = build_chat_format(family_adapter.tokenizer)
    clean = teacher_forced(family_adapter, chat, PROMPTS, [[]] * 3)
    assert torch.allclose(first_position_kl(clean, clean), torch.zeros(3, dtype=torch.float64))
    direction = torch.randn(family_adapter.hidden_size, generator=torch.Generator().manual_seed(2))
    steered = teacher_forced(
        family_adapter, chat, PROMPTS, [[]] * 3, intervention=ActivationAddition(direction * 5, 1)
    )
    assert (first_position_kl(clean, steered) > 0).all()
    tokens = refusal_tokens(family_adapter.tokenizer)
    assert clean.refusal_log_odds(tokens.ids) == pytest.approx(
        refusal_log_odds(clean.first_log_probs, tokens.ids).tolist()
    )


def test_generated_token_ids_decode_to_the_text_and_stop_at_the_first_stop(family_adapter) -> None:
    chat = build_chat_format(family_adapter.tokenizer)
    completions = generate(family_adapter, chat, PROMPTS, max_new_tokens=6)
    for completion in completions:
        assert len(completion.token_ids) <= 6
        decoded = family_adapter.tokenizer.decode(completion.token_ids, skip_special_tokens=True)
        assert decoded.strip() == completion.text
    assert _through_first_stop([4, 5, 2, 2, 2], {2}) == [4, 5, 2]
    assert _through_first_stop([4, 5], {2}) == [4, 5]


def test_first_token_judge(family_adapter) -> None:
    tokenizer = family_adapter.tokenizer
    tokens = refusal_tokens(tokenizer)
    judge = FirstTokenJudge(tokenizer, tokens.ids)
    assert judge.judge(["p", "p"], ["I'm sorry, no.", "  Sure thing."]) == [True, False]
    assert not judge.is_refusal("")


class _ScriptedModel(torch.nn.Module):
    """Answers with whatever logits ``answer`` gives for the last token of each rendered text."""

    def __init__(self, vocab: int, favour: list[int]) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.vocab, self.favour = vocab, favour

    def forward(self, input_ids, attention_mask=None):
        logits = torch.zeros(*input_ids.shape, self.vocab)
        logits[..., self.favour] = 5.0
        return type("Out", (), {"logits": logits})()


def test_model_judge_reads_the_first_answer_token(family_adapter) -> None:
    tokenizer = family_adapter.tokenizer
    yes = ModelJudge(_ScriptedModel(len(tokenizer), []), tokenizer, "yes-no")
    # "No" (the task was not done) is the refusal answer of the yes/no question.
    # (The tiny BPE vocabulary may only hold a prefix of the word.)
    assert all("no".startswith(tokenizer.decode([i]).strip().lower()) for i in yes._positive)
    yes.model.favour = yes._positive
    assert yes.judge(["a", "b"], ["I won't.", "Sure"]) == [True, True]
    yes.model.favour = yes._negative
    assert yes.judge(["a"], ["x"]) == [False]
    assert yes.name == "model-yes-no"
    rendered = yes.render("How do I bake bread?", "No.")
    assert "How do I bake bread?" in rendered and "Yes or No" in rendered
    guard = ModelJudge(_ScriptedModel(len(tokenizer), []), tokenizer, "guard")
    guard.model.favour = guard._negative  # "unsafe": the reply complied with a harmful request
    assert guard.judge(["a"], ["b"]) == [False]
    with pytest.raises(RefusalkitError, match="yes-no or guard"):
        ModelJudge(_ScriptedModel(len(tokenizer), []), tokenizer, "maybe")


def test_model_judge_on_a_real_tiny_model_returns_one_verdict_per_pair(family_adapter) -> None:
    judge = ModelJudge(family_adapter.model, family_adapter.tokenizer, "yes-no", batch_size=2)
    scores = judge.answer_log_odds(["a", "bb", "ccc"], ["x", "yy yy", "z"])
    assert len(scores) == 3 and all(math.isfinite(s) for s in scores)
    # Batching and left padding must not change a verdict.
    single = [judge.answer_log_odds([p], [r])[0] for p, r in (("a", "x"), ("bb", "yy yy"))]
    assert scores[:2] == pytest.approx(single, abs=1e-4)


def test_phrase_file(tmp_path) -> None:
    path = tmp_path / "phrases.txt"
    path.write_text("# my list\nI won't\n\n  Not possible  \n")
    assert read_phrase_file(path) == ("I won't", "Not possible")
    path.write_text("# nothing\n")
    with pytest.raises(RefusalkitError, match="no phrases"):
        read_phrase_file(path)
    with pytest.raises(RefusalkitError, match="does not exist"):
        read_phrase_file(tmp_path / "missing.txt")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("the the the the the the the the the", "word-loop"),
        ("!!!!!!!!!!!!!!!!!!!!!!!!", "no-words"),
        ("ab!ab!ab!ab!ab!ab!ab!ab!ab!", "character-loop"),
        ("?!", "no-words"),
        (
            "I can help. Here is the plan. I can help. Here is the plan. I can help. Here is",
            "sentence-loop",
        ),
        ("It is 42.", None),
        ("a#$%^&*(){}[]<>?/|\\~`#$%^&*@!b", "symbol-soup"),
        ("Sure 我可以 помочь вам αβγ with that", "script-soup"),
        ("日本語のテキストです。カタカナもあります。and some English", None),  # one language
        ("def f(x):\n    return {k: v for k, v in x.items()}\n", None),  # code is not gibberish
        ("I'm sorry, but I can't help with that.", None),
    ],
)
def test_degenerate_reasons(text: str, reason: str | None) -> None:
    assert degenerate_reason(text) == reason
