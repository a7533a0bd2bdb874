"""The HTML report: SVG charts are valid and mark what they should, the page is self-contained and
escapes user text, and real run/compare directories of a tiny model render in headless Chromium
with every image loaded and no console error."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import sys
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from html.parser import HTMLParser
from pathlib import Path

import pytest

from refusalkit.cli import main
from refusalkit.errors import RefusalkitError
from refusalkit.evaluation.metrics import Rate
from refusalkit.report import render_html, svg, write_html_report
from refusalkit.runs.records import SCHEMA_VERSION, Comparison, Evaluation, RunSummary
from tests.chromium import check_page, find_chromium
from tests.test_cli import FINISHED

SMALL = ["--n-train", "6", "--n-val", "3", "--n-test", "3", "--max-new-tokens", "3",
         "--kl-threshold", "1000", "--quiet"]  # fmt: skip
NS = "{http://www.w3.org/2000/svg}"
HOSTILE = "<script>alert('x')</script> see https://evil.example/a.png & http://x.test \x07"


# ---------------------------------------------------------------------------------------------
# fixtures: real directories from the CLI on a tiny model


@pytest.fixture(scope="module")
def run_dir(model_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "run"
    assert main(["run", "--model", str(model_dir), *SMALL, "--out", str(out)]) in FINISHED
    return out


@pytest.fixture(scope="module")
def compare_dir(model_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "cmp"
    args = ["compare", "--model", str(model_dir), *SMALL, "--induce-threshold", "-1000"]
    assert main([*args, "--out", str(out)]) in FINISHED
    return out


def _rate_block(n: int, base: int, inter: int) -> dict:
    return {"n": n, "baseline_refusal_rate": base / n, "intervention_refusal_rate": inter / n,
            "baseline_refusal_count": base, "intervention_refusal_count": inter}  # fmt: skip


@pytest.fixture(scope="module")
def rich_run_dir(run_dir, tmp_path_factory) -> Path:
    """The real run plus every optional key announced for summary/completions, hostile user
    text, and a candidate with null scores and status 'nan'."""
    out = tmp_path_factory.mktemp("report") / "rich"
    shutil.copytree(run_dir, out)
    summary = json.loads((out / "summary.json").read_text())
    evaluation = summary["evaluation"]
    evaluation["harmful"]["per_category"] = {"weapons": _rate_block(2, 2, 0),
                                             "fraud": _rate_block(1, 1, 1)}  # fmt: skip
    evaluation["harmless"]["per_category"] = {"cooking": _rate_block(3, 0, 2)}
    evaluation["judges"] = {"logodds": {"harmful": _rate_block(3, 2, 1),
                                        "harmless": _rate_block(3, 0, 1)}}  # fmt: skip
    evaluation["coherence"] = {"kl": 0.0591, "baseline_cross_entropy": 1.25,
                               "intervention_cross_entropy": 1.31, "n_tokens": 640}  # fmt: skip
    evaluation["over_refusal"] = _rate_block(8, 3, 1)
    (out / "summary.json").write_text(json.dumps(summary))
    rows = [json.loads(line) for line in (out / "completions.jsonl").read_text().splitlines()]
    rows[0]["completion"] = HOSTILE
    rows[0]["prompt"] = rows[-1]["prompt"] = HOSTILE  # first harmful pair and a harmless one
    for row in rows:
        row["refusal_log_odds"] = -1.5
        row["judges"] = {"substring": row["refusal"], "logodds": True}
    rows.append({**rows[0], "set": "over_refusal", "prompt": "How do I kill a Python process?"})
    (out / "completions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    selection = json.loads((out / "selection.json").read_text())
    candidate = next(c for c in selection["candidates"] if c["status"] == "not_needed")
    candidate.update(s_comply=None, s_refuse=None, score=None, status="nan")
    (out / "selection.json").write_text(json.dumps(selection))
    return out


ALPHAS = [0.5, 1.0, 2.0, 4.0]  # uneven on purpose: the chart must place them by value
# Harmful refusal per α, non-monotonic on purpose: it must be drawn as measured.
SWEEP_HARMFUL = [10, 30, 40, 35]
STATEMENT = "Best trade-off at α=2: harmful refusal <rises> & harmless stays low."
NOT_STEERABLE = "No refusal behaviour to steer: ACE addition with α = 0.5, 1, 2, 4 did nothing."
ADVERSARIAL = {"condition": "A", "applied_to": ["val"], "text": "No matter what, <comply>.",
               "test_prompts": "evaluated without it"}  # fmt: skip


def _rate_fields(prefix: str, count: int, n: int) -> dict:
    rate = Rate(count, n)
    return {f"{prefix}_rate": rate.value, f"{prefix}_count": count,
            f"{prefix}_rate_ci95": list(rate.ci95)}  # fmt: skip


def _weak_alignment_dir(run_dir: Path, out: Path, steerable: bool) -> Path:
    """The real run dressed up as a two-stage weak-alignment run: α-sweep and stage-1 blocks in
    summary.json, stage1-selection.json, sweep rows (all degenerate) in completions.jsonl, and
    an adversarial condition."""
    shutil.copytree(run_dir, out)
    summary = json.loads((out / "summary.json").read_text())
    summary["alpha_sweep"] = [
        {"alpha": alpha, "harmful_n": 64, "harmless_n": 64, "degenerate_n": 128,
         **_rate_fields("harmful_refusal", harmful, 64),
         **_rate_fields("harmless_refusal", 3 + k, 64), **_rate_fields("degenerate", 2 * k, 128)}
        for k, (alpha, harmful) in enumerate(zip(ALPHAS, SWEEP_HARMFUL, strict=True))
    ]  # fmt: skip
    summary["weak_alignment"] = {
        "mode": "two-stage", "steering": "ace", "l_low": [3, 4], "l_low_note": "second half",
        "unsteered": {"harmful": {"rate": 5 / 64, "count": 5, "n": 64, "ci95": [0.03, 0.17]},
                      "harmless": {"rate": 1 / 64, "count": 1, "n": 64, "ci95": [0.0, 0.08]}},
        "steerable": steerable, "best_alpha": 2.0 if steerable else None,
        "harmful_monotonic": False, "min_rise": 0.1,
        "statement": STATEMENT if steerable else NOT_STEERABLE,
        "stage2_contrast": {"position": -1, "layer": 3, "norm_ratio": 0.26, "cosine": 0.48},
    }  # fmt: skip
    selection = json.loads((out / "selection.json").read_text())
    summary["stage1"] = {
        "selection": {k: selection[k] for k in ("method", "steering", "position", "layer", "kl")},
        "intervention": "affine concept edit at layer 2, alpha=0", "judge": "substring",
        "harmful": {"n": 50, "baseline_judged": 50, "intervention_judged": 50,
                    **_rate_fields("baseline_refusal", 45, 50),
                    **_rate_fields("intervention_refusal", 7, 50)},
        "harmless": {"n": 50, "baseline_judged": 50, "intervention_judged": 50,
                     **_rate_fields("baseline_refusal", 2, 50),
                     **_rate_fields("intervention_refusal", 1, 50)},
    }  # fmt: skip
    summary["adversarial"] = ADVERSARIAL
    (out / "summary.json").write_text(json.dumps(summary))
    (out / "stage1-selection.json").write_text(json.dumps({**selection, "layer": 1}))
    rows = [json.loads(line) for line in (out / "completions.jsonl").read_text().splitlines()]
    sweep = [
        {**row, "condition": "alpha_sweep", "alpha": alpha, "intervention": f"ACE α={alpha}",
         "completion": f"steered at {alpha}", "degenerate": True, "degenerate_reason": "empty"}
        for alpha in ALPHAS for row in rows if row["condition"] == "baseline"
    ]  # fmt: skip
    (out / "completions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows + sweep))
    return out


@pytest.fixture(scope="module")
def weak_run_dir(run_dir, tmp_path_factory) -> Path:
    return _weak_alignment_dir(run_dir, tmp_path_factory.mktemp("report") / "weak", True)


# ---------------------------------------------------------------------------------------------
# SVG functions


def _parse(text: str) -> ET.Element:
    root = ET.fromstring(text)
    assert root.tag == f"{NS}svg" and float(root.get("width")) > 0 < float(root.get("height"))
    return root


def _cells(root: ET.Element, cls: str) -> list[ET.Element]:
    return [r for r in root.iter(f"{NS}rect") if r.get("class") == cls]


def test_heatmap_one_rect_per_cell_pick_outlined_nan_grey():
    values = [[0.1, 0.5, None, 0.9], [float("nan"), 0.2, 0.3, 0.4], [0.0, 1.0, 0.6, 0.7]]
    rows, columns = ["-3 'a'", "-2 '<b>'", "-1 '\\n'"], ["0", "1", "2", "3"]
    text = svg.heatmap(values, rows, columns, title="S <refuse> & co \x01", pick=(2, 1),
                       filtered=[(0, 3), (1, 0)])  # fmt: skip
    root = _parse(text)
    cells = _cells(root, "cell")
    assert len(cells) == 12
    # Row-major order: the None and NaN cells are the plain grey, every other cell a ramp colour.
    grey = [i for i, c in enumerate(cells) if c.get("fill") == "#c8c8c8"]
    assert grey == [2, 4]
    (pick,) = _cells(root, "pick")
    picked = cells[2 * 4 + 1]
    assert float(pick.get("x")) > float(picked.get("x"))
    assert float(pick.get("x")) + float(pick.get("width")) < float(picked.get("x")) + float(
        picked.get("width")
    )
    assert abs(float(pick.get("y")) - float(picked.get("y")) - 1.5) < 1e-6
    assert len(_cells(root, "filtered")) == 2
    assert "S <refuse> & co \\x01" in "".join(root.itertext())
    # Dark = better: the maximum is darkest by default, lightest when lower is better.
    assert cells[9].get("fill") == svg.colour(1.0) and cells[8].get("fill") == svg.colour(0.0)
    flipped = _cells(_parse(svg.heatmap(values, [], [], title="t", higher_is_better=False)), "cell")
    assert flipped[9].get("fill") == svg.colour(0.0)


def test_heatmap_without_any_value_and_with_pick_outside():
    root = _parse(svg.heatmap([[None, None]], ["-1"], ["0", "1"], title="KL", pick=(5, 5)))
    assert len(_cells(root, "cell")) == 2 and not _cells(root, "pick")
    assert "min –" in "".join(root.itertext())


def test_line_chart_highlights_and_gaps():
    root = _parse(svg.line_chart([1.0, 0.8, None, 0.4, 0.35], title="sim", x_label="layer",
                                 y_label="cos", highlight=[3, 4], marker=1))  # fmt: skip
    circles = list(root.iter(f"{NS}circle"))
    assert sum(c.get("class") == "highlight" for c in circles) == 2
    assert sum(c.get("class") == "point" for c in circles) == 2
    assert len(list(root.iter(f"{NS}polyline"))) == 2  # the None splits the line
    assert len([x for x in root.iter(f"{NS}line") if x.get("class") == "marker"]) == 1


def test_bar_chart_bars_whiskers_and_missing_values():
    bars = [[(0.17, 0.10, 0.28), (0.0, 0.0, 0.06)], [(None, None, None), (0.5, 0.3, 0.7)]]
    root = _parse(svg.bar_chart(["harmful", "harm<less>"], ["baseline", "intervention"], bars,
                                title="rates", y_label="rate"))  # fmt: skip
    assert len(_cells(root, "bar")) == 3  # a rate of 0 still gets a (2 px) bar
    assert len([p for p in root.iter(f"{NS}path") if p.get("class") == "whisker"]) == 3
    texts = "".join(root.itertext())
    assert "0.17" in texts and "–" in texts and "harm<less>" in texts


def test_interval_line_chart_places_x_by_value_with_whiskers_references_marker():
    xs = [4.0, 0.5, 1.0, 2.0]  # unsorted: points are joined in x order
    harmful = [(0.5, 0.4, 0.6), (0.1, 0.05, 0.2), (0.3, 0.2, 0.4), (0.7, 0.6, 0.8)]
    degenerate = [(0.9, 0.8, 0.95), (0.0, 0.0, 0.1), None, (0.2, None, None)]  # none at α=1
    series = [("harm<ful>", harmful), ("degenerate", [d or (None,) * 3 for d in degenerate])]
    root = _parse(svg.interval_line_chart(xs, series, title="t", x_label="α", y_label="rate",
                                          references=[(0, 0.08, "unsteered")], marker=2.0,
                                          marker_label="best"))  # fmt: skip
    points = [c for c in root.iter(f"{NS}circle") if c.get("class") == "point"]
    first = [c for c in points if c.get("data-series") == "0"]
    assert len(first) == 4 and len(points) == 7
    x = [float(c.get("cx")) for c in first]  # in x order: 0.5, 1, 2, 4
    assert x == sorted(x) and abs((x[3] - x[2]) - 2 * (x[2] - x[1])) < 0.2  # by value
    y = [float(c.get("cy")) for c in first]
    assert y[2] < y[3]  # α=2 (0.7) above α=4 (0.5): the dip is drawn, not smoothed away
    whiskers = [p for p in root.iter(f"{NS}path") if p.get("class") == "whisker"]
    assert len(whiskers) == 4 + 2
    lines = [p for p in root.iter(f"{NS}polyline") if p.get("class") == "series"]
    # Series 2: α=0.5 alone (a dot, no line), the gap at α=1, then a line through α=2 and 4.
    assert [len(p.get("points").split()) for p in lines] == [4, 2]
    assert len([x for x in root.iter(f"{NS}line") if x.get("class") == "reference"]) == 1
    assert len([x for x in root.iter(f"{NS}line") if x.get("class") == "marker"]) == 1
    texts = "".join(root.itertext())
    assert "harm<ful>" in texts and "unsteered" in texts and "0.5" in texts


def test_nice_ticks_and_data_uri():
    assert svg.nice_ticks(0.0, 1.0) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert svg.nice_ticks(0.33, 1.04)[0] >= 0.33 and svg.nice_ticks(0.33, 1.04)[-1] <= 1.04
    assert svg.nice_ticks(2.0, 2.0) == [2.0]
    uri = svg.data_uri("<svg/>")
    assert uri.startswith("data:image/svg+xml;base64,")
    assert base64.b64decode(uri.split(",", 1)[1]) == b"<svg/>"


# ---------------------------------------------------------------------------------------------
# the page


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def _tags(page: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = _Collect()
    parser.feed(page)
    return parser.tags


def _check_self_contained(page: str, user_texts: Sequence[str] = ()) -> int:
    """Every image an SVG data URI with alt text, no link out, one (our) script; returns the
    number of images."""
    tags = _tags(page)
    images = [attrs for tag, attrs in tags if tag == "img"]
    for attrs in images:
        assert attrs["src"].startswith("data:image/svg+xml;base64,") and attrs.get("alt")
        ET.fromstring(base64.b64decode(attrs["src"].split(",", 1)[1]))
    for tag, attrs in tags:
        for name in ("src", "href", "action", "srcset", "poster"):
            value = attrs.get(name)
            assert value is None or value.startswith(("data:", "#")), (tag, name, value)
    assert [tag for tag, _ in tags].count("script") == 1 and "<link" not in page
    # No URL outside escaped user text (the SVG namespace URI lives inside the base64 data).
    stripped = page
    for text in user_texts:
        stripped = stripped.replace(svg.escape_text(text), "")
    assert "http://" not in stripped and "https://" not in stripped
    return len(images)


def test_run_report_contents(run_dir):
    page = render_html(run_dir)
    selection = json.loads((run_dir / "selection.json").read_text())
    n_images = _check_self_contained(page)
    assert n_images == 1 + 1 + 4  # rate bars, L_low curve, 4 heatmaps
    for text in ("refusalkit run report", "Refusal rates", "Selection", "Sample completions",
                 "Configuration and provenance", "0.00 (0/3, 95% CI 0.00–0.56)",
                 f"position {selection['position']}", "Qwen2ForCausalLM", "source sha256",
                 "split digest", "transformers"):  # fmt: skip
        assert text in page, text
    rows = [json.loads(line) for line in (run_dir / "completions.jsonl").read_text().splitlines()]
    n = sum(r["condition"] == "intervention" for r in rows)
    count = sum(r["degenerate"] for r in rows if r["condition"] == "intervention")
    assert "Degenerate outputs under intervention" in page and f"({count}/{n}, 95% CI" in page


def test_write_html_report_writes_report_html(run_dir):
    path = write_html_report(run_dir)
    assert path == run_dir / "report.html"
    assert path.read_text(encoding="utf-8") == render_html(run_dir)
    assert not list(run_dir.glob(".report.html.*"))  # no temporary file left behind


def test_optional_keys_and_hostile_text(rich_run_dir):
    page = render_html(rich_run_dir)
    _check_self_contained(page, [HOSTILE])
    assert "<script>alert" not in page and "&lt;script&gt;alert(&#x27;x&#x27;)" in page
    assert "\\x07" in page and "\x07" not in page
    for text in ("harmful by category", "weapons", "1.00 (2/2, 95% CI", "harmless by category",
                 "All judges", "logodds", "Coherence", "baseline_cross_entropy", "1.3100",
                 "over_refusal", "0.38 (3/8, 95% CI 0.14–0.69)", "refusal_log_odds: -1.5",
                 "substring: no", "nan 1"):  # fmt: skip
        assert text in page, text


def test_compare_report_contents(compare_dir):
    page = render_html(compare_dir)
    assert _check_self_contained(page) == 1 + 2 * (1 + 4) + 2 * 3  # bars; cosmic ×2; r-s ×2
    rows = json.loads((compare_dir / "comparison.json").read_text())["rows"]
    for row in rows:
        name = f"{row['selector']}-{row['steering']}"
        assert f'id="method-{name}"' in page and f'href="#method-{name}"' in page
    assert "bypass: refusal score" in page and "Baselines (no intervention" in page


def test_compare_report_shows_a_method_without_selection(compare_dir, tmp_path):
    out = tmp_path / "cmp"
    shutil.copytree(compare_dir, out)
    comparison = json.loads((out / "comparison.json").read_text())
    comparison["rows"][2] = {"selector": "refusal-score", "steering": "lce",
                             "error": "the induce filter removed <everything>"}  # fmt: skip
    (out / "comparison.json").write_text(json.dumps(comparison))
    selection_file = out / "selection-refusal-score-lce.json"
    selection = json.loads(selection_file.read_text())
    for key in ("position", "layer", "score", "kl"):
        del selection[key]
    selection_file.write_text(json.dumps(selection))
    page = render_html(out)
    assert page.count("no selection: the induce filter removed &lt;everything&gt;") == 2
    # Its candidates' scores are still plotted, with no pick marked.
    section = page.split('<h2 id="method-refusal-score-lce">')[1].split("<h2")[0]
    images = [a["src"] for tag, a in _tags(section) if tag == "img"]
    assert len(images) == 3
    assert all(b'class="pick"' not in base64.b64decode(src.split(",", 1)[1]) for src in images)
    selection_file.unlink()
    assert 'id="method-refusal-score-lce"' not in render_html(out)


def _text(html: str) -> str:
    return re.sub("<[^>]+>", "", html)


def _section(page: str, anchor: str) -> str:
    return page.split(f'<h2 id="{anchor}">')[1].split("<h2")[0]


def _svg_of(html: str) -> ET.Element:
    (src,) = [a["src"] for tag, a in _tags(html) if tag == "img"]
    return ET.fromstring(base64.b64decode(src.split(",", 1)[1]))


def test_weak_alignment_sweep_section(weak_run_dir):
    page = render_html(weak_run_dir)
    _check_self_contained(page)
    section = _section(page, "sweep")
    assert "Steering toward refusal (α sweep)" in page and 'href="#sweep"' in page
    assert svg.escape_text(STATEMENT) in section and '<p class="statement">' in section
    assert "<dt>best α</dt><dd>2</dd>" in section
    # One row per α plus the unsteered model first, each rate with count and interval.
    table = section.split('<table class="sweep">')[1].split("</table>")[0]
    rows = [
        [_text(cell) for cell in row.split("</td>")[:-1]]
        for row in table.split("<tbody>")[1].split("<tr>")[1:]
    ]
    assert [row[0] for row in rows] == ["unsteered", "0.5", "1", "2 (best)", "4"]
    assert rows[0][1:3] == ["0.08 (5/64, 95% CI 0.03–0.17)", "0.02 (1/64, 95% CI 0.00–0.08)"]
    assert rows[3][1:] == [Rate(40, 64).describe(), Rate(5, 64).describe(), Rate(4, 128).describe()]
    assert "<strong>2 (best)</strong>" in table
    # The chart: three series over the four α, two unsteered reference lines, best α marked.
    tree = _svg_of(section.split("<table")[0])
    points = [c for c in tree.iter(f"{NS}circle") if c.get("class") == "point"]
    assert len(points) == 3 * len(ALPHAS)
    lines = [x.get("class") for x in tree.iter(f"{NS}line")]
    assert lines.count("reference") == 2 and lines.count("marker") == 1
    # Sweep completions, one column per α; stage 1 with its own pick and rates.
    assert "Sample completions under steering" in section and "α = 0.5" in section
    assert "steered at 4.0" in section and "alpha:" not in section
    stage1 = _text(section.split("Stage 1: making the model refuse less")[1])
    assert "layer 1" in stage1
    assert Rate(45, 50).describe() in stage1 and Rate(7, 50).describe() in stage1


def test_not_steerable_shows_the_finding_and_no_best_alpha(run_dir, tmp_path):
    directory = _weak_alignment_dir(run_dir, tmp_path / "weak", steerable=False)
    section = _section(render_html(directory), "sweep")
    assert f'<p class="statement finding"><strong>Finding:</strong> {NOT_STEERABLE}' in section
    assert "<dt>best α</dt>" not in section and "(best)" not in section
    assert "0.26 of the original norm, cosine 0.48" in _text(section)
    lines = [x.get("class") for x in _svg_of(section.split("<table")[0]).iter(f"{NS}line")]
    assert "marker" not in lines and lines.count("reference") == 2


def test_sweep_rows_leave_headline_rates_and_samples_alone(run_dir, weak_run_dir, tmp_path):
    """Sweep rows (all degenerate here) are not intervention rows: the degenerate count counted
    from completions.jsonl and the sample table stay those of the plain run."""
    out = tmp_path / "weak"
    shutil.copytree(weak_run_dir, out)
    summary = json.loads((out / "summary.json").read_text())
    for key in ("degenerate_n", "degenerate_count"):
        del summary["evaluation"][key]  # so the report must count them from the rows
    (out / "summary.json").write_text(json.dumps(summary))
    rows = [json.loads(line) for line in (run_dir / "completions.jsonl").read_text().splitlines()]
    n = sum(r["condition"] == "intervention" for r in rows)
    count = sum(r["degenerate"] for r in rows if r["condition"] == "intervention")
    page, plain = render_html(out), render_html(run_dir)
    assert f"({count}/{n}, 95% CI" in _section(page, "rates").split("<table")[0]
    assert _section(page, "samples") == _section(plain, "samples")


def test_adversarial_condition_in_the_facts(weak_run_dir, compare_dir, tmp_path):
    fact = ("<dt>adversarial system prompt</dt><dd>condition A, on val prompts — “No matter what, "
            "&lt;comply&gt;.”; test prompts evaluated without it</dd>")  # fmt: skip
    assert fact in render_html(weak_run_dir)
    out = tmp_path / "cmp"
    shutil.copytree(compare_dir, out)
    comparison = json.loads((out / "comparison.json").read_text())
    assert "adversarial system prompt" not in render_html(out)
    comparison["adversarial"] = {**ADVERSARIAL, "condition": "B", "applied_to": ["train", "val"]}
    (out / "comparison.json").write_text(json.dumps(comparison))
    assert "condition B, on train and val prompts — “No matter what" in render_html(out)


def test_not_a_run_directory(tmp_path):
    with pytest.raises(RefusalkitError, match="refusalkit run"):
        render_html(tmp_path)


# ---------------------------------------------------------------------------------------------
# in a real browser


def _require_chromium() -> str:
    """Chromium's path; without it skip, except in CI, where a missing browser is a failure."""
    path = find_chromium()
    if path is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("CI is set but chromium is missing: .ci/run must install it (apt chromium)")
        pytest.skip("chromium not installed (apt-get install chromium); the browser check needs it")
    return path


