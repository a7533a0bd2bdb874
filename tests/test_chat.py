"""``refusalkit chat``: the switchable intervention, history, /compare, and ``--prompt``."""

from __future__ import annotations

import io

import torch

from refusalkit.api import Direction
from refusalkit.cli import main
from refusalkit.prompts.chat import build_chat_format
from refusalkit.workflows.chat import ChatState, chat_loop, intervention_for
from tests.tiny import make_adapter


def test_the_loop_switches_interventions_and_keeps_history():
    adapter = make_adapter("qwen2", n_layers=3)
    chat = build_chat_format(adapter.tokenizer)
    generator = torch.Generator().manual_seed(0)
    direction = Direction.from_vector(
        torch.randn(adapter.hidden_size, generator=generator),
        harmless_mean=torch.randn(adapter.hidden_size, generator=generator), layer=1,
    )  # fmt: skip
    out = io.StringIO()
    lines = ["hello there", "/off", "how are you", "/compare", "/add 2.5", "/ace",
             "/nonsense", "/add x", "/reset", "/quit", "never read"]  # fmt: skip
    state = chat_loop(adapter, chat, direction, lines, out, max_new_tokens=4)
    text = out.getvalue()
    assert "(intervention: off)" in text and "(intervention: add 2.5)" in text
    assert "(intervention: ace 0)" in text and "unknown command /nonsense" in text
    assert "takes a number" in text and "[off] " in text
    assert state.mode == "ace" and state.history == []  # /reset cleared two exchanges
    assert intervention_for(direction, ChatState("off")) is None
    assert intervention_for(direction, ChatState("add", 2.0)).describe().endswith("alpha=2")


def test_history_grows_by_one_exchange_per_message():
    adapter = make_adapter("llama", n_layers=2)
    chat = build_chat_format(adapter.tokenizer)
    direction = Direction.from_vector(torch.ones(adapter.hidden_size), layer=0)
    state = chat_loop(adapter, chat, direction, ["one", "two"], io.StringIO(), max_new_tokens=3)
    assert [m["role"] for m in state.history] == ["user", "assistant", "user", "assistant"]
    assert state.history[2]["content"] == "two"


def test_prompt_prints_one_reply(model_dir, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["run", "--model", str(model_dir), "--n-train", "6", "--n-val", "3", "--n-test", "3",
            "--max-new-tokens", "3", "--kl-threshold", "1000", "--quiet",
            "--out", str(run)]  # fmt: skip
    assert main(args) in (0, 3)
    capsys.readouterr()
    code = main(["chat", str(run), "--prompt", "hello", "--max-new-tokens", "5"])
    out = capsys.readouterr().out
    assert code == 0 and out.endswith("\n") and "/help" not in out
    code = main(["chat", "--prompt", "hello"])
    assert code == 2 and "--model and --direction" in capsys.readouterr().err
