"""SPEC §9 on tiny models: the spectrum against an eigen-decomposition of the Gram matrix, the
clustering, the cone samples, subspace ablation checked on the model's own hidden states, and the
``geometry`` command's contract."""

from __future__ import annotations

import json
import math

import pytest
import torch

from refusalkit.cli import main
from refusalkit.geometry.measure import ablations
from refusalkit.geometry.spectrum import (
    cluster_order,
    cone_samples,
    cosine_matrix,
    cosines_with,
    orthonormal_top,
    spectrum,
    two_clusters,
)
from refusalkit.interventions import applied
from tests.tiny import make_adapter

SMALL = ["--n-train", "24", "--n-val", "4", "--n-test", "16", "--judge-tokens", "3", "--quiet",
         "--min-per-category", "2", "--cone-samples", "4", "--subspace-k", "3",
         "--kl-threshold", "1000"]  # fmt: skip


def _directions() -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 32, generator=generator)
    noise = 0.1 * torch.randn(6, 32, generator=generator)
    return torch.stack([a, a, a, b, b, a + b]) + noise  # two clusters and one in between


@pytest.mark.parametrize("centred", [False, True])
def test_spectrum_matches_the_gram_matrix_eigenvalues(centred):
    rows = _directions().double()
    if centred:
        rows = rows - rows.mean(0)
    eigenvalues = torch.linalg.eigvalsh(rows @ rows.T).flip(0).clamp_min(0)
    expected = (eigenvalues / eigenvalues.sum()).tolist()
    result = spectrum(_directions(), centred)
    assert result.explained == pytest.approx(expected, abs=1e-9)
    shares = torch.tensor(expected)
    assert result.participation_ratio == pytest.approx(float(1 / (shares**2).sum()))
    cumulative = torch.cumsum(shares, 0)
    assert result.n_components_90 == int((cumulative < 0.9 - 1e-12).sum()) + 1


def test_clusters_and_order_keep_similar_directions_together():
    cosines = cosine_matrix(_directions())
    assert torch.allclose(cosines.diagonal(), torch.ones(6, dtype=torch.float64))
    groups = two_clusters(cosines)
    assert sorted(map(sorted, groups)) in ([[0, 1, 2, 5], [3, 4]], [[0, 1, 2], [3, 4, 5]])
    order = cluster_order(cosines)
    assert sorted(order) == list(range(6))
    positions = {i: order.index(i) for i in range(6)}
    assert max(positions[i] for i in (0, 1, 2)) - min(positions[i] for i in (0, 1, 2)) == 2
    assert cosines_with(torch.eye(3), torch.tensor([1.0, 1.0, 0.0])) == pytest.approx(
        [2**-0.5, 2**-0.5, 0.0]
    )


def test_cone_samples_are_convex_weights_and_seeded():
    weights = cone_samples(5, 40, seed=3)
    assert weights.shape == (40, 5) and bool((weights >= 0).all())
    assert torch.allclose(weights.sum(-1), torch.ones(40, dtype=torch.float64))
    assert torch.equal(weights, cone_samples(5, 40, seed=3))


def test_top_k_subspace_ablation_leaves_no_component_in_the_residual_stream():
    adapter = make_adapter("qwen2", n_layers=3)
    directions = torch.randn(4, adapter.hidden_size, generator=torch.Generator().manual_seed(2))
    basis = orthonormal_top(spectrum(directions, centred=False).components, 3)
    assert torch.allclose(basis @ basis.T, torch.eye(3, dtype=torch.float64), atol=1e-10)
    ids = adapter.tokenizer("how do I repot a cactus", return_tensors="pt")["input_ids"]
    with applied(adapter, *ablations(basis)), torch.inference_mode():
        hidden = adapter.model(input_ids=ids, output_hidden_states=True).hidden_states
    for state in hidden[:-1]:  # every block input (the last entry is after the final norm)
        projection = state.double() @ basis.T
        assert float(projection.abs().max()) <= 1e-5 * float(state.double().norm(dim=-1).max())


