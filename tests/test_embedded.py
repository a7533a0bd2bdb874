"""Integration: COSMIC on the embedded default model, what a user gets (reduced sizes for CI).

Needs the embedded model, which is assembled from PyPI packages and converted on first use (about
two minutes); later runs load the cached copy. Set REFUSALKIT_SKIP_EMBEDDED=1 to skip offline.
"""

from __future__ import annotations

import json
import os

import pytest
import torch

from refusalkit.config import RunConfig
from refusalkit.workflows import run

pytestmark = pytest.mark.embedded

skip_offline = pytest.mark.skipif(
    os.environ.get("REFUSALKIT_SKIP_EMBEDDED") == "1",
    reason="REFUSALKIT_SKIP_EMBEDDED=1: the embedded model needs a PyPI download on first use",
)


@pytest.fixture
def two_threads():
    # conftest pins the tiny-model tests to one thread; the real model wants both cores.
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


@skip_offline
def test_cosmic_lce_on_the_default_model_removes_and_induces_refusal(tmp_path, two_threads):
    config = RunConfig(n_train=64, n_val=8, n_test=32, max_new_tokens=32, n_over_refusal=16)
    summary = run(config, tmp_path / "run").to_dict()  # the record as summary.json holds it
    selection, evaluation = summary["selection"], summary["evaluation"]
    assert selection["kl"] <= 0.1
    assert selection["layer"] < 19  # floor(0.8 * 24)
    harmful, harmless = evaluation["harmful"], evaluation["harmless"]
    # Ablation lowers refusal on held-out harmful prompts; addition induces it on harmless ones.
    assert harmful["baseline_refusal_count"] >= 2, "the model should refuse some harmful prompts"
    assert harmful["intervention_refusal_count"] <= harmful["baseline_refusal_count"] // 2
    assert harmless["intervention_refusal_count"] >= harmless["baseline_refusal_count"] + 3
    # Every judge reports; the coherence cost of removal on harmless prompts is small but real.
    assert set(evaluation["judges"]) == {"substring", "log-odds"}
    assert evaluation["over_refusal"]["n"] == 16
    coherence = evaluation["coherence"]
    assert 0 < coherence["kl"] < 1 and coherence["n_tokens"] > 100
    assert abs(coherence["cross_entropy_increase"]) < 1.0
    written = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert written == summary