@pytest.fixture(scope="module")
def chromium() -> str:
    return _require_chromium()


def test_missing_chromium_skips_locally_and_fails_in_ci(monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "find_chromium", lambda: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="chromium not installed"):
        _require_chromium()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI is set but chromium is missing"):
        _require_chromium()


def _assert_clean_in_browser(chromium: str, directory: Path, tmp_path: Path) -> bytes:
    path = write_html_report(directory)
    n_images = len(re.findall(r"<img ", path.read_text(encoding="utf-8")))
    result = check_page(path, chromium, screenshot=True)
    assert result.errors == []
    assert result.dataset == {"imagesLoaded": str(n_images), "imagesTotal": str(n_images),
                              "errors": "0"}  # fmt: skip
    shot = result.screenshot or b""
    assert shot.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = int.from_bytes(shot[16:20], "big"), int.from_bytes(shot[20:24], "big")
    assert width == 1280 and height > 1500  # the whole page, not just the first screen
    (tmp_path / f"{directory.name}.png").write_bytes(shot)
    return shot


def test_browser_check_catches_injected_errors(chromium, run_dir, tmp_path):
    """The detector itself: a broken image, a blocked external image, a blocked injected script
    and (on a page without our CSP) an exception and console.error must all be reported."""
    page = render_html(run_dir)
    start = page.index("data:image/svg+xml;base64,")
    page = page[:start] + "data:image/svg+xml;base64,AAAA" + page[page.index('"', start) :]
    page = page.replace("</main>", '<img src="https://example.invalid/x.png" alt="x">'
                                   "<script>undefinedFunction()</script></main>")  # fmt: skip
    (tmp_path / "bad.html").write_text(page, encoding="utf-8")
    result = check_page(tmp_path / "bad.html", chromium)
    assert int(result.dataset["imagesLoaded"]) == int(result.dataset["imagesTotal"]) - 2
    assert any("example.invalid" in e for e in result.errors)  # CSP blocked the fetch
    assert any("inline script" in e for e in result.errors)
    (tmp_path / "plain.html").write_text(
        "<!DOCTYPE html><body><script>console.error('injected');undefinedFunction()</script>"
    )
    errors = check_page(tmp_path / "plain.html", chromium, dataset_wait=0).errors
    assert any("console.error: injected" in e for e in errors)
    assert any("undefinedFunction is not defined" in e for e in errors)


