"""Big models: an accelerate device map (CPU and disk offload here, so the code path runs in CI)
gives the same activations and interventions as the model on one device."""

from __future__ import annotations

import json

import pytest
import torch

from refusalkit.api import load_model
from refusalkit.cli import main
from refusalkit.config import RunConfig, placement
from refusalkit.errors import RefusalkitError
from refusalkit.interventions import ActivationAddition, DirectionalAblation, applied

# The tiny Qwen2 of ``model_dir`` (5 blocks) spread over "devices": two blocks offloaded to disk.
SPREAD = {
    "model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk",
    "model.layers.2": "cpu", "model.layers.3": "disk", "model.layers.4": "cpu",
    "model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "cpu",
}  # fmt: skip


def _logits(adapter, ids, *interventions):
    with applied(adapter, *interventions), torch.inference_mode():
        return adapter.model(input_ids=ids).logits


def test_a_dispatched_model_gives_the_same_hooked_logits(model_dir, tmp_path):
    plain = load_model(str(model_dir), device="cpu")
    spread = load_model(str(model_dir), device="cpu", device_map=SPREAD,
                        offload_folder=str(tmp_path / "offload"))  # fmt: skip
    assert set(spread.model.hf_device_map.values()) == {"cpu", "disk"}
    vector = torch.randn(plain.hidden_size, generator=torch.Generator().manual_seed(0))
    ids = torch.tensor([[5, 17, 33, 60, 7]])
    for interventions in ((), (DirectionalAblation(vector),), (ActivationAddition(vector, 2),)):
        expected = _logits(plain, ids, *interventions)
        torch.testing.assert_close(_logits(spread, ids, *interventions), expected,
                                   rtol=1e-5, atol=1e-5)  # fmt: skip


def test_run_with_a_device_map_records_it(model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["run", "--model", str(model_dir), "--n-train", "6", "--n-val", "3", "--n-test",
                 "3", "--max-new-tokens", "3", "--kl-threshold", "1000", "--quiet",
                 "--device-map", json.dumps(SPREAD), "--offload-folder", str(tmp_path / "off"),
                 "--out", str(out)])  # fmt: skip
    assert code in (0, 3), capsys.readouterr().err
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["model"]["device_map"]["model.layers.1"] == "disk"


@pytest.mark.parametrize(
    ("settings", "message"),
    [({"device_map": "{not json"}, "--device-map takes"),
     ({"max_memory": '{"cpu": "1GiB"}'}, "goes with --device-map"),
     ({"device_map": "auto", "max_memory": "[1]"}, "--max-memory takes")],
)  # fmt: skip
def test_bad_placement_options_are_one_line(settings, message):
    with pytest.raises(RefusalkitError, match=message):
        placement(RunConfig(**settings))
    assert placement(RunConfig(device_map="auto", max_memory='{"0": "2GiB"}')).max_memory == {
        0: "2GiB"
    }


def test_revision_is_for_hub_models(model_dir):
    from refusalkit.models.loading import resolve_model_path

    with pytest.raises(RefusalkitError, match="--revision applies to hub models"):
        resolve_model_path(str(model_dir), "main")
    assert resolve_model_path(str(model_dir)).revision is None
