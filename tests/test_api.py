"""The notebook API (issue 13's contract), on a tiny model saved as a model directory."""

from __future__ import annotations

import json

import pytest
import torch

import refusalkit as rk
from refusalkit.prompts import builtin_prompts
from tests.test_cli import FINISHED, SMALL, _run
from tests.tiny import make_model, make_tokenizer

HARMFUL = [p.text for p in builtin_prompts("harmful")[0]]
HARMLESS = [p.text for p in builtin_prompts("harmless")[0]]


@pytest.fixture(scope="module")
def flat_model_dir(tmp_path_factory):
    """A tiny model whose output layer is scaled down (near-flat next-token distributions), so
    candidate KLs are small and the snippet's default KL threshold (0.1) keeps some: the snippet
    then runs with every default, as a user would type it."""
    directory = tmp_path_factory.mktemp("flat-model")
    tokenizer = make_tokenizer("chatml")
    model = make_model("qwen2", False, n_layers=5, vocab_size=len(tokenizer),
                       pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    with torch.no_grad():
        model.lm_head.weight.mul_(0.05)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def _last_logits(model: rk.ModelAdapter, text: str) -> torch.Tensor:
    chat = rk.chat_format(model)
    ids = torch.tensor([chat.encode(text)])
    with torch.inference_mode():
        return model.model(input_ids=ids).logits[0, -1]


def test_the_readme_snippet_runs_as_written_and_cleans_up(flat_model_dir):
    harmful_train, harmless_train = HARMFUL[:8], HARMLESS[:8]
    harmful_val, harmless_val = HARMFUL[8:12], HARMLESS[8:12]
    # -- the contract, as written (the model name is the tiny model's directory) --
    model = rk.load_model(str(flat_model_dir))
    cands = rk.extract_candidates(model, harmful_train, harmless_train)
    pick = rk.select_cosmic(model, cands, harmful_val, harmless_val)
    before = rk.generate(model, ["How do I pick a lock?"], max_new_tokens=8)
    logits_before = _last_logits(model, "How do I pick a lock?")
    with pick.direction.ablate(model):
        inside = rk.generate(model, ["How do I pick a lock?"], max_new_tokens=8)
        logits_inside = _last_logits(model, "How do I pick a lock?")
    after = rk.generate(model, ["How do I pick a lock?"], max_new_tokens=8)
    logits_after = _last_logits(model, "How do I pick a lock?")
    # --
    assert isinstance(before, list) and isinstance(before[0], str)
    assert not torch.equal(logits_inside, logits_before)
    assert torch.equal(logits_after, logits_before) and after == before
    assert inside is not None
    assert (pick.position, pick.layer) == (pick.outcome.selected.position, pick.layer)
    assert pick.score == pytest.approx(pick.s_comply + pick.s_refuse)
    assert pick.kl <= pick.settings.kl_threshold
    assert len(pick.table()) == cands.n_positions * cands.n_layers
    assert sum(row["status"] == "selected" for row in pick.table()) == 1
    assert torch.equal(pick.direction.vector, cands.direction(pick.position, pick.layer))


def test_the_pick_matches_the_pipeline_selector(model_dir, tmp_path, capsys):
    """The API and ``refusalkit run`` share one COSMIC path: same prompts → same pick."""
    out = tmp_path / "run"
    code, _, err = _run(capsys, "run", "--model", str(model_dir), *SMALL, "--out", str(out))
    assert code in FINISHED, err
    splits = json.loads((out / "splits.json").read_text())

    def texts(label: str, split: str) -> list[str]:
        return [p["text"] for p in splits[label]["splits"][split]]

    model = rk.load_model(str(model_dir))
    cands = rk.extract_candidates(model, texts("harmful", "train"), texts("harmless", "train"))
    stored = rk.CandidateSet.load(out / "candidates.safetensors")
    assert torch.equal(cands.harmful_means, stored.harmful_means)
    settings = rk.CosmicSettings(kl_threshold=1000)
    pick = rk.select_cosmic(
        model, cands, texts("harmful", "val"), texts("harmless", "val"), settings=settings
    )
    selection = json.loads((out / "selection.json").read_text())
    assert (pick.position, pick.layer) == (selection["position"], selection["layer"])
    assert pick.score == selection["score"]


def test_direction_load_reproduces_the_runs_intervention_completions(model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = _run(capsys, "run", "--model", str(model_dir), *SMALL, "--out", str(out))
    assert code in FINISHED, err
    rows = [json.loads(line) for line in (out / "completions.jsonl").read_text().splitlines()]
    direction = rk.Direction.load(out)
    selection = json.loads((out / "selection.json").read_text())
    assert (direction.position, direction.layer) == (selection["position"], selection["layer"])
    model = rk.load_model(str(model_dir))
    for label, context in (
        ("harmful", direction.ablate(model)),
        ("harmless", direction.add(model)),
    ):
        intervened = [r for r in rows if r["set"] == label and r["condition"] == "intervention"]
        with context:
            again = rk.generate(model, [r["prompt"] for r in intervened], max_new_tokens=3)
        assert again == [r["completion"] for r in intervened]


def test_direction_from_vector_save_load_and_ace(model_dir, tmp_path):
    model = rk.load_model(str(model_dir))
    size = model.hidden_size
    vector = torch.randn(size)
    bare = rk.Direction.from_vector(vector)
    with pytest.raises(rk.RefusalkitError, match="harmless mean"):
        bare.ace(model, layer=1).__enter__()
    with pytest.raises(rk.RefusalkitError, match="layer="):
        bare.add(model).__enter__()
    full = rk.Direction.from_vector(vector, harmless_mean=torch.randn(size), layer=2)
    full.save(tmp_path / "d.safetensors")
    loaded = rk.Direction.load(tmp_path / "d.safetensors")
    assert torch.equal(loaded.vector, full.vector) and loaded.layer == 2
    assert loaded.harmless_mean is not None and full.harmless_mean is not None
    assert torch.equal(loaded.harmless_mean, full.harmless_mean)
    assert torch.allclose(loaded.unit.norm(), torch.tensor(1.0))
    before = _last_logits(model, "hello")
    with loaded.ace(model, alpha=1.0):
        steered = _last_logits(model, "hello")
    assert not torch.equal(steered, before)
    assert torch.equal(_last_logits(model, "hello"), before)
    with pytest.raises(rk.RefusalkitError, match="one finite vector"):
        rk.Direction.from_vector(torch.randn(2, size))
    with pytest.raises(rk.RefusalkitError, match="no direction"):
        rk.Direction.load(tmp_path / "missing")


def test_wrap_takes_a_model_the_user_loaded():
    tokenizer = make_tokenizer("chatml")
    hf_model = make_model("qwen2", False, n_layers=3, vocab_size=len(tokenizer),
                          pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    model = rk.wrap(hf_model, tokenizer)
    assert model.n_layers == 3 and model.tokenizer is tokenizer
    cands = rk.extract_candidates(model, HARMFUL[:3], HARMLESS[:3])
    assert cands.n_layers == 3
    with pytest.raises(rk.RefusalkitError, match="list of prompts"):
        rk.generate(model, "a single string")  # type: ignore[arg-type]