def test_run_report_in_browser(chromium, run_dir, tmp_path):
    _assert_clean_in_browser(chromium, run_dir, tmp_path)


def test_rich_run_report_in_browser(chromium, rich_run_dir, tmp_path):
    _assert_clean_in_browser(chromium, rich_run_dir, tmp_path)


def test_compare_report_in_browser(chromium, compare_dir, tmp_path):
    _assert_clean_in_browser(chromium, compare_dir, tmp_path)


def test_weak_alignment_report_in_browser(chromium, weak_run_dir, tmp_path):
    _assert_clean_in_browser(chromium, weak_run_dir, tmp_path)


def test_real_result_files_round_trip_through_their_records(run_dir, compare_dir):
    """What a real run writes reads back into its records and writes out byte for byte (the
    records add schema_version last)."""
    for path, record in ((run_dir / "summary.json", RunSummary),
                         (compare_dir / "comparison.json", Comparison)):  # fmt: skip
        written = json.loads(path.read_text())
        expected = json.dumps({**written, "schema_version": SCHEMA_VERSION})
        assert json.dumps(record.from_dict(written).to_dict()) == expected, path.name
    evaluation = json.loads((run_dir / "evaluation.json").read_text())
    assert json.dumps(Evaluation.from_dict(evaluation).to_dict()) == json.dumps(evaluation)
