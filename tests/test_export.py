"""``refusalkit export`` on tiny models: the exported directory loads in plain transformers, and
its verification holds — exactly for pre-norm families (tied and untied embeddings), and for
Gemma-2's post-norms the residual stream is free of r̂ although the logits are not the hook
form's."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from refusalkit.api import Direction
from refusalkit.cli import main
from tests.tiny import make_model, make_tokenizer

TEMPLATES = {"qwen2": "chatml", "llama": "llama3", "gemma2": "gemma"}
RUN = ["--n-train", "6", "--n-val", "3", "--n-test", "6", "--max-new-tokens", "6",
       "--kl-threshold", "1000", "--quiet"]  # fmt: skip


def _cli(capsys, *args):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _finished_run(tmp_path, capsys, family: str, tied: bool):
    tokenizer = make_tokenizer(TEMPLATES[family])
    model = make_model(family, tie_embeddings=tied, n_layers=4, vocab_size=len(tokenizer),
                       pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    code, _, err = _cli(
        capsys, "run", "--model", tmp_path / "model", *RUN, "--out", tmp_path / "run"
    )
    assert code in (0, 3), (
        err
    )  # finished; whether the tiny model's direction works is not the point
    return tmp_path / "run"


@pytest.mark.parametrize(("family", "tied"), [("qwen2", True), ("llama", False)])
def test_pre_norm_export_equals_the_hooks(tmp_path, capsys, family, tied):
    run = _finished_run(tmp_path, capsys, family, tied)
    out = tmp_path / "exported"
    code, stdout, err = _cli(capsys, "export", run, "--out", out, "--quiet")
    assert code == 0, err
    assert "max logit difference" in stdout
    record = json.loads((out / "export.json").read_text())
    assert record["edit"] == "ablation" and record["max_logit_difference"] < 1e-4
    assert record["completions_identical"] == record["completions_compared"] == 6
    assert record["completions_reference"] == "the run's intervention completions"
    assert record["weights"]["untied_embeddings"] is tied
    assert record["weights"]["form"].startswith("pre-norm")
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "README.md", "export.json"} <= names
    assert not any(name.endswith(".bin") for name in names)
    assert "tokenizer.json" in names and "Verification" in (out / "README.md").read_text()
    # Plain transformers, no refusalkit: the embeddings are free of r̂; the LM head is the
    # original's (untied first when it was tied).
    exported = AutoModelForCausalLM.from_pretrained(out)
    original = AutoModelForCausalLM.from_pretrained(tmp_path / "model")
    unit = Direction.load(run).vector.double()
    unit = unit / unit.norm()
    embeddings = exported.get_input_embeddings().weight.detach().double()
    assert float((embeddings @ unit).abs().max()) < 1e-5
    torch.testing.assert_close(exported.get_output_embeddings().weight,
                               original.get_output_embeddings().weight)  # fmt: skip
    assert exported.config.tie_word_embeddings is False


def test_addition_export_equals_the_hook_where_the_config_has_a_bias(tmp_path, capsys):
    run = _finished_run(tmp_path, capsys, "llama", False)
    out = tmp_path / "added"
    code, _, err = _cli(capsys, "export", run, "--out", out, "--edit", "addition", "--quiet")
    assert code == 0, err
    record = json.loads((out / "export.json").read_text())
    assert record["max_logit_difference"] < 1e-4
    assert record["completions_identical"] == record["completions_compared"]
    assert AutoModelForCausalLM.from_pretrained(out).config.mlp_bias is True


def test_gemma2_export_removes_the_direction_but_is_not_the_hook_form(tmp_path, capsys):
    run = _finished_run(tmp_path, capsys, "gemma2", False)
    out = tmp_path / "exported"
    code, _, err = _cli(capsys, "export", run, "--out", out, "--quiet")
    assert code == 0, err
    record = json.loads((out / "export.json").read_text())
    assert record["weights"]["form"].startswith("post-norm")
    assert record["max_logit_difference"] > 1e-3  # measured, and said: not the hook form
    exported = AutoModelForCausalLM.from_pretrained(out)
    unit = Direction.load(run).vector.double()
    unit = unit / unit.norm()
    ids = torch.tensor([[2, 40, 41, 42, 43, 44, 45]])
    with torch.inference_mode():
        hidden = exported(input_ids=ids, output_hidden_states=True).hidden_states
    for state in hidden[:-1]:  # every block input; the last entry is after the final norm
        projection = (state.double() @ unit).abs().max()
        assert float(projection) <= 1e-5 * float(state.double().norm(dim=-1).max())
    code, _, err = _cli(capsys, "export", run, "--out", tmp_path / "add", "--edit", "addition")
    assert code == 2 and "post-norm" in err


def test_ace_and_a_non_empty_out_are_refused(tmp_path, capsys):
    run = _finished_run(tmp_path, capsys, "qwen2", True)
    code, _, err = _cli(capsys, "export", run, "--out", tmp_path / "x", "--edit", "ace")
    assert code == 2 and "no exact weight form" in err and len(err.strip().splitlines()) == 1
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    code, _, err = _cli(capsys, "export", run, "--out", busy)
    assert code == 2 and "--force" in err and (busy / "keep.txt").read_text() == "mine"
    code, _, err = _cli(capsys, "export", tmp_path, "--out", tmp_path / "y")
    assert code == 2 and "not a finished run directory" in err