def _cli(capsys, *args):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_geometry_command_writes_the_contract(model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, err = _cli(capsys, "geometry", "--model", model_dir, *SMALL, "--out", out)
    assert code == 0, err
    assert "components explain 90%" in stdout
    record = json.loads((out / "geometry.json").read_text())
    selection = json.loads((out / "selection.json").read_text())
    assert (record["position"], record["layer"]) == (selection["position"], selection["layer"])
    categories = record["categories"]
    size = len(categories)
    assert size >= 2 and set(record["n_train"]) == set(categories)
    assert all(n >= 2 for n in record["n_train"].values())
    for name, reason in record["skipped_categories"].items():
        assert name not in categories and "train" in reason
    assert len(record["cosine"]) == size and all(len(row) == size for row in record["cosine"])
    assert all(math.isclose(record["cosine"][i][i], 1.0, abs_tol=1e-9) for i in range(size))
    assert len(record["cosine_with_global"]) == size
    assert sum(record["explained_variance"]) == pytest.approx(1.0)
    assert sum(record["explained_variance_centred"]) == pytest.approx(1.0)
    assert 1 <= record["n_components_90"] <= size
    assert 1.0 <= record["participation_ratio"] <= size + 1e-9
    assert len(record["cosine_per_layer"]) == 5
    cross = record["cross_ablation"]
    assert len(cross["n"]) == size and all(n >= 1 for n in cross["n"])
    for key in ("refusal_rate", "refusal_count", "mean_log_odds"):
        assert len(cross[key]) == size and all(len(row) == size for row in cross[key])
    for counts, rates in zip(cross["refusal_count"], cross["refusal_rate"], strict=True):
        assert rates == pytest.approx([c / n for c, n in zip(counts, cross["n"], strict=True)])
    assert len(cross["baseline_mean_log_odds"]) == size
    subspace = record["subspace"]
    assert [row["k"] for row in subspace] == [1, 2, 3]
    for row in subspace:
        assert set(row) >= {"k", "harmful_refusal_rate", "harmful_mean_log_odds", "harmless_kl"}
        assert row["harmless_kl"] >= -1e-9
    assert record["cone"]["n_samples"] == 4
    assert set(record["cone"]["log_odds_reduction_quantiles"]) >= {"q00", "q50", "q100"}
    assert (out / "geometry.md").is_file()
    assert (out / "report.html").read_text().count("data:image/svg+xml") == 5

    # The same site from the run directory, without a new selection.
    again = tmp_path / "again"
    code, _, err = _cli(capsys, "geometry", "--model", model_dir, *SMALL, "--from-run", out,
                        "--cone-samples", "0", "--out", again)  # fmt: skip
    assert code == 0, err
    second = json.loads((again / "geometry.json").read_text())
    assert (second["position"], second["layer"]) == (record["position"], record["layer"])
    torch.testing.assert_close(torch.tensor(second["cosine"]), torch.tensor(record["cosine"]))
    assert not (again / "selection.json").exists()


def test_geometry_at_a_given_site_and_bad_options(model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = _cli(capsys, "geometry", "--model", model_dir, *SMALL, "--position", "-1",
                        "--layer", "2", "--categories", "cybercrime,fraud",
                        "--min-per-category", "1", "--out", out)  # fmt: skip
    assert code == 0, err
    record = json.loads((out / "geometry.json").read_text())
    assert (record["position"], record["layer"]) == (-1, 2)
    assert record["categories"] == ["cybercrime", "fraud"]
    code, _, err = _cli(capsys, "geometry", "--model", model_dir, *SMALL, "--position", "-1",
                        "--out", tmp_path / "x")  # fmt: skip
    assert code == 2 and "go together" in err
    code, _, err = _cli(capsys, "geometry", "--model", model_dir, *SMALL, "--categories",
                        "astrology", "--out", tmp_path / "y")  # fmt: skip
    assert code == 2 and "astrology" in err
    other = tmp_path / "other-run"
    other.mkdir()
    (other / "selection.json").write_text(json.dumps({"position": -1, "layer": 1}))
    (other / "config.json").write_text(json.dumps({"model": "another-model"}))
    code, _, err = _cli(capsys, "geometry", "--model", model_dir, *SMALL, "--from-run", other,
                        "--out", tmp_path / "z")  # fmt: skip
    assert code == 2 and "pass the same --model" in err
