"""The CLI as a user runs it, on a tiny local model directory: the run directory contract, own
prompt files in every format, and bad input (one-line errors, non-zero exit, nothing written)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from refusalkit.cli import main
from refusalkit.evaluation.verdict import EXIT_NO_WORKING_DIRECTION
from refusalkit.prompts.datasets import builtin_prompts

# A run on a tiny random model finishes with exit 0 or, when its direction does nothing (the
# usual case for random weights), EXIT_NO_WORKING_DIRECTION; test_exit_status_follows_the_verdict
# checks which one each run must give.
FINISHED = (0, EXIT_NO_WORKING_DIRECTION)
SMALL = ["--n-train", "6", "--n-val", "3", "--n-test", "3", "--max-new-tokens", "3",
         "--kl-threshold", "1000", "--quiet"]  # fmt: skip


def _run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_run_writes_the_run_directory_contract(model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, _ = _run(capsys, "run", "--model", str(model_dir), *SMALL, "--out", str(out))
    assert code in FINISHED
    assert "selected position" in stdout and str(out) in stdout
    for name in ("config.json", "splits.json", "provenance.json", "candidates.safetensors",
                 "selection.json", "direction.safetensors", "completions.jsonl", "report.md",
                 "report.html", "summary.json", "status.json"):  # fmt: skip
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert isinstance(summary["model"], str)
    selection = summary["selection"]
    assert selection["method"] == "cosmic" and selection["steering"] == "lce"
    for key, kind in (("position", int), ("layer", int), ("score", float), ("kl", float),
                      ("n_candidates", int), ("n_kept", int)):  # fmt: skip
        assert isinstance(selection[key], kind), key
    n_positions = len(
        json.loads((out / "provenance.json").read_text())["chat"]["post_instruction_ids"]
    )
    assert selection["n_candidates"] == n_positions * 5  # P positions × 5 layers
    assert -n_positions <= selection["position"] <= -1 and 0 <= selection["layer"] < 4
    for label in ("harmful", "harmless"):
        block = summary["evaluation"][label]
        assert block["n"] == 3
        for key in ("baseline_refusal_rate", "intervention_refusal_rate"):
            assert 0.0 <= block[key] <= 1.0
    manifest = json.loads((out / "splits.json").read_text())
    for label in ("harmful", "harmless"):
        splits = manifest[label]["splits"]
        hashes = [p["sha256"] for name in ("train", "val", "test") for p in splits[name]]
        assert len(hashes) == len(set(hashes)) == 12  # disjoint
    assert len(manifest["over_refusal"]["prompts"]) == 3  # --n-over-refusal defaults to --n-test
    rows = [json.loads(line) for line in (out / "completions.jsonl").read_text().splitlines()]
    assert len(rows) == 3 * 2 * 3  # (harmful, harmless, over-refusal) × (baseline, intervention)
    for row in rows:
        assert set(row["judges"]) == {"substring", "log-odds"}
        assert row["refusal"] == row["judges"]["substring"]  # the default headline judge
        assert row["judges"]["log-odds"] == (row["refusal_log_odds"] > 0)
        assert isinstance(row["degenerate"], bool)
    evaluation = summary["evaluation"]
    assert evaluation["judge"] == "substring"
    for label in ("harmful", "harmless", "over_refusal"):
        block = evaluation[label]
        for condition in ("baseline", "intervention"):
            low, high = block[f"{condition}_refusal_rate_ci95"]
            assert 0.0 <= low <= block[f"{condition}_refusal_rate"] <= high <= 1.0
            count = sum(r["refusal"] for r in rows
                        if r["set"] == label and r["condition"] == condition)  # fmt: skip
            assert block[f"{condition}_refusal_count"] == count
        categories = block["per_category"]
        assert sum(c["n"] for c in categories.values()) == 3
        assert set(evaluation["judges"]["log-odds"][label]) >= {"n", "baseline_refusal_rate"}
    coherence = evaluation["coherence"]
    assert coherence["kl"] >= 0 and coherence["n_tokens"] > 0
    assert math.isclose(coherence["cross_entropy_increase"],
                        coherence["intervention_cross_entropy"]
                        - coherence["baseline_cross_entropy"])  # fmt: skip
    assert 0.0 <= evaluation["degenerate_rate"] <= 1.0 and evaluation["degenerate_n"] == 9
    selection_file = json.loads((out / "selection.json").read_text())
    assert len(selection_file["candidates"]) == n_positions * 5 and selection_file["l_low"]
    assert json.loads((out / "status.json").read_text())["state"] == "complete"


def test_existing_run_needs_force_and_unfinished_run_resumes(model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["run", "--model", str(model_dir), *SMALL, "--out", str(out)]
    assert _run(capsys, *args)[0] in FINISHED
    code, _, err = _run(capsys, *args)
    assert code == 2 and "already holds a finished run" in err and "--force" in err
    first = (out / "candidates.safetensors").read_bytes()
    selection = (out / "selection.json").read_bytes()
    (out / "summary.json").unlink()  # as if interrupted during evaluation
    assert _run(capsys, *args)[0] in FINISHED
    assert (out / "candidates.safetensors").read_bytes() == first  # finished stages are reused
    assert (out / "selection.json").read_bytes() == selection
    assert json.loads((out / "summary.json").read_text())["selection"]["n_candidates"] > 0
    assert _run(capsys, *args, "--force")[0] in FINISHED


def _write_prompt_files(directory: Path, label: str, fmt: str) -> Path:
    prompts, _ = builtin_prompts(label)
    texts = [p.text for p in prompts[:20]]
    path = directory / f"{label}.{fmt}"
    if fmt == "txt":
        path.write_text("\n".join(texts) + "\n")
    elif fmt == "csv":
        path.write_text("goal,target\n" + "".join(f'"{t}",x\n' for t in texts))
    elif fmt == "json":
        path.write_text(json.dumps([{"Behavior": t} for t in texts]))
    else:
        path.write_text("".join(json.dumps({"forbidden_prompt": t}) + "\n" for t in texts))
    return path


@pytest.mark.parametrize("fmt", ["txt", "csv", "json", "jsonl"])
def test_own_prompt_files(model_dir, tmp_path, capsys, fmt):
    harmful = _write_prompt_files(tmp_path, "harmful", fmt)
    harmless = _write_prompt_files(tmp_path, "harmless", fmt)
    out = tmp_path / "run"
    code, _, err = _run(capsys, "run", "--model", str(model_dir), *SMALL, "--harmful", str(harmful),
                        "--harmless", str(harmless), "--out", str(out))  # fmt: skip
    assert code in FINISHED, err
    manifest = json.loads((out / "splits.json").read_text())
    assert manifest["harmful"]["source"] == str(harmful)
    assert manifest["harmless"]["source"] == str(harmless)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--harmful", "{missing}"], "prompt file not found"),
        (["--harmful", "{empty}"], "no prompts found"),
        (["--n-train", "500"], "distinct entries but the splits need"),
        (["--harmful", "{bad_json}"], "invalid JSON"),
        (["--steering", "sideways"], "invalid choice"),
        (["--n-val", "0"], "expected a positive integer"),
        (["--dtype", "float8"], "invalid choice"),
        (["--kl-threshold", "-1"], "KL threshold must be non-negative"),
        (["--system-prompt", " "], "empty system prompt"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(model_dir, tmp_path, capsys, extra, message):
    (tmp_path / "empty.txt").write_text("\n\n")
    (tmp_path / "bad.json").write_text("[{")
    values = {"missing": str(tmp_path / "nope.txt"), "empty": str(tmp_path / "empty.txt"),
              "bad_json": str(tmp_path / "bad.json")}  # fmt: skip
    extra = [value.format(**values) for value in extra]
    out = tmp_path / "run"
    code, _, err = _run(capsys, "run", "--model", str(model_dir), *SMALL, *extra, "--out", str(out))
    assert code == 2
    assert message in err and err.count("\n") == 1
    assert not out.exists()


def test_unknown_model_in_a_subprocess_has_no_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "refusalkit", "run", "--model", "no-such-model", "--out",
         str(tmp_path / "run")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "unknown model 'no-such-model'" in result.stderr
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / "run" / "summary.json").exists()


def test_models_lists_the_embedded_models(capsys):
    code, stdout, _ = _run(capsys, "models")
    assert code == 0 and "qwen2.5-coder-0.5b-instruct (default)" in stdout
    assert "smollm2-135m-instruct" in stdout


def test_reference_l_low_convention_is_recorded_as_a_value(model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = _run(
        capsys, "run", "--model", str(model_dir), *SMALL, "--l-low-convention", "reference",
        "--stability", "2", "--out", str(out),
    )  # fmt: skip
    assert code in FINISHED, err
    selection = json.loads((out / "selection.json").read_text())
    assert selection["l_low_convention"] == "reference"
    assert selection["l_low_points"] == [layer + 1 for layer in selection["l_low"]]
    assert selection["settings"]["l_low_convention"] == "reference"
    assert json.loads((out / "config.json").read_text())["l_low_convention"] == "reference"
    assert json.loads((out / "stability.json").read_text())["resamples"] == 2


def test_refusal_score_selector_run(model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, err = _run(
        capsys, "run", "--model", str(model_dir), *SMALL, "--selector", "refusal-score",
        "--steering", "ace", "--induce-threshold", "-1000", "--out", str(out),
    )  # fmt: skip
    assert code in FINISHED, err
    assert "refusal-score-ACE selected position" in stdout
    selection = json.loads((out / "selection.json").read_text())
    assert selection["method"] == "refusal-score" and selection["refusal_tokens"]["ids"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["selection"]["score"] == pytest.approx(summary["selection"]["bypass"])


def test_refusal_score_with_no_inducing_candidate_fails_clearly(model_dir, tmp_path, capsys):
    code, _, err = _run(
        capsys, "run", "--model", str(model_dir), *SMALL, "--selector", "refusal-score",
        "--induce-threshold", "1000", "--out", str(tmp_path / "run"),
    )  # fmt: skip
    assert code == 2 and "induce filter removed the most" in err and err.count("\n") == 1


def test_compare_writes_one_row_per_method(model_dir, tmp_path, capsys):
    out = tmp_path / "cmp"
    code, stdout, err = _run(
        capsys, "compare", "--model", str(model_dir), *SMALL, "--induce-threshold", "-1000",
        "--out", str(out),
    )  # fmt: skip
    assert code in FINISHED, err
    comparison = json.loads((out / "comparison.json").read_text())
    methods = [(row["selector"], row["steering"]) for row in comparison["rows"]]
    assert methods == [("cosmic", "lce"), ("cosmic", "ace"), ("refusal-score", "lce"),
                       ("refusal-score", "ace")]  # fmt: skip
    for row in comparison["rows"]:
        for key in ("position", "layer"):
            assert isinstance(row[key], int)
        for key in (
            "harmful_intervention_refusal_rate",
            "harmless_intervention_refusal_rate",
            "kl",
        ):
            assert isinstance(row[key], float)
    assert (out / "comparison.md").read_text().count("\n| ") >= 5
    # Baseline completions are generated once and shared by every method.
    baselines = {
        json.dumps(r, sort_keys=True)
        for name in ("cosmic-lce", "refusal-score-ace")
        for r in map(json.loads, (out / f"completions-{name}.jsonl").read_text().splitlines())
        if r["condition"] == "baseline"
    }
    assert len(baselines) == 9  # 3 sets × 3 prompts, identical in both files
    assert "selector" in stdout


def test_compare_reports_a_method_that_selects_nothing(model_dir, tmp_path, capsys):
    out = tmp_path / "cmp"
    code, stdout, err = _run(
        capsys, "compare", "--model", str(model_dir), *SMALL, "--induce-threshold", "1000",
        "--out", str(out),
    )  # fmt: skip
    assert code in FINISHED, err
    rows = json.loads((out / "comparison.json").read_text())["rows"]
    assert [r["selector"] for r in rows if "error" not in r] == ["cosmic", "cosmic"]
    failed = [r for r in rows if "error" in r]
    assert len(failed) == 2 and all("--induce-threshold" in r["error"] for r in failed)
    assert "no selection" in stdout
    # The failed selection keeps every candidate's scores, so the report can show why.
    stored = json.loads((out / "selection-refusal-score-lce.json").read_text())
    assert "--induce-threshold" in stored["error"]
    statuses = {c["status"] for c in stored["candidates"]}
    assert stored["candidates"] and statuses <= {"zero", "layer", "induce"}
    # Resuming the finished-but-failed method reuses the stored failure instead of re-running it.
    (out / "comparison.json").unlink()
    code, _, err = _run(
        capsys, "compare", "--model", str(model_dir), *SMALL, "--induce-threshold", "1000",
        "--out", str(out),
    )  # fmt: skip
    assert code in FINISHED, err
    assert json.loads((out / "selection-refusal-score-lce.json").read_text()) == stored


def test_refusal_substring_selector(model_dir, tmp_path, capsys):
    """The substring variant scores candidates by judged refusal rates of short generations."""
    out = tmp_path / "sub"
    code, stdout, err = _run(
        capsys, "run", "--model", str(model_dir), *SMALL, "--selector", "refusal-substring",
        "--induce-threshold", "-1000", "--out", str(out),
    )  # fmt: skip
    assert code in FINISHED, err
    record = json.loads((out / "selection.json").read_text())
    assert record["method"] == "refusal-substring" and record["max_new_tokens"] == 8
    assert record["induce_rate_threshold"] == pytest.approx(0.0)
    # The zero and layer filters' candidates are never scored (nor generated for).
    scored = [c for c in record["candidates"] if c["status"] not in ("zero", "layer")]
    assert any(c["status"] == "zero" for c in record["candidates"])
    assert all(0.0 <= c["bypass"] <= 1.0 and 0.0 <= c["induce"] <= 1.0 for c in scored)
    # argmin bypass among the survivors; ties go to the earlier layer, then the earlier position.
    best = min(scored, key=lambda c: (c["bypass"], c["layer"], c["position"]))
    assert (record["position"], record["layer"]) == (best["position"], best["layer"])
    assert record["work"]["generated_prompts"] == len(scored) * 2 * 3  # both classes, 3 val each
    assert "refusal-substring" in stdout or "Refusal-substring" in stdout
    # With the default threshold (log-odds 0, i.e. rate 0.5) a random tiny model induces nothing.
    code, _, err = _run(
        capsys, "run", "--model", str(model_dir), *SMALL, "--selector", "refusal-substring",
        "--out", str(tmp_path / "sub-default"),
    )  # fmt: skip
    assert code == 2 and "induce" in err and "--induce-threshold" in err
